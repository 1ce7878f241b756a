"""Crashes, with real processes: a hub killed with SIGKILL mid-run and started again on the same
database, agent processes killed mid-command and mid-task, and Redis restarted under two
scaled-out hubs. Committed work survives each of them: every task ends exactly once, under the
id it was created with, and the hub answers again."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.agents.conftest import ServerStarter
from tests.agents.processes import Launcher
from tests.agents.support import People, eventually
from tests.helpers import assert_problem
from tests.multinode.conftest import distinct_ports
from tests.multinode.support import Cluster, Node
from tests.realtime.client_support import Hubs, watch
from tests.services import create_database, drop_database, free_port
from tests.work.crash_support import (
    DEADLINE,
    DISPATCH_INTERVAL,
    LEASE_SECONDS,
    RECORDER,
    Caller,
    RedisProcess,
    Runs,
    admin_of,
    as_caller,
    broker_down,
    echo,
    echoed,
    hub_env,
    hub_settings,
    pending_commands,
    reported,
    task_reaches,
    task_status,
    until_ready,
)
from tests.work.recorder import MAX_CONCURRENCY, RECORD_ENV
from tests.work.support import command_rows
from tests.work.test_socket import execute, outcome

TASKS = 200
OUTAGE = 3 * LEASE_SECONDS  # how long Redis stays down: longer than any lease


@pytest.fixture(params=["sqlite", "postgresql"])
def own_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database of this test alone: a new SQLite file, or a new PostgreSQL database (dropped
    afterwards, whatever connections a killed hub left behind)."""
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "kai.db"
        shutil.copy(template, path)
        yield f"sqlite+aiosqlite:///{path}"
        return
    admin_url: str = request.getfixturevalue("pg_admin_url")
    url = asyncio.run(create_database(admin_url))
    try:
        yield url
    finally:
        asyncio.run(drop_database(admin_url, url))


