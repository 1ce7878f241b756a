"""A small OpenAI-compatible chat completions server on 127.0.0.1: the LLM provider at the edge
of the world, for the OpenAI agent's tests. It streams like Ollama or vLLM do (a role-only
first chunk, one chunk per piece, keep-alive comments, a finish chunk, a usage chunk, then
``[DONE]``), refuses a wrong key with 401, and misbehaves on cue from the last message."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.agents.support import eventually
from tests.services import free_port

MODEL = "kai-test-model"
API_KEY = "sk-kai-test-0123456789"
FAIL = "explode"  # the last message that gets a 500
GARBLE = "garble"  # the last message whose answer breaks off into something not JSON
LINGER = "linger"  # the last message whose answer takes a long while, piece by piece
FAILURE = "the model exploded: out of memory"


def reply_to(prompt: str) -> list[str]:
    """The pieces of the answer to ``prompt``: several, with spaces, unicode and a new line."""
    return ["You", " said", ": ", prompt, ".\n", "Ça va", " ✓"]


def _event(data: dict[str, Any] | str) -> bytes:
    text = data if isinstance(data, str) else orjson.dumps(data).decode()
    return f"data: {text}\n\n".encode()


def _chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-kai-test",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


@dataclass(frozen=True)
class Received:
    authorization: str | None
    content_type: str | None
    body: Any


@dataclass
class Upstream:
    """The server's address and the requests it received."""

    port: int
    requests: list[Received] = field(default_factory=list)
    # The prompts whose answer the client stopped reading before the end.
    abandoned: list[str] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def completions(self, request: Request) -> Response:
        body = orjson.loads(await request.body())
        self.requests.append(
            Received(
                request.headers.get("authorization"), request.headers.get("content-type"), body
            )
        )
        if request.headers.get("authorization") != f"Bearer {API_KEY}":
            return JSONResponse({"error": {"message": "Incorrect API key provided"}}, 401)
        if body.get("model") != MODEL:
            return JSONResponse(
                {"error": {"message": f"model {body.get('model')!r} not found"}}, 404
            )
        if body.get("stream") is not True:
            return JSONResponse({"error": {"message": "this server only streams"}}, 400)
        last = body["messages"][-1]["content"]
        if last == FAIL:
            return JSONResponse({"error": {"message": FAILURE, "type": "server_error"}}, 500)
        return StreamingResponse(self._answer(last), media_type="text/event-stream")

    async def _answer(self, prompt: str) -> AsyncIterator[bytes]:
        yield _event(_chunk({"role": "assistant", "content": ""}))
        if prompt == GARBLE:
            yield _event(_chunk({"content": "Half"}))
            yield b'data: {"choices": [{"delta": {"content": "and th\n\n'
            return
        if prompt == LINGER:
            try:
                for i in range(100):
                    yield _event(_chunk({"content": f"{i} "}))
                    await asyncio.sleep(0.1)
            except BaseException:  # cancelled (or failing to send) when the client hangs up
                self.abandoned.append(prompt)
                raise
            return  # never reached in the tests: they do not wait 10 s
        for piece in reply_to(prompt):
            await asyncio.sleep(0)
            yield _event(_chunk({"content": piece}))
            yield b": keep-alive\n\n"
        yield _event(_chunk({}, finish="stop"))
        yield _event({"id": "chatcmpl-kai-test", "choices": [], "usage": {"total_tokens": 9}})
        yield _event("[DONE]")

    def environment(self, **extra: str) -> dict[str, str]:
        """The ``KAI_OPENAI_*`` variables of an agent that streams from this server."""
        return {
            "KAI_OPENAI_BASE_URL": self.base_url,
            "KAI_OPENAI_MODEL": MODEL,
            "KAI_OPENAI_API_KEY": API_KEY,
            "KAI_OPENAI_TIMEOUT": "10",
            **extra,
        }


@asynccontextmanager
async def openai_upstream() -> AsyncIterator[Upstream]:
    """The server, served by uvicorn on a free port in this event loop."""
    upstream = Upstream(free_port())
    app = Starlette(routes=[Route("/v1/chat/completions", upstream.completions, methods=["POST"])])
    config = uvicorn.Config(
        app, host="127.0.0.1", port=upstream.port, log_config=None, access_log=False, lifespan="off"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(), name="openai-upstream")

    async def started() -> bool:
        if task.done():
            task.result()
            raise AssertionError("the upstream server stopped while starting")
        return server.started

    await eventually(started, 10, what="the upstream server's start", interval=0.01)
    try:
        yield upstream
    finally:
        server.should_exit = True
        await task
