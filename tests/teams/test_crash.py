"""Crashes in the middle of coordinated work, with real agent processes and short leases: a
worker killed mid-subtask has the subtask re-run once a process with its token is back, and the
parent still completes; a coordinator killed while waiting for its subtask is re-run, finds the
subtask its first attempt queued instead of queueing another, and completes with its result."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.agents.conftest import ServerStarter
from tests.agents.processes import Launcher
from tests.agents.support import HubServer, People, Person, eventually
from tests.teams.agents import RECORD_ENV, Line, lines
from tests.teams.support import Crew, Seen, worker
from tests.work.crash_support import (
    DISPATCH_INTERVAL,
    LEASE_SECONDS,
    reported,
    task_reaches,
    task_status,
)

WORKER = "tests.teams.agents:worker"
COORDINATOR = "tests.teams.agents:coordinator"


@pytest.fixture
def record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The file the agent processes write their task attempts to."""
    path = tmp_path / "runs.jsonl"
    monkeypatch.setenv(RECORD_ENV, str(path))
    return path


@pytest.fixture
def short_leases() -> dict[str, Any]:
    return {"task_lease_seconds": LEASE_SECONDS, "task_dispatch_interval": DISPATCH_INTERVAL}


@contextmanager
def agent_processes(server: HubServer, directory: Path) -> Iterator[Launcher]:
    """Starts agent processes against ``server``: what they wrote is printed if the test fails,
    and they are all killed at the end, before the hub stops."""
    launcher = Launcher(server.ws_url, directory)
    try:
        with reported([], launcher.processes):
            yield launcher
    finally:
        launcher.kill_all()


async def written(record: Path, event: str, task_id: str, attempt: int) -> Line:
    """Wait until an agent process wrote down ``event`` for that attempt of the task."""

    async def found() -> Line | None:
        for line in lines(record):
            if (line.event, line.task, line.attempt) == (event, task_id, attempt):
                return line
        return None

    return await eventually(found, 15, what=f"{event} of {task_id} attempt {attempt}")


async def only_subtask(person: Person, parent_id: str) -> str:
    """The id of the parent's one subtask, once there is one."""

    async def queued() -> str | None:
        subtasks = (await task_status(person, parent_id))["subtasks"]
        assert len(subtasks) <= 1, subtasks
        return str(subtasks[0]["taskId"]) if subtasks else None

    return await eventually(queued, 15, what="the subtask queued")


@pytest.mark.parametrize("crash", ["killed", "frozen"])
async def test_a_worker_lost_mid_subtask_runs_it_again_and_the_parent_completes(
    crash: str,
    start_server: ServerStarter,
    short_leases: dict[str, Any],
    record: Path,
    tmp_path: Path,
) -> None:
    """Killed: a new process with its token runs the subtask again. Frozen (SIGSTOP) past its
    heartbeat timeout and its lease: the same process, once it thaws, reconnects and runs it
    again, leaving its stale first attempt."""
    async with start_server(**short_leases) as server:
        with agent_processes(server, tmp_path) as launcher:
            ann = await People(server).join("ann@example.com")
            boss = await ann.create_agent("coordinator")
            helper = await ann.create_agent("worker")
            await allow_tasks(ann, boss.agent_id, helper.agent_id)
            first = launcher.start(helper.token, target=WORKER)
            await ann.wait_status(helper.agent_id, "online", 20, process=first)
            coordinating = launcher.start(boss.token, target=COORDINATOR)
            await ann.wait_status(boss.agent_id, "online", 20, process=coordinating)

            parent_id = await delegate(
                ann, boss.agent_id, "worker", "double", {"n": 21, "hangFirst": True}
            )
            subtask_id = await only_subtask(ann, parent_id)
            started = await written(record, "start", subtask_id, 1)
            assert started.pid == first.popen.pid
            if crash == "killed":
                first.kill()
            else:
                first.pause()

            # No heartbeat renews the subtask's lease: it runs out and the subtask goes back
            # to the queue; the parent waits on, running.
            back = await task_reaches(ann, subtask_id, "queued", timeout=LEASE_SECONDS + 10)
            assert (back["attempts"], back["message"]) == (1, "Back in the queue after attempt 1")
            assert (await task_status(ann, parent_id))["status"] == "running"
            await ann.wait_status(helper.agent_id, "offline", 10)

            if crash == "killed":  # a new process with the worker's token
                again = launcher.start(helper.token, target=WORKER)
            else:  # the same process, back
                first.resume()
                again = first
            done = await task_reaches(ann, parent_id, "succeeded", timeout=20)
            assert done["attempts"] == 1, "the parent ran again"
            assert done["result"] == {
                "result": {"n": 42, "attempt": 2, "pid": again.popen.pid},
                "subtask": subtask_id,
                "attempt": 1,
            }
            assert [(s["taskId"], s["status"]) for s in done["subtasks"]] == [
                (subtask_id, "succeeded")
            ]
            child = await task_status(ann, subtask_id)
            assert (child["attempts"], child["parentTaskId"]) == (2, parent_id)

            def runs(task_id: str) -> list[tuple[str, int, int]]:
                return [(x.event, x.attempt, x.pid) for x in lines(record) if x.task == task_id]

            assert runs(subtask_id) == [
                ("start", 1, first.popen.pid),
                ("start", 2, again.popen.pid),
                ("done", 2, again.popen.pid),
            ]
            assert runs(parent_id) == [
                ("start", 1, coordinating.popen.pid),
                ("submitted", 1, coordinating.popen.pid),
                ("done", 1, coordinating.popen.pid),
            ]
            assert again.returncode is None
            assert coordinating.returncode is None


