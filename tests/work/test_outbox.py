"""No event is lost between a commit and its publish: a task's result committed by a node that
dies before publishing reaches the watchers through another node (kai/realtime/outbox.py)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from kai.db import Database
from kai.realtime.models import OutboxEvent
from kai.realtime.outbox import Staged
from tests.agents.support import People, agent_socket, eventually
from tests.realtime.client_support import Hubs, watch
from tests.work.support import kept_alive
from tests.work.task_support import answer, queued, reaches, updates

WORK = ["work"]


async def outbox_rows(db: Database) -> int:
    async with db.session(write=False) as session:
        return int(await session.scalar(select(func.count()).select_from(OutboxEvent)) or 0)


@pytest.mark.parametrize("mode", ["redis"])
async def test_a_result_committed_by_a_node_that_dies_before_publishing_still_arrives(
    hubs: Hubs,
) -> None:
    near, far = await hubs.pair()
    ann = await People(far).join("ann@example.com")
    created = await ann.create_agent("raw")

    async def dies_after_commit(staged: Staged) -> None:
        """The node is gone between the commit and the publish: nothing after the commit."""

    # The far node's relay looks for events left behind sooner than it would in production.
    far.hub.parts.realtime.outbox.grace = timedelta(seconds=0.5)
    await near.hub.loops.halt("event-outbox-relay")  # the dead node relays nothing either
    async with (
        watch(far, created.agent_id, ann.token) as watcher,
        agent_socket(near.ws_url, created.token) as raw,
        kept_alive(raw),
    ):
        await raw.hello("raw", taskTypes=WORK, maxConcurrency=1)
        await ann.wait_status(created.agent_id, "online")
        task_id = await queued(ann, created.agent_id)
        sent = await raw.recv_type("task")
        await updates(watcher, {task_id: "running"})

        near.hub.parts.realtime.outbox.publish = dies_after_commit  # type: ignore[method-assign]
        await answer(raw, sent, {"done": True})
        await reaches(ann, task_id, "succeeded")  # committed, and not published by its node

        seen = await updates(watcher, {task_id: "succeeded"}, timeout=15.0)
        assert seen[task_id][-1]["result"] == {"done": True}

    async def relayed_and_gone() -> bool:
        # Published inside the relay's transaction: its count and the delete come just after.
        relayed = far.hub.parts.realtime.outbox.relayed
        return relayed >= 1 and await outbox_rows(far.hub.db) == 0

    await eventually(relayed_and_gone, 5, what="the far node's relay to count the event")
