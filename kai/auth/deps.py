"""Request dependencies of identity: the database session, the caller, and ``Require``."""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from kai.auth import rbac
from kai.auth.audit import AuditLog
from kai.auth.mail import Outbox
from kai.auth.service import SESSION_INVALID, Client, Identity, Principal
from kai.config import Settings
from kai.core import DatabaseDep, SettingsDep
from kai.errors import Forbidden, Unauthorized
from kai.kit.wiring import dependency

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

IdentityDep = Annotated[Identity, Depends(dependency("identity", Identity))]
AuditDep = Annotated[AuditLog, Depends(dependency("audit", AuditLog))]
OutboxDep = Annotated[Outbox, Depends(dependency("outbox", Outbox))]


async def db_session(request: Request, db: DatabaseDep) -> AsyncIterator[AsyncSession]:
    """The request's unit of work: reads run in a plain transaction, writes take the lock."""
    async with db.session(write=request.method not in READ_METHODS) as session:
        yield session


# Scoped to the route function, so the commit happens before the answer is sent: a client
# that has its answer can rely on what it says (a new account, a dead session).
DbSession = Annotated[AsyncSession, Depends(db_session, scope="function")]


def client_ip(request: Request, settings: Settings) -> str | None:
    """The caller's address; ``X-Forwarded-For`` counts only when a trusted proxy sent it."""
    peer = request.client.host if request.client else None
    networks = settings.proxy_networks
    if peer is None or not networks:
        return peer
    # Several header lines are one list (a proxy may add its own line below the client's).
    forwarded = ",".join(request.headers.getlist("x-forwarded-for"))
    hops = [h.strip() for h in forwarded.split(",") if h.strip()]
    for address in [peer, *reversed(hops)]:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return address[:64]
        if not any(ip in net for net in networks):
            return address
    return hops[0] if hops else peer


def get_client(request: Request, settings: SettingsDep) -> Client:
    return Client(ip=client_ip(request, settings), user_agent=request.headers.get("user-agent"))


ClientDep = Annotated[Client, Depends(get_client)]

_bearer = HTTPBearer(auto_error=False, description="An access token from /api/auth/login")


async def current_principal(
    request: Request,
    db: DatabaseDep,
    identity: IdentityDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized(SESSION_INVALID)
    # A short read of its own: the request's unit of work (and, on SQLite, its write lock)
    # starts only when the route needs it, so a route that waits holds no lock.
    async with db.session(write=False) as session:
        principal = await identity.authenticate(session, credentials.credentials)
    request.state.principal = principal
    return principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def authorize(
    request: Request,
    audit: AuditLog,
    principal: Principal,
    permission: str,
    *,
    client_ip: str | None,
) -> Principal:
    """Admit ``principal`` only with ``permission``, auditing the decision either way."""
    granted = rbac.allowed(principal.role, permission)
    audit.permission(
        permission,
        granted=granted,
        user_id=principal.user_id,
        resource=f"{request.method} {request.url.path}",
        client_ip=client_ip,
    )
    if not granted:
        raise Forbidden(f"Insufficient permissions: {permission}")
    return principal


def Require(permission: str) -> Any:
    """A dependency that admits the caller only with ``permission``, auditing the decision."""
    if permission not in rbac.PERMISSIONS:
        raise ValueError(f"unknown permission {permission!r}")

    async def check(
        request: Request, audit: AuditDep, principal: CurrentPrincipal, client: ClientDep
    ) -> Principal:
        return authorize(request, audit, principal, permission, client_ip=client.ip)

    check.__name__ = f"require_{permission.replace(':', '_')}"
    return Depends(check)