async def test_a_coordinator_killed_mid_task_is_rerun_and_reuses_its_subtask(
    start_server: ServerStarter, short_leases: dict[str, Any], record: Path, tmp_path: Path
) -> None:
    seen = Seen()
    crew = Crew()
    async with start_server(**short_leases) as server:
        try:
            with agent_processes(server, tmp_path) as launcher:
                ann = await People(server).join("ann@example.com")
                boss = await ann.create_agent("coordinator")
                helper = await ann.create_agent("helper")
                await allow_tasks(ann, boss.agent_id, helper.agent_id)
                # The worker runs in this process: its subtask holds until released.
                await crew.start(worker("helper", seen), server.ws_url, helper.token)
                first = launcher.start(boss.token, target=COORDINATOR)
                await ann.wait_status(boss.agent_id, "online", 20, process=first)

                parent_id = await delegate(ann, boss.agent_id, "helper", "hold", {})
                submitted = await written(record, "submitted", parent_id, 1)
                assert submitted.replayed is False
                subtask_id = submitted.subtask
                assert subtask_id is not None

                async def holding() -> bool:
                    return seen.started == [subtask_id]

                await eventually(holding, 10, what="the worker holding the subtask")
                first.kill()

                back = await task_reaches(ann, parent_id, "queued", timeout=LEASE_SECONDS + 10)
                assert back["attempts"] == 1, back
                # The subtask is not the parent's to lose: it holds on.
                assert (await task_status(ann, subtask_id))["status"] == "running"

                # The coordinator again, in a new process: the parent's second attempt finds
                # the subtask of the first.
                again = launcher.start(boss.token, target=COORDINATOR)
                rerun = await written(record, "submitted", parent_id, 2)
                assert (rerun.subtask, rerun.replayed, rerun.pid) == (
                    subtask_id,
                    True,
                    again.popen.pid,
                )
                seen.release.set()
                done = await task_reaches(ann, parent_id, "succeeded", timeout=20)
                assert done["result"] == {
                    "result": {"released": "helper"},
                    "subtask": subtask_id,
                    "attempt": 2,
                }
                assert done["attempts"] == 2
                assert [(s["taskId"], s["status"]) for s in done["subtasks"]] == [
                    (subtask_id, "succeeded")
                ]
                listed = await ann.call("GET", f"/api/agents/{helper.agent_id}/tasks")
                assert listed.json()["total"] == 1, "the re-run queued another subtask"
                assert seen.started == [subtask_id], "the subtask ran twice"
                assert again.returncode is None
        finally:
            await crew.stop()


async def allow_tasks(person: Person, agent_id: str, target_id: str) -> None:
    response = await person.call(
        "POST",
        f"/api/agents/{agent_id}/grants",
        json={"targetAgentId": target_id, "actions": ["task"]},
    )
    assert response.status_code == 201, response.text


async def delegate(
    person: Person, agent_id: str, peer: str, task_type: str, params: dict[str, Any]
) -> str:
    """Queue a ``delegate`` task on the coordinator: one subtask for ``peer``."""
    response = await person.call(
        "POST",
        f"/api/agents/{agent_id}/task",
        json={
            "taskType": "delegate",
            "parameters": {"peer": peer, "taskType": task_type, "params": params},
        },
    )
    assert response.status_code == 201, response.text
    return str(response.json()["taskId"])
