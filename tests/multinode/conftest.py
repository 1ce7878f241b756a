"""Fixtures of the multi-node tests: three ``kai serve`` processes on one PostgreSQL database
and one Redis, torn down (processes killed, database dropped, Redis keys deleted) whatever
happens; their output is printed when the test fails."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Generator
from pathlib import Path

import pytest
import redis.asyncio as redis

from tests.helpers import ADMIN_EMAIL, ADMIN_PASSWORD
from tests.multinode.support import Cluster
from tests.services import create_database, drop_database, free_port, redis_server

NODES = 3
SECRET = "kai-multinode-test-key-0123456789-abcdefghijklmnop"
HEARTBEAT_INTERVAL = 0.3
HEARTBEAT_TIMEOUT = 1.5

FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Remember whether a test failed, so that its fixtures can say more while tearing down."""
    report = yield
    if report.failed:
        item.stash[FAILED] = True
    return report


def distinct_ports(count: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


async def delete_keys(url: str, prefix: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture
async def cluster(
    request: pytest.FixtureRequest, pg_admin_url: str, tmp_path: Path
) -> AsyncIterator[Cluster]:
    """Three hub nodes started together on a fresh database, with fast heartbeats."""
    database_url = await create_database(pg_admin_url)
    prefix = f"kai-test-{uuid.uuid4().hex[:12]}:"
    try:
        with redis_server() as redis_url:
            nodes = Cluster.make(
                tmp_path,
                distinct_ports(NODES),
                {
                    "KAI_DATABASE_URL": database_url,
                    "KAI_REDIS_URL": redis_url,
                    "KAI_REDIS_PREFIX": prefix,
                    "KAI_SECRET_KEY": SECRET,
                    "KAI_ADMIN_EMAIL": ADMIN_EMAIL,
                    "KAI_ADMIN_PASSWORD": ADMIN_PASSWORD,
                    "KAI_AGENT_HEARTBEAT_INTERVAL": str(HEARTBEAT_INTERVAL),
                    "KAI_AGENT_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT),
                    "KAI_AGENT_RESTART_GRACE": "15",
                    "KAI_ARGON2_TIME_COST": "1",
                    "KAI_ARGON2_MEMORY_COST": "1024",
                    "KAI_ARGON2_PARALLELISM": "1",
                    "KAI_AUTH_RATE_LIMIT": "1000",
                    "KAI_REGISTRATION": "open",
                    "KAI_AUDIT_FLUSH_INTERVAL": "0.2",
                    "KAI_LOG_LEVEL": "INFO",
                },
            )
            try:
                nodes.start()
                yield nodes
            finally:
                nodes.kill_all()
                if request.node.stash.get(FAILED, False):
                    print(nodes.report())  # noqa: T201 - shown with the failure
                await delete_keys(redis_url, prefix)
    finally:
        await drop_database(pg_admin_url, database_url)
