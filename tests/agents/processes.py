"""Agent processes of the tests: ``kai agent run`` (and other ``kai`` commands) as children."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import tests

REPO_ROOT = Path(tests.__file__).resolve().parent.parent
SAMPLE = "tests.agents.sample:agent"
# Exit code of ``kai agent run`` when the hub told the agent to stop for good.
STOPPED_BY_HUB = 3


@dataclass
class AgentProcess:
    """``kai agent run`` in a child process; its output goes to a file."""

    popen: subprocess.Popen[bytes]
    output_path: Path

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def output(self) -> str:
        return self.output_path.read_text(errors="replace")

    def pause(self) -> None:
        self.popen.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.popen.send_signal(signal.SIGCONT)

    async def exited(self, timeout: float = 10.0) -> int:
        """Wait for the process to end by itself; returns its exit code."""
        deadline = time.monotonic() + timeout
        while (code := self.popen.poll()) is None:
            if time.monotonic() >= deadline:
                raise AssertionError(f"agent process {self.popen.pid} still runs after {timeout}s")
            await asyncio.sleep(0.05)
        return code

    def kill(self) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGCONT)
                self.popen.kill()
        self.popen.wait(10)


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a child process: this one without KAI_ settings, tests importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAI_")}
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = f"{REPO_ROOT}{os.pathsep}{path}" if path else str(REPO_ROOT)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def spawn_agent(output: Path, token: str, urls: list[str], *, target: str = SAMPLE) -> AgentProcess:
    """``kai agent run TARGET --url U1 --url U2 ...`` (the URLs tried in that order) with its
    token in ``KAI_AGENT_TOKEN`` (never argv, where ``ps`` shows it), its output written to
    ``output``."""
    with output.open("wb") as sink:
        popen = subprocess.Popen(
            [sys.executable, "-m", "kai", "agent", "run", target]
            + [arg for url in urls for arg in ("--url", url)],
            cwd=REPO_ROOT,
            env=child_env(KAI_AGENT_TOKEN=token),
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    return AgentProcess(popen, output)


@dataclass
class Launcher:
    """Starts agent processes and kills every one of them at the end of the test."""

    ws_url: str
    directory: Path
    processes: list[AgentProcess] = field(default_factory=list)

    def start(self, token: str, *, target: str = SAMPLE) -> AgentProcess:
        output = self.directory / f"agent-{len(self.processes)}.log"
        process = spawn_agent(output, token, [self.ws_url], target=target)
        self.processes.append(process)
        return process

    def kill_all(self) -> None:
        for process in self.processes:
            process.kill()


async def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``python -m kai ARGS`` in a child process, without blocking the hub's event loop."""
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "kai", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