@pytest.fixture
def record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The file the recording agent processes write their runs to."""
    path = tmp_path / "runs.jsonl"
    monkeypatch.setenv(RECORD_ENV, str(path))
    return path


@pytest.mark.timeout(180)
async def test_a_hub_killed_mid_run_loses_no_task_and_reruns_keep_their_id(
    own_database: str, record: Path, tmp_path: Path
) -> None:
    port = free_port()
    env = hub_env(own_database)
    first = Node("hub", port, tmp_path / "data", tmp_path / "hub-1.log")
    again = Node("hub-again", port, tmp_path / "data", tmp_path / "hub-2.log")
    launcher = Launcher(first.agent_url, tmp_path)
    try:
        with reported([first, again], launcher.processes):
            first.start(env)
            await until_ready(first)
            async with admin_of(first) as admin:
                agent_id, token = await admin.create_agent("recorder")
                # Queued before the agent connects, so that it is mid-run whenever it is killed.
                parameters = {"steps": 1, "delay": 0.1}
                created = await asyncio.gather(
                    *(admin.create_task(agent_id, f"crash-{i}", parameters) for i in range(TASKS))
                )
                assert len(set(created)) == TASKS
                agent = launcher.start(token, target=RECORDER)
                await admin.wait_status(agent_id, "online", process=agent)

                async def mid_run() -> bool:
                    assert agent.returncode is None, agent.output()
                    done = await admin.total(agent_id, "succeeded")
                    return done >= MAX_CONCURRENCY and await admin.total(agent_id, "running") > 0

                await eventually(mid_run, 30, what="some tasks done, some running", interval=0.05)
                first.kill()

            again.start(env)
            await until_ready(again)
            async with admin_of(again) as admin:
                await admin.all_succeed(agent_id, TASKS, timeout=120)
                tasks = await admin.tasks(agent_id)
                view = await admin.agent(agent_id)

            assert agent.returncode is None, "the agent process died with the hub"
            assert view["status"] == "online", view
            assert view["metrics"]["reconnects"] >= 1, view["metrics"]
            assert sorted(task["taskId"] for task in tasks) == sorted(created)
            assert {task["status"] for task in tasks} == {"succeeded"}
            assert all(task["result"] == {"counted": 1} for task in tasks)
            runs = Runs.read(record)
            runs.check(tasks)
            # The tasks that ran when the hub died lost their lease and ran again, same id.
            again_ran = [task for task in tasks if task["attempts"] > 1]
            assert again_ran, "no task was running when the hub died"
            for task in again_ran:
                assert task["attempts"] in runs.started[task["taskId"]], task
            assert len(runs.started) == TASKS
    finally:
        launcher.kill_all()
        first.kill()
        again.kill()


@pytest.mark.parametrize("mode", ["embedded", "redis"])
async def test_an_agent_killed_mid_command_leaves_its_callers_a_timeout_at_their_deadline(
    hubs: Hubs, record: Path, tmp_path: Path
) -> None:
    # In Redis mode the agent is on one node and both callers on the other.
    near, far = await hubs.pair(
        agent_heartbeat_interval=0.2, agent_heartbeat_timeout=1.0, command_timeout=DEADLINE
    )
    ann = await People(far).join("ann@example.com")
    created = await ann.create_agent("recorder")
    agent_id = created.agent_id
    launcher = Launcher(near.ws_url, tmp_path)
    try:
        with reported([], launcher.processes):
            process = launcher.start(created.token, target=RECORDER)
            await ann.wait_status(agent_id, "online", 20, process=process)
            async with watch(far, agent_id, ann.token) as watcher:
                assert (await watcher.recv())["type"] == "status_update"
                sleep = {"command": "sleep", "parameters": {"seconds": 60}, "timeout": DEADLINE}
                sent = time.monotonic()
                rest = asyncio.create_task(
                    ann.call("POST", f"/api/agents/{agent_id}/command", json=sleep)
                )
                await watcher.send(execute("sleep", {"seconds": 60}))

                async def both_running() -> bool:
                    return len(Runs.read(record).commands) == 2

                await eventually(both_running, DEADLINE * 0.75, what="both commands at the agent")
                process.kill()

                response = await rest
                waited = time.monotonic() - sent
                ws_id, answer = await outcome(watcher, timeout=DEADLINE + 5)

            assert_problem(response, 504, f"The agent did not answer within {DEADLINE:g} s")
            assert waited >= DEADLINE - 0.05, "answered before the deadline"
            rest_id = response.json()["commandId"]
            assert sorted(Runs.read(record).commands) == sorted([rest_id, ws_id])
            assert answer == {
                "type": "command_error",
                "commandId": ws_id,
                "error": f"The agent did not answer within {DEADLINE:g} s",
            }
            await far.hub.commands.records.flush()  # the callers' node records their commands
            rows = await command_rows(near.hub, agent_id)
            assert {rows[rest_id].status, rows[ws_id].status} == {"timeout"}
            await ann.wait_status(agent_id, "offline", 10)

            # The same token in a new process: commands work again, through either door.
            again = launcher.start(created.token, target=RECORDER)
            await ann.wait_status(agent_id, "online", 20, process=again)
            echo = {"command": "echo", "parameters": {"back": True}, "timeout": DEADLINE}
            response = await ann.call("POST", f"/api/agents/{agent_id}/command", json=echo)
            assert response.status_code == 200, response.text
            assert response.json()["result"] == {"back": True}
            async with watch(far, agent_id, ann.token) as watcher:
                await watcher.send(execute("echo", {"ws": "back"}))
                _, answer = await outcome(watcher)
                assert (answer["type"], answer["result"]) == ("command_result", {"ws": "back"})
    finally:
        launcher.kill_all()


async def test_a_task_whose_agent_was_killed_goes_back_and_a_new_process_finishes_it(
    start_server: ServerStarter, record: Path, tmp_path: Path
) -> None:
    async with start_server(
        task_lease_seconds=LEASE_SECONDS, task_dispatch_interval=DISPATCH_INTERVAL
    ) as server:
        ann = await People(server).join("ann@example.com")
        created = await ann.create_agent("recorder")
        agent_id = created.agent_id
        launcher = Launcher(server.ws_url, tmp_path)
        try:
            with reported([], launcher.processes):
                first = launcher.start(created.token, target=RECORDER)
                await ann.wait_status(agent_id, "online", 20, process=first)
                # The first attempt would take a minute; any later one is quick.
                parameters = {"steps": 1, "delay": 0.05, "firstDelay": 60}
                response = await ann.call(
                    "POST",
                    f"/api/agents/{agent_id}/task",
                    json={"taskType": "count", "parameters": parameters},
                )
                assert response.status_code == 201, response.text
                task_id = response.json()["taskId"]

                async def started() -> bool:
                    return Runs.read(record).started.get(task_id) == [1]

                await eventually(started, 10, what="the first attempt started")
                running = await task_status(ann, task_id)
                assert (running["status"], running["attempts"]) == ("running", 1), running
                first.kill()

                # No heartbeat renews the lease: it runs out and the task goes back.
                back = await task_reaches(ann, task_id, "queued", timeout=LEASE_SECONDS + 10)
                assert back["attempts"] == 1, back
                assert back["message"] == "Back in the queue after attempt 1", back
                await ann.wait_status(agent_id, "offline", 10)

                second = launcher.start(created.token, target=RECORDER)
                done = await task_reaches(ann, task_id, "succeeded", timeout=20)
                assert (done["attempts"], done["result"]) == (2, {"counted": 1}), done
                assert second.returncode is None
                runs = Runs.read(record)
                assert runs.started[task_id] == [1, 2]
                assert runs.finished[task_id] == [2]
                assert runs.pids[(task_id, 1)] == first.popen.pid
                assert runs.pids[(task_id, 2)] == second.popen.pid
                runs.check([done])
        finally:
            launcher.kill_all()


@pytest.mark.timeout(180)
async def test_redis_restarted_under_two_hubs_loses_nothing_committed(
    pg_admin_url: str, record: Path, tmp_path: Path
) -> None:
    database_url = await create_database(pg_admin_url)
    broker = RedisProcess(free_port(), tmp_path / "redis")
    cluster = Cluster.make(
        tmp_path, distinct_ports(2), hub_settings(database_url, KAI_REDIS_URL=broker.url)
    )
    node1, node2 = cluster.nodes
    try:
        with reported(cluster.nodes, cluster.agents):
            await broker.start()
            cluster.start()
            await cluster.wait_ready()
            async with admin_of(node2) as far, as_caller(node1, far.token) as near:
                agent_id, token = await far.create_agent("recorder")
                # The agent is on node 1 only: node 2 reaches it through Redis.
                agent = cluster.start_agent(token, [node1.agent_url], target=RECORDER)
                await far.wait_status(agent_id, "online", process=agent)
                quick = {"steps": 1, "delay": 0.1}
                created: dict[str, str] = {}  # idempotency key -> task id

                async def queue(
                    caller: Caller, key: str, parameters: dict[str, Any], **options: Any
                ) -> None:
                    created[key] = await caller.create_task(agent_id, key, parameters, **options)

                # One task runs across the whole outage; its agent heartbeats all along.
                await queue(far, "long", {"steps": 3, "delay": OUTAGE / 2}, max_attempts=10)

                async def long_started() -> bool:
                    return bool(Runs.read(record).started.get(created["long"]))

                await eventually(long_started, 10, what="the long task started")
                for i in range(10):
                    await queue(far, f"before-{i}", quick)
                assert (await echo(far, agent_id, "before")).status_code == 200

                broker.kill()
                await eventually(lambda: broker_down(node1), 10, what="node 1 sees Redis down")
                await eventually(lambda: broker_down(node2), 10, what="node 2 sees Redis down")
                down = time.monotonic()
                for i, caller in enumerate([near, far] * 5):
                    await queue(caller, f"during-{i}", quick)
                    answer = await echo(caller, agent_id, f"during-{i}")
                    # Through the agent's own node the answer comes; through the other, the
                    # broker that would carry it is down.
                    assert answer.status_code in (200, 503), answer.text
                    if answer.status_code == 200:
                        assert answer.json()["result"] == {"text": f"during-{i}"}
                # A create without a key: whatever the answer, it is the truth.
                bare = await far.call(
                    "POST",
                    f"/api/agents/{agent_id}/task",
                    json={"taskType": "count", "parameters": quick},
                )
                assert bare.status_code in (201, 503), bare.text
                if bare.status_code == 201:
                    created["bare"] = bare.json()["taskId"]
                # Redis stays down longer than a lease, however quick the above was.
                await asyncio.sleep(max(0.0, OUTAGE - (time.monotonic() - down)))

                await broker.start()  # on the same port, empty
                await cluster.wait_ready()
                for i in range(10):
                    await queue(far, f"after-{i}", quick)
                await eventually(lambda: echoed(far, agent_id), 30, what="commands via node 2")
                await eventually(lambda: echoed(near, agent_id), 30, what="commands via node 1")
                await far.all_succeed(agent_id, len(created), timeout=60)
                tasks = await far.tasks(agent_id)
                for caller in (far, near):
                    assert (await caller.agent(agent_id))["status"] == "online"

            assert agent.returncode is None
            assert sorted(t["taskId"] for t in tasks) == sorted(created.values())
            runs = Runs.read(record)
            runs.check(tasks)
            long = next(t for t in tasks if t["taskId"] == created["long"])
            stuck = await pending_commands(database_url)
            broken = []
            if long["attempts"] != 1:
                broken.append(
                    f"the task running across the outage was taken back and run again "
                    f"{long['attempts'] - 1} times (attempts {runs.started[long['taskId']]}) "
                    f"though its agent stayed connected and heartbeated"
                )
            if stuck:
                broken.append(f"commands refused with 503 are recorded pending for ever: {stuck}")
            assert not broken, "\n".join(broken)
    finally:
        cluster.kill_all()
        broker.kill()
        await drop_database(pg_admin_url, database_url)
