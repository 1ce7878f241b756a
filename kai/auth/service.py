"""Identity logic: registration, login, sessions, refresh, magic links, users.

Callers own the transaction: these functions flush, never commit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from kai.auth import invites, rbac, store
from kai.auth.audit import AuditLog
from kai.auth.mail import Mail, Outbox
from kai.auth.models import MagicLink, RefreshToken, Session, User
from kai.auth.passwords import Passwords, check_password
from kai.auth.rbac import Role
from kai.auth.tokens import ACCESS, InvalidToken, Signer, digest, new_secret
from kai.config import Settings
from kai.db import Database, after_commit, new_id
from kai.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    TooManyRequests,
    Unauthorized,
    Unprocessable,
)
from kai.kit.clock import Clock
from kai.kit.ratelimit import Limiter

LOGIN_FAILED = "Authentication failed"
SESSION_INVALID = "Invalid or expired session"
MAGIC_INVALID = "Invalid or expired magic link"
REGISTRATION_CLOSED = "Registration is closed: an admin creates accounts"

# What a mailed link is for: (stored purpose, subject, the mail's first line).
_LINK_MAILS = {
    "verify": (
        "verify",
        "Confirm your kai account",
        "Confirm your email address and sign in to kai with this link:",
    ),
    "login": ("login", "Your kai sign-in link", "Sign in to kai with this link:"),
    "taken": (
        "login",
        "Your kai account",
        "Someone asked to create a kai account for this address, which has one already. "
        "If it was you, sign in with this link:",
    ),
}


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the user as of this request, and the session they hold."""

    user: User
    session: Session

    @property
    def user_id(self) -> str:
        return self.user.id

    @property
    def role(self) -> str:
        return self.user.role

    @property
    def session_id(self) -> str:
        return self.session.id


@dataclass(frozen=True, slots=True)
class Issued:
    """A session together with the tokens just minted for it."""

    user: User
    session: Session
    access_token: str
    access_expires: datetime
    refresh_token: str
    refresh_expires: datetime


@dataclass(frozen=True, slots=True)
class Client:
    """Where a request came from, for throttling and the audit log."""

    ip: str | None = None
    user_agent: str | None = None


