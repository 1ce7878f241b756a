"""Signed tokens (JWT, one audience per purpose) and opaque secrets stored as hashes."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta
from typing import Any, Final

import jwt

from kai.db import utcnow

ALGORITHM: Final = "HS256"
ISSUER: Final = "kai"
ACCESS: Final = "kai:access"
OPAQUE_BYTES: Final = 32  # 256 bits of randomness for refresh tokens and magic links


class InvalidToken(Exception):
    """A token that is forged, expired, malformed or meant for something else."""


class Signer:
    """Issues and checks JWTs; the algorithm is pinned and every claim that matters required."""

    def __init__(self, key: str) -> None:
        self._key = key

    def issue(
        self, audience: str, *, subject: str, ttl: timedelta, **claims: Any
    ) -> tuple[str, datetime]:
        now = utcnow()
        expires = now + ttl
        payload = {
            **claims,
            "iss": ISSUER,
            "aud": audience,
            "sub": subject,
            "iat": int(now.timestamp()),
            "exp": int(expires.timestamp()),
            "jti": secrets.token_hex(8),
        }
        return jwt.encode(payload, self._key, algorithm=ALGORITHM), expires.replace(microsecond=0)

    def verify(
        self, token: str, audience: str, *, required: tuple[str, ...] = ()
    ) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._key,
                algorithms=[ALGORITHM],
                audience=audience,
                issuer=ISSUER,
                options={"require": ["exp", "iat", "aud", "iss", "sub", *required]},
            )
        except jwt.PyJWTError as exc:
            raise InvalidToken(type(exc).__name__) from None
        return claims


def new_secret() -> str:
    """A fresh opaque token for a person to hold."""
    return secrets.token_urlsafe(OPAQUE_BYTES)


def digest(token: str) -> str:
    """How an opaque token is stored: its SHA-256, so a leaked table grants nothing."""
    return hashlib.sha256(token.encode()).hexdigest()
