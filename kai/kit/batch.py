"""Write-behind batches: take rows without waiting, write them together in the background."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from sqlalchemy.exc import DataError, IntegrityError

from kai.kit.counters import COUNTS

log = logging.getLogger("kai.batch")

T = TypeVar("T")

# A row the database refuses for what it is (not because the database is down) is set aside
# alone, so that one bad row never holds back the rows behind it.
REFUSED = (IntegrityError, DataError)


class BatchWriter(Generic[T]):
    """Buffers items and writes them in batches every ``interval`` seconds (or when a batch is
    full). ``close`` writes whatever is left, so a clean shutdown loses nothing; a batch that
    fails because the database is unreachable stays buffered and is tried again."""

    def __init__(
        self,
        name: str,
        write: Callable[[list[T]], Awaitable[None]],
        *,
        interval: float,
        batch_size: int,
    ) -> None:
        self.name = name
        self._write = write
        self._interval = interval
        self._batch_size = batch_size
        self._buffer: list[T] = []
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.written = 0
        self.refused = 0

    def record(self, item: T) -> None:
        self._buffer.append(item)
        if len(self._buffer) >= self._batch_size:
            self._wake.set()

    def extend(self, items: list[T]) -> None:
        self._buffer.extend(items)
        if len(self._buffer) >= self._batch_size:
            self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def start(self) -> None:
        self._closing = False
        self._task = asyncio.create_task(self._run(), name=f"kai-{self.name}-writer")

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def stop(self) -> None:
        """Write what is buffered and stop writing; later items wait until ``start``."""
        await self.close()

    async def close(self) -> None:
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self.flush()

    async def flush(self) -> None:
        """Write everything buffered so far."""
        async with self._lock:
            while self._buffer:
                batch = self._buffer[: self._batch_size]
                await self._write_batch(batch)
                del self._buffer[: len(batch)]

    async def _write_batch(self, batch: list[T]) -> None:
        try:
            await self._write(batch)
            self.written += len(batch)
        except REFUSED:
            for item in batch:
                try:
                    await self._write([item])
                    self.written += 1
                except REFUSED as exc:
                    self.refused += 1
                    log.warning(
                        "%s: a row was refused and set aside: %s",
                        self.name,
                        type(exc.orig).__name__ if exc.orig else type(exc).__name__,
                    )

    async def _run(self) -> None:
        while not self._closing:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self._interval)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.flush()
            except Exception:
                COUNTS.database_errors += 1
                log.exception("%s: batch not written; keeping %d rows", self.name, self.pending)
