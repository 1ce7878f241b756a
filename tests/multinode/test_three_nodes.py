"""Three ``kai serve`` processes sharing PostgreSQL and Redis.

An agent (a real ``kai agent run`` process) connects to node 1 and a watcher to node 2; a
restart is asked through node 3; then node 1 dies with SIGKILL. Every event the watcher gets
is numbered without a gap, whichever node it came from, and a watcher that was away resumes
on another node with exactly what it missed.
"""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import redis.asyncio as redis

from tests.agents.sample import SETUP_RECORDS, TEARDOWN_MESSAGE
from tests.agents.support import eventually
from tests.helpers import ADMIN_EMAIL, ADMIN_PASSWORD, Api, bearer
from tests.multinode.support import (
    Cluster,
    Node,
    Watcher,
    gap_free,
    in_order,
    ready_with_broker,
)

SETUP_MESSAGES = list(SETUP_RECORDS.values())


def online_message(agent_id: str) -> str:
    """What a node logs when the agent said hello on one of its sockets."""
    return f"agent {agent_id} online"


def log_messages(events: list[dict[str, Any]]) -> list[str]:
    return [str(e["entry"]["message"]) for e in events if e["type"] == "log_stream"]


async def hellos(cluster: Cluster, agent_id: str, *, node1: int, survivors: int) -> None:
    """Wait until node 1's log shows the agent's hello ``node1`` times, and nodes 2 and 3
    together ``survivors`` times (a node logs it once the hello is fully handled)."""
    node, *others = cluster.nodes
    wanted = (node1, survivors)

    async def counted() -> bool:
        said = online_message(agent_id)
        return (node.count(said), sum(other.count(said) for other in others)) == wanted

    await eventually(counted, 10, what=f"hellos on node 1 and the others: {wanted}")


async def presence(client: redis.Redis, prefix: str, agent_id: str) -> str | None:
    """The id of the node that holds the agent's socket, as every node reads it."""
    value = await client.get(f"{prefix}presence:{agent_id}")
    return value.decode() if isinstance(value, bytes) else value


async def held_by(client: redis.Redis, prefix: str, agent_id: str, node_id: str) -> bool:
    return await presence(client, prefix, agent_id) == node_id


