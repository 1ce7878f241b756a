"""Wire models of the auth, users and audit routes."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, ConfigDict, EmailStr, Field, StringConstraints, field_validator

from kai.auth.passwords import MAX_LENGTH, MIN_LENGTH
from kai.auth.rbac import Role
from kai.kit.schemas import Body, Page, Wire

Password = Annotated[str, Field(min_length=MIN_LENGTH, max_length=MAX_LENGTH)]
AnyPassword = Annotated[str, Field(min_length=1, max_length=MAX_LENGTH)]


def _no_control_characters(value: str) -> str:
    # PostgreSQL text cannot hold NUL, and no name needs a control character.
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError("must not contain control characters")
    return value


Name = Annotated[
    str, StringConstraints(min_length=1, max_length=200), AfterValidator(_no_control_characters)
]
OpaqueToken = Annotated[str, Field(min_length=1, max_length=512)]


class _SecretBody(Body):
    # Passwords keep their spaces: the policy checks them as typed.
    model_config = ConfigDict(**{**Body.model_config, "str_strip_whitespace": False})


class _EmailBody(_SecretBody):
    email: EmailStr

    @field_validator("email")
    @classmethod
    def _lower(cls, value: str) -> str:
        return value.lower()


class UserData(_EmailBody):
    password: Password = Field(examples=["correct horse battery"])
    name: Name | None = None
    invite: OpaqueToken | None = Field(
        default=None, description="An admin's invite code (needed with KAI_REGISTRATION=invite)"
    )


class RegisterRequest(Body):
    user_data: UserData


class Credentials(_EmailBody):
    password: AnyPassword


class LoginRequest(Body):
    credentials: Credentials


class MagicLinkRequest(_EmailBody):
    pass


class VerifyMagicRequest(Body):
    token: OpaqueToken


class RefreshRequest(Body):
    refresh_token: OpaqueToken


class UserOut(Wire):
    id: str
    email: str
    name: str | None
    role: Role
    email_verified: bool
    created_at: datetime


class TokenOut(Wire):
    token: str
    expires_at: datetime


class Tokens(Wire):
    access_token: TokenOut
    refresh_token: TokenOut


class RegisterResponse(Wire):
    success: Literal[True] = True
    user: UserOut
    requires_verification: bool
    message: str = "Registration successful"


class LoginResponse(Wire):
    success: Literal[True] = True
    user: UserOut
    tokens: Tokens
    session: str
    expires_at: datetime


class VerifyMagicResponse(Wire):
    success: Literal[True] = True
    user: UserOut
    tokens: Tokens
    session: str


class RefreshResponse(Wire):
    success: Literal[True] = True
    tokens: Tokens
    session: str
    expires_at: datetime


class SessionOut(Wire):
    id: str
    created_at: datetime
    expires_at: datetime


class SessionResponse(Wire):
    valid: Literal[True] = True
    session: SessionOut
    user: UserOut
    permissions: list[str]
    expires_at: datetime


class Accepted(Wire):
    success: Literal[True] = True
    message: str


class LogoutResponse(Wire):
    success: Literal[True] = True
    message: str = "Logout successful"


class AdminUserOut(UserOut):
    disabled: bool
    updated_at: datetime


class UsersPage(Page):
    users: list[AdminUserOut]


class UserUpdate(Body):
    role: Role | None = None
    disabled: bool | None = None
    name: Name | None = None


class UserUpdateResponse(Wire):
    success: Literal[True] = True
    user: AdminUserOut
    updated_fields: list[str]


class AuditEventOut(Wire):
    id: int
    timestamp: datetime
    kind: Literal["permission", "auth"]
    user_id: str | None
    permission: str
    resource: str | None
    granted: bool
    client_ip: str | None
    detail: str | None
    count: int = Field(
        default=1,
        description="Attempts this entry stands for: failed anonymous attempts of one action"
        " from one address are counted per window, from the first counted one's time",
    )


class AuditPage(Page):
    events: list[AuditEventOut]


# -- one's own account -------------------------------------------------------------------------


class PasswordChangeRequest(_SecretBody):
    current_password: AnyPassword | None = Field(
        default=None, description="Needed unless the account has no password yet"
    )
    new_password: Password = Field(examples=["a new and longer passphrase"])


class PasswordChangeResponse(Wire):
    success: Literal[True] = True
    message: str = "Password changed"
    sessions_ended: int = Field(description="How many of your other sessions ended")


class OwnSessionOut(Wire):
    id: str
    created_at: datetime
    expires_at: datetime
    last_used_at: datetime | None = Field(description="When it last got tokens (login, refresh)")
    client_ip: str | None
    user_agent: str | None
    current: bool = Field(default=False, description="Whether this is the session asking")


class OwnSessions(Wire):
    sessions: list[OwnSessionOut]
    total: int


class SessionRevoked(Wire):
    success: Literal[True] = True
    session_id: str


# -- invites -----------------------------------------------------------------------------------


class InviteCreate(Body):
    email: EmailStr | None = Field(default=None, description="Only this address may use it")
    note: Name | None = None
    ttl: int | None = Field(
        default=None, ge=60, le=365 * 86400, description="Lifetime, s (default KAI_INVITE_TTL)"
    )

    @field_validator("email")
    @classmethod
    def _lower(cls, value: str | None) -> str | None:
        return value.lower() if value else value


class InviteOut(Wire):
    id: str
    email: str | None
    note: str | None
    created_by: str | None
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None
    used_by: str | None
    revoked_at: datetime | None
    state: Literal["open", "used", "revoked", "expired"]


class InviteCreated(Wire):
    success: Literal[True] = True
    invite: InviteOut
    code: str = Field(description="The invite code, shown once: only its hash is kept")


class InvitesPage(Page):
    invites: list[InviteOut]


class InviteRevoked(Wire):
    success: Literal[True] = True
    invite: InviteOut
