"""Wire models of the auth, users and audit routes."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, ConfigDict, EmailStr, Field, StringConstraints, field_validator

from kai.auth.passwords import MAX_LENGTH, MIN_LENGTH
from kai.auth.rbac import Role
from kai.schemas import Body, Page, Wire

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


class _EmailBody(Body):
    # Passwords keep their spaces: only their length is checked.
    model_config = ConfigDict(**{**Body.model_config, "str_strip_whitespace": False})

    email: EmailStr

    @field_validator("email")
    @classmethod
    def _lower(cls, value: str) -> str:
        return value.lower()


class UserData(_EmailBody):
    password: Password = Field(examples=["correct horse battery"])
    name: Name | None = None


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


class AuditPage(Page):
    events: list[AuditEventOut]
