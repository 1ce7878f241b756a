"""A typed async client for kai's REST API and client WebSocket.

    async with KaiClient("http://127.0.0.1:8000") as kai:
        await kai.login("admin@example.com", password)
        agent = (await kai.agents())[0]
        answer = await kai.command(agent["id"], "echo", {"text": "hi"})
        async for chunk in kai.stream_text(agent["id"], "Tell me a story"):
            print(chunk, end="")
        async with kai.watch(agent["id"]) as events:
            async for event in events:
                print(event["type"])

Every method answers the JSON the route answers (a ``dict``). An answer that is not a success
raises ``KaiApiError`` carrying the problem+json. The session's access token is refreshed by
itself when it expires. ``watch`` reconnects by itself and resumes from the last ``seq`` it
delivered, so a dropped connection loses no event the hub still holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any, Literal, Self
from urllib.parse import urlencode

import httpx
import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

Priority = Literal["low", "medium", "high", "critical"]
TaskStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
JSON = dict[str, Any]

# Closes after which reconnecting cannot help: auth refused, access denied, agent deleted.
FINAL_CLOSES = frozenset({1008, 4004})


class KaiApiError(Exception):
    """The hub answered with a problem: ``status`` and the problem+json ``problem``."""

    def __init__(self, status: int, problem: JSON) -> None:
        super().__init__(f"{status} {problem.get('title', '')}: {problem.get('detail', '')}")
        self.status = status
        self.problem = problem

    @property
    def detail(self) -> str:
        return str(self.problem.get("detail", ""))


class KaiClient:
    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        timeout: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.access_token = token
        self.refresh_token: str | None = None
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout, transport=transport)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    # -- plumbing ------------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"} if self.access_token else {}

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send a request with the session's token, refreshing it once if it has expired."""
        response = await self._http.request(method, path, headers=self._headers(), **kwargs)
        if response.status_code == 401 and self.refresh_token and path != "/api/auth/refresh":
            await self.refresh()
            response = await self._http.request(method, path, headers=self._headers(), **kwargs)
        if response.status_code >= 400:
            try:
                problem = response.json()
            except ValueError:
                problem = {"status": response.status_code, "detail": response.text[:200]}
            raise KaiApiError(response.status_code, problem)
        return response

    async def _json(self, method: str, path: str, **kwargs: Any) -> JSON:
        body: JSON = (await self.request(method, path, **kwargs)).json()
        return body

    # -- accounts ------------------------------------------------------------------------------

    async def register(self, email: str, password: str, name: str | None = None) -> JSON:
        data = {"email": email, "password": password, **({"name": name} if name else {})}
        return await self._json("POST", "/api/auth/register", json={"userData": data})

    async def login(self, email: str, password: str) -> JSON:
        body = await self._json(
            "POST", "/api/auth/login", json={"credentials": {"email": email, "password": password}}
        )
        self._keep(body)
        return body

    async def refresh(self) -> JSON:
        if self.refresh_token is None:
            raise RuntimeError("no refresh token: log in first")
        body = await self._json(
            "POST", "/api/auth/refresh", json={"refreshToken": self.refresh_token}
        )
        self._keep(body)
        return body

    def _keep(self, body: JSON) -> None:
        tokens = body["tokens"]
        self.access_token = tokens["accessToken"]["token"]
        self.refresh_token = tokens["refreshToken"]["token"]

    async def logout(self) -> JSON:
        body = await self._json("POST", "/api/auth/logout")
        self.access_token = self.refresh_token = None
        return body

    async def me(self) -> JSON:
        return await self._json("GET", "/api/auth/session")

    # -- agents --------------------------------------------------------------------------------

    async def agents(self) -> list[JSON]:
        agents: list[JSON] = (await self._json("GET", "/api/agents"))["agents"]
        return agents

    async def agent(self, agent_id: str) -> JSON:
        return await self._json("GET", f"/api/agents/{agent_id}")

    async def create_agent(
        self,
        name: str,
        *,
        description: str | None = None,
        type: str | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> JSON:
        """Register an agent; the answer's ``agentToken`` is shown this once."""
        data: JSON = {"name": name}
        for key, value in (("description", description), ("type", type), ("config", config)):
            if value is not None:
                data[key] = value
        return await self._json("POST", "/api/agents", json={"agentData": data})

    async def update_agent(self, agent_id: str, **updates: Any) -> JSON:
        return await self._json("PUT", f"/api/agents/{agent_id}", json={"updates": updates})

    async def delete_agent(self, agent_id: str, *, backup: bool = True) -> JSON:
        params = {"backup": str(backup).lower()}
        return await self._json("DELETE", f"/api/agents/{agent_id}", params=params)

    async def agent_status(self, agent_id: str) -> JSON:
        return await self._json("GET", f"/api/agents/{agent_id}/status")

    async def restart_agent(self, agent_id: str, **options: Any) -> JSON:
        return await self._json(
            "POST", f"/api/agents/{agent_id}/restart", json={"options": options}
        )

    async def rotate_token(self, agent_id: str) -> JSON:
        return await self._json("POST", f"/api/agents/{agent_id}/token")

    async def logs(self, agent_id: str, **params: Any) -> JSON:
        """A page of the agent's logs: ``level``, ``startTime``, ``endTime``, ``limit``..."""
        return await self._json("GET", f"/api/agents/{agent_id}/logs", params=params)

    # -- work ----------------------------------------------------------------------------------

    async def command(
        self,
        agent_id: str,
        command: str,
        parameters: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
        expects_response: bool = True,
    ) -> JSON:
        body: JSON = {"command": command, "parameters": dict(parameters or {})}
        if timeout is not None:
            body["timeout"] = timeout
        if not expects_response:
            body["expectsResponse"] = False
        return await self._json("POST", f"/api/agents/{agent_id}/command", json=body)

    async def create_task(
        self,
        agent_id: str,
        task_type: str,
        parameters: Mapping[str, Any] | None = None,
        *,
        priority: Priority = "medium",
        idempotency_key: str | None = None,
        max_attempts: int | None = None,
    ) -> JSON:
        body: JSON = {
            "taskType": task_type,
            "parameters": dict(parameters or {}),
            "priority": priority,
        }
        if idempotency_key is not None:
            body["idempotencyKey"] = idempotency_key
        if max_attempts is not None:
            body["maxAttempts"] = max_attempts
        return await self._json("POST", f"/api/agents/{agent_id}/task", json=body)

    async def task(self, task_id: str) -> JSON:
        return await self._json("GET", f"/api/tasks/{task_id}/status")

    async def tasks(
        self, agent_id: str, *, status: TaskStatus | None = None, limit: int = 50, offset: int = 0
    ) -> JSON:
        params: JSON = {"limit": limit, "offset": offset}
        if status is not None:
            params["status"] = status
        return await self._json("GET", f"/api/agents/{agent_id}/tasks", params=params)

    async def cancel_task(self, task_id: str) -> JSON:
        return await self._json("POST", f"/api/tasks/{task_id}/cancel")

    async def wait_task(self, task_id: str, *, timeout: float = 60.0, every: float = 0.2) -> JSON:
        """Poll the task until it has ended; its final status."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            status = await self.task(task_id)
            if status["status"] in ("succeeded", "failed", "cancelled"):
                return status
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"task {task_id} still {status['status']}")
            await asyncio.sleep(every)

    async def stream_prompt(
        self,
        agent_id: str,
        prompt: str,
        *,
        context: Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> JSON:
        body = {"prompt": prompt, "context": dict(context or {}), "options": dict(options or {})}
        return await self._json("POST", f"/api/agents/{agent_id}/stream-prompt", json=body)

    async def stream(self, stream_id: str) -> JSON:
        return await self._json("GET", f"/api/streams/{stream_id}")

    async def cancel_stream(self, stream_id: str) -> JSON:
        return await self._json("POST", f"/api/streams/{stream_id}/cancel")

    async def stream_events(self, stream_id: str, *, after: int = -1) -> AsyncIterator[JSON]:
        """The stream's Server-Sent Events as dicts: ``{"event": "chunk", ...data}`` for each
        chunk after index ``after`` and a last ``{"event": "end", ...}``. A dropped connection
        is resumed with ``Last-Event-ID``."""
        last = after
        while True:
            headers = {**self._headers(), "Last-Event-ID": str(last)}
            try:
                async with self._http.stream(
                    "GET", f"/api/streams/{stream_id}/events", headers=headers, timeout=None
                ) as response:
                    if response.status_code >= 400:
                        await response.aread()
                        raise KaiApiError(response.status_code, response.json())
                    event = "message"
                    async for line in response.aiter_lines():
                        if line.startswith("event: "):
                            event = line[7:]
                        elif line.startswith("data: "):
                            data: JSON = {"event": event, **orjson.loads(line[6:])}
                            if event == "chunk":
                                last = int(data["index"])
                            yield data
                            if event == "end":
                                return
            except httpx.TransportError:
                await asyncio.sleep(0.2)  # the connection dropped: resume after ``last``

    async def stream_text(
        self,
        agent_id: str,
        prompt: str,
        *,
        context: Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> AsyncIterator[str]:
        """Open a prompt stream and yield its chunks as they are written; a stream that ends
        ``failed`` raises ``KaiApiError``."""
        opened = await self.stream_prompt(agent_id, prompt, context=context, options=options)
        async for event in self.stream_events(opened["streamId"]):
            if event["event"] == "chunk":
                yield str(event["chunk"])
            elif event.get("status") == "failed":
                raise KaiApiError(502, {"detail": event.get("error") or "The stream failed"})

    # -- files ---------------------------------------------------------------------------------

    async def upload(
        self,
        agent_id: str,
        file: Path | bytes,
        *,
        filename: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        content_type: str = "application/octet-stream",
    ) -> JSON:
        """Upload a file (a path, streamed from disk, or bytes) for the agent."""
        data = {"metadata": orjson.dumps(dict(metadata)).decode()} if metadata else None
        if isinstance(file, Path):
            with file.open("rb") as handle:
                files = {"file": (filename or file.name, handle, content_type)}
                return await self._json(
                    "POST", f"/api/agents/{agent_id}/upload", files=files, data=data
                )
        files_bytes = {"file": (filename or "upload", file, content_type)}
        return await self._json(
            "POST", f"/api/agents/{agent_id}/upload", files=files_bytes, data=data
        )

    async def files(self, agent_id: str, *, limit: int = 50, offset: int = 0) -> JSON:
        params = {"limit": limit, "offset": offset}
        return await self._json("GET", f"/api/agents/{agent_id}/files", params=params)

    async def download(self, file_id: str, destination: Path) -> Path:
        """Write the file's bytes to ``destination``, streamed."""
        async with self._http.stream(
            "GET", f"/api/files/{file_id}", headers=self._headers()
        ) as response:
            if response.status_code >= 400:
                await response.aread()
                raise KaiApiError(response.status_code, response.json())
            with destination.open("wb") as out:
                async for chunk in response.aiter_bytes(256 * 1024):
                    out.write(chunk)
        return destination

    async def delete_file(self, file_id: str) -> JSON:
        return await self._json("DELETE", f"/api/files/{file_id}")

    # -- administration ------------------------------------------------------------------------

    async def users(self, **params: Any) -> JSON:
        return await self._json("GET", "/api/users", params=params)

    async def update_user(self, user_id: str, **changes: Any) -> JSON:
        return await self._json("PUT", f"/api/users/{user_id}", json=changes)

    async def audit(self, **params: Any) -> JSON:
        return await self._json("GET", "/api/audit", params=params)

    async def config(self) -> JSON:
        return await self._json("GET", "/api/config")

    async def update_config(self, **settings: Any) -> JSON:
        """Change runtime settings by their API names (``commandTimeout=10``); ``None`` takes
        a change back."""
        return await self._json("PUT", "/api/config", json={"settings": settings})

    async def services(self) -> JSON:
        return await self._json("GET", "/api/services")

    async def restart_service(self, name: str) -> JSON:
        return await self._json("POST", f"/api/services/{name}/restart")

    async def stop_service(self, name: str) -> JSON:
        return await self._json("POST", f"/api/services/{name}/stop")

    async def health(self) -> JSON:
        return await self._json("GET", "/health")

    async def ready(self) -> JSON:
        return await self._json("GET", "/ready")

    async def metrics(self) -> str:
        return (await self.request("GET", "/metrics")).text

    # -- teams and grants ----------------------------------------------------------------------

    async def teams(self) -> list[JSON]:
        teams: list[JSON] = (await self._json("GET", "/api/teams"))["teams"]
        return teams

    async def create_team(
        self, name: str, agent_ids: list[str], *, description: str | None = None
    ) -> JSON:
        body = {"name": name, "agentIds": agent_ids, "description": description}
        return await self._json("POST", "/api/teams", json=body)

    async def team(self, team_id: str) -> JSON:
        return await self._json("GET", f"/api/teams/{team_id}")

    async def update_team(self, team_id: str, **changes: Any) -> JSON:
        """Change ``name``, ``description`` or ``agentIds`` (which replaces the members)."""
        return await self._json("PUT", f"/api/teams/{team_id}", json=changes)

    async def delete_team(self, team_id: str) -> JSON:
        return await self._json("DELETE", f"/api/teams/{team_id}")

    async def grants(self, agent_id: str) -> list[JSON]:
        grants: list[JSON] = (await self._json("GET", f"/api/agents/{agent_id}/grants"))["grants"]
        return grants

    async def grant(
        self,
        agent_id: str,
        actions: list[str],
        *,
        target_agent_id: str | None = None,
        target_team_id: str | None = None,
    ) -> JSON:
        """Let ``agent_id`` do ``actions`` (command, task, stream, watch) to one agent or team."""
        body: JSON = {"actions": actions}
        if target_agent_id is not None:
            body["targetAgentId"] = target_agent_id
        if target_team_id is not None:
            body["targetTeamId"] = target_team_id
        return await self._json("POST", f"/api/agents/{agent_id}/grants", json=body)

    async def revoke(self, agent_id: str, grant_id: str) -> JSON:
        return await self._json("DELETE", f"/api/agents/{agent_id}/grants/{grant_id}")

    # -- the client WebSocket ------------------------------------------------------------------

    def watch(self, agent_id: str, *, since: int | None = None, epoch: str | None = None) -> Watch:
        """The agent's events, live, resumed by itself from the last ``seq`` after a drop."""
        return Watch(self, f"/ws/agents/{agent_id}", since=since, epoch=epoch)

    def watch_team(
        self, team_id: str, *, since: int | None = None, epoch: str | None = None
    ) -> Watch:
        """A team's channel, live, resumed by itself from the last ``seq`` after a drop."""
        return Watch(self, f"/ws/teams/{team_id}", since=since, epoch=epoch)


class Watch:
    """``async with client.watch(agent_id) as events: async for event in events: ...``

    Events come in ``seq`` order without duplicates. After a dropped connection it reconnects
    with backoff and ``?since=<last seq>&epoch=<epoch>``; if the hub no longer holds what was
    missed, the ``resync_required`` message comes through for the caller to act on."""

    def __init__(
        self, client: KaiClient, path: str, *, since: int | None, epoch: str | None
    ) -> None:
        self.client = client
        self.path = path
        self.seq = since
        self.epoch = epoch
        self.reconnects = 0
        self._ws: ClientConnection | None = None
        self._closed = False

    async def __aenter__(self) -> Self:
        await self._connect()
        return self

    async def __aexit__(self, *_: object) -> None:
        self._closed = True
        if self._ws is not None:
            await self._ws.close()

    def _url(self) -> str:
        base = self.client.base_url.replace("http", "ws", 1)
        query = {}
        if self.seq is not None and self.epoch is not None:
            query = {"since": self.seq, "epoch": self.epoch}
        suffix = f"?{urlencode(query)}" if query else ""
        return f"{base}{self.path}{suffix}"

    async def _connect(self) -> None:
        self._ws = await connect(
            self._url(), additional_headers=self.client._headers(), compression=None
        )

    async def send(self, message: JSON) -> None:
        """Send a message (``command_execute``, ``heartbeat``...) on the current connection."""
        if self._ws is None:
            raise ConnectionError("not connected")
        await self._ws.send(orjson.dumps(message).decode())

    async def _reconnect(self) -> None:
        failures = 0
        while not self._closed:
            delay = random.uniform(0, min(10.0, 0.2 * 2**failures))
            await asyncio.sleep(delay)
            try:
                if failures and self.client.refresh_token:
                    with contextlib.suppress(KaiApiError, httpx.HTTPError):
                        await self.client.refresh()
                await self._connect()
                self.reconnects += 1
                return
            except (OSError, InvalidHandshake, TimeoutError):
                failures += 1

    def __aiter__(self) -> AsyncIterator[JSON]:
        return self._events()

    async def _events(self) -> AsyncIterator[JSON]:
        while not self._closed:
            ws = self._ws
            if ws is None:
                return
            try:
                raw = await ws.recv()
            except ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd is not None else None
                if self._closed or code in FINAL_CLOSES:
                    raise
                await self._reconnect()
                continue
            message: JSON = orjson.loads(raw)
            seq = message.get("seq")
            if isinstance(seq, int):
                if self.seq is not None and message.get("epoch") == self.epoch and seq <= self.seq:
                    continue  # already delivered before the reconnect
                self.seq, self.epoch = seq, message.get("epoch")
            yield message