async def test_three_nodes_share_one_agent_and_its_events(cluster: Cluster) -> None:
    node1, node2, node3 = cluster.nodes
    await cluster.wait_ready()
    prefix = cluster.env["KAI_REDIS_PREFIX"]
    store = redis.Redis.from_url(cluster.env["KAI_REDIS_URL"])
    clients = {
        node.name: httpx.AsyncClient(base_url=node.base_url, timeout=30) for node in cluster.nodes
    }
    watchers: list[Watcher] = []
    try:
        # -- an admin (made once, by whichever node was first) logs in on node 2 -----------------
        login = await Api(clients["node2"]).login(ADMIN_EMAIL, ADMIN_PASSWORD)
        access = str(login["tokens"]["accessToken"]["token"])
        auth = bearer(access)
        created = await clients["node1"].post(
            "/api/agents", json={"agentData": {"name": "sample"}}, headers=auth
        )
        assert created.status_code == 201, created.text
        agent_id = created.json()["agentId"]
        token = created.json()["agentToken"]

        async def view(node: Node) -> dict[str, Any]:
            response = await clients[node.name].get(f"/api/agents/{agent_id}", headers=auth)
            assert response.status_code == 200, response.text
            body: dict[str, Any] = response.json()
            return body

        # -- the watcher on node 2 is there before the agent -------------------------------------
        watcher = Watcher(node2.watch_url(agent_id), token=access)
        watchers.append(watcher)
        await watcher.open()
        snapshot = await watcher.wait_for(lambda m: m.get("snapshot") is True, what="the snapshot")
        assert snapshot["status"] == "offline", snapshot

        # -- the agent, node 1's URL first -------------------------------------------------------
        agent = cluster.start_agent(token, [n.agent_url for n in cluster.nodes])

        async def agent_online() -> dict[str, Any] | None:
            if agent.returncode is not None:
                raise AssertionError(f"the agent exited:\n{agent.output()}")
            body = await view(node3)
            return body if body["status"] == "online" else None

        await eventually(agent_online, 20, what="the agent online")
        await watcher.wait_for(
            lambda m: m.get("type") == "status_update" and m.get("status") == "online",
            what="status online on the watcher",
        )
        await eventually(
            lambda: _has_all(watcher, SETUP_MESSAGES), 15, what="the setup logs on the watcher"
        )
        await hellos(cluster, agent_id, node1=1, survivors=0)
        node1_id = await presence(store, prefix, agent_id)
        assert node1_id is not None
        assert log_messages(watcher.messages)[:3] == SETUP_MESSAGES
        gap_free(watcher.messages)

        # -- a restart asked through node 3 reaches the agent on node 1 --------------------------
        before_restart = len(watcher.messages)
        restart = await clients["node3"].post(
            f"/api/agents/{agent_id}/restart",
            json={"options": {"timeout": 20, "reason": "multinode test"}},
            headers=auth,
        )
        assert restart.status_code == 200, restart.text
        answer = restart.json()
        assert answer["success"] is True, answer
        assert answer["previousStatus"] == "online", answer
        assert answer["currentStatus"] == "online", answer
        await watcher.wait_for(
            lambda m: m.get("type") == "status_update" and m.get("status") == "online",
            after=before_restart,
            what="online again after the restart",
        )
        await eventually(
            lambda: _has_all(watcher, [TEARDOWN_MESSAGE, *SETUP_MESSAGES], after=before_restart),
            15,
            what="the restart's teardown and setup logs",
        )
        restart_statuses = watcher.statuses(after=before_restart)
        assert in_order(restart_statuses, ["restarting", "online"]), restart_statuses
        gap_free(watcher.messages)
        # The restarted agent came back to node 1, the hub it was on.
        await hellos(cluster, agent_id, node1=2, survivors=0)
        await eventually(lambda: held_by(store, prefix, agent_id, node1_id), 5, what="node 1")
        reconnects_before = (await view(node2))["metrics"]["reconnects"]

        # -- node 1 dies while it holds the agent ------------------------------------------------
        before_kill = len(watcher.messages)
        node1.kill()

        async def moved() -> str | None:
            holder = await presence(store, prefix, agent_id)
            return holder if holder not in (None, node1_id) else None

        new_holder = await eventually(moved, 20, what="the agent on another node")
        await hellos(cluster, agent_id, node1=2, survivors=1)
        await watcher.wait_for(
            lambda m: m.get("type") == "status_update" and m.get("status") == "online",
            after=before_kill,
            what="online after the failover, on the watcher on node 2",
        )
        gap_free(watcher.messages)
        assert not watcher.closed
        assert watcher.statuses()[-1] == "online", watcher.statuses()
        after_failover = (await view(node3))["metrics"]["reconnects"]
        assert after_failover > reconnects_before

        # -- the watcher goes away, events happen, it resumes on node 3 ---------------------------
        await watcher.close()
        last_seq, epoch = watcher.last
        restart = await clients["node2"].post(
            f"/api/agents/{agent_id}/restart", json={"options": {"timeout": 20}}, headers=auth
        )
        assert restart.status_code == 200, restart.text
        assert restart.json()["success"] is True, restart.text
        await eventually(lambda: held_by(store, prefix, agent_id, new_holder), 5, what="holder")

        async def setup_logged_again() -> bool:
            events = await _stream(store, prefix, agent_id, after=last_seq)
            return _contains(log_messages(events), SETUP_MESSAGES)

        await eventually(setup_logged_again, 15, what="the missed events in the stream")
        missed = await _stream(store, prefix, agent_id, after=last_seq)

        watcher = Watcher(node3.watch_url(agent_id, since=last_seq, epoch=epoch), token=access)
        watchers.append(watcher)
        await watcher.open()
        await watcher.wait_for(
            lambda m: m.get("seq") == missed[-1]["seq"], what="the missed events replayed"
        )
        first = watcher.messages[0]
        assert first["type"] == "status_update", first
        assert first["snapshot"] is True, first
        assert (first["seq"], first["epoch"]) == (last_seq, epoch), first
        assert watcher.events[: len(missed)] == missed
        gap_free(watcher.messages)
        restart_statuses = [m["status"] for m in missed if m["type"] == "status_update"]
        assert in_order(restart_statuses, ["restarting", "online"]), restart_statuses
        assert watcher.statuses()[-1] == "online", watcher.statuses()

        # -- what the surviving nodes say ---------------------------------------------------------
        final = await view(node3)
        assert final["status"] == "online", final
        assert final["health"] == "healthy", final
        assert final["metrics"]["reconnects"] > after_failover, final
        # The event log's last word on the agent's status is what the database says.
        whole_log = await _stream(store, prefix, agent_id, after=0)
        statuses = [m["status"] for m in whole_log if m["type"] == "status_update"]
        assert statuses[-1] == final["status"], statuses
        for node in (node2, node3):
            assert ready_with_broker(await node.readiness()), node.name
        assert agent.returncode is None, agent.output()
    finally:
        for watcher in watchers:
            await watcher.close()
        for client in clients.values():
            await client.aclose()
        await store.aclose()


async def _has_all(watcher: Watcher, messages: list[str], *, after: int = 0) -> bool:
    return _contains(log_messages(watcher.messages[after:]), messages)


def _contains(seen: list[str], wanted: list[str]) -> bool:
    return all(message in seen for message in wanted)


async def _stream(
    client: redis.Redis, prefix: str, agent_id: str, *, after: int
) -> list[dict[str, Any]]:
    """The agent's events after ``after``, straight from its log in Redis."""
    rows: Any = await client.xrange(f"{prefix}agent:{agent_id}:events", f"0-{after + 1}", "+")
    return [orjson.loads(fields[b"d"]) for _, fields in rows]
