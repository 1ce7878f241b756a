"""Invites: single-use registration codes that admins hand out (``KAI_REGISTRATION=invite``).

Callers own the transaction: these functions flush, never commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from kai.auth import store
from kai.auth.models import Invite
from kai.auth.tokens import digest, new_secret
from kai.db import utcnow
from kai.errors import Forbidden, NotFound

INVITE_INVALID = "Invalid or expired invite"


@dataclass(frozen=True, slots=True)
class Created:
    """A new invite and its code, shown once (only its hash is kept)."""

    invite: Invite
    code: str


async def create(
    session: AsyncSession,
    *,
    created_by: str,
    ttl: int,
    email: str | None = None,
    note: str | None = None,
) -> Created:
    code = new_secret()
    now = utcnow()
    invite = Invite(
        code_hash=digest(code),
        email=email.lower() if email else None,
        note=note,
        created_by=created_by,
        created_at=now,
        expires_at=now + timedelta(seconds=ttl),
    )
    session.add(invite)
    await session.flush()
    return Created(invite, code)


async def listed(
    session: AsyncSession, *, include_closed: bool, limit: int, offset: int
) -> tuple[Sequence[Invite], int]:
    return await store.invites(
        session, open_at=None if include_closed else utcnow(), limit=limit, offset=offset
    )


async def revoke(session: AsyncSession, invite_id: str) -> Invite:
    invite = await store.invite_by_id(session, invite_id)
    if invite is None:
        raise NotFound("Invite not found")
    if invite.used_at is None and invite.revoked_at is None:
        invite.revoked_at = utcnow()
        await session.flush()
    return invite


async def spend(session: AsyncSession, code: str | None, *, email: str) -> Invite:
    """Spend the invite ``code`` for ``email``: of concurrent callers, one gets it."""
    now = utcnow()
    invite = await store.invite_by_hash(session, digest(code)) if code else None
    if invite is None or invite.state != "open":
        raise Forbidden(INVITE_INVALID if code else "Registration needs an invite")
    if invite.email is not None and invite.email != email:
        raise Forbidden(INVITE_INVALID)
    if not await store.spend_invite(session, invite.id, now):
        raise Forbidden(INVITE_INVALID)
    return invite
