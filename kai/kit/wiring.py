"""What a part plugs into the hub when it registers: services, handlers of control messages
from other nodes, background loops, writers, and what runs when the hub starts and stops.

Each part has one ``register()`` that builds its services and hands them, and what they need
run, to a ``Wiring`` (its routers are a constant beside it, ``ROUTERS``, as the app mounts
them before anything is built); the container starts and stops everything the parts
registered, in order, so no part is wired by hand in the app.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from pydantic import ValidationError
from starlette.requests import HTTPConnection

from kai.kit.batch import BatchWriter
from kai.protocol.control import CONTROL, CONTROL_OPS

BrokerListener = Callable[[dict[str, Any]], Any]
ControlHandler = Callable[[Any], Awaitable[None]]
Hook = Callable[[], Awaitable[None]]
T = TypeVar("T")
C = TypeVar("C")
log = logging.getLogger("kai.wiring")


@dataclass(frozen=True, slots=True)
class LoopSpec:
    name: str
    every: float
    work: Callable[[], Awaitable[object]]


@dataclass(frozen=True, slots=True)
class NamedWriter:
    name: str
    writer: BatchWriter[Any]


@dataclass
class Wiring:
    """Everything the parts registered, in the order they registered it."""

    state: dict[str, Any] = field(default_factory=dict)
    controls: dict[type[Any], list[ControlHandler]] = field(default_factory=dict)
    loops: list[LoopSpec] = field(default_factory=list)
    writers: list[NamedWriter] = field(default_factory=list)
    on_start: list[Hook] = field(default_factory=list)
    on_stop: list[Hook] = field(default_factory=list)

    def provide(self, **services: Any) -> None:
        """Offer services to routes and sockets (see ``provided``)."""
        for name, service in services.items():
            if name in self.state:
                raise ValueError(f"{name!r} is provided twice")
            self.state[name] = service

    def on_control(self, kind: type[C], handler: Callable[[C], Awaitable[None]]) -> None:
        """Hear the control messages of class ``kind`` (kai/protocol/control.py) from any node."""
        self.controls.setdefault(kind, []).append(handler)

    def loop(self, name: str, *, every: float, work: Callable[[], Awaitable[object]]) -> None:
        self.loops.append(LoopSpec(name, every, work))

    def writer(self, name: str, writer: BatchWriter[Any]) -> None:
        """A write-behind writer: started with the hub, flushed and closed when it stops."""
        self.writers.append(NamedWriter(name, writer))

    def starting(self, hook: Hook) -> None:
        self.on_start.append(hook)

    def stopping(self, hook: Hook) -> None:
        """Run when the hub stops, before the writers close (the last registered runs first)."""
        self.on_stop.append(hook)


def provided(connection: HTTPConnection, name: str) -> object:
    """The service a part provided under ``name``, as a request or socket sees it."""
    return getattr(connection.state, name)


def dependency(name: str, kind: type[T]) -> Callable[[HTTPConnection], Awaitable[T]]:
    """A route dependency for the service provided under ``name``:
    ``TasksDep = Annotated[Tasks, Depends(dependency("tasks", Tasks))]``. It is a coroutine
    function, so FastAPI calls it in the event loop, not in its thread pool."""

    async def get(connection: HTTPConnection) -> T:
        return cast(T, getattr(connection.state, name))

    get.__name__ = f"provided_{name}"
    return get


def control_dispatcher(controls: dict[type[Any], list[ControlHandler]]) -> BrokerListener:
    """One broker listener for every control message: parsed once, then handed to the handlers
    registered for its class. An ``op`` this node does not know is left alone."""

    async def dispatch(message: dict[str, Any]) -> None:
        if message.get("op") not in CONTROL_OPS:
            return
        try:
            parsed = CONTROL.validate_python(message)
        except ValidationError:
            log.warning("a malformed %s control message was dropped", message.get("op"))
            return
        for handler in controls.get(type(parsed), ()):
            await handler(parsed)

    return dispatch
