"""``GET /metrics``: Prometheus text that its own parser reads, and counters that move with
real traffic (HTTP, a watcher, a raw agent answering a command and a task)."""

from __future__ import annotations

import asyncio

from prometheus_client.parser import text_string_to_metric_families

from tests.agents.support import HubServer, People, agent_socket
from tests.realtime.client_support import watch
from tests.work.support import kept_alive, payload
from tests.work.task_support import answer, reaches

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(server: HubServer) -> Samples:
    response = await server.client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_parse_and_move_with_traffic(server: HubServer, people: People) -> None:
    before = await scrape(server)

    ann = await people.join("ann@example.com")
    created = await ann.create_agent("raw")
    route = "/api/agents/{agentId}"
    async with (
        watch(server, created.agent_id, ann.token) as watcher,
        agent_socket(server.ws_url, created.token) as raw,
        kept_alive(raw),
    ):
        await raw.hello("raw", commands=["echo"], taskTypes=["work"])
        await ann.wait_status(created.agent_id, "online")
        for _ in range(3):
            assert (await ann.call("GET", f"/api/agents/{created.agent_id}")).status_code == 200
        assert (await ann.call("GET", "/api/agents/nobody")).status_code == 404

        sent = asyncio.create_task(
            ann.call(
                "POST",
                f"/api/agents/{created.agent_id}/command",
                json={"command": "echo", "parameters": {"x": 1}},
            )
        )
        command = await raw.recv_type("command")
        await raw.send(
            {
                "type": "command_result",
                "commandId": command["commandId"],
                "success": True,
                "result": {"x": 1},
            }
        )
        assert (await sent).status_code == 200

        response = await ann.call(
            "POST", f"/api/agents/{created.agent_id}/task", json={"taskType": "work"}
        )
        task_id = payload(response)["taskId"]
        await answer(raw, await raw.recv_type("task"), "done")
        await reaches(ann, task_id, "succeeded")
        await watcher.until("task_update")

        after = await scrape(server)
        sockets = "kai_websocket_connections"
        assert value(after, sockets, kind="client") >= 1
        assert value(after, sockets, kind="agent") >= 1

    requests = "kai_http_requests_total"
    ok = {"method": "GET", "route": route, "status": "200"}
    assert value(after, requests, **ok) - value(before, requests, **ok) >= 3
    missing = {"method": "GET", "route": route, "status": "404"}
    assert value(after, requests, **missing) - value(before, requests, **missing) == 1
    timed = "kai_http_request_duration_seconds_count"
    assert value(after, timed, method="GET", route=route) >= 4
    assert value(after, "kai_http_request_duration_seconds_sum", method="GET", route=route) > 0
    # A path with an id is counted under its template, never under the raw path.
    assert not [key for key in after if ("route", f"/api/agents/{created.agent_id}") in key[1]]

    for name, labels in (
        ("kai_commands_total", {"outcome": "succeeded"}),
        ("kai_tasks_ended_total", {"status": "succeeded"}),
    ):
        assert value(after, name, **labels) - value(before, name, **labels) == 1, name
    for name in ("kai_events_published_total", "kai_events_delivered_total"):
        assert value(after, name) > value(before, name), name
    assert value(after, "kai_agents", status="online") >= 1
    assert value(after, "kai_tasks", status="succeeded") >= 1
    assert "kai_database_errors_total" in {key[0] for key in after}
    assert "kai_broker_errors_total" in {key[0] for key in after}
