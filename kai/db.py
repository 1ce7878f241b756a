"""Database engine, sessions, the declarative base and migrations."""

from __future__ import annotations

import asyncio
import inspect
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import DateTime, MetaData, String, delete, event, select
from sqlalchemy.engine import Connection, Dialect, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, InstrumentedAttribute
from sqlalchemy.pool import Pool, QueuePool
from sqlalchemy.types import TypeDecorator
from sqlalchemy.util import greenlet_spawn

from kai.config import private_dir, private_file
from kai.errors import KaiError

log = logging.getLogger("kai.db")

MIGRATIONS = Path(__file__).parent / "migrations"

# aiosqlite logs every statement with its parameters (password hashes among them) at DEBUG.
# Like SQLAlchemy with its own logger, keep it quiet unless someone sets its level by name.
_driver_log = logging.getLogger("aiosqlite")
if _driver_log.level == logging.NOTSET:
    _driver_log.setLevel(logging.INFO)

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC, on SQLite too."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return str(uuid.uuid4())


def id_column_type() -> String:
    return String(36)


def create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """An async engine; on SQLite: WAL, synchronous=FULL, foreign keys, explicit BEGINs."""
    parsed = make_url(url)
    # A failed statement's parameters (a password hash, a token digest) never reach a log.
    kwargs.setdefault("hide_parameters", True)

    if parsed.get_backend_name() != "sqlite":
        kwargs.setdefault("pool_pre_ping", True)
        return create_async_engine(url, **kwargs)
    if parsed.database and parsed.database != ":memory:":
        # SQLite gives the -wal and -shm files the mode of the database file: 0600 for all.
        private_file(private_dir(Path(parsed.database).parent) / Path(parsed.database).name)
    engine = create_async_engine(url, connect_args={"timeout": 30}, **kwargs)

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" hook decide how each transaction starts.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Connection) -> None:
        # A writer takes the write lock up front, so two writers queue on busy_timeout
        # instead of failing when a read lock cannot be upgraded.
        writes = connection.get_execution_options().get("kai_write", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if writes else "BEGIN")

    return engine


class _QueuedWriter(AsyncSession):
    """A SQLite writing session that queues for the write lock inside this process, at its
    first statement (where ``BEGIN IMMEDIATE`` takes SQLite's lock), and holds it until it
    closes. Writers then take turns at once, instead of sleeping in SQLite's busy handler
    (up to 100 ms a try) while the lock is free again."""

    async def _queue(self) -> None:
        lock: asyncio.Lock | None = self.info.get("kai_lock")
        if lock is not None and not self.info.get("kai_holds"):
            await lock.acquire()
            self.info["kai_holds"] = True

    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        await self._queue()
        return await super().execute(*args, **kwargs)

    async def scalar(self, *args: Any, **kwargs: Any) -> Any:
        await self._queue()
        return await super().scalar(*args, **kwargs)

    async def scalars(self, *args: Any, **kwargs: Any) -> Any:
        await self._queue()
        return await super().scalars(*args, **kwargs)

    async def get(self, *args: Any, **kwargs: Any) -> Any:
        await self._queue()
        return await super().get(*args, **kwargs)

    async def flush(self, objects: Any = None) -> None:
        await self._queue()
        await super().flush(objects)

    async def commit(self) -> None:
        await self._queue()
        await super().commit()

    async def refresh(self, *args: Any, **kwargs: Any) -> None:
        await self._queue()
        await super().refresh(*args, **kwargs)

    async def delete(self, instance: object) -> None:
        await self._queue()
        await super().delete(instance)

    def begin_nested(self) -> Any:
        """A savepoint, entered only once this session holds its turn to write."""
        return _QueuedSavepoint(self, super().begin_nested())

    async def close(self) -> None:
        try:
            await super().close()
        finally:
            if self.info.pop("kai_holds", False):
                self.info["kai_lock"].release()


class _QueuedSavepoint:
    """``async with session.begin_nested():`` for a ``_QueuedWriter``: queue, then begin."""

    def __init__(self, session: _QueuedWriter, savepoint: Any) -> None:
        self._session = session
        self._savepoint = savepoint

    async def __aenter__(self) -> Any:
        await self._session._queue()
        return await self._savepoint.__aenter__()

    async def __aexit__(self, *exc: Any) -> Any:
        return await self._savepoint.__aexit__(*exc)


