"""Route dependencies of the realtime part."""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends
from starlette.requests import HTTPConnection

from kai.kit.ratelimit import Limiter
from kai.kit.wiring import dependency, provided
from kai.realtime.broker import Broker
from kai.realtime.clients import Clients
from kai.realtime.handlers import Handlers


async def broker_of(connection: HTTPConnection) -> Broker:
    return cast(Broker, provided(connection, "broker"))


async def limiter_of(connection: HTTPConnection) -> Limiter:
    return cast(Limiter, provided(connection, "limiter"))


BrokerDep = Annotated[Broker, Depends(broker_of)]
LimiterDep = Annotated[Limiter, Depends(limiter_of)]
ClientsDep = Annotated[Clients, Depends(dependency("clients", Clients))]
HandlersDep = Annotated[Handlers, Depends(dependency("handlers", Handlers))]
