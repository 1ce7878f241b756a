"""Durable tasks: a per-agent priority queue in the database, pushed to the agent under leases.

A task is committed before anyone hears of it. The node holding the agent's socket claims as
many queued tasks as the agent has free slots (``FOR UPDATE SKIP LOCKED`` on PostgreSQL; on
SQLite every write transaction is the single writer), marks them running under a lease owned by
that connection, and sends them. Heartbeats renew the leases; a lease that runs out puts the task
back in the queue with one more attempt counted, or fails it once ``maxAttempts`` are spent. A
result counts only from the attempt that holds the task, so a stale attempt can never overwrite
a newer one.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from kai.agents.live import LiveAgents
from kai.agents.models import Agent
from kai.agents.relay import Relay
from kai.agents.service import Registry, Viewer
from kai.config import Settings
from kai.db import Database, new_id
from kai.errors import BadRequest, Conflict, NotFound
from kai.kit.clock import Clock
from kai.kit.counters import COUNTS
from kai.protocol.agent import TaskProgress, TaskResult
from kai.protocol.control import TaskWake
from kai.protocol.states import TaskStatus
from kai.realtime.broker import Broker
from kai.realtime.outbox import EventOutbox, Staged
from kai.work.models import PRIORITIES, PRIORITY_NAMES, TASK_FINAL, Task
from kai.work.wire import task_event

log = logging.getLogger("kai.work.tasks")

TASK_NOT_FOUND = "Task not found"
DURATION_SAMPLE = 20  # recent tasks whose durations make the estimates
MEAN_CACHE_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class Estimate:
    """Where a task stands in its agent's queue and when it should start and end."""

    queue_position: int | None
    estimated_start: datetime | None
    estimated_completion: datetime | None


def request_digest(task_type: str, parameters: dict[str, Any], priority: int, attempts: int) -> str:
    """What a retried create must repeat exactly to be the same request."""
    body = {"taskType": task_type, "parameters": parameters, "priority": priority, "max": attempts}
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


