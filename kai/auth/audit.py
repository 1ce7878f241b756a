"""The audit log: every decision and authentication event, written in batches.

Failed attempts by nobody in particular (a bad agent token, an unknown login) are what a flood
is made of: per action and address, the first of a window is written at once and the rest of
that window become one row with their ``count``. Everything else is one row each.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Final

from sqlalchemy import insert

from kai.auth.models import AuditEvent
from kai.db import Database, delete_before, utcnow
from kai.kit.batch import BatchWriter
from kai.kit.counters import COUNTS

log = logging.getLogger("kai.audit")

# Open flood windows kept at most; past it, new addresses share one window per action.
MAX_FLOODS: Final = 10_000


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
    count: int = 1  # attempts this row stands for

    @property
    def anonymous_failure(self) -> bool:
        return self.kind == "auth" and not self.granted and self.user_id is None


@dataclass
class _Flood:
    """The failed attempts of one action from one address in one window, after its first."""

    opened: float
    counted: Entry | None = None  # the first counted, carrying the count so far

    def add(self, entry: Entry) -> None:
        if self.counted is None:
            self.counted = entry
            return
        first = self.counted
        self.counted = replace(
            first,
            count=first.count + 1,
            resource=first.resource if first.resource == entry.resource else None,
            detail=first.detail if first.detail == entry.detail else "various",
        )


class AuditLog:
    """Takes entries without waiting; a background task writes them in batches.

    Nothing is lost on a clean shutdown: ``close`` writes what is still buffered.
    A batch that fails to write is kept and retried, so a database blip delays entries
    rather than dropping them.
    """

    def __init__(
        self, db: Database, *, interval: float, batch_size: int, flood_window: float = 60.0
    ) -> None:
        self._db = db
        self._writer: BatchWriter[Entry] = BatchWriter(
            "audit", self._write, interval=interval, batch_size=batch_size
        )
        self.flood_window = flood_window
        self._floods: dict[tuple[str, str | None], _Flood] = {}
        self.counted = 0  # failed attempts folded into a count instead of a row of their own

    @property
    def writer(self) -> BatchWriter[Entry]:
        return self._writer

    def record(self, entry: Entry) -> None:
        if entry.anonymous_failure:
            self._count(entry)
        else:
            self._writer.record(entry)

    def _count(self, entry: Entry) -> None:
        now = time.monotonic()
        key = (entry.permission, entry.client_ip)
        if key not in self._floods and len(self._floods) >= MAX_FLOODS:
            key = (entry.permission, None)
        flood = self._floods.get(key)
        if flood is not None and now - flood.opened >= self.flood_window:
            self._close(key)
            flood = None
        if flood is None:
            self._floods[key] = _Flood(opened=now)
            self._writer.record(entry)
            return
        flood.add(entry)
        self.counted += 1
        COUNTS.audit_attempts_counted += 1

    def _close(self, key: tuple[str, str | None]) -> None:
        flood = self._floods.pop(key)
        if flood.counted is not None:
            self._writer.record(flood.counted)

    async def sweep(self, *, everything: bool = False) -> None:
        """Write the counts of the windows that ended (of every window, when asked)."""
        now = time.monotonic()
        for key, flood in list(self._floods.items()):
            if everything or now - flood.opened >= self.flood_window:
                self._close(key)

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
        await self.sweep(everything=True)
        await self._writer.close()

    async def flush(self) -> None:
        """Write everything buffered so far, counts of open windows included."""
        await self.sweep(everything=True)
        await self._writer.flush()

    async def prune(self, *, older_than: timedelta, batch: int = 5000) -> int:
        """Delete the entries older than ``older_than``, ``batch`` rows per transaction, so
        that a long backlog never holds the database's write lock for long."""
        before = utcnow() - older_than
        return await delete_before(
            self._db, AuditEvent.id, AuditEvent.timestamp, before, batch=batch
        )

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
                "count": e.count,
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
