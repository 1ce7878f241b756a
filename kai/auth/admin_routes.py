"""Admin routes of identity: users, invites and the audit log (``system:admin``)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from kai.auth import invites, store
from kai.auth.audit import AuditLog
from kai.auth.deps import AuditDep, ClientDep, DbSession, IdentityDep, Require
from kai.auth.rbac import Role
from kai.auth.schemas import (
    AdminUserOut,
    AuditEventOut,
    AuditPage,
    InviteCreate,
    InviteCreated,
    InviteOut,
    InviteRevoked,
    InvitesPage,
    UsersPage,
    UserUpdate,
    UserUpdateResponse,
)
from kai.auth.service import Client, Principal
from kai.core import SettingsDep
from kai.kit.openapi import errors
from kai.kit.params import Offset
from kai.kit.schemas import UtcDatetime, page_fields

router = APIRouter(tags=["admin"])

Admin = Annotated[Principal, Require("system:admin")]
Limit = Annotated[int, Query(ge=1, le=500, description="Rows per page (at most 500)")]


@router.get("/api/users", responses=errors(401, 403, 422))
async def list_users(
    _: Admin,
    session: DbSession,
    role: Role | None = None,
    q: Annotated[str | None, Query(max_length=200, description="Part of email or name")] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> UsersPage:
    """Every account, oldest first."""
    rows, total = await store.list_users(session, role=role, query=q, limit=limit, offset=offset)
    users = [AdminUserOut.model_validate(row) for row in rows]
    return UsersPage(users=users, **page_fields(total=total, offset=offset, count=len(users)))


@router.put("/api/users/{userId}", responses=errors(401, 403, 404, 409, 422))
async def update_user(
    userId: str,
    body: UserUpdate,
    admin: Admin,
    audit: AuditDep,
    identity: IdentityDep,
    session: DbSession,
) -> UserUpdateResponse:
    """Change a user's role, disabled flag or name; a disabled user's sessions end at once."""
    user, changed = await identity.update_user(
        session, userId, role=body.role, disabled=body.disabled, name=body.name
    )
    if changed:
        audit.auth(
            "user_updated",
            ok=True,
            user_id=admin.user_id,
            resource=f"user:{user.id}",
            detail=",".join(f"{f}={getattr(user, f)}" for f in changed if f != "name"),
        )
    return UserUpdateResponse(user=AdminUserOut.model_validate(user), updated_fields=changed)


@router.get("/api/audit", responses=errors(401, 403, 422))
async def audit_log(
    _: Admin,
    audit: AuditDep,
    session: DbSession,
    user_id: Annotated[str | None, Query(alias="userId", max_length=36)] = None,
    permission: Annotated[str | None, Query(max_length=60)] = None,
    decision: Literal["granted", "denied"] | None = None,
    kind: Literal["permission", "auth"] | None = None,
    start_time: Annotated[UtcDatetime | None, Query(alias="startTime")] = None,
    end_time: Annotated[UtcDatetime | None, Query(alias="endTime")] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> AuditPage:
    """Permission decisions and authentication events, newest first."""
    await audit.flush()  # what this node has seen so far is part of the answer
    rows, total = await store.audit_events(
        session,
        user_id=user_id,
        permission=permission,
        granted=None if decision is None else decision == "granted",
        kind=kind,
        start=start_time,
        end=end_time,
        limit=limit,
        offset=offset,
    )
    events = [AuditEventOut.model_validate(row) for row in rows]
    return AuditPage(events=events, **page_fields(total=total, offset=offset, count=len(events)))


# -- invites -----------------------------------------------------------------------------------


@router.post("/api/invites", status_code=201, responses=errors(401, 403, 422))
async def create_invite(
    body: InviteCreate,
    admin: Admin,
    settings: SettingsDep,
    session: DbSession,
    client: ClientDep,
    audit: AuditDep,
) -> InviteCreated:
    """A single-use registration code (for `KAI_REGISTRATION=invite`), shown once."""
    created = await invites.create(
        session,
        created_by=admin.user_id,
        ttl=body.ttl or settings.invite_ttl,
        email=body.email,
        note=body.note,
    )
    detail = f"for {body.email}" if body.email else None
    _audit_invite(audit, "invite_created", admin, created.invite.id, client, detail=detail)
    return InviteCreated(invite=InviteOut.model_validate(created.invite), code=created.code)


@router.get("/api/invites", responses=errors(401, 403, 422))
async def list_invites(
    _: Admin,
    session: DbSession,
    include_closed: Annotated[
        bool, Query(alias="all", description="Also used, revoked and expired ones")
    ] = False,
    limit: Limit = 100,
    offset: Offset = 0,
) -> InvitesPage:
    """Invites, newest first: the open ones, or all of them."""
    rows, total = await invites.listed(
        session, include_closed=include_closed, limit=limit, offset=offset
    )
    found = [InviteOut.model_validate(row) for row in rows]
    return InvitesPage(invites=found, **page_fields(total=total, offset=offset, count=len(found)))


@router.delete("/api/invites/{inviteId}", responses=errors(401, 403, 404))
async def revoke_invite(
    inviteId: str, admin: Admin, session: DbSession, client: ClientDep, audit: AuditDep
) -> InviteRevoked:
    """Revoke an invite: its code no longer registers anyone (a used one stays as it was)."""
    invite = await invites.revoke(session, inviteId)
    _audit_invite(audit, "invite_revoked", admin, invite.id, client)
    return InviteRevoked(invite=InviteOut.model_validate(invite))


def _audit_invite(
    audit: AuditLog,
    event: str,
    admin: Principal,
    invite_id: str,
    client: Client,
    *,
    detail: str | None = None,
) -> None:
    audit.auth(
        event,
        ok=True,
        user_id=admin.user_id,
        resource=f"invite:{invite_id}",
        client_ip=client.ip,
        detail=detail,
    )
