"""The SDK stands alone: built from ``kai.sdk`` and ``kai.protocol`` only, it installs into a
fresh virtual environment without FastAPI, SQLAlchemy or a database driver, and there an agent
and a client work with a real hub."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

from kai import __version__
from tests.agents.processes import REPO_ROOT
from tests.agents.support import HubServer, People

# What the SDK needs besides itself; the import contracts keep the rest of kai out of it.
SDK_DEPENDENCIES = ["httpx>=0.28", "websockets>=13", "pydantic>=2.9", "orjson>=3.10"]
SERVER_STACK = ["fastapi", "starlette", "sqlalchemy", "alembic", "asyncpg", "aiosqlite", "uvicorn"]

AGENT = """
import asyncio, sys
from kai.sdk import Agent, CommandContext

agent = Agent("alone", version="1.0")

@agent.command("add")
async def add(params, ctx: CommandContext):
    return {"sum": params["a"] + params["b"]}

asyncio.run(agent.run([sys.argv[1]], sys.argv[2]))
"""

CLIENT = """
import asyncio, json, sys
from kai.sdk.client import KaiClient

async def main():
    async with KaiClient(sys.argv[1], token=sys.argv[2]) as client:
        for _ in range(100):
            status = await client.agent_status(sys.argv[3])
            if status["status"] == "online":
                break
            await asyncio.sleep(0.1)
        print(json.dumps(await client.command(sys.argv[3], "add", {"a": 2, "b": 3})))

asyncio.run(main())
"""


def sdk_source(into: Path) -> Path:
    """The SDK's distribution: the ``kai`` package with only ``sdk`` and ``protocol`` in it."""
    root = into / "kai-sdk"
    shutil.copy(REPO_ROOT / "kai" / "__init__.py", root / "kai" / "__init__.py")
    for package in ("sdk", "protocol"):
        shutil.copytree(
            REPO_ROOT / "kai" / package,
            root / "kai" / package,
            ignore=shutil.ignore_patterns("__pycache__"),
        )
    (root / "pyproject.toml").write_text(
        textwrap.dedent(
            f"""
            [build-system]
            requires = ["setuptools"]
            build-backend = "setuptools.build_meta"

            [project]
            name = "kai-sdk"
            version = "{__version__}"
            dependencies = {json.dumps(SDK_DEPENDENCIES)}

            [tool.setuptools.packages.find]
            include = ["kai*"]
            """
        )
    )
    return root


def sdk_environment(into: Path) -> Path:
    """A fresh virtual environment with the SDK installed; its Python."""
    (into / "kai-sdk" / "kai").mkdir(parents=True)
    source = sdk_source(into)
    venv = into / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    installed = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", str(source)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert installed.returncode == 0, installed.stderr
    return python


def clean_env() -> dict[str, str]:
    """The environment without this checkout on the path: the venv's own packages only."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}


async def test_the_sdk_installs_and_runs_without_the_hub_stack(
    server: HubServer, people: People, tmp_path: Path
) -> None:
    python = await asyncio.to_thread(sdk_environment, tmp_path)
    env = clean_env()
    probe = subprocess.run(
        [
            str(python),
            "-c",
            "import importlib.util, json, kai.sdk, kai.sdk.client, kai.protocol.agent;"
            f"print(json.dumps([m for m in {SERVER_STACK!r} if importlib.util.find_spec(m)]));"
            "print(kai.sdk.__file__)",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert probe.returncode == 0, probe.stderr
    present, location = probe.stdout.splitlines()
    assert json.loads(present) == []  # none of the hub's stack is installed there
    assert location.startswith(str(tmp_path / "venv")), location  # the installed SDK, not ours

    ann = await people.join("ann@example.com")
    created = await ann.create_agent("alone")
    (tmp_path / "agent.py").write_text(AGENT)
    (tmp_path / "client.py").write_text(CLIENT)
    agent_log = (tmp_path / "agent.log").open("wb")
    agent = subprocess.Popen(
        [str(python), "agent.py", server.ws_url, created.token],
        cwd=tmp_path,
        env=env,
        stdout=agent_log,
        stderr=subprocess.STDOUT,
    )
    try:
        client = await asyncio.create_subprocess_exec(
            str(python),
            "client.py",
            f"http://127.0.0.1:{server.port}",
            ann.token,
            created.agent_id,
            cwd=tmp_path,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(client.communicate(), 60)
        assert client.returncode == 0, (err.decode(), (tmp_path / "agent.log").read_text())
        answer = json.loads(out)
        assert (answer["success"], answer["result"]) == (True, {"sum": 5})
    finally:
        agent.terminate()
        agent.wait(10)
        agent_log.close()
