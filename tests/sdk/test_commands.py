"""The SDK's ``hello`` and its answers to ``command`` messages, against a real socket."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kai import __version__
from kai.sdk import Agent, CommandContext, FileInfo, TaskContext
from tests.sdk.support import AGENT_ID, TOKEN, FakeHub, HubSide, running


def declared_agent() -> Agent:
    agent = Agent("declared", version="2.5", max_concurrency=3)

    @agent.command("zeta")
    async def zeta(params: dict[str, Any], ctx: CommandContext) -> None:
        return None

    @agent.command()
    def alpha(params: dict[str, Any]) -> None:
        return None

    @agent.task("summarize")
    async def summarize(params: dict[str, Any], ctx: TaskContext) -> None:
        return None

    @agent.task()
    async def index(params: dict[str, Any], ctx: TaskContext) -> None:
        return None

    @agent.prompt
    async def answer(prompt: str, context: dict[str, Any], options: dict[str, Any]) -> Any:
        yield prompt

    @agent.on_file
    def received(file: FileInfo) -> None:
        return None

    return agent


def test_capabilities_are_derived_from_the_decorators() -> None:
    assert declared_agent().capabilities() == {
        "type": "hello",
        "name": "declared",
        "version": "2.5",
        "commands": ["alpha", "zeta"],  # sorted; a name defaults to the function's
        "taskTypes": ["index", "summarize"],
        "streaming": True,
        "files": True,
        "maxConcurrency": 3,
        "sdk": f"kai-python/{__version__}",
    }
    assert Agent("bare").capabilities() == {
        "type": "hello",
        "name": "bare",
        "version": "0",
        "commands": [],
        "taskTypes": [],
        "streaming": False,
        "files": False,
        "maxConcurrency": 1,
        "sdk": f"kai-python/{__version__}",
    }


def test_a_prompt_handler_must_be_an_async_generator() -> None:
    agent = Agent("strict")

    async def not_a_generator(prompt: str) -> str:
        return prompt

    with pytest.raises(TypeError, match="async generator"):
        agent.prompt(not_a_generator)
    assert agent.capabilities()["streaming"] is False


async def test_the_hello_sent_is_the_capabilities(hub: FakeHub) -> None:
    agent = declared_agent()
    async with running(agent, hub.url):
        side = await hub.connection()
        assert side.hello == agent.capabilities()
        # The token goes as a Bearer header, and no compression is asked for.
        assert side.headers["authorization"] == f"Bearer {TOKEN}"
        assert "sec-websocket-extensions" not in side.headers
        await asyncio.wait_for(agent.connected.wait(), 5)  # set by the hello_ack
        assert agent.agent_id == AGENT_ID
    assert not agent.connected.is_set()
    assert hub.connections[0].close_code == 1000  # stop() closes normally


def commanding_agent() -> Agent:
    agent = Agent("commands")

    @agent.command("add")
    def add(params: dict[str, Any]) -> dict[str, Any]:  # plain function, one argument
        return {"sum": params["a"] + params["b"]}

    @agent.command("whoami")
    async def whoami(params: dict[str, Any], ctx: CommandContext) -> dict[str, Any]:
        return {"commandId": ctx.command_id, "command": ctx.command, "params": params}

    @agent.command("ping")
    def ping() -> str:  # no arguments at all
        return "pong"

    @agent.command("nap")
    async def nap(params: dict[str, Any]) -> float:
        await asyncio.sleep(params["seconds"])
        return float(params["seconds"])

    @agent.command("explode")
    async def explode(params: dict[str, Any]) -> None:
        raise ValueError(f"cannot explode {params.get('what')}")

    @agent.command("mute")
    def mute() -> None:
        raise RuntimeError()  # no message: the exception's type stands in

    return agent


async def command(side: HubSide, command_id: str, name: str, **params: Any) -> dict[str, Any]:
    await side.send({"type": "command", "commandId": command_id, "command": name, "params": params})
    return await side.first("command_result", commandId=command_id)


async def test_commands_answer_with_their_results(hub: FakeHub) -> None:
    async with running(commanding_agent(), hub.url):
        side = await hub.connection()

        added = await command(side, "c1", "add", a=2, b=3)
        assert added["success"] is True
        assert added["result"] == {"sum": 5}
        assert isinstance(added["executionTime"], float)
        assert 0 <= added["executionTime"] < 1

        who = await command(side, "c2", "whoami", x=[1, "two"])
        assert who["result"] == {
            "commandId": "c2",
            "command": "whoami",
            "params": {"x": [1, "two"]},
        }
        assert (await command(side, "c3", "ping"))["result"] == "pong"

        napped = await command(side, "c4", "nap", seconds=0.2)
        assert napped["result"] == 0.2
        assert 0.2 <= napped["executionTime"] < 2


async def test_failed_and_unknown_commands_report_why(hub: FakeHub) -> None:
    agent = commanding_agent()
    async with running(agent, hub.url):
        side = await hub.connection()

        unknown = await command(side, "c1", "nope")
        assert (unknown["success"], unknown["error"]) == (False, "Unknown command: nope")
        assert "result" not in unknown
        assert unknown["executionTime"] >= 0

        raised = await command(side, "c2", "explode", what="the moon")
        assert (raised["success"], raised["error"]) == (False, "cannot explode the moon")
        assert "result" not in raised
        mute = await command(side, "c3", "mute")
        assert (mute["success"], mute["error"]) == (False, "RuntimeError")

        # The agent keeps running after its handlers raised.
        assert (await command(side, "c4", "ping"))["result"] == "pong"
        assert len(hub.connections) == 1
    assert agent.stats.commands_handled == 4
    assert agent.stats.commands_failed == 3


async def test_commands_run_side_by_side(hub: FakeHub) -> None:
    """A slow command does not hold up the ones sent after it."""
    async with running(commanding_agent(), hub.url):
        side = await hub.connection()
        await side.send(
            {"type": "command", "commandId": "slow", "command": "nap", "params": {"seconds": 1}}
        )
        quick = await command(side, "quick", "ping")
        assert quick["result"] == "pong"
        assert side.of("command_result", commandId="slow") == []
        slow = await side.first("command_result", commandId="slow")
        assert slow["result"] == 1.0
        results = [m["commandId"] for m in side.of("command_result")]
        assert results == ["quick", "slow"]


async def test_unknown_hub_messages_are_ignored(hub: FakeHub) -> None:
    """A message type from a newer hub, or an error about the last message, changes nothing."""
    async with running(commanding_agent(), hub.url):
        side = await hub.connection()
        await side.send({"type": "future_thing", "payload": 1})
        await side.send({"type": "error", "error": "Invalid message", "details": []})
        assert (await command(side, "c1", "ping"))["result"] == "pong"
        assert len(hub.connections) == 1
