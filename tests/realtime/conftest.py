"""Fixtures of the realtime tests: brokers of both kinds, a key prefix of each test's own on
the shared Redis, and a Redis server a test may kill."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Protocol

import pytest
import redis.asyncio as redis

from kai.realtime.broker import Broker, MemoryBroker, Window
from kai.realtime.redis_broker import RedisBroker
from tests.realtime.support import DisposableRedis, until
from tests.services import redis_server

WINDOW = Window(count=1000, age=60.0)


def new_node_id() -> str:
    return f"test-node-{uuid.uuid4().hex[:12]}"


class BrokerFactory(Protocol):
    async def __call__(self, *, window: Window = WINDOW) -> Broker: ...


class RedisBrokerFactory(Protocol):
    async def __call__(
        self, *, url: str | None = None, window: Window = WINDOW, node_id: str | None = None
    ) -> RedisBroker: ...


async def close_all(brokers: list[Broker]) -> None:
    """Close every broker, even when one fails to close; then report the first failure."""
    results = await asyncio.gather(*(b.close() for b in brokers), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    with redis_server() as url:
        yield url


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[redis.Redis]:
    """A plain client on the shared Redis, to look at and tamper with what brokers keep."""
    client = redis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def prefix(redis_client: redis.Redis) -> AsyncIterator[str]:
    """The test's own key and channel prefix on the shared Redis; its keys go with the test."""
    mine = f"kai-test-{uuid.uuid4().hex[:16]}:"
    yield mine
    keys = [key async for key in redis_client.scan_iter(match=f"{mine}*")]
    if keys:
        await redis_client.delete(*keys)


@pytest.fixture
def agent_id() -> str:
    return f"agent-{uuid.uuid4().hex}"


@pytest.fixture
async def redis_brokers(redis_url: str, prefix: str) -> AsyncIterator[RedisBrokerFactory]:
    """Start RedisBrokers ("nodes" of one hub), by default on the shared Redis under the test's
    prefix; all are closed after the test."""
    started: list[Broker] = []

    async def make(
        *, url: str | None = None, window: Window = WINDOW, node_id: str | None = None
    ) -> RedisBroker:
        broker = RedisBroker(
            url or redis_url, node_id=node_id or new_node_id(), window=window, prefix=prefix
        )
        started.append(broker)
        await broker.start()
        await until(lambda: broker.connected, what=f"{broker.node_id} connecting")
        return broker

    yield make
    await close_all(started)


@pytest.fixture(params=["memory", "redis"])
async def brokers(
    request: pytest.FixtureRequest, redis_brokers: RedisBrokerFactory
) -> AsyncIterator[BrokerFactory]:
    """Start brokers of the parametrized kind: each test runs on MemoryBroker and RedisBroker."""
    started: list[Broker] = []

    async def make(*, window: Window = WINDOW) -> Broker:
        if request.param == "redis":
            return await redis_brokers(window=window)
        broker = MemoryBroker(node_id=new_node_id(), window=window)
        started.append(broker)
        await broker.start()
        return broker

    yield make
    await close_all(started)


@pytest.fixture
async def broker(brokers: BrokerFactory) -> Broker:
    return await brokers()


@pytest.fixture
async def disposable_redis(tmp_path: Path) -> AsyncIterator[DisposableRedis]:
    """A running redis-server of the test's own, killed after the test whatever happens."""
    server = DisposableRedis(tmp_path)
    try:
        await server.start()
        yield server
    finally:
        server.kill()