class Identity:
    """Everything about who someone is and how they prove it."""

    def __init__(
        self,
        settings: Settings,
        *,
        db: Database,
        passwords: Passwords,
        signer: Signer,
        audit: AuditLog,
        outbox: Outbox,
        limiter: Limiter,
        clock: Clock,
    ) -> None:
        self.settings = settings
        self.clock = clock  # what sessions, links and their expiries are timed by
        self.db = db
        self.passwords = passwords
        self.signer = signer
        self.audit = audit
        self.outbox = outbox
        self.limiter = limiter
        # Told which live sockets to close (a session or user): set by the hub to its broker.
        self.kicks: Callable[[dict[str, Any]], None] | None = None
        # Told to close a user's connected agents on every node: set by the hub to its relay.
        self.close_agents_of: Callable[[str], None] | None = None

    def _kick_after_commit(self, session: AsyncSession, **target: Any) -> None:
        kicks = self.kicks
        if kicks is not None:
            after_commit(session, lambda: kicks(target))

    # -- registration and login -------------------------------------------------------------

    async def register(
        self,
        session: AsyncSession,
        *,
        email: str,
        password: str,
        name: str | None,
        client: Client,
        invite: str | None = None,
    ) -> User:
        """A new account, as ``KAI_REGISTRATION`` allows. Where addresses are proven, a taken
        address gets the same answer as a new one (a user never stored), and its owner a mail."""
        policy = self.settings.registration
        if policy == "closed":
            self.audit.auth(
                "register", ok=False, resource=email, client_ip=client.ip, detail="closed"
            )
            raise Forbidden(REGISTRATION_CLOSED)
        await self._throttle("register", email=email, client=client)
        self.accept_password(password, email=email, field="userData.password")
        held = await invites.spend(session, invite, email=email) if policy == "invite" else None
        existing = await store.user_by_email(session, email)
        if existing is not None and self.settings.verification_required:
            return await self._taken(session, existing, password=password, name=name, client=client)
        if existing is not None:
            raise Conflict("Email already registered")
        user = User(
            email=email,
            name=name,
            password_hash=await self.passwords.hash(password),
            role=Role.USER,
            email_verified=False,
        )
        session.add(user)
        try:
            await session.flush()
        except IntegrityError:
            raise Conflict("Email already registered") from None
        if held is not None:
            held.used_by = user.id
        self.audit.auth(
            "register",
            ok=True,
            user_id=user.id,
            client_ip=client.ip,
            detail=f"invite:{held.id}" if held else None,
        )
        if self.settings.verification_required:
            await self._mail_link(session, user, kind="verify")
        return user

    async def _taken(
        self, session: AsyncSession, owner: User, *, password: str, name: str | None, client: Client
    ) -> User:
        # The hash is spent anyway so that both answers cost the same.
        await self.passwords.hash(password)
        if not owner.disabled:
            await self._mail_link(session, owner, kind="taken")
        self.audit.auth(
            "register", ok=False, user_id=owner.id, client_ip=client.ip, detail="address taken"
        )
        now = self.clock.now()
        return User(
            id=new_id(),
            email=owner.email,
            name=name,
            role=Role.USER,
            email_verified=False,
            disabled=False,
            created_at=now,
            updated_at=now,
        )

    def accept_password(self, password: str, *, email: str, field: str) -> None:
        """Refuse (422, naming the rule) a password the policy does not take."""
        rejected = check_password(
            password, email=email, min_length=self.settings.password_min_length
        )
        if rejected is not None:
            raise Unprocessable(
                rejected.message,
                errors=[{"field": field, "message": rejected.message, "rule": rejected.rule}],
            )

    async def login(
        self, session: AsyncSession, *, email: str, password: str, client: Client
    ) -> Issued:
        await self._throttle("login", email=email, client=client)
        user = await store.user_by_email(session, email)
        matches = await self.passwords.verify(password, user.password_hash if user else None)
        if user is None or not matches or user.disabled:
            self.audit.auth(
                "login",
                ok=False,
                user_id=user.id if user else None,
                resource=email,
                client_ip=client.ip,
                detail="disabled" if user and matches else "bad credentials",
            )
            raise Unauthorized(LOGIN_FAILED)
        if self.settings.verification_required and not user.email_verified:
            self.audit.auth(
                "login", ok=False, user_id=user.id, client_ip=client.ip, detail="email not verified"
            )
            raise Forbidden("Email address not verified")
        issued = await self._open_session(session, user, client)
        self.audit.auth("login", ok=True, user_id=user.id, client_ip=client.ip)
        return issued

    async def _throttle(self, action: str, *, email: str, client: Client) -> None:
        capacity, per = self.settings.auth_rate_limit, float(self.settings.auth_rate_window)
        keys = [f"{action}:account:{email}"]
        if client.ip:
            keys.append(f"{action}:ip:{client.ip}")
        for key in keys:
            verdict = await self.limiter.hit(key, capacity=capacity, per=per)
            if not verdict.allowed:
                self.audit.auth(
                    action, ok=False, resource=email, client_ip=client.ip, detail="throttled"
                )
                raise TooManyRequests(
                    "Too many attempts; try again later", retry_after=verdict.retry_after_seconds
                )

    # -- sessions and tokens ----------------------------------------------------------------

    async def _open_session(self, session: AsyncSession, user: User, client: Client) -> Issued:
        now = self.clock.now()
        row = Session(
            user_id=user.id,
            created_at=now,
            expires_at=now + timedelta(seconds=self.settings.session_ttl),
            client_ip=client.ip,
            user_agent=(client.user_agent or "")[:300] or None,
            last_used_at=now,
        )
        session.add(row)
        await session.flush()
        return await self._issue(session, user, row)

    async def _issue(self, session: AsyncSession, user: User, row: Session) -> Issued:
        now = self.clock.now()
        row.last_used_at = now
        access_ttl = min(timedelta(seconds=self.settings.access_token_ttl), row.expires_at - now)
        access, access_expires = self.signer.issue(
            ACCESS, subject=user.id, ttl=access_ttl, sid=row.id
        )
        refresh = new_secret()
        refresh_expires = min(
            now + timedelta(seconds=self.settings.refresh_token_ttl), row.expires_at
        )
        session.add(
            RefreshToken(
                session_id=row.id,
                token_hash=digest(refresh),
                created_at=now,
                expires_at=refresh_expires,
            )
        )
        await session.flush()
        return Issued(user, row, access, access_expires, refresh, refresh_expires)

    async def authenticate(self, session: AsyncSession, token: str) -> Principal:
        """The principal behind an access token, checked against its live session."""
        try:
            claims = self.signer.verify(token, ACCESS, required=("sid",))
        except InvalidToken:
            raise Unauthorized(SESSION_INVALID) from None
        found = await store.live_session(session, str(claims["sid"]), self.clock.now())
        if found is None:
            raise Unauthorized(SESSION_INVALID)
        row, user = found
        if user.id != claims["sub"] or user.disabled:
            raise Unauthorized(SESSION_INVALID)
        return Principal(user, row)

    async def refresh(self, session: AsyncSession, token: str, *, client: Client) -> Issued:
        now = self.clock.now()
        held = await store.refresh_token(session, digest(token))
        if held is None:
            raise Unauthorized("Invalid refresh token")
        found = await store.live_session(session, held.session_id, now)
        if held.spent_at is not None or not await store.spend_refresh_token(session, held.id, now):
            # A spent token came back: whoever holds it may be a thief. End the session.
            await store.revoke_session(session, held.session_id, reason="refresh_reuse", now=now)
            self._kick_after_commit(
                session, sessionId=held.session_id, code=4001, reason="Session ended"
            )
            user_id = found[1].id if found else None
            self.audit.auth(
                "refresh_reuse",
                ok=False,
                user_id=user_id,
                client_ip=client.ip,
                resource=f"session:{held.session_id}",
            )
            raise Unauthorized("Invalid refresh token", persist=True)
        if found is None or held.expires_at <= now or found[1].disabled:
            raise Unauthorized("Invalid refresh token")
        row, user = found
        self.audit.auth("refresh", ok=True, user_id=user.id, client_ip=client.ip)
        return await self._issue(session, user, row)

    async def logout(self, session: AsyncSession, principal: Principal, *, client: Client) -> None:
        await store.revoke_session(
            session, principal.session_id, reason="logout", now=self.clock.now()
        )
        self._kick_after_commit(
            session, sessionId=principal.session_id, code=4001, reason="Session ended"
        )
        self.audit.auth("logout", ok=True, user_id=principal.user_id, client_ip=client.ip)

    # -- magic links -------------------------------------------------------------------------

    async def request_magic_link(
        self, session: AsyncSession, *, email: str, client: Client
    ) -> None:
        """Mail a login link if the account exists; the caller cannot tell whether it does.

        Past the throttle the request does nothing else: finding the account, storing the link
        and sending it happen in the background, so both answers take the same time.
        """
        await self._throttle("magic_link", email=email, client=client)
        self.outbox.compose(lambda: self._magic_link_mail(email, client))

    async def _magic_link_mail(self, email: str, client: Client) -> Mail | None:
        async with self.db.session() as session:
            user = await store.user_by_email(session, email)
            mail = None
            if user is not None and not user.disabled:
                mail = await self._link_mail(session, user, kind="login")
            self.audit.auth(
                "magic_link_requested",
                ok=True,
                user_id=user.id if user else None,
                resource=email,
                client_ip=client.ip,
            )
        return mail  # sent once the link is committed

    async def _mail_link(self, session: AsyncSession, user: User, *, kind: str) -> None:
        """Store a link for ``user`` and mail it once the transaction commits."""
        mail = await self._link_mail(session, user, kind=kind)
        after_commit(session, lambda: self.outbox.post(mail))

    async def _link_mail(self, session: AsyncSession, user: User, *, kind: str) -> Mail:
        """A new single-use link for ``user`` (voiding older ones), and the mail that holds it."""
        purpose, subject, intro = _LINK_MAILS[kind]
        now = self.clock.now()
        await store.void_magic_links(session, user.id, now)
        token = new_secret()
        session.add(
            MagicLink(
                user_id=user.id,
                token_hash=digest(token),
                purpose=purpose,
                created_at=now,
                expires_at=now + timedelta(seconds=self.settings.magic_link_ttl),
            )
        )
        await session.flush()
        minutes = self.settings.magic_link_ttl // 60
        link = f"{self.settings.base_url}/login/magic#token={token}"
        body = (
            f"{intro}\n\n{link}\n\nIt works once, for {minutes} minutes. To use it from a "
            f'program, POST {{"token": "{token}"}} to /api/auth/verify-magic.\n'
            "If you did not ask for it, ignore this mail.\n"
        )
        return Mail(to=user.email, subject=subject, body=body)

    async def verify_magic_link(
        self, session: AsyncSession, token: str, *, client: Client
    ) -> Issued:
        link = await store.spend_magic_link(session, digest(token), self.clock.now())
        user = await store.user_by_id(session, link.user_id) if link else None
        if link is None or user is None or user.disabled:
            self.audit.auth("magic_link", ok=False, client_ip=client.ip, detail="invalid")
            raise BadRequest(MAGIC_INVALID)
        if not user.email_verified:
            await self._first_proof(session, user, confirms_registration=link.purpose == "verify")
        user.email_verified = True
        issued = await self._open_session(session, user, client)
        self.audit.auth(
            "magic_link", ok=True, user_id=user.id, client_ip=client.ip, detail=link.purpose
        )
        return issued

    async def _first_proof(
        self, session: AsyncSession, user: User, *, confirms_registration: bool
    ) -> None:
        """The address of an account never verified is proven for the first time: whoever set
        its password or holds its sessions may not be the address's owner (account
        pre-hijacking), so the sessions end, and the password goes unless the link is the one
        mailed to confirm the registration that set it."""
        discarded = user.password_hash is not None and not confirms_registration
        if discarded:
            user.password_hash = None
        ended = await store.revoke_user_sessions(
            session, user.id, reason="address_proven", now=self.clock.now()
        )
        if ended:
            self._kick_after_commit(session, userId=user.id, code=4001, reason="Session ended")
        self.audit.auth(
            "address_proven",
            ok=True,
            user_id=user.id,
            detail=f"password {'discarded' if discarded else 'kept'}, {len(ended)} sessions ended",
        )

    # -- users -------------------------------------------------------------------------------

    async def create_user(
        self,
        session: AsyncSession,
        *,
        email: str,
        password: str,
        role: Role,
        name: str | None = None,
        verified: bool = True,
        check_policy: bool = True,
    ) -> User:
        """An account made by an admin or the CLI, whatever ``KAI_REGISTRATION`` says."""
        if check_policy:
            self.accept_password(password, email=email, field="password")
        if await store.user_by_email(session, email) is not None:
            raise Conflict("Email already registered")
        user = User(
            email=email,
            name=name,
            password_hash=await self.passwords.hash(password),
            role=role,
            email_verified=verified,
        )
        session.add(user)
        await session.flush()
        return user

    async def update_user(
        self,
        session: AsyncSession,
        user_id: str,
        *,
        role: Role | None = None,
        disabled: bool | None = None,
        name: str | None = None,
    ) -> tuple[User, list[str]]:
        """Change a user's role, disabled flag or name; returns the user and what changed."""
        user = await store.user_by_id(session, user_id)
        if user is None:
            raise NotFound("User not found")
        if (role is not None and role != Role.ADMIN) or disabled is True:
            # Locked, then counted: two admins demoting each other at once are served in turn.
            admins = await store.lock_active_admins(session)
            if user.id in admins and len(admins) <= 1:
                raise Conflict("The last active admin cannot be demoted or disabled")
        changed: list[str] = []
        if role is not None and role != user.role:
            user.role = role
            changed.append("role")
            if not rbac.allowed(role, "agents:read"):
                self._kick_after_commit(session, userId=user.id, code=4003, reason="Access revoked")
        if disabled is not None and disabled != user.disabled:
            user.disabled = disabled
            changed.append("disabled")
            if disabled:
                await store.revoke_user_sessions(
                    session, user.id, reason="disabled", now=self.clock.now()
                )
                self._kick_after_commit(session, userId=user.id, code=4001, reason="Session ended")
                close = self.close_agents_of
                if close is not None:
                    owner = user.id
                    after_commit(session, lambda: close(owner))
        if name is not None and name != user.name:
            user.name = name
            changed.append("name")
        await session.flush()
        return user, changed

    async def set_password(self, session: AsyncSession, user: User, password: str) -> None:
        """An admin's reset: every session of the account ends."""
        self.accept_password(password, email=user.email, field="password")
        user.password_hash = await self.passwords.hash(password)
        await store.revoke_user_sessions(session, user.id, reason="password", now=self.clock.now())
        self._kick_after_commit(session, userId=user.id, code=4001, reason="Session ended")
        await session.flush()

    # -- one's own account --------------------------------------------------------------------

    async def change_password(
        self,
        session: AsyncSession,
        principal: Principal,
        *,
        current: str | None,
        new: str,
        client: Client,
    ) -> list[str]:
        """Change the caller's password, proven by the current one (not needed by an account
        that has none, such as one whose address a magic link proved); the caller's other
        sessions end. Returns their ids."""
        user = await store.user_by_id(session, principal.user_id)
        if user is None:
            raise Unauthorized(SESSION_INVALID)
        await self._throttle("password", email=user.email, client=client)
        if user.password_hash is not None and not await self.passwords.verify(
            current or "", user.password_hash
        ):
            self.audit.auth(
                "password_change",
                ok=False,
                user_id=user.id,
                client_ip=client.ip,
                detail="wrong current password",
            )
            raise Forbidden("The current password is not right")
        self.accept_password(new, email=user.email, field="newPassword")
        user.password_hash = await self.passwords.hash(new)
        now = self.clock.now()
        ended = await store.revoke_user_sessions(
            session, user.id, reason="password", now=now, keep=principal.session_id
        )
        for session_id in ended:
            self._kick_after_commit(
                session, sessionId=session_id, code=4001, reason="Session ended"
            )
        await session.flush()
        self.audit.auth(
            "password_change",
            ok=True,
            user_id=user.id,
            client_ip=client.ip,
            detail=f"{len(ended)} other sessions ended",
        )
        return ended

    async def sessions_of(self, session: AsyncSession, principal: Principal) -> Sequence[Session]:
        """The caller's live sessions, newest first."""
        return await store.live_sessions(session, principal.user_id, self.clock.now())

    async def revoke_own_session(
        self, session: AsyncSession, principal: Principal, session_id: str, *, client: Client
    ) -> None:
        """End one of the caller's sessions (anyone else's is not found)."""
        revoked = await store.revoke_session(
            session, session_id, reason="revoked", now=self.clock.now(), user_id=principal.user_id
        )
        if not revoked:
            raise NotFound("Session not found")
        self._kick_after_commit(session, sessionId=session_id, code=4001, reason="Session ended")
        self.audit.auth(
            "session_revoked",
            ok=True,
            user_id=principal.user_id,
            resource=f"session:{session_id}",
            client_ip=client.ip,
        )
