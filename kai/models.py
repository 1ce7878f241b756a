"""Every table kai has, imported in one place for Alembic and the tests."""

from __future__ import annotations


def load_all() -> None:
    """Import every domain's models so that ``Base.metadata`` knows all tables."""
    import kai.agents.models
    import kai.auth.models
    import kai.ops.runtime
    import kai.realtime.models
    import kai.teams.models
    import kai.work.models  # noqa: F401
