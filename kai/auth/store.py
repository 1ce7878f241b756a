"""Queries of identity. Only this module builds SQL for the auth domain."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from kai.auth.models import AuditEvent, Invite, MagicLink, RefreshToken, Session, User


async def user_by_email(session: AsyncSession, email: str) -> User | None:
    return await session.scalar(select(User).where(User.email == email))


async def user_by_id(session: AsyncSession, user_id: str) -> User | None:
    return await session.get(User, user_id)


async def first_with_role(session: AsyncSession, role: str) -> User | None:
    query = select(User).where(User.role == role, User.disabled.is_(False))
    return await session.scalar(query.order_by(User.created_at).limit(1))


async def count_users(session: AsyncSession) -> int:
    return await session.scalar(select(func.count()).select_from(User)) or 0


async def count_active_admins(session: AsyncSession) -> int:
    query = select(func.count()).where(User.role == "admin", User.disabled.is_(False))
    return await session.scalar(query) or 0


async def lock_active_admins(session: AsyncSession) -> list[str]:
    """The active admins' ids, their rows locked until the transaction ends (PostgreSQL), so
    that two demotions at once cannot both count the other as the admin who stays. A waiting
    lock sees the committed rows again: an admin demoted meanwhile is no longer counted.
    SQLite has no row locks; its single writer serializes the same way."""
    query = select(User.id).where(User.role == "admin", User.disabled.is_(False))
    return list(await session.scalars(query.order_by(User.id).with_for_update()))


async def list_users(
    session: AsyncSession, *, role: str | None, query: str | None, limit: int, offset: int
) -> tuple[Sequence[User], int]:
    where: list[ColumnElement[bool]] = []
    if role:
        where.append(User.role == role)
    if query:
        # autoescape: a % or _ in the query is a character to find, not a wildcard.
        needle = query.lower()
        where.append(
            User.email.contains(needle, autoescape=True)
            | func.lower(User.name).contains(needle, autoescape=True)
        )
    total = await session.scalar(select(func.count()).select_from(User).where(*where)) or 0
    rows = await session.scalars(
        select(User).where(*where).order_by(User.created_at, User.id).limit(limit).offset(offset)
    )
    return rows.all(), total


async def live_session(
    session: AsyncSession, session_id: str, now: datetime
) -> tuple[Session, User] | None:
    """The session and its user, if the session is neither revoked nor expired."""
    query = (
        select(Session, User)
        .join(User, User.id == Session.user_id)
        .where(Session.id == session_id, Session.revoked_at.is_(None), Session.expires_at > now)
    )
    row = (await session.execute(query)).first()
    return (row[0], row[1]) if row else None


async def live_sessions(session: AsyncSession, user_id: str, now: datetime) -> Sequence[Session]:
    """The user's sessions that are neither revoked nor expired, newest first."""
    query = select(Session).where(
        Session.user_id == user_id, Session.revoked_at.is_(None), Session.expires_at > now
    )
    return (await session.scalars(query.order_by(Session.created_at.desc(), Session.id))).all()


