"""The coordinator example (kai/examples/coordinator.py) against a real hub: a task on the
coordinator is split into subtasks for two workers, and their results come back together."""

from __future__ import annotations

import asyncio
import json
import sys

from kai.examples.coordinator import TEXT, run_example
from tests.agents.processes import child_env
from tests.agents.support import HubServer
from tests.helpers import ADMIN_EMAIL, ADMIN_PASSWORD
from tests.work.test_metrics import scrape, value


async def test_the_coordinator_example_assembles_its_workers_results(server: HubServer) -> None:
    before = await scrape(server)
    status = await run_example(server.base_url, ADMIN_EMAIL, ADMIN_PASSWORD)
    assert status["status"] == "succeeded", status
    words = len(TEXT.split())
    assert status["result"]["words"] == words
    assert sum(status["result"]["parts"]) == words
    assert all(status["result"]["parts"])
    the = sum(1 for w in TEXT.lower().split() if w.strip(".") == "the")
    assert status["result"]["top"][0] == ["the", the]
    subtasks = status["subtasks"]
    assert len(subtasks) == 2
    assert {s["status"] for s in subtasks} == {"succeeded"}
    assert len({s["agentId"] for s in subtasks}) == 2
    # Two subtasks asked for and granted, counted in the metrics.
    after = await scrape(server)
    metric = "kai_peer_requests_total"
    grown = value(after, metric, kind="peer_task", outcome="ok") - value(
        before, metric, kind="peer_task", outcome="ok"
    )
    assert grown == 2


async def test_the_example_runs_as_the_readme_says(server: HubServer) -> None:
    """`KAI_PASSWORD=... python -m kai.examples.coordinator`, against the test's hub."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "kai.examples.coordinator",
        "--hub",
        server.base_url,
        env=child_env(KAI_PASSWORD=ADMIN_PASSWORD, KAI_EMAIL=ADMIN_EMAIL),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    status = json.loads(out)
    assert status["status"] == "succeeded"
    assert status["result"]["words"] == len(TEXT.split())
    assert [s["status"] for s in status["subtasks"]] == ["succeeded", "succeeded"]
