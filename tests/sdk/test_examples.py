"""The documentation's example agent and the demo agent, run for real.

``greeter.py`` is read from docs/writing-agents.md as it stands, run with ``kai agent run`` on
a real hub and, in this process, through the test's hub; ``kai.demo:agent`` answers every kind
of work it offers."""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from kai import __version__
from kai.demo import agent as demo
from kai.sdk import Agent
from tests.agents.processes import REPO_ROOT, AgentProcess, child_env
from tests.agents.support import HubServer, People
from tests.sdk.support import TOKEN, FakeHub, HubSide, running

DOCS = REPO_ROOT / "docs" / "writing-agents.md"


@asynccontextmanager
async def file_server(body: bytes) -> AsyncIterator[tuple[str, list[str]]]:
    """A plain HTTP server on a free port answering every GET with ``body``; the requests'
    heads are collected, to see what the agent sent."""
    heads: list[str] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append((await reader.readuntil(b"\r\n\r\n")).decode("latin-1"))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n" % len(body))
        writer.write(b"Connection: close\r\n\r\n" + body)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/api/files/f1", heads
    finally:
        server.close()
        await server.wait_closed()


def code_block(filename: str) -> str:
    """The ```python block of the docs that starts with ``# filename``."""
    blocks = re.findall(r"^```python\n(.*?)^```$", DOCS.read_text(), flags=re.S | re.M)
    found = [b for b in blocks if b.startswith(f"# {filename}\n")]
    assert len(found) == 1, f"{DOCS} should show {filename} once"
    return str(found[0])


def write_greeter(directory: Path) -> Path:
    path = directory / "greeter.py"
    path.write_text(code_block("greeter.py"))
    return path


GREETER_DECLARES = {
    "commands": ["hello"],
    "taskTypes": ["count"],
    "streaming": True,
    "files": True,
    "maxConcurrency": 2,
}


