"""The hub's HTTP server: uvicorn, holding an exposed node's limits before any request reaches
the app.

uvicorn (with httptools) reads a request head of any size for as long as the client sends it,
keeps a connection that never sends a byte open for ever, and lets one address open as many
connections and WebSockets as the process has file descriptors. The protocols here cap each of
these where the bytes arrive, so that one client cannot starve the others:

- a request head larger than ``http_max_head_bytes`` is answered 431 and closed;
- a request head not read within ``http_head_timeout`` (from the connection's start, or from
  the first byte of a following request) is answered 408 (or, silent, just closed);
- one address holds at most ``max_connections_per_address`` connections, the node at most
  ``max_connections``; the next is answered 429 (503) and closed at once;
- one address holds at most ``ws_unauthenticated_per_address`` WebSockets that have not yet
  proved who they are; each may send at most ``ws_first_message_bytes`` until it has, and must
  have done so within ``ws_auth_timeout``.

Addresses in ``trusted_proxies`` are not capped per address: behind a proxy every client has
its address, and the proxy caps its clients itself (docs/security.md).
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Protocol

import httptools
import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.http11 import Request

from kai.config import Settings
from kai.errors import problem
from kai.kit.counters import COUNTS

AUTHENTICATED = "kai.authenticated"
"""The scope extension a WebSocket route calls once the peer has proved who it is."""

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def mark_authenticated(scope: MutableMapping[str, Any]) -> None:
    """Tell the server that this WebSocket's peer has proved who it is: it no longer counts
    against its address's unauthenticated sockets, and may send messages of the full size."""
    callback = scope.get("extensions", {}).get(AUTHENTICATED)
    if callback is not None:
        callback()


@dataclass(frozen=True)
class Limits:
    """The limits before authentication (``Settings``, read once at start)."""

    max_head_bytes: int
    head_timeout: float
    max_connections: int
    connections_per_address: int
    ws_unauthenticated_per_address: int
    ws_first_message_bytes: int
    ws_auth_timeout: float
    ws_max_message_bytes: Callable[[], int]
    exempt: tuple[Network, ...] = ()

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        return cls(
            max_head_bytes=settings.http_max_head_bytes,
            head_timeout=settings.http_head_timeout,
            max_connections=settings.max_connections,
            connections_per_address=settings.max_connections_per_address,
            ws_unauthenticated_per_address=settings.ws_unauthenticated_per_address,
            ws_first_message_bytes=settings.ws_first_message_bytes,
            ws_auth_timeout=settings.ws_auth_timeout,
            # Runtime settings may change either; the largest any socket may take.
            ws_max_message_bytes=lambda: max(
                settings.agent_max_message_bytes, settings.ws_max_message_bytes
            ),
            exempt=settings.proxy_networks,
        )


@dataclass
class Guard:
    """What one server process holds, by client address."""

    limits: Limits
    connections: dict[str, set[object]] = field(default_factory=dict)
    unauthenticated: dict[str, int] = field(default_factory=dict)
    total: int = 0

    def __post_init__(self) -> None:
        exempt = self.limits.exempt

        @lru_cache(maxsize=4096)
        def is_exempt(host: str) -> bool:
            try:
                address = ipaddress.ip_address(host)
            except ValueError:
                return False
            return any(address in network for network in exempt)

        self.is_exempt = is_exempt

    def admit(self, host: str | None, transport: object) -> str | None:
        """Count the connection in; or why it is refused."""
        held = self.connections.get(host or "", ())
        if transport in held:
            return None  # a WebSocket taking over its HTTP connection
        if self.total >= self.limits.max_connections:
            return "node"
        if (
            host is not None
            and len(held) >= self.limits.connections_per_address
            and not self.is_exempt(host)
        ):
            return "address"
        self.connections.setdefault(host or "", set()).add(transport)
        self.total += 1
        return None

    def release(self, host: str | None, transport: object) -> None:
        held = self.connections.get(host or "")
        if held is None or transport not in held:
            return
        held.discard(transport)
        self.total -= 1
        if not held:
            del self.connections[host or ""]

    def admit_unauthenticated(self, host: str | None) -> bool:
        if host is None or self.is_exempt(host):
            return True
        count = self.unauthenticated.get(host, 0)
        if count >= self.limits.ws_unauthenticated_per_address:
            return False
        self.unauthenticated[host] = count + 1
        return True

    def release_unauthenticated(self, host: str | None) -> None:
        if host is None or host not in self.unauthenticated:
            return
        self.unauthenticated[host] -= 1
        if not self.unauthenticated[host]:
            del self.unauthenticated[host]


LINGER = 1.0
"""Seconds a refused connection is read (and what it sends thrown away) before it is closed:
closing a socket with unread bytes resets it, and the client would never read its answer."""
LINGER_BYTES = 256 * 1024
"""What a refused connection may send meanwhile before it is closed at once."""


class Refusing(Protocol):
    transport: asyncio.Transport
    refused: bool
    dropped: int


def _drop(protocol: Refusing, data: bytes) -> None:
    """What a refused connection sent while lingering: thrown away, within a budget."""
    protocol.dropped += len(data)
    if protocol.dropped > LINGER_BYTES:
        protocol.transport.close()


