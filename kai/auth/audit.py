"""The audit log: every decision and authentication event, written in batches."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import insert

from kai.auth.models import AuditEvent
from kai.db import Database, utcnow

log = logging.getLogger("kai.audit")


@dataclass(frozen=True, slots=True)
class Entry:
    kind: str  # "permission" or "auth"
    permission: str
    granted: bool
    user_id: str | None = None
    resource: str | None = None
    client_ip: str | None = None
    detail: str | None = None
    timestamp: datetime = field(default_factory=utcnow)


class AuditLog:
    """Takes entries without waiting; a background task writes them in batches.

    Nothing is lost on a clean shutdown: ``close`` writes what is still buffered.
    A batch that fails to write is kept and retried, so a database blip delays entries
    rather than dropping them.
    """

    def __init__(self, db: Database, *, interval: float, batch_size: int) -> None:
        self._db = db
        self._interval = interval
        self._batch_size = batch_size
        self._buffer: list[Entry] = []
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def record(self, entry: Entry) -> None:
        self._buffer.append(entry)
        if len(self._buffer) >= self._batch_size:
            self._wake.set()

    def permission(
        self,
        permission: str,
        *,
        granted: bool,
        user_id: str | None,
        resource: str | None = None,
        client_ip: str | None = None,
    ) -> None:
        self.record(Entry("permission", permission, granted, user_id, resource, client_ip))

    def auth(
        self,
        event: str,
        *,
        ok: bool,
        user_id: str | None = None,
        resource: str | None = None,
        client_ip: str | None = None,
        detail: str | None = None,
    ) -> None:
        self.record(Entry("auth", f"auth:{event}", ok, user_id, resource, client_ip, detail))

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="kai-audit-writer")

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
                await self._write(batch)
                del self._buffer[: len(batch)]

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
                log.exception("audit batch not written; keeping %d entries", self.pending)

    async def _write(self, batch: list[Entry]) -> None:
        rows = [
            {
                "timestamp": e.timestamp,
                "kind": e.kind,
                "user_id": _text(e.user_id, 36),
                "permission": _text(e.permission, 60) or "",
                "resource": _text(e.resource, 400),
                "granted": e.granted,
                "client_ip": _text(e.client_ip, 64),
                "detail": _text(e.detail, None),
            }
            for e in batch
        ]
        async with self._db.session() as session:
            await session.execute(insert(AuditEvent), rows)


def _text(value: str | None, limit: int | None) -> str | None:
    """A value the column takes on every backend: a batch that can never be written would
    hold back every entry after it, so NULs go (PostgreSQL refuses them) and length is capped."""
    if value is None:
        return None
    return value.replace("\x00", "")[:limit]
