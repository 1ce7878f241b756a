"""The wire's base model: camelCase on the wire, snake_case in Python."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


def _as_utc(value: datetime) -> datetime:
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:
        raise ValueError("time is out of range") from None


UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]
"""A time from a client: one without an offset is taken as UTC."""


class Wire(BaseModel):
    """A response model: camelCase aliases, built from attributes."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, from_attributes=True)


class Body(BaseModel):
    """A request body: camelCase on the wire, unknown fields refused, strings trimmed."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", str_strip_whitespace=True
    )


class Page(Wire):
    total: int
    has_more: bool
    next_offset: int | None


def page_fields(*, total: int, offset: int, count: int) -> dict[str, int | bool | None]:
    """``total``, ``hasMore`` and ``nextOffset`` for a page of ``count`` rows at ``offset``."""
    more = offset + count < total
    return {"total": total, "has_more": more, "next_offset": offset + count if more else None}
