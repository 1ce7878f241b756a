"""The first start of an empty hub: an admin account for the person at the console."""

from __future__ import annotations

import secrets
import sys

from sqlalchemy.exc import IntegrityError

from kai.auth import store
from kai.auth.rbac import Role
from kai.auth.service import Identity
from kai.config import Settings
from kai.db import Database
from kai.errors import Conflict


async def ensure_first_admin(
    settings: Settings, db: Database, identity: Identity
) -> tuple[str, str] | None:
    """Create the first admin when there are no users; returns (email, password) if it did."""
    given = settings.admin_password
    password = given.get_secret_value() if given else secrets.token_urlsafe(12)
    email = settings.admin_email.lower()
    try:
        async with db.session() as session:
            if await store.count_users(session) > 0:
                return None
            await identity.create_user(
                session,
                email=email,
                password=password,
                role=Role.ADMIN,
                name="Administrator",
                check_policy=False,  # the operator's own choice, or a random one
            )
    except (Conflict, IntegrityError):
        return None  # nodes starting together: another one created the admin first
    if given:
        _console(f"\n  kai: created the first admin, {email}, with KAI_ADMIN_PASSWORD\n")
        return email, password
    # Shown once on the console, never written to the log.
    banner = (
        "\n  kai: this is a new hub. Its first admin account:\n"
        f"    email:    {email}\n"
        f"    password: {password}\n"
        "  It is shown only now. Change it with:\n"
        f"    kai users set-password {email}\n"
    )
    _console(banner)
    return email, password


def _console(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()