async def revoke_session(
    session: AsyncSession,
    session_id: str,
    *,
    reason: str,
    now: datetime,
    user_id: str | None = None,
) -> bool:
    """Revoke the session (only if it is ``user_id``'s, when given); False if it was not live."""
    where = [Session.id == session_id, Session.revoked_at.is_(None)]
    if user_id is not None:
        where += [Session.user_id == user_id, Session.expires_at > now]
    result = await session.execute(
        update(Session).where(*where).values(revoked_at=now, revoked_reason=reason)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def revoke_user_sessions(
    session: AsyncSession, user_id: str, *, reason: str, now: datetime, keep: str | None = None
) -> list[str]:
    """Revoke every live session of the user but ``keep``; returns the ids revoked."""
    query = select(Session.id).where(Session.user_id == user_id, Session.revoked_at.is_(None))
    if keep is not None:
        query = query.where(Session.id != keep)
    ids = list(await session.scalars(query))
    if ids:
        await session.execute(
            update(Session)
            .where(Session.id.in_(ids), Session.revoked_at.is_(None))
            .values(revoked_at=now, revoked_reason=reason)
        )
    return ids


async def refresh_token(session: AsyncSession, token_hash: str) -> RefreshToken | None:
    return await session.scalar(select(RefreshToken).where(RefreshToken.token_hash == token_hash))


async def spend_refresh_token(session: AsyncSession, token_id: str, now: datetime) -> bool:
    """Mark the token spent; False if someone spent it first."""
    result = await session.execute(
        update(RefreshToken)
        .where(RefreshToken.id == token_id, RefreshToken.spent_at.is_(None))
        .values(spent_at=now)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def invite_by_id(session: AsyncSession, invite_id: str) -> Invite | None:
    return await session.get(Invite, invite_id)


async def invite_by_hash(session: AsyncSession, code_hash: str) -> Invite | None:
    return await session.scalar(select(Invite).where(Invite.code_hash == code_hash))


async def spend_invite(session: AsyncSession, invite_id: str, now: datetime) -> bool:
    """Mark the invite used; False if it was used, revoked or expired first."""
    result = await session.execute(
        update(Invite)
        .where(
            Invite.id == invite_id,
            Invite.used_at.is_(None),
            Invite.revoked_at.is_(None),
            Invite.expires_at > now,
        )
        .values(used_at=now)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def invites(
    session: AsyncSession, *, open_at: datetime | None, limit: int, offset: int
) -> tuple[Sequence[Invite], int]:
    """Invites newest first; only those still usable at ``open_at`` when it is given."""
    where: list[ColumnElement[bool]] = []
    if open_at is not None:
        where += [
            Invite.used_at.is_(None),
            Invite.revoked_at.is_(None),
            Invite.expires_at > open_at,
        ]
    total = await session.scalar(select(func.count()).select_from(Invite).where(*where)) or 0
    rows = await session.scalars(
        select(Invite)
        .where(*where)
        .order_by(Invite.created_at.desc(), Invite.id)
        .limit(limit)
        .offset(offset)
    )
    return rows.all(), total


async def void_magic_links(session: AsyncSession, user_id: str, now: datetime) -> None:
    await session.execute(
        update(MagicLink)
        .where(MagicLink.user_id == user_id, MagicLink.spent_at.is_(None))
        .values(spent_at=now)
    )


async def spend_magic_link(
    session: AsyncSession, token_hash: str, now: datetime
) -> MagicLink | None:
    """Spend a live link atomically: of any number of concurrent callers, one gets it."""
    result = await session.execute(
        update(MagicLink)
        .where(
            MagicLink.token_hash == token_hash,
            MagicLink.spent_at.is_(None),
            MagicLink.expires_at > now,
        )
        .values(spent_at=now)
        .returning(MagicLink.id)
    )
    link_id = result.scalar_one_or_none()
    return await session.get(MagicLink, link_id) if link_id else None


async def audit_events(
    session: AsyncSession,
    *,
    user_id: str | None,
    permission: str | None,
    granted: bool | None,
    kind: str | None,
    start: datetime | None,
    end: datetime | None,
    limit: int,
    offset: int,
) -> tuple[Sequence[AuditEvent], int]:
    where: list[ColumnElement[bool]] = []
    if user_id:
        where.append(AuditEvent.user_id == user_id)
    if permission:
        where.append(AuditEvent.permission == permission)
    if granted is not None:
        where.append(AuditEvent.granted.is_(granted))
    if kind:
        where.append(AuditEvent.kind == kind)
    if start:
        where.append(AuditEvent.timestamp >= start)
    if end:
        where.append(AuditEvent.timestamp <= end)
    total = await session.scalar(select(func.count()).select_from(AuditEvent).where(*where)) or 0
    rows = await session.scalars(
        select(AuditEvent)
        .where(*where)
        .order_by(AuditEvent.timestamp.desc(), AuditEvent.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return rows.all(), total
