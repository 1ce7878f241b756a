"""The outermost layer of every HTTP request: request ids, body limits, last-resort errors."""

from __future__ import annotations

import logging
import re
import uuid

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kai.errors import problem

log = logging.getLogger("kai.http")

_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_BODY_METHODS = frozenset({b"POST", b"PUT", b"PATCH"})


class BodyTooLarge(Exception):
    pass


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


def _is_json(content_type: bytes) -> bool:
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or media.endswith(b"+json")


class RequestGuard:
    """Gives each request an id, caps bodies, insists on JSON bodies for the API,
    and turns anything unhandled into a 500 problem that names the request id only."""

    def __init__(self, app: ASGIApp, *, max_body: int, raw_body_paths: tuple[str, ...] = ()) -> None:
        self.app = app
        self.max_body = max_body
        self.raw_body_paths = raw_body_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = (_header(scope, b"x-request-id") or b"").decode("latin-1")
        request_id = given if _SAFE_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", []),
                                      (b"x-request-id", request_id.encode())]
            await send(message)

        async def reply(status: int, detail: str, **extra: object) -> None:
            body = orjson.dumps(problem(status, detail, **extra))
            await send_with_id({"type": "http.response.start", "status": status, "headers": [
                (b"content-type", b"application/problem+json"),
                (b"content-length", str(len(body)).encode()),
            ]})
            await send_with_id({"type": "http.response.body", "body": body})

        refusal = self._refuse(scope)
        if refusal is not None:
            await reply(*refusal)
            return

        seen = 0

        async def counted_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise BodyTooLarge
            return message

        try:
            await self.app(scope, counted_receive, send_with_id)
        except BodyTooLarge:
            if not started:
                await reply(413, f"Request body is larger than {self.max_body} bytes")
        except Exception:
            log.exception("unhandled error in %s %s (request id %s)",
                          scope["method"], scope["path"], request_id)
            if not started:
                await reply(500, "Internal server error", requestId=request_id)

    def _refuse(self, scope: Scope) -> tuple[int, str] | None:
        length = _header(scope, b"content-length")
        if length is not None:
            try:
                if int(length) > self.max_body:
                    return 413, f"Request body is larger than {self.max_body} bytes"
            except ValueError:
                return 400, "Invalid Content-Length header"
        path: str = scope["path"]
        if (
            scope["method"].encode() in _BODY_METHODS
            and path.startswith("/api/")
            and not path.endswith(self.raw_body_paths)
            and (length not in (None, b"0") or _header(scope, b"transfer-encoding"))
        ):
            content_type = _header(scope, b"content-type")
            if content_type is None or not _is_json(content_type):
                return 415, "Request body must be application/json"
        return None
