"""The event outbox: an event is committed in the transaction of the state change it reports,
then published, so that no event is lost between the commit and the publish.

A service stages its events in the unit of work that changes the state (``stage``); once that
commits, it publishes them at once (``publish``) and the rows are deleted in batches behind.
If the node dies between the commit and the publish, or the broker refuses the publish, the
rows stay, and the relay loop of any node (``relay_left_behind``) publishes those older than a
grace period, claiming them with ``FOR UPDATE SKIP LOCKED`` so that two nodes never relay the
same row. An event may so be published twice (a node that dies after publishing, before its
delete); every outboxed event states the whole state it reports (a task's status, progress,
result), so watchers take a repeat as the same news.

What goes through the outbox: task updates, the durable state changes watchers must see right.
Log lines and stream chunks go straight to the broker: they are stored behind on their own and
a client that misses one reads it back (the stream's chunks, the agent's logs).

The outbox guards the gap between two stores that outlive a node: the database and Redis's
event logs. The embedded broker's logs live and die with the process (a restarted hub starts
new epochs, and its watchers resync from the database), so there ``durable`` is off: events
are published after the commit as before, and nothing is written twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta
from itertools import groupby
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from kai.db import Database, utcnow
from kai.kit.batch import BatchWriter
from kai.realtime.broker import Broker
from kai.realtime.models import OutboxEvent

log = logging.getLogger("kai.realtime.outbox")


@dataclass(slots=True)
class Staged:
    """Events staged in a unit of work, to publish once it has committed."""

    batches: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    rows: list[OutboxEvent] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.batches)


class EventOutbox:
    def __init__(
        self,
        db: Database,
        broker: Broker,
        *,
        durable: bool,
        grace: float = 5.0,
        batch_size: int = 500,
    ) -> None:
        self.db = db
        self.broker = broker
        self.durable = durable
        self.grace = timedelta(seconds=grace)
        self.batch_size = batch_size
        self.relayed = 0  # rows published by the relay loop: left behind by a node or a failure
        self.cleaner: BatchWriter[int] = BatchWriter(
            "event-outbox", self._delete, interval=0.5, batch_size=batch_size
        )

    def stage(self, session: AsyncSession, batches: dict[str, list[dict[str, Any]]]) -> Staged:
        """Write ``batches`` (events by log key) into the unit of work of ``session``."""
        staged = Staged(batches)
        if not self.durable:
            return staged
        for key, events in batches.items():
            staged.rows.extend(OutboxEvent(log_key=key, event=event) for event in events)
        session.add_all(staged.rows)
        return staged

    async def publish(self, staged: Staged) -> None:
        """After the commit: publish what was staged. What the broker refuses stays in the
        outbox for the relay loop."""
        published: list[int] = []
        for key, events in staged.batches.items():
            try:
                await self.broker.publish_many(key, events)
            except Exception:
                log.exception("%s: %d events left in the outbox for the relay", key, len(events))
                continue
            published.extend(row.id for row in staged.rows if row.log_key == key)
        self.cleaner.extend(published)

    async def relay_left_behind(self) -> int:
        """Publish, in order, the events older than the grace period that no node published."""
        cutoff = utcnow() - self.grace
        async with self.db.session() as session:
            rows = list(
                await session.scalars(
                    select(OutboxEvent)
                    .where(OutboxEvent.created_at < cutoff)
                    .order_by(OutboxEvent.id)
                    .limit(self.batch_size)
                    .with_for_update(skip_locked=True)
                )
            )
            if not rows:
                return 0
            ordered = sorted(rows, key=lambda row: (row.log_key, row.id))
            for key, group in groupby(ordered, key=lambda row: row.log_key):
                await self.broker.publish_many(key, [row.event for row in group])
            await session.execute(
                delete(OutboxEvent).where(OutboxEvent.id.in_([row.id for row in rows]))
            )
        self.relayed += len(rows)
        log.warning("relayed %d events left in the outbox", len(rows))
        return len(rows)

    async def _delete(self, ids: list[int]) -> None:
        async with self.db.session() as session:
            await session.execute(delete(OutboxEvent).where(OutboxEvent.id.in_(ids)))
