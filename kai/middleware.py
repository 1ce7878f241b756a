"""The outermost layer of every HTTP request: request ids, body limits, last-resort errors."""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable, Sequence

import orjson
import structlog
from fastapi.routing import APIRoute
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kai.errors import problem
from kai.kit.counters import COUNTS

log = logging.getLogger("kai.http")
access = logging.getLogger("kai.access")

_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})

STREAMED_BODY = "x-kai-streamed-body"
"""Set in a route's ``openapi_extra``: it reads its own body as a stream, of any type."""

StreamedRoute = tuple[re.Pattern[str], frozenset[str]]


def streamed_routes(routes: Iterable[BaseRoute]) -> list[StreamedRoute]:
    """The path patterns and methods of the routes that declare ``STREAMED_BODY``, through
    included routers too (kai includes its routers without a prefix)."""
    found: list[StreamedRoute] = []
    for route in routes:
        included = getattr(route, "original_router", None)  # FastAPI's included routers
        if included is not None:
            found += streamed_routes(included.routes)
        elif isinstance(route, APIRoute) and (route.openapi_extra or {}).get(STREAMED_BODY):
            found.append((route.path_regex, frozenset(route.methods or ())))
    return found


class BodyTooLarge(HTTPException):
    """A body outgrew the limit while being read.

    An HTTP error, because FastAPI turns any other error met while reading a body into a 400;
    this one it re-raises, so the problem handler answers 413.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"Request body is larger than {limit} bytes")


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


def _is_json(content_type: bytes) -> bool:
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or media.endswith(b"+json")


class _Exchange:
    """One request's send side: stamps the request id and remembers whether it has started."""

    def __init__(self, send: Send, request_id: str) -> None:
        self._send = send
        self.request_id = request_id
        self.started = False
        self.status = 500

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
            self.status = int(message["status"])
            headers = [*message.get("headers", []), (b"x-request-id", self.request_id.encode())]
            message = {**message, "headers": headers}
        await self._send(message)

    async def problem(self, status: int, detail: str, *, with_id: bool = False) -> None:
        content = problem(status, detail)
        if with_id:
            content["requestId"] = self.request_id
        body = orjson.dumps(content)
        headers = [
            (b"content-type", b"application/problem+json"),
            (b"content-length", str(len(body)).encode()),
        ]
        await self.send({"type": "http.response.start", "status": status, "headers": headers})
        await self.send({"type": "http.response.body", "body": body})


class RequestGuard:
    """Gives each request an id, caps bodies, insists on JSON bodies for the API, and turns
    anything unhandled into a 500 problem that names the request id and nothing else."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body: int,
        streamed_routes: Sequence[StreamedRoute] = (),
        streamed_max_body: Callable[[], int] = lambda: 0,
    ) -> None:
        self.app = app
        self.max_body = max_body
        # The routes declared to read their body as a stream (uploads, ``streamed_body``): any
        # content type, a cap of their own. Only those: a path that merely looks like one is
        # held to the JSON rules.
        self.streamed_routes = streamed_routes
        self.streamed_max_body = streamed_max_body

    def _streamed(self, scope: Scope) -> bool:
        method, path = scope["method"], scope["path"]
        return method in _BODY_METHODS and any(
            method in methods and pattern.match(path) for pattern, methods in self.streamed_routes
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = (_header(scope, b"x-request-id") or b"").decode("latin-1")
        exchange = _Exchange(send, given if _SAFE_ID.match(given) else uuid.uuid4().hex)
        scope.setdefault("state", {})["request_id"] = exchange.request_id
        streamed = self._streamed(scope)
        cap = self.streamed_max_body() if streamed else self.max_body
        refusal = self._refuse(scope, cap, streamed=streamed)
        if refusal is not None:
            await exchange.problem(*refusal)
            return
        seen = 0

        async def counted_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > cap:
                    raise BodyTooLarge(cap)
            return message

        started = time.perf_counter()
        try:
            with structlog.contextvars.bound_contextvars(request_id=exchange.request_id):
                await self.app(scope, counted_receive, exchange.send)
        except BodyTooLarge:
            if not exchange.started:
                await exchange.problem(413, _too_large(cap))
        except Exception as exc:
            if isinstance(exc, SQLAlchemyError):
                COUNTS.database_errors += 1
            log.exception(
                "unhandled error in %s %s (request id %s)",
                scope["method"],
                scope["path"],
                exchange.request_id,
                extra={"request_id": exchange.request_id},
            )
            if not exchange.started:
                await exchange.problem(500, "Internal server error", with_id=True)
        finally:
            elapsed = round((time.perf_counter() - started) * 1000, 2)
            access.info(
                "%s %s %s %.2fms",
                scope["method"],
                scope["path"],
                exchange.status,
                elapsed,
                extra={
                    "request_id": exchange.request_id,
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": exchange.status,
                    "duration_ms": elapsed,
                },
            )

    def _refuse(self, scope: Scope, cap: int, *, streamed: bool) -> tuple[int, str] | None:
        query: bytes = scope.get("query_string", b"")
        if "\x00" in scope["path"] or b"%00" in query or b"\x00" in query:
            # PostgreSQL text cannot hold NUL: refuse it here rather than fail in a query.
            return 400, "Request URL contains a NUL character"
        length = _header(scope, b"content-length")
        if length is not None:
            try:
                # Only a method that carries a body is refused for its size: no route reads
                # the body of a GET, and the server throws it away unread.
                if int(length) > cap and scope["method"] in _BODY_METHODS:
                    return 413, _too_large(cap)
            except ValueError:
                return 400, "Invalid Content-Length header"
        path: str = scope["path"]
        has_body = length not in (None, b"0") or _header(scope, b"transfer-encoding") is not None
        if (
            has_body
            and scope["method"] in _BODY_METHODS
            and path.startswith("/api/")
            and not streamed
        ):
            content_type = _header(scope, b"content-type")
            if content_type is None or not _is_json(content_type):
                return 415, "Request body must be application/json"
        return None


def _too_large(cap: int) -> str:
    return f"Request body is larger than {cap} bytes"
