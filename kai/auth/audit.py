"""The audit log: every decision and authentication event, written in batches."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import insert

from kai.auth.models import AuditEvent
from kai.batch import BatchWriter
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
        self._writer: BatchWriter[Entry] = BatchWriter(
            "audit", self._write, interval=interval, batch_size=batch_size
        )

    @property
    def writer(self) -> BatchWriter[Entry]:
        return self._writer

    def record(self, entry: Entry) -> None:
        self._writer.record(entry)

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
        return self._writer.pending

    def start(self) -> None:
        self._writer.start()

    async def close(self) -> None:
        await self._writer.close()

    async def flush(self) -> None:
        """Write everything buffered so far."""
        await self._writer.flush()

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