class Tasks:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        *,
        registry: Registry,
        relay: Relay,
        broker: Broker,
        live: LiveAgents,
        outbox: EventOutbox,
        clock: Clock,
    ) -> None:
        self.settings = settings
        self.db = db
        self.registry = registry
        self.relay = relay
        self.broker = broker
        self.live = live
        self.outbox = outbox
        self.clock = clock
        self._locks: dict[str, asyncio.Lock] = {}
        self._again: set[str] = set()
        self._means: dict[str, tuple[float, timedelta | None]] = {}
        self.dispatched = 0
        self.requeued = 0

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.settings.task_lease_seconds)

    # -- people's side -----------------------------------------------------------------------

    async def create(
        self,
        viewer: Viewer,
        agent_id: str,
        *,
        task_type: str,
        parameters: dict[str, Any],
        priority: str,
        idempotency_key: str | None,
        max_attempts: int | None,
        parent_id: str | None = None,
        source_agent_id: str | None = None,
    ) -> tuple[Task, bool]:
        """Queue a task (committed on return); ``True`` second when a retried create found it."""
        rank = PRIORITIES[priority]
        attempts = max_attempts or self.settings.task_max_attempts
        digest = request_digest(task_type, parameters, rank, attempts)
        async with self.db.session(write=False) as session:
            agent = await self.registry.visible(session, viewer, agent_id)
            existing = await self._by_key(session, agent_id, idempotency_key)
        if existing is not None:
            return self._replayed(existing, digest), True
        declared = (agent.capabilities or {}).get("taskTypes")
        if declared is not None and task_type not in declared:
            raise BadRequest(
                f"Agent does not take tasks of type {task_type!r}", taskTypes=sorted(declared)
            )
        task = Task(
            id=new_id(),
            agent_id=agent_id,
            user_id=viewer.user_id,
            task_type=task_type,
            parameters=parameters,
            priority=rank,
            idempotency_key=idempotency_key,
            request_digest=digest,
            status=TaskStatus.QUEUED,
            progress=0.0,
            attempts=0,
            max_attempts=attempts,
            parent_id=parent_id,
            source_agent_id=source_agent_id,
            created_at=self.clock.now(),
        )
        try:
            async with self.db.session() as session:
                session.add(task)
                staged = await self._stage(session, [task])
        except IntegrityError:
            # The same key was created at the same moment by a retry racing this one.
            async with self.db.session(write=False) as session:
                existing = await self._by_key(session, agent_id, idempotency_key)
            if existing is None:
                raise
            return self._replayed(existing, digest), True
        await self._announce([task], staged)
        await self.wake(agent_id)
        return task, False

    @staticmethod
    async def _by_key(session: AsyncSession, agent_id: str, key: str | None) -> Task | None:
        if key is None:
            return None
        found: Task | None = await session.scalar(
            select(Task).where(Task.agent_id == agent_id, Task.idempotency_key == key)
        )
        return found

    @staticmethod
    def _replayed(task: Task, digest: str) -> Task:
        if task.request_digest != digest:
            raise Conflict(
                "This idempotencyKey was already used for a different task", taskId=task.id
            )
        return task

    async def visible(self, session: AsyncSession, viewer: Viewer, task_id: str) -> Task:
        """The task, if ``viewer`` may see its agent; otherwise 404."""
        task = await session.get(Task, task_id)
        if task is None or not await self.registry.sees(session, viewer, task.agent_id):
            raise NotFound(TASK_NOT_FOUND)
        return task

    async def listed(
        self,
        session: AsyncSession,
        agent_id: str,
        *,
        status: str | None,
        limit: int,
        offset: int,
    ) -> tuple[list[Task], int]:
        """A page of the agent's tasks, newest first, and how many there are in all."""
        where = [Task.agent_id == agent_id]
        if status is not None:
            where.append(Task.status == status)
        total = await session.scalar(select(func.count()).select_from(Task).where(*where))
        rows = await session.scalars(
            select(Task)
            .where(*where)
            .order_by(Task.created_at.desc(), Task.id.desc())
            .limit(limit)
            .offset(offset)
        )
        return list(rows), int(total or 0)

    @staticmethod
    async def subtasks_of(session: AsyncSession, task_ids: list[str]) -> dict[str, list[Task]]:
        """The subtasks of each of ``task_ids``, oldest first."""
        found: dict[str, list[Task]] = {}
        if not task_ids:
            return found
        rows = await session.scalars(
            select(Task)
            .where(Task.parent_id.in_(task_ids))
            .order_by(Task.created_at, Task.id)
            .limit(1000)
        )
        for row in rows:
            found.setdefault(str(row.parent_id), []).append(row)
        return found

    async def cancel(self, viewer: Viewer, task_id: str) -> tuple[Task, str]:
        """Cancel a queued task at once, or a running one (and tell the agent to stop)."""
        async with self.db.session() as session:
            await self.visible(session, viewer, task_id)
            task = await session.scalar(
                select(Task)
                .where(Task.id == task_id)
                .with_for_update()
                .execution_options(populate_existing=True)
            )
            if task is None:
                raise NotFound(TASK_NOT_FOUND)
            previous = task.status
            if previous in TASK_FINAL:
                raise Conflict(f"Task already {previous}", currentStatus=previous)
            _cancelled(task, "Cancelled", self.clock.now())
            children = await self._cancel_subtasks(
                session, [task.id], task.completed_at or self.clock.now()
            )
            cancelled = [task, *(child for child, _ in children)]
            staged = await self._stage(session, cancelled)
        stopped = [(task, previous), *children]
        # The agents stop first: an agent waiting on a subtask cancelled with its own task is
        # cancelled, rather than woken by the news that the subtask was.
        for each, was in stopped:
            if was == TaskStatus.RUNNING:
                await self.relay.deliver(each.agent_id, {"type": "cancel", "id": each.id})
        await self._announce(cancelled, staged)
        for agent_id in {each.agent_id for each, was in stopped if was == TaskStatus.RUNNING}:
            await self.wake(agent_id)  # their slots are free again
        return task, previous

    @staticmethod
    async def _cancel_subtasks(
        session: AsyncSession, parents: list[str], at: datetime
    ) -> list[tuple[Task, str]]:
        """Cancel the unfinished subtasks of ``parents``, and theirs, all the way down."""
        cancelled: list[tuple[Task, str]] = []
        seen = set(parents)
        while parents:
            children = list(
                await session.scalars(
                    select(Task)
                    .where(Task.parent_id.in_(parents), Task.status.not_in(TASK_FINAL))
                    .with_for_update()
                )
            )
            parents = []
            for child in children:
                if child.id in seen:
                    continue
                seen.add(child.id)
                cancelled.append((child, child.status))
                _cancelled(child, "Cancelled with its parent task", at)
                parents.append(child.id)
        return cancelled

    async def estimate(self, session: AsyncSession, task: Task) -> Estimate:
        """Queue position and times, from the queue and the agent's recent task durations."""
        if task.status in TASK_FINAL:
            return Estimate(None, task.started_at, task.completed_at)
        mean = await self._mean_duration(session, task.agent_id)
        now = self.clock.now()
        if task.status == TaskStatus.RUNNING:
            started = task.started_at or now
            end = max(now, started + mean) if mean is not None else None
            return Estimate(0, started, end)
        ahead = await session.scalar(
            select(func.count())
            .select_from(Task)
            .where(
                Task.agent_id == task.agent_id,
                Task.status == TaskStatus.QUEUED,
                or_(
                    Task.priority > task.priority,
                    and_(
                        Task.priority == task.priority,
                        or_(
                            Task.created_at < task.created_at,
                            and_(Task.created_at == task.created_at, Task.id < task.id),
                        ),
                    ),
                ),
            )
        )
        running = await session.scalar(
            select(func.count())
            .select_from(Task)
            .where(Task.agent_id == task.agent_id, Task.status == TaskStatus.RUNNING)
        )
        agent = await session.get(Agent, task.agent_id)
        slots = int((agent.capabilities or {}).get("maxConcurrency") or 1) if agent else 1
        position = int(ahead or 0) + 1
        waves = (int(running or 0) + position - 1) // slots
        start: datetime | None = now
        if waves:
            start = now + waves * mean if mean is not None else None
        end = start + mean if start is not None and mean is not None else None
        return Estimate(position, start, end)

    async def _mean_duration(self, session: AsyncSession, agent_id: str) -> timedelta | None:
        """The mean of the agent's recent task durations, read at most once a second."""
        cached = self._means.get(agent_id)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        mean = await self._read_mean(session, agent_id)
        if len(self._means) > 10_000:
            self._means.clear()
        self._means[agent_id] = (time.monotonic() + MEAN_CACHE_SECONDS, mean)
        return mean

    async def _read_mean(self, session: AsyncSession, agent_id: str) -> timedelta | None:
        rows = (
            await session.execute(
                select(Task.started_at, Task.completed_at)
                .where(
                    Task.agent_id == agent_id,
                    Task.status.in_((TaskStatus.SUCCEEDED, TaskStatus.FAILED)),
                    Task.started_at.is_not(None),
                    Task.completed_at.is_not(None),
                )
                .order_by(Task.completed_at.desc())
                .limit(DURATION_SAMPLE)
            )
        ).all()
        spans = [(end - start) for start, end in rows if start and end and end >= start]
        if not spans:
            return None
        return sum(spans, timedelta()) / len(spans)

    # -- the agent's side --------------------------------------------------------------------

    async def wake(self, agent_id: str) -> None:
        """Have the node holding the agent look at its queue now. If the broker cannot carry
        the wake-up, that node's dispatch loop finds the task a moment later."""
        if self.live.get(agent_id) is not None:
            self.relay.spawn(self.dispatch(agent_id))
            return
        try:
            node = await self.broker.presence(agent_id)
            if node is not None and node != self.broker.node_id:
                await self.broker.send_to_node(node, TaskWake(agent_id=agent_id).wire())
        except Exception as exc:
            log.warning("agent %s: queue wake-up not sent (%s)", agent_id, type(exc).__name__)

    async def on_task_wake(self, wake: TaskWake) -> None:
        """Another node has work for an agent connected here."""
        await self.dispatch(wake.agent_id)

    async def dispatch(self, agent_id: str) -> int:
        """Claim and send as many of the agent's queued tasks as it has free slots here.

        Wake-ups that come while the agent's queue is being looked at are folded into one more
        look, so a burst of creates or results costs a few claims, not one each."""
        lock = self._locks.setdefault(agent_id, asyncio.Lock())
        if lock.locked():
            self._again.add(agent_id)
            return 0
        sent = 0
        async with lock:
            while True:
                self._again.discard(agent_id)
                sent += await self._claim_and_send(agent_id)
                if agent_id not in self._again:
                    return sent

    async def _claim_and_send(self, agent_id: str) -> int:
        live = self.live.get(agent_id)
        if live is None or not live.ready or live.closing or not live.task_types:
            return 0
        now = self.clock.now()
        async with self.db.session() as session:
            running = await session.scalar(
                select(func.count())
                .select_from(Task)
                .where(
                    Task.agent_id == agent_id,
                    Task.status == TaskStatus.RUNNING,
                    Task.lease_owner == live.connection_id,
                )
            )
            free = live.max_concurrency - int(running or 0)
            if free <= 0:
                return 0
            refused = await self._refuse_undeclared(session, agent_id, live.task_types, now)
            claimed = list(
                await session.scalars(
                    select(Task)
                    .where(
                        Task.agent_id == agent_id,
                        Task.status == TaskStatus.QUEUED,
                        Task.task_type.in_(live.task_types),
                    )
                    .order_by(Task.priority.desc(), Task.created_at, Task.id)
                    .limit(free)
                    .with_for_update(skip_locked=True)
                )
            )
            for task in claimed:
                task.status = TaskStatus.RUNNING
                task.attempts += 1
                task.lease_owner = live.connection_id
                task.lease_expires_at = now + self.lease
                task.started_at = now
                task.message = None
            staged = await self._stage(session, [*refused, *claimed])
        await self._announce([*refused, *claimed], staged)
        if not claimed:
            return 0
        for task in claimed:
            try:
                await live.send(
                    {
                        "type": "task",
                        "taskId": task.id,
                        "taskType": task.task_type,
                        "params": task.parameters,
                        "attempt": task.attempts,
                        "priority": PRIORITY_NAMES[task.priority],
                    }
                )
            except Exception:  # the socket went: the lease brings the task back
                log.info("agent %s left while tasks were sent to it", agent_id)
                break
        self.dispatched += len(claimed)
        return len(claimed)

    @staticmethod
    async def _refuse_undeclared(
        session: AsyncSession, agent_id: str, task_types: frozenset[str], now: datetime
    ) -> list[Task]:
        """Queued tasks of types the connected agent does not take (queued before it said
        what it takes) would wait for ever: they fail, saying why."""
        refused = list(
            await session.scalars(
                select(Task)
                .where(
                    Task.agent_id == agent_id,
                    Task.status == TaskStatus.QUEUED,
                    Task.task_type.not_in(task_types),
                )
                .with_for_update(skip_locked=True)
            )
        )
        for task in refused:
            task.status = TaskStatus.FAILED
            task.error = f"The agent does not take tasks of type {task.task_type!r}"
            task.completed_at = now
        return refused

    async def renew(self, agent_id: str, connection_id: str) -> None:
        """The agent is alive: extend the leases of the tasks it holds on this connection."""
        async with self.db.session() as session:
            await session.execute(
                update(Task)
                .where(
                    Task.agent_id == agent_id,
                    Task.status == TaskStatus.RUNNING,
                    Task.lease_owner == connection_id,
                )
                .values(lease_expires_at=self.clock.now() + self.lease)
            )

    @staticmethod
    async def _running(session: AsyncSession, agent_id: str, task_id: str) -> Task | None:
        """The agent's running task ``task_id``, locked for the update."""
        task: Task | None = await session.scalar(
            select(Task)
            .where(Task.id == task_id, Task.agent_id == agent_id, Task.status == TaskStatus.RUNNING)
            .with_for_update()
        )
        return task

    async def progressed(self, agent_id: str, connection_id: str, report: TaskProgress) -> None:
        async with self.db.session() as session:
            task = await self._running(session, agent_id, report.task_id)
            if task is None or (report.attempt is not None and report.attempt != task.attempts):
                return  # cancelled, finished, a stale attempt, or not this agent's
            task.progress = report.progress
            task.message = report.message
            if task.lease_owner == connection_id:
                task.lease_expires_at = self.clock.now() + self.lease
            staged = await self._stage(session, [task])
        await self._announce([task], staged)

    async def finished(self, agent_id: str, result: TaskResult) -> bool:
        """The agent's result, taken only from the attempt that holds the task."""
        async with self.db.session() as session:
            task = await self._running(session, agent_id, result.task_id)
            if task is None or (result.attempt is not None and result.attempt != task.attempts):
                log.info("stale or unknown result for task %s dropped", result.task_id)
                return False
            task.status = TaskStatus.SUCCEEDED if result.success else TaskStatus.FAILED
            task.result = result.result if result.success else None
            task.error = None if result.success else (result.error or "Task failed")
            task.progress = 1.0 if result.success else task.progress
            task.completed_at = self.clock.now()
            task.lease_owner = None
            task.lease_expires_at = None
            staged = await self._stage(session, [task])
        self._means.pop(agent_id, None)  # a new duration to count
        await self._announce([task], staged)
        self.relay.spawn(self.dispatch(agent_id))
        return True

    async def reap(self) -> int:
        """Put back (or fail, after ``maxAttempts``) the running tasks whose lease ran out."""
        now = self.clock.now()
        async with self.db.session() as session:
            expired = list(
                await session.scalars(
                    select(Task)
                    .where(Task.status == TaskStatus.RUNNING, Task.lease_expires_at < now)
                    .limit(500)
                    .with_for_update(skip_locked=True)
                )
            )
            for task in expired:
                task.lease_owner = None
                task.lease_expires_at = None
                if task.attempts >= task.max_attempts:
                    task.status = TaskStatus.FAILED
                    task.error = (
                        f"The agent lost the task {task.attempts} times (no heartbeat in time)"
                    )
                    task.completed_at = now
                else:
                    task.status = TaskStatus.QUEUED
                    task.progress = 0.0
                    task.message = f"Back in the queue after attempt {task.attempts}"
            staged = await self._stage(session, expired)
        if expired:
            self.requeued += sum(1 for task in expired if task.status == TaskStatus.QUEUED)
            await self._announce(expired, staged)
            for agent_id in {task.agent_id for task in expired}:
                await self.wake(agent_id)  # a slot is free, and maybe a task is back
        return len(expired)

    async def dispatch_waiting(self) -> int:
        """Look at the queue of every agent connected here that has queued tasks."""
        here = {live.agent_id for live in self.live.all() if live.ready and live.task_types}
        if not here:
            return 0
        async with self.db.session(write=False) as session:
            waiting = set(
                await session.scalars(
                    select(Task.agent_id).where(Task.status == TaskStatus.QUEUED).distinct()
                )
            )
        sent = 0
        for agent_id in here & waiting:
            sent += await self.dispatch(agent_id)
        for agent_id in set(self._locks) - here:
            lock = self._locks.get(agent_id)
            if lock is not None and not lock.locked():
                del self._locks[agent_id]
        return sent

    async def _stage(self, session: AsyncSession, tasks: list[Task]) -> Staged:
        """A ``task_update`` event for each task, on its agent's event log, written into the
        outbox in the unit of work that changed them (kai/realtime/outbox.py)."""
        if not tasks:
            return Staged()
        events: dict[str, list[dict[str, Any]]] = {}
        for task in tasks:
            events.setdefault(task.agent_id, []).append(task_event(task))
        return self.outbox.stage(session, events)

    async def _announce(self, tasks: list[Task], staged: Staged) -> None:
        """After the commit: publish the staged events, count the tasks that ended and tell
        the agents that created them."""
        if staged:
            await self.outbox.publish(staged)
        for task in tasks:
            if task.status in TASK_FINAL:
                COUNTS.tasks[task.status] += 1
            if task.source_agent_id is not None and task.source_agent_id != task.agent_id:
                event = task_event(task)
                self.relay.spawn(self._tell_source(task.source_agent_id, task.agent_id, event))

    async def _tell_source(self, source: str, agent_id: str, event: dict[str, Any]) -> None:
        """The agent that created a task hears how it goes, wherever it is connected. If it is
        not connected now, it asks with ``peer_task_status`` when it is back."""
        try:
            await self.relay.deliver(
                source, {**event, "type": "subtask_update", "peerId": agent_id}
            )
        except Exception as exc:
            log.info("agent %s: subtask update not delivered (%s)", source, type(exc).__name__)


def _cancelled(task: Task, message: str, at: datetime) -> None:
    task.status = TaskStatus.CANCELLED
    task.completed_at = at
    task.lease_owner = None
    task.lease_expires_at = None
    task.message = message
