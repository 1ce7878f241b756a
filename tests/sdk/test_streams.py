"""``prompt`` streams (chunks, end, failure, cancel) and ``file`` notices."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from kai.sdk import Agent, FileInfo
from tests.sdk.support import FakeHub, HubSide, running, until


def streaming_agent(cancelled: list[str]) -> Agent:
    agent = Agent("streams")

    @agent.prompt
    async def answer(
        prompt: str, context: dict[str, Any], options: dict[str, Any]
    ) -> AsyncIterator[str]:
        if options.get("endless"):
            try:
                tick = 0
                while True:
                    yield f"tick {tick}"
                    tick += 1
                    await asyncio.sleep(0.02)
            except asyncio.CancelledError:
                cancelled.append(prompt)
                raise
        for word in prompt.split():
            yield word
        if options.get("fail"):
            raise ConnectionError(f"the model went away after {context['user']}'s prompt")
        yield f"({context.get('user', 'nobody')})"

    return agent


async def prompt(side: HubSide, stream_id: str, text: str, **options: Any) -> None:
    await side.send(
        {
            "type": "prompt",
            "streamId": stream_id,
            "prompt": text,
            "context": {"user": "ann"},
            "options": options,
        }
    )


async def test_a_prompt_streams_chunks_then_ends(hub: FakeHub) -> None:
    async with running(streaming_agent([]), hub.url):
        side = await hub.connection()
        await prompt(side, "s1", "what is kai")

        end = await side.first("stream_end", streamId="s1")
        assert end == {"type": "stream_end", "streamId": "s1", "status": "completed", "chunks": 4}
        chunks = side.of("stream_chunk", streamId="s1")
        assert [c["index"] for c in chunks] == [0, 1, 2, 3]
        assert [c["chunk"] for c in chunks] == ["what", "is", "kai", "(ann)"]
        assert [m for m in side.messages if m.get("streamId") == "s1"][-1] is end


async def test_a_failing_generator_ends_the_stream_failed(hub: FakeHub) -> None:
    async with running(streaming_agent([]), hub.url):
        side = await hub.connection()
        await prompt(side, "s1", "two words", fail=True)

        end = await side.first("stream_end", streamId="s1")
        assert end == {
            "type": "stream_end",
            "streamId": "s1",
            "status": "failed",
            "chunks": 2,
            "error": "the model went away after ann's prompt",
        }
        assert [c["chunk"] for c in side.of("stream_chunk", streamId="s1")] == ["two", "words"]
        # The agent goes on serving prompts.
        await prompt(side, "s2", "again")
        assert (await side.first("stream_end", streamId="s2"))["status"] == "completed"


async def test_a_prompt_to_an_agent_without_a_prompt_handler_fails(hub: FakeHub) -> None:
    async with running(Agent("mute"), hub.url):
        side = await hub.connection()
        await prompt(side, "s1", "hello?")
        end = await side.first("stream_end", streamId="s1")
        assert (end["status"], end["chunks"]) == ("failed", 0)
        assert end["error"] == "this agent does not take prompts"


async def test_cancel_ends_a_running_stream_cancelled(hub: FakeHub) -> None:
    cancelled: list[str] = []
    async with running(streaming_agent(cancelled), hub.url):
        side = await hub.connection()
        await prompt(side, "s1", "go on", endless=True)
        await side.several("stream_chunk", 3, streamId="s1")

        await side.send({"type": "cancel", "id": "s1"})
        end = await side.first("stream_end", streamId="s1")
        assert end["status"] == "cancelled"
        assert "error" not in end
        chunks = side.of("stream_chunk", streamId="s1")
        assert end["chunks"] == len(chunks) >= 3
        assert [c["index"] for c in chunks] == list(range(len(chunks)))
        await until(lambda: cancelled == ["go on"], what="the generator's cancellation")
        await asyncio.sleep(0.1)  # five ticks, had it gone on
        assert len(side.of("stream_chunk", streamId="s1")) == len(chunks)
        assert len(side.of("stream_end", streamId="s1")) == 1


async def test_a_file_notice_reaches_the_file_handler(hub: FakeHub) -> None:
    agent = Agent("files")
    received: list[FileInfo] = []

    @agent.on_file
    def on_file(file: FileInfo) -> None:
        received.append(file)

    async with running(agent, hub.url):
        side = await hub.connection()
        assert side.hello is not None
        assert side.hello["files"] is True
        await side.send(
            {
                "type": "file",
                "fileId": "f1",
                "filename": "report.pdf",
                "size": 2048,
                "sha256": "ab" * 32,
                "url": "http://hub.test/api/files/f1/content",
                "metadata": {"pages": 3},
            }
        )
        await side.send({"type": "file", "fileId": "f2", "filename": "bare.txt", "size": 0})
        await until(lambda: len(received) == 2, what="two files")
    assert received == [
        FileInfo(
            file_id="f1",
            filename="report.pdf",
            size=2048,
            sha256="ab" * 32,
            url="http://hub.test/api/files/f1/content",
            metadata={"pages": 3},
        ),
        FileInfo(file_id="f2", filename="bare.txt", size=0, sha256=None, url=None, metadata={}),
    ]
    assert side.messages == []  # a file notice is not answered


async def test_an_agent_without_a_file_handler_ignores_file_notices(hub: FakeHub) -> None:
    agent = Agent("nofiles")

    @agent.command("ping")
    def ping() -> str:
        return "pong"

    async with running(agent, hub.url):
        side = await hub.connection()
        assert side.hello is not None
        assert side.hello["files"] is False
        await side.send({"type": "file", "fileId": "f1", "filename": "x", "size": 1})
        await side.send({"type": "command", "commandId": "c1", "command": "ping", "params": {}})
        assert (await side.first("command_result", commandId="c1"))["result"] == "pong"
        assert [m["type"] for m in side.messages] == ["command_result"]
