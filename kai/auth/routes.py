"""The contract's auth routes (register, login, session, magic links, refresh, logout) and
one's own account (password, sessions)."""

from __future__ import annotations

from fastapi import APIRouter, status

from kai.auth import rbac
from kai.auth.deps import ClientDep, CurrentPrincipal, DbSession, IdentityDep
from kai.auth.schemas import (
    Accepted,
    LoginRequest,
    LoginResponse,
    LogoutResponse,
    MagicLinkRequest,
    OwnSessionOut,
    OwnSessions,
    PasswordChangeRequest,
    PasswordChangeResponse,
    RefreshRequest,
    RefreshResponse,
    RegisterRequest,
    RegisterResponse,
    SessionOut,
    SessionResponse,
    SessionRevoked,
    Tokens,
    UserOut,
    VerifyMagicRequest,
    VerifyMagicResponse,
)
from kai.auth.service import Issued
from kai.core import SettingsDep
from kai.kit.openapi import errors

router = APIRouter(prefix="/api/auth", tags=["auth"])


def _tokens(issued: Issued) -> Tokens:
    return Tokens.model_validate(
        {
            "access_token": {"token": issued.access_token, "expires_at": issued.access_expires},
            "refresh_token": {"token": issued.refresh_token, "expires_at": issued.refresh_expires},
        }
    )


@router.post(
    "/register",
    status_code=status.HTTP_201_CREATED,
    responses=errors(400, 403, 409, 422, 429),
)
async def register(
    body: RegisterRequest,
    identity: IdentityDep,
    settings: SettingsDep,
    session: DbSession,
    client: ClientDep,
) -> RegisterResponse:
    """Create an account with the `user` role, as `KAI_REGISTRATION` allows (403 when it is
    closed, or the invite is missing or spent); mails a verification link when required."""
    data = body.user_data
    user = await identity.register(
        session,
        email=data.email,
        password=data.password,
        name=data.name,
        invite=data.invite,
        client=client,
    )
    return RegisterResponse(
        user=UserOut.model_validate(user),
        requires_verification=settings.verification_required,
    )


@router.post("/login", responses=errors(401, 403, 422, 429))
async def login(
    body: LoginRequest, identity: IdentityDep, session: DbSession, client: ClientDep
) -> LoginResponse:
    """Exchange an email and password for an access token, a refresh token and a session."""
    issued = await identity.login(
        session, email=body.credentials.email, password=body.credentials.password, client=client
    )
    return LoginResponse(
        user=UserOut.model_validate(issued.user),
        tokens=_tokens(issued),
        session=issued.session.id,
        expires_at=issued.access_expires,
    )


@router.get("/session", responses=errors(401))
async def current_session(principal: CurrentPrincipal) -> SessionResponse:
    """The caller's session, user and permissions."""
    return SessionResponse(
        session=SessionOut.model_validate(principal.session),
        user=UserOut.model_validate(principal.user),
        permissions=rbac.permissions_of(principal.role),
        expires_at=principal.session.expires_at,
    )


@router.post("/magic-link", status_code=status.HTTP_202_ACCEPTED, responses=errors(422, 429))
async def magic_link(
    body: MagicLinkRequest, identity: IdentityDep, session: DbSession, client: ClientDep
) -> Accepted:
    """Mail a single-use sign-in link; the answer is the same whether the address exists."""
    await identity.request_magic_link(session, email=body.email, client=client)
    return Accepted(message="If the address has an account, a sign-in link is on its way")


@router.post("/verify-magic", responses=errors(400, 422))
async def verify_magic(
    body: VerifyMagicRequest, identity: IdentityDep, session: DbSession, client: ClientDep
) -> VerifyMagicResponse:
    """Spend a magic link: marks the email verified and opens a session."""
    issued = await identity.verify_magic_link(session, body.token, client=client)
    return VerifyMagicResponse(
        user=UserOut.model_validate(issued.user), tokens=_tokens(issued), session=issued.session.id
    )


@router.post("/refresh", responses=errors(401, 422))
async def refresh(
    body: RefreshRequest, identity: IdentityDep, session: DbSession, client: ClientDep
) -> RefreshResponse:
    """Trade a refresh token for new tokens; the old one is spent, and reuse ends the session."""
    issued = await identity.refresh(session, body.refresh_token, client=client)
    return RefreshResponse(
        tokens=_tokens(issued), session=issued.session.id, expires_at=issued.access_expires
    )


@router.post("/logout", responses=errors(401))
async def logout(
    principal: CurrentPrincipal, identity: IdentityDep, session: DbSession, client: ClientDep
) -> LogoutResponse:
    """End the session: its access and refresh tokens stop working at once."""
    await identity.logout(session, principal, client=client)
    return LogoutResponse()


# -- one's own account -------------------------------------------------------------------------


@router.post("/password", responses=errors(401, 403, 422, 429))
async def change_password(
    body: PasswordChangeRequest,
    principal: CurrentPrincipal,
    identity: IdentityDep,
    session: DbSession,
    client: ClientDep,
) -> PasswordChangeResponse:
    """Change your own password (the current one proves it is you); your other sessions end."""
    ended = await identity.change_password(
        session, principal, current=body.current_password, new=body.new_password, client=client
    )
    return PasswordChangeResponse(sessions_ended=len(ended))


@router.get("/sessions", responses=errors(401))
async def own_sessions(
    principal: CurrentPrincipal, identity: IdentityDep, session: DbSession
) -> OwnSessions:
    """Your live sessions, newest first, with where they were opened and when last used."""
    rows = await identity.sessions_of(session, principal)
    sessions = [
        OwnSessionOut.model_validate(row).model_copy(
            update={"current": row.id == principal.session_id}
        )
        for row in rows
    ]
    return OwnSessions(sessions=sessions, total=len(sessions))


@router.delete("/sessions/{sessionId}", responses=errors(401, 404))
async def revoke_own_session(
    sessionId: str,
    principal: CurrentPrincipal,
    identity: IdentityDep,
    session: DbSession,
    client: ClientDep,
) -> SessionRevoked:
    """End one of your sessions: its tokens and its sockets stop at once."""
    await identity.revoke_own_session(session, principal, sessionId, client=client)
    return SessionRevoked(session_id=sessionId)