class Database:
    """The engine and the two session factories: reading and writing."""

    def __init__(self, url: str, **engine_kwargs: Any) -> None:
        self.url = url
        self.engine = create_engine(url, **engine_kwargs)
        self.dialect = self.engine.dialect.name
        self._closing: set[asyncio.Task[None]] = set()
        self._after: set[asyncio.Future[None]] = set()  # background work queued by commits
        writer = self.engine.execution_options(kai_write=True)
        self._reader = async_sessionmaker(self.engine, expire_on_commit=False)
        self._writer: async_sessionmaker[AsyncSession] = async_sessionmaker(
            writer, expire_on_commit=False
        )
        if self.dialect == "sqlite":
            self._writer = async_sessionmaker(
                writer,
                class_=_QueuedWriter,
                expire_on_commit=False,
                info={"kai_lock": asyncio.Lock()},
            )

    def sessionmaker(self, *, write: bool) -> async_sessionmaker[AsyncSession]:
        return self._writer if write else self._reader

    @asynccontextmanager
    async def session(self, *, write: bool = True) -> AsyncIterator[AsyncSession]:
        """A unit of work: commits on success (then runs ``after_commit`` hooks), else rolls back.

        A ``KaiError`` raised with ``persist=True`` still commits: the answer is an error, but
        what the service recorded on the way (a revoked session, say) must stand.
        """
        async with self.sessionmaker(write=write)() as session:
            try:
                yield session
            except KaiError as exc:
                await self._finish(session, commit=exc.persist)
                raise
            except BaseException:
                await session.rollback()
                raise
            else:
                await self._finish(session, commit=True)

    async def _finish(self, session: AsyncSession, *, commit: bool) -> None:
        callbacks: list[AfterCommit] = session.info.pop("after_commit", [])
        if not commit:
            await session.rollback()
            return
        await session.commit()
        for callback in callbacks:
            try:
                started = callback()
            except Exception:
                log.exception("after a commit, %r failed; the committed work stands", callback)
                continue
            if inspect.isawaitable(started):
                task = asyncio.ensure_future(_logged(started))
                self._after.add(task)
                task.add_done_callback(self._after.discard)

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.exec_driver_sql("SELECT 1")

    async def reconnect(self, *, grace: float = 10.0) -> None:
        """Drop every pooled connection; new work opens fresh ones. Work that held a connection
        meanwhile hands it back to the dropped pool, which is closed once it has them all (or
        after ``grace`` seconds), so that no connection is left for the garbage collector."""
        dropped = self.engine.sync_engine.pool
        await self.engine.dispose()
        if _checked_out(dropped):
            task = asyncio.create_task(_close_when_returned(dropped, grace))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def dispose(self) -> None:
        """Close every connection. Work still holding one (a socket's last write, a task the
        shutdown did not wait for) hands it back to the old pool, which is closed once it has
        them all, or after a grace: a connection is never left for the garbage collector."""
        if self._after:
            await asyncio.wait(list(self._after), timeout=5)
        for task in list(self._closing):
            await task
        pool = self.engine.sync_engine.pool
        await self.engine.dispose()
        if _checked_out(pool):
            await _close_when_returned(pool, grace=2.0)
            if _checked_out(pool):
                log.warning(
                    "%d database connections were still in use at shutdown", _checked_out(pool)
                )


async def _logged(work: Awaitable[object]) -> None:
    try:
        await work
    except Exception:
        log.exception("work queued by a commit failed; the committed work stands")


def _checked_out(pool: Pool) -> int:
    return pool.checkedout() if isinstance(pool, QueuePool) else 0


async def _close_when_returned(pool: Pool, grace: float) -> None:
    deadline = asyncio.get_running_loop().time() + grace
    while _checked_out(pool) and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
    await greenlet_spawn(pool.dispose)


AfterCommit = Callable[[], object]
"""Work for after a commit: a plain call, or one that returns an awaitable to run in the
background (a publish, a delivery)."""


def after_commit(session: AsyncSession, callback: AfterCommit) -> None:
    """Run ``callback`` once ``session``'s transaction has committed (never if it rolls back).

    The work is committed whatever the callback does: one that raises is logged, one that
    returns an awaitable runs on in the background, and neither fails the unit of work."""
    session.info.setdefault("after_commit", []).append(callback)


async def delete_before(
    db: Database,
    key: InstrumentedAttribute[int],
    at: InstrumentedAttribute[datetime],
    before: datetime,
    *,
    batch: int = 5000,
) -> int:
    """Delete the rows whose ``at`` is before ``before``, oldest first, ``batch`` rows per
    transaction, so that a long backlog never holds the database's write lock for long."""
    oldest = select(key).where(at < before).order_by(key).limit(batch)
    removed = 0
    while True:
        async with db.session() as session:
            result = await session.execute(delete(key.class_).where(key.in_(oldest)))
        done = int(result.rowcount)  # type: ignore[attr-defined]
        removed += done
        if done < batch:
            return removed


def migrate(url: str, revision: str = "head") -> None:
    """Upgrade the database at ``url`` to ``revision`` (blocking; runs Alembic)."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["database_url"] = url
    command.upgrade(config, revision)
