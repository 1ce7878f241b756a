"""Errors that carry their HTTP status, rendered once as problem+json (RFC 9457)."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any, ClassVar


class KaiError(Exception):
    """Base of every error kai raises on purpose; ``status`` is its HTTP status."""

    status: ClassVar[int] = 500
    title: ClassVar[str | None] = None

    def __init__(
        self,
        detail: str,
        *,
        errors: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
        persist: bool = False,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.persist = persist
        self.errors = errors
        self.headers = headers or {}
        self.extra = extra

    def problem(self) -> dict[str, Any]:
        return problem(self.status, self.detail, title=self.title, errors=self.errors, **self.extra)


class BadRequest(KaiError):
    status = 400


class Unauthorized(KaiError):
    status = 401

    def __init__(self, detail: str = "Authentication failed", **kwargs: Any) -> None:
        kwargs.setdefault("headers", {"WWW-Authenticate": "Bearer"})
        super().__init__(detail, **kwargs)


class Forbidden(KaiError):
    status = 403


class NotFound(KaiError):
    status = 404


class Conflict(KaiError):
    status = 409


class Gone(KaiError):
    status = 410


class PayloadTooLarge(KaiError):
    status = 413


class UnsupportedMediaType(KaiError):
    status = 415


class Unprocessable(KaiError):
    status = 422


class TooManyRequests(KaiError):
    status = 429

    def __init__(self, detail: str, *, retry_after: int, **kwargs: Any) -> None:
        retry_after = max(1, retry_after)
        super().__init__(
            detail, headers={"Retry-After": str(retry_after)}, retryAfter=retry_after, **kwargs
        )


class ServiceUnavailable(KaiError):
    status = 503


class GatewayTimeout(KaiError):
    status = 504


def problem(
    status: int,
    detail: str,
    *,
    title: str | None = None,
    errors: list[dict[str, str]] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The problem+json body for ``status``."""
    phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title or phrase,
        "status": status,
        "detail": detail,
    }
    if errors:
        body["errors"] = errors
    body.update(extra)
    return body
