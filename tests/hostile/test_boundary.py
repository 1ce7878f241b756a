"""The role boundary, against a real ``kai serve``: a developer may tune work but not disarm
the hub (throttles, origins, log level, quotas need ``system:admin``), and no runtime setting
takes a value that breaks a route or a loop (finding 6 of issue 12)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import annotated_types
import httpx

from kai.config import Settings
from kai.ops.runtime import RUNTIME_KEYS, WORK_KEYS, wire_name
from tests.agents.processes import spawn_agent
from tests.helpers import bearer
from tests.hostile.conftest import HubStarter, ServedHub

DEV_EMAIL = "dev@example.com"
DEV_PASSWORD = "a developer's long passphrase 7"
NUMERIC = [k for k in RUNTIME_KEYS if Settings.model_fields[k].annotation in (int, float)]
# What a developer tried in the finding, with each setting's own type (the permission is
# checked before the value).
GUARDED_TRIES: dict[str, Any] = {
    "authRateLimit": 10_000,
    "authRateWindow": 86_400,
    "logLevel": "DEBUG",
    "wsAllowedOrigins": ["*"],
    "uploadMaxBytes": 1024**4,
    "uploadQuotaBytes": 1024**5,
    "agentMaxMessageBytes": 64 * 1024 * 1024,
    "wsMaxMessageBytes": 16 * 1024 * 1024,
    "wsRateLimit": 10**9,
    "wsRateWindow": 86_400,
    "wsSendQueue": 10**6,
}


def bounds(key: str) -> tuple[float, float]:
    """The inclusive lower and upper bound of a numeric runtime setting."""
    low = high = None
    for item in Settings.model_fields[key].metadata:
        if isinstance(item, annotated_types.Ge):
            low = item.ge
        if isinstance(item, annotated_types.Le):
            high = item.le
    assert low is not None, f"{key} lacks a lower bound"
    assert high is not None, f"{key} lacks an upper bound"
    return float(low), float(high)  # type: ignore[arg-type]


def literal(key: str, value: float) -> str:
    """The JSON text of ``value`` as the setting's type takes it (ints as ints)."""
    number = int(value) if Settings.model_fields[key].annotation is int else value
    return repr(number)


async def developer(hub: ServedHub) -> dict[str, str]:
    """A registered user the admin made a developer, signed in."""
    async with hub.client() as client:
        registered = await client.post(
            "/api/auth/register",
            json={"userData": {"email": DEV_EMAIL, "password": DEV_PASSWORD}},
        )
        assert registered.status_code == 201, registered.text
        user_id = registered.json()["user"]["id"]
        promoted = await client.put(
            f"/api/users/{user_id}", json={"role": "developer"}, headers=await hub.admin()
        )
        assert promoted.status_code == 200, promoted.text
    return bearer(await hub.login(DEV_EMAIL, DEV_PASSWORD))


async def put_config(
    client: httpx.AsyncClient, headers: dict[str, str], settings: dict[str, Any] | str
) -> httpx.Response:
    """``PUT /api/config``; a string is sent as the raw JSON text of ``settings``."""
    if isinstance(settings, str):
        return await client.put(
            "/api/config",
            content=f'{{"settings": {settings}}}',
            headers={**headers, "Content-Type": "application/json"},
        )
    return await client.put("/api/config", json={"settings": settings}, headers=headers)


async def values(client: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, Any]:
    response = await client.get("/api/config", headers=headers)
    assert response.status_code == 200, response.text
    return {name: s["value"] for name, s in response.json()["settings"].items()}


async def test_a_developer_tunes_work_but_cannot_disarm_the_hub(start_hub: HubStarter) -> None:
    hub = start_hub(registration="open")
    dev, admin = await developer(hub), await hub.admin()
    assert {wire_name(k) for k in RUNTIME_KEYS if k not in WORK_KEYS} == set(GUARDED_TRIES)
    async with hub.client() as client:
        listed = (await client.get("/api/config", headers=dev)).json()["settings"]
        assert {name: s["permission"] for name, s in listed.items()} == {
            wire_name(k): "config:update" if k in WORK_KEYS else "system:admin"
            for k in RUNTIME_KEYS
        }
        before = await values(client, admin)
        for name, value in GUARDED_TRIES.items():
            refused = await put_config(client, dev, {name: value})
            assert refused.status_code == 403, (name, refused.text)
            assert refused.json()["detail"] == "Insufficient permissions: system:admin"
        # A change mixing a work key and a guarded one is refused whole.
        mixed = await put_config(client, dev, {"commandTimeout": 5, "authRateLimit": 10_000})
        assert mixed.status_code == 403, mixed.text
        # Out of bounds anyway, but refused for the role first: nothing about the value leaks.
        window = await put_config(client, dev, '{"authRateLimit": 1, "authRateWindow": 1e9}')
        assert window.status_code == 403, window.text
        assert await values(client, admin) == before

        tuned = await put_config(client, dev, {"commandTimeout": 5, "streamTtl": 120})
        assert tuned.status_code == 200, tuned.text
        assert tuned.json()["updatedFields"] == ["commandTimeout", "streamTtl"]
        guarded = await put_config(client, admin, {"authRateLimit": 20, "logLevel": "warning"})
        assert guarded.status_code == 200, guarded.text
        now = await values(client, admin)
        assert (now["authRateLimit"], now["logLevel"]) == (20, "WARNING")

        # Logins stay throttled for everyone: the developer could not lift the limit.
        answers = [
            (
                await client.post(
                    "/api/auth/login",
                    json={"credentials": {"email": "admin@example.com", "password": "guess"}},
                )
            ).status_code
            for _ in range(25)
        ]
        first = answers.index(429)  # within the limit of 20 (earlier logins took some)
        assert set(answers[:first]) == {401}
        assert set(answers[first:]) == {429}