async def test_the_greeter_of_the_docs_runs_on_a_real_hub(
    server: HubServer, people: People, tmp_path: Path
) -> None:
    write_greeter(tmp_path)
    ann = await people.join("ann@example.com")
    created = await ann.create_agent("greeter")
    kai = Path(sys.executable).with_name("kai")
    assert kai.is_file(), kai
    env = child_env()
    env["PYTHONPATH"] = f"{tmp_path}{os.pathsep}{env['PYTHONPATH']}"
    command = [str(kai), "agent", "run", "greeter:agent"]  # as the docs have it
    output = tmp_path / "greeter.log"
    with output.open("wb") as sink:
        popen = subprocess.Popen(
            [*command, "--url", server.ws_url],
            cwd=tmp_path,
            env={**env, "KAI_AGENT_TOKEN": created.token},
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    process = AgentProcess(popen, output)
    try:
        view = await ann.wait_status(created.agent_id, "online", timeout=20, process=process)
        capabilities = view["capabilities"]
        assert {k: capabilities[k] for k in GREETER_DECLARES} == GREETER_DECLARES
        assert (capabilities["name"], capabilities["version"]) == ("greeter", "1.0")
        assert capabilities["sdk"] == f"kai-python/{__version__}"

        (ready,) = await ann.wait_logs(created.agent_id, "greeter ready")
        assert (ready["level"], ready["logger"]) == ("INFO", "greeter")

        popen.terminate()  # SIGTERM: a clean shutdown
        assert await process.exited() == 0, process.output()
        await ann.wait_status(created.agent_id, "offline")
    finally:
        process.kill()


def load_greeter(directory: Path) -> Agent:
    spec = importlib.util.spec_from_file_location("greeter", write_greeter(directory))
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    agent = module.agent
    assert isinstance(agent, Agent)
    return agent


async def work(side: HubSide, kind: str, key: str, **fields: Any) -> None:
    ids = {"command": "commandId", "task": "taskId", "prompt": "streamId", "file": "fileId"}
    await side.send({"type": kind, ids[kind]: key, **fields})


async def test_the_greeter_of_the_docs_does_its_work(hub: FakeHub, tmp_path: Path) -> None:
    agent = load_greeter(tmp_path)
    async with running(agent, hub.url):
        side = await hub.connection()
        assert side.hello is not None
        assert {k: side.hello[k] for k in GREETER_DECLARES} == GREETER_DECLARES
        await side.log_record("greeter ready")

        await work(side, "command", "c1", command="hello", params={"name": "Ann"})
        await work(side, "command", "c2", command="hello", params={})
        await work(side, "task", "t1", taskType="count", params={"steps": 2}, attempt=1)
        await work(side, "prompt", "s1", prompt="hi there", context={}, options={})
        await work(side, "file", "f1", filename="notes.txt", size=3, metadata={})

        hello = await side.first("command_result", commandId="c1")
        assert hello["result"] == {"greeting": "Hello, Ann"}
        assert (await side.first("command_result", commandId="c2"))["result"] == {
            "greeting": "Hello, world"
        }
        result = await side.first("task_result", taskId="t1")
        assert result["result"] == {"counted": 2}
        assert [(p["progress"], p["message"]) for p in side.of("task_progress")] == [
            (0.5, "step 1 of 2"),
            (1.0, "step 2 of 2"),
        ]
        end = await side.first("stream_end", streamId="s1")
        assert (end["status"], end["chunks"]) == ("completed", 4)
        chunks = [c["chunk"] for c in side.of("stream_chunk", streamId="s1")]
        assert chunks == ["You ", "said ", "hi ", "there "]
        await side.log_record("got notes.txt (3 bytes)")


async def test_the_demo_agent_answers_every_kind_of_work(hub: FakeHub) -> None:
    async with running(demo, hub.url):
        side = await hub.connection()
        assert side.hello == {
            "type": "hello",
            "name": "demo",
            "version": __version__,
            "commands": ["echo", "fail", "log", "sleep"],
            "taskTypes": ["count"],
            "streaming": True,
            "files": True,
            "maxConcurrency": 4,
            "sdk": f"kai-python/{__version__}",
        }
        await side.log_record("demo agent ready")

        params = {"text": "hi", "n": [1, 2], "nested": {"ok": True}}
        await work(side, "command", "echo", command="echo", params=params)
        await work(side, "command", "sleep", command="sleep", params={"seconds": 0.05})
        await work(side, "command", "sleep-bad", command="sleep", params={"seconds": "long"})
        await work(side, "command", "fail", command="fail", params={"message": "as asked"})
        await work(side, "command", "fail-plain", command="fail", params={})
        await work(
            side, "task", "t1", taskType="count", params={"steps": 3, "delay": 0.01}, attempt=1
        )
        await work(side, "prompt", "s1", prompt="  why?  ", context={}, options={"delay": 0})
        async with file_server(b"a,b\n1,2\n3,") as (url, requests):
            await work(
                side,
                "file",
                "f1",
                filename="data.csv",
                size=10,
                sha256=hashlib.sha256(b"a,b\n1,2\n3,").hexdigest(),
                url=url,
                metadata={},
            )
            await side.log_record("received file data.csv (10 bytes, SHA-256 checked)")
        assert len(requests) == 1
        assert f"authorization: bearer {TOKEN}".lower() in requests[0].lower()

        echo = await side.first("command_result", commandId="echo")
        assert (echo["success"], echo["result"]) == (True, params)
        slept = await side.first("command_result", commandId="sleep")
        assert (slept["success"], slept["result"]) == (True, {"slept": 0.05})
        assert slept["executionTime"] >= 0.05
        bad = await side.first("command_result", commandId="sleep-bad")
        assert (bad["success"], bad["error"]) == (False, "seconds must be a number")
        failed = await side.first("command_result", commandId="fail")
        assert (failed["success"], failed["error"]) == (False, "as asked")
        plain = await side.first("command_result", commandId="fail-plain")
        assert plain["error"] == "failed on purpose"

        counted = await side.first("task_result", taskId="t1")
        assert (counted["success"], counted["result"]) == (True, {"counted": 3})
        progress = side.of("task_progress", taskId="t1")
        assert [p["progress"] for p in progress] == [1 / 3, 2 / 3, 1.0]
        assert [p["message"] for p in progress] == ["step 1 of 3", "step 2 of 3", "step 3 of 3"]
        await side.log_record("counted to 3 for task t1")

        end = await side.first("stream_end", streamId="s1")
        chunks = [c["chunk"] for c in side.of("stream_chunk", streamId="s1")]
        assert (end["status"], end["chunks"]) == ("completed", len(chunks))
        assert "".join(chunks) == "You asked: why?. This is the demo agent answering."
        assert chunks[:2] == ["You", " asked:"]
