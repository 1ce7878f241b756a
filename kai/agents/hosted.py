"""Hosted agents: local agent processes the hub starts, watches, restarts and stops."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from kai.agents import store
from kai.agents.service import Registry
from kai.auth import store as users
from kai.auth.rbac import Role
from kai.config import HostedAgent
from kai.db import Database, utcnow

log = logging.getLogger("kai.agents.hosted")

BACKOFF_FIRST = 1.0
BACKOFF_MAX = 30.0
STABLE_AFTER = 60.0  # a process that ran this long restarts without backoff
STOP_GRACE = 5.0
# What a hosted agent inherits from the hub's environment; nothing else (KAI_ADMIN_PASSWORD,
# KAI_SECRET_KEY, KAI_DATABASE_URL, KAI_SMTP_URL, cloud credentials...) reaches it. Its own
# settings go in the spec's ``env``.
INHERITED = frozenset(
    {
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "SHELL",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TMPDIR",
        "PYTHONPATH",
        "PYTHONHOME",
        "VIRTUAL_ENV",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "REQUESTS_CA_BUNDLE",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "no_proxy",
    }
)
INHERITED_PREFIXES = ("LC_", "KAI_AGENT_")


def agent_environment(
    hub_env: Mapping[str, str], spec_env: Mapping[str, str], *, token: str, hub_url: str
) -> dict[str, str]:
    """A hosted agent's environment: the allow-list of the hub's, its spec's, its token."""
    inherited = {
        name: value
        for name, value in hub_env.items()
        if name in INHERITED or name.startswith(INHERITED_PREFIXES)
    }
    return {
        **inherited,
        **spec_env,
        "KAI_AGENT_TOKEN": token,
        "KAI_AGENT_URL": hub_url,
        "KAI_AGENT_LOG_CONSOLE": "0",  # records reach the hub through the SDK's bridge
        "PYTHONUNBUFFERED": "1",
    }


@dataclass
class Hosted:
    spec: HostedAgent
    agent_id: str
    token: str
    process: asyncio.subprocess.Process | None = None
    starts: int = 0
    task: asyncio.Task[None] | None = field(default=None, repr=False)


class Supervisor:
    """Keeps each configured agent process running for as long as the hub runs."""

    def __init__(self, db: Database, registry: Registry, *, hub_url: str) -> None:
        self.db = db
        self.registry = registry
        self.hub_url = hub_url
        self.hosted: dict[str, Hosted] = {}
        self.specs: list[HostedAgent] = []
        self._stopping = asyncio.Event()

    @property
    def running(self) -> bool:
        return not self._stopping.is_set() and any(
            h.task is not None and not h.task.done() for h in self.hosted.values()
        )

    async def start(self, specs: list[HostedAgent]) -> None:
        self._stopping.clear()
        self.specs = list(specs)
        self.hosted = {}
        for spec in specs:
            agent_id, token = await self._enroll(spec)
            hosted = Hosted(spec, agent_id, token)
            hosted.task = asyncio.create_task(self._keep(hosted), name=f"kai-hosted-{spec.name}")
            self.hosted[spec.name] = hosted

    async def _enroll(self, spec: HostedAgent) -> tuple[str, str]:
        """The agent's record (created on first start) with a fresh token for this run."""
        async with self.db.session() as session:
            owner = await (
                users.user_by_email(session, spec.owner.lower())
                if spec.owner
                else users.first_with_role(session, Role.ADMIN)
            )
            if owner is None:
                raise RuntimeError(f"hosted agent {spec.name}: owner {spec.owner} not found")
            agent = await store.by_owner_and_name(session, owner.id, spec.name)
            if agent is None:
                agent, token = await self.registry.create(
                    session,
                    owner_id=owner.id,
                    name=spec.name,
                    description=f"Hosted by the hub: {spec.target}",
                    type="hosted",
                    config={"target": spec.target},
                )
            else:
                token, _ = await self.registry.rotate_token(session, agent)
            return agent.id, token

    async def _keep(self, hosted: Hosted) -> None:
        delay = BACKOFF_FIRST
        while not self._stopping.is_set():
            started = time.monotonic()
            code = await self._run_once(hosted)
            if self._stopping.is_set():
                return
            ran = time.monotonic() - started
            delay = BACKOFF_FIRST if ran >= STABLE_AFTER else min(BACKOFF_MAX, delay * 2)
            await self._capture(
                hosted,
                "stderr",
                f"agent process exited with {code}; restarting in {delay:.0f}s",
                level="WARNING",
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)

    async def _run_once(self, hosted: Hosted) -> int:
        env = agent_environment(
            os.environ, hosted.spec.env, token=hosted.token, hub_url=self.hub_url
        )
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "kai",
            "agent",
            "run",
            hosted.spec.target,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        hosted.process = process
        hosted.starts += 1
        log.info("hosted agent %s started (pid %s)", hosted.spec.name, process.pid)
        assert process.stdout is not None
        assert process.stderr is not None
        await asyncio.gather(
            self._pump(hosted, process.stdout, "stdout"),
            self._pump(hosted, process.stderr, "stderr"),
        )
        return await process.wait()

    async def _pump(self, hosted: Hosted, stream: asyncio.StreamReader, source: str) -> None:
        while line := await stream.readline():
            text = line.decode(errors="replace").rstrip()
            if text:
                await self._capture(hosted, source, text)

    async def _capture(
        self, hosted: Hosted, source: str, text: str, *, level: str | None = None
    ) -> None:
        level = level or ("INFO" if source == "stdout" else "WARNING")
        now = utcnow()
        row = {
            "agent_id": hosted.agent_id,
            "timestamp": now,
            "level_no": 20 if level == "INFO" else 30,
            "level": level,
            "message": text.replace("\x00", "\ufffd")[:16_384],
            "logger": f"hosted.{source}",
            "source": source,
            "extra": None,
            "received_at": now,
        }
        await self.registry.record_logs(hosted.agent_id, [row])

    async def stop(self) -> None:
        """Stop every process: SIGTERM, then SIGKILL after a grace period."""
        self._stopping.set()
        for hosted in self.hosted.values():
            process = hosted.process
            if process is not None and process.returncode is None:
                process.terminate()
        for hosted in self.hosted.values():
            process = hosted.process
            if process is not None:
                try:
                    await asyncio.wait_for(process.wait(), STOP_GRACE)
                except TimeoutError:
                    process.kill()
                    await process.wait()
        tasks = [h.task for h in self.hosted.values() if h.task is not None]
        await asyncio.gather(*tasks, return_exceptions=True)
