"""Fixtures of the hostile tests: a real ``kai serve`` process to attack, with its limits
scaled down by settings so each attack runs in seconds."""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.agents.processes import REPO_ROOT
from tests.helpers import ADMIN_EMAIL, ADMIN_PASSWORD, bearer
from tests.services import free_port

TEST_SECRET = "kai-hostile-signing-key-0123456789-abcdefghijklmn"


def serve_env(data_dir: Path, **settings: str) -> dict[str, str]:
    """The environment of a ``kai serve`` child: none of ours, cheap password hashing, the
    tests' admin, and ``settings`` (names without the ``KAI_`` prefix, any case)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAI_")}
    env.update(
        PYTHONPATH=str(REPO_ROOT),
        PYTHONUNBUFFERED="1",
        KAI_DATA_DIR=str(data_dir),
        KAI_SECRET_KEY=TEST_SECRET,
        KAI_ARGON2_TIME_COST="1",
        KAI_ARGON2_MEMORY_COST="1024",
        KAI_ARGON2_PARALLELISM="1",
        KAI_ADMIN_EMAIL=ADMIN_EMAIL,
        KAI_ADMIN_PASSWORD=ADMIN_PASSWORD,
        KAI_LOG_FORMAT="json",
        # The hubs take sign-ups, so that attacks can make accounts; tests of the policy set it.
        KAI_REGISTRATION="open",
    )
    env.update({f"KAI_{name.upper()}": value for name, value in settings.items()})
    return env


@dataclass
class ServedHub:
    """One ``kai serve`` process on 127.0.0.1; its output goes to ``log_path``."""

    port: int
    data_dir: Path
    log_path: Path
    env: dict[str, str]
    popen: subprocess.Popen[bytes] | None = None
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def start(self) -> None:
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as sink:
            self.popen = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "kai",
                    "serve",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                ],
                cwd=REPO_ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen is not None and self.popen.poll() is not None:
                raise AssertionError(f"kai serve exited early:\n{self.output()}")
            try:
                if httpx.get(f"{self.url}/ready", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"kai serve did not get ready within {timeout}s:\n{self.output()}")

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def rss_mib(self) -> float:
        """The process's resident memory now, MiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")

    def stop(self) -> None:
        if self.popen is None:
            return
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)

    def restart(self) -> None:
        self.stop()
        self.start()
        self.wait_ready()

    # -- the API, as a client would use it ---------------------------------------------------

    def client(self, *, timeout: float = 10) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=timeout)

    async def login(self, email: str = ADMIN_EMAIL, password: str = ADMIN_PASSWORD) -> str:
        """An access token for the account (cached per email)."""
        if email in self.tokens:
            return self.tokens[email]
        async with self.client() as client:
            response = await client.post(
                "/api/auth/login", json={"credentials": {"email": email, "password": password}}
            )
        assert response.status_code == 200, response.text
        token = str(response.json()["tokens"]["accessToken"]["token"])
        self.tokens[email] = token
        return token

    async def admin(self) -> dict[str, str]:
        return bearer(await self.login())

    async def health_p50_ms(self, samples: int = 20) -> float:
        """The median time of ``GET /health`` on a fresh connection each, ms."""
        times = []
        for _ in range(samples):
            async with httpx.AsyncClient(base_url=self.url, timeout=10) as client:
                started = time.perf_counter()
                response = await client.get("/health")
                times.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200
        return statistics.median(times)


HubStarter = Callable[..., ServedHub]


@pytest.fixture
def start_hub(tmp_path: Path) -> Iterator[HubStarter]:
    """``start_hub(**settings)``: a ready ``kai serve`` process on SQLite in ``tmp_path``,
    stopped at the end of the test. Settings are ``KAI_`` names without the prefix."""
    started: list[ServedHub] = []

    def start(**settings: str) -> ServedHub:
        index = len(started)
        data_dir = tmp_path / f"hub{index}" / "data"
        hub = ServedHub(
            port=free_port(),
            data_dir=data_dir,
            log_path=tmp_path / f"hub{index}.log",
            env=serve_env(data_dir, **settings),
        )
        started.append(hub)
        hub.start()
        hub.wait_ready()
        return hub

    yield start
    for hub in started:
        hub.stop()