def _refuse(protocol: Refusing, status: int, detail: str) -> None:
    """Answer with a problem and hang up: for a client the app never sees. What the client
    still sends is read and dropped for ``LINGER`` seconds, so that it reads the answer."""
    transport = protocol.transport
    if transport.is_closing() or protocol.refused:
        return
    protocol.refused = True
    protocol.dropped = 0
    body = orjson.dumps(problem(status, detail))
    head = (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
        "content-type: application/problem+json\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    transport.write(head.encode() + body)
    if transport.can_write_eof():
        transport.write_eof()
    asyncio.get_running_loop().call_later(LINGER, transport.close)


_REASONS = {
    408: "Request Timeout",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}
_REFUSALS = {
    "node": (503, "This node holds as many connections as it may; try another or later"),
    "address": (429, "Too many connections from this address"),
}


class HeadTooLarge(Exception):
    """Raised in a parser callback to stop reading a request head past its cap."""


class GuardedHttp(HttpToolsProtocol):
    """uvicorn's httptools protocol with a cap on request heads, a deadline to read them, and
    connections counted by address."""

    guard: Guard  # set on the class that ``protocols()`` makes for one server

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._host = self.client[0] if self.client else None
        self._head_bytes = 0
        self._reading_head = True
        self._began = False  # a byte of the request came
        self._head_size = 0  # the request line and headers the parser has passed on
        self._head_too_large = False
        self._head_timer: asyncio.TimerHandle | None = None
        self.refused = False
        self.dropped = 0
        refusal = self.guard.admit(self._host, transport)
        if refusal is not None:
            COUNTS.connections_refused[refusal] += 1
            self._reading_head = False
            _refuse(self, *_REFUSALS[refusal])
            return
        self._start_head_timer()

    def _start_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(self.guard.limits.head_timeout, self._head_late)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_late(self) -> None:
        self._head_timer = None
        if not self._reading_head or self.transport.is_closing():
            return
        self._reading_head = False
        COUNTS.connections_refused["head_timeout"] += 1
        if self._began:
            _refuse(self, 408, "The request head took too long")
        else:
            self.transport.close()  # a connection that never said anything gets nothing

    def data_received(self, data: bytes) -> None:
        if self.refused:
            _drop(self, data)
            return
        if self._reading_head:
            self._head_bytes += len(data)
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError:
            if not self._head_too_large:
                raise
        except httptools.HttpParserError:
            self.logger.warning("Invalid HTTP request received.")
            self.send_400_response("Invalid HTTP request received.")
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        # A head still coming counts by the bytes received (its header is not complete, so
        # no callback has seen it); a complete one by what the callbacks saw.
        limit = self.guard.limits.max_head_bytes
        if self._head_too_large or (self._reading_head and self._head_bytes > limit):
            self._reading_head = False
            self._stop_head_timer()
            COUNTS.connections_refused["head_size"] += 1
            _refuse(self, 431, f"The request head is larger than {limit} bytes")

    def _count_head(self, size: int) -> None:
        self._head_size += size
        if self._head_size > self.guard.limits.max_head_bytes:
            self._head_too_large = True
            raise HeadTooLarge  # stops the parser; ``data_received`` answers

    def on_url(self, url: bytes) -> None:
        self._count_head(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_message_begin(self) -> None:
        if not self._reading_head:  # the first byte of a following request on this connection
            self._reading_head = True
            self._head_bytes = 0
        self._head_size = 0
        self._began = True
        if self._head_timer is None:
            self._start_head_timer()
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._reading_head = False
        self._began = False
        self._stop_head_timer()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        self.guard.release(self._host, self.transport)
        super().connection_lost(exc)


class GuardedWebSocket(WebSocketsSansIOProtocol):
    """uvicorn's WebSocket protocol, holding a socket to small messages, a deadline and a
    per-address count until the route says its peer has authenticated."""

    guard: Guard

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.conn.max_message_size = self.guard.limits.ws_first_message_bytes
        self._authenticated = False
        self._counted = False
        self.refused = False
        self.dropped = 0
        self._auth_timer: asyncio.TimerHandle | None = None
        self._host: str | None = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._host = self.client[0] if self.client else None
        self.guard.admit(self._host, transport)  # already counted as its HTTP connection
        if not self.guard.admit_unauthenticated(self._host):
            COUNTS.connections_refused["ws_unauthenticated"] += 1
            _refuse(self, 429, "Too many unauthenticated WebSockets from this address")
            return
        self._counted = True
        self._auth_timer = self.loop.call_later(self.guard.limits.ws_auth_timeout, self._late)

    def data_received(self, data: bytes) -> None:
        if self.refused:
            _drop(self, data)
        else:
            super().data_received(data)

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:
            scope["extensions"][AUTHENTICATED] = self._on_authenticated

    def _on_authenticated(self) -> None:
        if self._authenticated:
            return
        self._authenticated = True
        self.conn.max_message_size = self.guard.limits.ws_max_message_bytes()
        self._release()

    def _release(self) -> None:
        if self._auth_timer is not None:
            self._auth_timer.cancel()
            self._auth_timer = None
        if self._counted:
            self._counted = False
            self.guard.release_unauthenticated(self._host)

    def _late(self) -> None:
        self._auth_timer = None
        if self._authenticated or self.transport.is_closing():
            return
        COUNTS.connections_refused["ws_auth_timeout"] += 1
        if self.handshake_complete and not self.close_sent:
            self.close_sent = True
            self.conn.send_close(1008, "Authentication took too long")
            self.transport.write(b"".join(self.conn.data_to_send()))
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._release()
        self.guard.release(self._host, self.transport)
        super().connection_lost(exc)


def protocols(settings: Settings) -> tuple[type[GuardedHttp], type[GuardedWebSocket]]:
    """The HTTP and WebSocket protocol classes of one server, sharing one guard."""
    guard = Guard(Limits.of(settings))
    http = type("Http", (GuardedHttp,), {"guard": guard})
    ws = type("WebSocket", (GuardedWebSocket,), {"guard": guard})
    return http, ws