async def test_every_runtime_setting_refuses_values_beyond_its_bounds(
    start_hub: HubStarter,
) -> None:
    hub = start_hub()
    admin = await hub.admin()
    tries: list[tuple[str, str]] = []
    for key in NUMERIC:
        low, high = bounds(key)
        name = wire_name(key)
        bad = [literal(key, low - max(1.0, low)), literal(key, high * 2), "-1", "0"]
        bad += ["1e300", "-1e300", "1e400", "NaN", "Infinity", "-Infinity", str(10**40)]
        bad += ['"lots"', "[]", "{}"]
        tries += [(name, text) for text in bad if text != literal(key, low)]
    origins = ['["javascript:alert(1)"]', '["https://a.example/path"]', '"*"']
    origins += ['["https://' + "a" * 300 + '.example"]', str(['"*"'] * 101).replace("'", "")]
    tries += [("wsAllowedOrigins", text) for text in origins]
    tries += [("logLevel", text) for text in ('"LOUD"', '""', "10", '"debug\\n"')]
    tries += [("secretKey", '"' + "x" * 40 + '"'), ("databaseUrl", '"sqlite://"')]

    async with hub.client() as client:
        before = await values(client, admin)
        for name, text in tries:
            response = await put_config(client, admin, f'{{"{name}": {text}}}')
            assert response.status_code == 422, (name, text, response.text)
            problem = response.json()
            assert problem["detail"] == "Invalid settings", (name, text)
            fields = {e["field"].split(".")[0] for e in problem["errors"]}
            assert fields == {name}, (name, text, problem["errors"])
            assert all(e["message"] for e in problem["errors"])
        assert await values(client, admin) == before
        assert (await client.get("/health")).status_code == 200
    assert "Traceback" not in hub.output()


async def test_routes_and_loops_keep_working_at_the_extreme_allowed_values(
    start_hub: HubStarter, tmp_path: Path
) -> None:
    hub = start_hub()
    admin = await hub.admin()
    highest = {wire_name(k): bounds(k)[1] for k in NUMERIC}
    highest["commandTimeout"] = 300  # and commandMaxTimeout at its 3600
    lowest = {wire_name(k): bounds(k)[0] for k in WORK_KEYS if k in NUMERIC}
    lowest["commandTimeout"] = lowest["commandMaxTimeout"] = 5  # a command still has time
    async with hub.client(timeout=30) as client:
        created = await client.post(
            "/api/agents", json={"agentData": {"name": "sample"}}, headers=admin
        )
        assert created.status_code == 201, created.text
        agent_id = created.json()["agentId"]
        process = spawn_agent(
            tmp_path / "agent.log", created.json()["agentToken"], [f"{hub.ws_url}/ws/agent"]
        )
        try:
            for extreme in (highest, lowest):
                text = ", ".join(f'"{k}": {literal(_key(k), v)}' for k, v in extreme.items())
                changed = await put_config(client, admin, "{" + text + "}")
                assert changed.status_code == 200, changed.text
                await exercise(client, admin, agent_id)
            await asyncio.sleep(2.5)  # the lease reaper and stream expiry ran at 1 s leases
            services = (await client.get("/api/services", headers=admin)).json()["services"]
            failing = {
                s["name"]: s["counters"]
                for s in services
                if s["health"] != "healthy" or (s.get("counters") or {}).get("failures")
            }
            assert failing == {}
        finally:
            process.kill()
    assert "Traceback" not in hub.output()


def _key(name: str) -> str:
    return next(k for k in RUNTIME_KEYS if wire_name(k) == name)


async def exercise(client: httpx.AsyncClient, admin: dict[str, str], agent_id: str) -> None:
    """A command, a stream read to its end, a task to success, an upload and a login."""
    for _ in range(100):
        status = await client.get(f"/api/agents/{agent_id}/status", headers=admin)
        if status.json().get("status") == "online":
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError(f"the agent is not online: {status.text}")
    command = await client.post(
        f"/api/agents/{agent_id}/command",
        json={"command": "add", "parameters": {"a": 2, "b": 3}},
        headers=admin,
    )
    assert command.status_code == 200, command.text
    opened = await client.post(
        f"/api/agents/{agent_id}/stream-prompt", json={"prompt": "one two three"}, headers=admin
    )
    assert opened.status_code == 200, opened.text
    path = httpx.URL(opened.json()["streamUrl"]).raw_path.decode()
    stream = await client.get(path, headers=admin)
    assert stream.status_code == 200, stream.text
    assert all(word in stream.text for word in ("one", "two", "three"))
    queued = await client.post(
        f"/api/agents/{agent_id}/task",
        json={"taskType": "count", "parameters": {"steps": 2}},
        headers=admin,
    )
    assert queued.status_code == 201, queued.text
    task_id = queued.json()["taskId"]
    for _ in range(100):
        task = (await client.get(f"/api/tasks/{task_id}/status", headers=admin)).json()
        if task["status"] not in ("queued", "running"):
            break
        await asyncio.sleep(0.1)
    assert task["status"] == "succeeded", task
    upload = await client.post(
        f"/api/agents/{agent_id}/upload", files={"file": ("a.txt", b"abc")}, headers=admin
    )
    assert upload.status_code == 201, upload.text
    session = await client.get("/api/auth/session", headers=admin)
    assert session.status_code == 200, session.text
