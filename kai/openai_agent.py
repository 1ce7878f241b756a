"""An agent that answers prompt streams with any OpenAI-compatible chat completions endpoint.

Ollama, vLLM, the llama.cpp server and hosted services all stream ``POST /chat/completions``
the same way; this agent relays each piece of the answer as a chunk of the stream. Configure it
from the environment and run it like any agent::

    KAI_OPENAI_BASE_URL=http://127.0.0.1:11434/v1 KAI_OPENAI_MODEL=llama3.2 KAI_AGENT_TOKEN=TOKEN \\
        kai agent run kai.openai_agent:agent --url ws://127.0.0.1:8000/ws/agent

``KAI_OPENAI_BASE_URL`` and ``KAI_OPENAI_MODEL`` are required; ``KAI_OPENAI_API_KEY`` (sent as
a Bearer token), ``KAI_OPENAI_SYSTEM_PROMPT`` and ``KAI_OPENAI_TIMEOUT`` (seconds, default 120)
are optional. The key goes in ``KAI_OPENAI_API_KEY`` only: a base URL with ``user:password@``
in it is refused. Stream readers learn only what went wrong in general terms (``the model
endpoint answered HTTP 401``); the endpoint's own words go to this agent's log, the key
redacted. A stream's ``context.messages`` (``[{"role", "content"}]``) is sent as the
conversation before the prompt; the options in ``OPTIONS`` are passed on, others are ignored.
See docs/streams.md.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

import httpx
import orjson

from kai import __version__
from kai.kit.logs import Redactor
from kai.sdk import Agent

log = logging.getLogger("kai.openai_agent")

agent = Agent("openai", version=__version__, max_concurrency=8)

OPTIONS: Final = frozenset(
    {"temperature", "top_p", "max_tokens", "stop", "seed", "presence_penalty", "frequency_penalty"}
)
ROLES: Final = frozenset({"system", "user", "assistant"})
DEFAULT_TIMEOUT: Final = 120.0
EXCERPT: Final = 300
MALFORMED: Final = "malformed stream event from the model endpoint"
EXAMPLE: Final = "e.g. KAI_OPENAI_BASE_URL=http://127.0.0.1:11434/v1 KAI_OPENAI_MODEL=llama3.2"


class ConfigError(ValueError):
    """The ``KAI_OPENAI_*`` environment does not say where to stream from."""


class UpstreamError(RuntimeError):
    """The endpoint refused the request, or answered with something that is not a stream.

    Its message is what a stream's readers see: never the endpoint's address or words, which
    are ``detail``, for the agent's own log."""

    def __init__(self, message: str, detail: str | None = None) -> None:
        super().__init__(message)
        self.detail = detail or message


@dataclass(frozen=True, slots=True)
class Upstream:
    """Where completions come from."""

    base_url: str
    model: str
    api_key: str | None = None
    system_prompt: str | None = None
    timeout: float = DEFAULT_TIMEOUT

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Upstream:
        """Read the ``KAI_OPENAI_*`` variables; ``ConfigError`` says what is missing or wrong."""
        env = os.environ if env is None else env
        base_url = env.get("KAI_OPENAI_BASE_URL", "").strip().rstrip("/")
        model = env.get("KAI_OPENAI_MODEL", "").strip()
        missing = [
            name
            for name, value in (("KAI_OPENAI_BASE_URL", base_url), ("KAI_OPENAI_MODEL", model))
            if not value
        ]
        if missing:
            raise ConfigError(f"{' and '.join(missing)} must be set ({EXAMPLE})")
        try:
            parts = urlsplit(base_url)
            credentials = parts.username is not None or parts.password is not None
        except ValueError:
            raise ConfigError("KAI_OPENAI_BASE_URL is not a URL") from None
        if credentials:
            raise ConfigError(
                "KAI_OPENAI_BASE_URL must not hold credentials (user:password@); "
                "give the key as KAI_OPENAI_API_KEY"
            )
        if parts.scheme not in ("http", "https"):
            raise ConfigError(f"KAI_OPENAI_BASE_URL must be an http(s) URL, not {base_url!r}")
        raw_timeout = env.get("KAI_OPENAI_TIMEOUT", "").strip() or str(DEFAULT_TIMEOUT)
        try:
            timeout = float(raw_timeout)
        except ValueError:
            timeout = 0.0
        if not 0 < timeout < math.inf:
            raise ConfigError(f"KAI_OPENAI_TIMEOUT must be seconds above 0, not {raw_timeout!r}")
        return cls(
            base_url=base_url,
            model=model,
            api_key=env.get("KAI_OPENAI_API_KEY", "").strip() or None,
            system_prompt=env.get("KAI_OPENAI_SYSTEM_PROMPT", "").strip() or None,
            timeout=timeout,
        )

    @property
    def url(self) -> str:
        return f"{self.base_url}/chat/completions"

    def request(
        self, prompt: str, context: Mapping[str, Any], options: Mapping[str, Any]
    ) -> dict[str, Any]:
        """The body of the chat completion request for one prompt stream."""
        messages = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        messages += history(context)
        messages.append({"role": "user", "content": prompt})
        body: dict[str, Any] = {"model": self.model, "messages": messages, "stream": True}
        body.update((key, value) for key, value in options.items() if key in OPTIONS)
        return body


def history(context: Mapping[str, Any]) -> list[dict[str, str]]:
    """``context.messages``, checked: the conversation the prompt continues."""
    messages = context.get("messages", [])
    problem = "context.messages must be a list of {role, content} (role system, user or assistant)"
    if not isinstance(messages, list):
        raise ValueError(problem)
    out = []
    for message in messages:
        if not (
            isinstance(message, dict)
            and message.get("role") in ROLES
            and isinstance(message.get("content"), str)
        ):
            raise ValueError(problem)
        out.append({"role": message["role"], "content": message["content"]})
    return out


def excerpt(text: str | bytes) -> str:
    """The start of ``text`` on one line, short enough for an error message."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    flat = " ".join(text.split())
    return flat if len(flat) <= EXCERPT else flat[:EXCERPT] + "…"


def _error_message(error: object) -> str:
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])
    return excerpt(orjson.dumps(error))


async def pieces(lines: AsyncIterator[str]) -> AsyncIterator[str]:
    """The text of each ``choices[0].delta.content`` in a streamed answer, up to ``[DONE]``."""
    finished = False
    async for line in lines:
        if not line.startswith("data:"):
            continue  # blank lines between events, ": keep-alive" comments, "event:" names
        data = line[5:].strip()
        if data == "[DONE]":
            return
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise UpstreamError(MALFORMED, f"malformed stream event: {excerpt(data)}") from None
        if not isinstance(event, dict):
            raise UpstreamError(MALFORMED, f"malformed stream event: {excerpt(data)}")
        if "error" in event:
            detail = f"the endpoint failed mid-stream: {_error_message(event['error'])}"
            raise UpstreamError("the model endpoint failed mid-stream", detail)
        choices = event.get("choices")
        if not isinstance(choices, list) or (choices and not isinstance(choices[0], dict)):
            raise UpstreamError(MALFORMED, f"malformed stream event: {excerpt(data)}")
        if not choices:
            continue  # a usage report
        delta = choices[0].get("delta")
        content = delta.get("content") if isinstance(delta, dict) else None
        if isinstance(content, str) and content:
            yield content
        finished = finished or bool(choices[0].get("finish_reason"))
    if not finished:
        raise UpstreamError("the model endpoint's stream ended before [DONE]")


class Completions:
    """Streams chat completions from one endpoint, a few at a time over pooled connections."""

    def __init__(self, upstream: Upstream, *, concurrency: int) -> None:
        self.upstream = upstream
        headers = {"Accept": "text/event-stream", "User-Agent": f"kai-openai-agent/{__version__}"}
        if upstream.api_key:
            headers["Authorization"] = f"Bearer {upstream.api_key}"
        self.client = httpx.AsyncClient(headers=headers, timeout=upstream.timeout)
        self.redactor = Redactor([upstream.api_key] if upstream.api_key else [])
        self.slots = asyncio.Semaphore(concurrency)

    async def stream(
        self, prompt: str, context: Mapping[str, Any], options: Mapping[str, Any]
    ) -> AsyncIterator[str]:
        """The answer to ``prompt``, piece by piece; ``UpstreamError`` when it cannot be had."""
        try:
            async for piece in self._stream(prompt, context, options):
                yield piece
        except UpstreamError as exc:
            log.warning("%s", self.redactor.text(exc.detail))
            raise

    async def _stream(
        self, prompt: str, context: Mapping[str, Any], options: Mapping[str, Any]
    ) -> AsyncIterator[str]:
        url = self.upstream.url
        body = self.upstream.request(prompt, context, options)
        try:
            async with self.slots, self.client.stream("POST", url, json=body) as response:
                status = response.status_code
                if not response.is_success:
                    text = await response.aread()
                    raise UpstreamError(
                        f"the model endpoint answered HTTP {status}",
                        f"HTTP {status} from {url}: {excerpt(text)}",
                    )
                kind = response.headers.get("content-type", "")
                if "event-stream" not in kind:
                    text = await response.aread()
                    raise UpstreamError(
                        f"the model endpoint did not stream (HTTP {status})",
                        f"{url} did not stream (content-type {kind or 'none'}): {excerpt(text)}",
                    )
                async for piece in pieces(response.aiter_lines()):
                    yield piece
        except httpx.TimeoutException as exc:
            timeout = self.upstream.timeout
            raise UpstreamError(
                f"no answer from the model endpoint within {timeout:g}s",
                f"no answer from {url} within {timeout:g}s",
            ) from exc
        except httpx.ConnectError as exc:
            raise UpstreamError(
                "cannot reach the model endpoint",
                f"cannot reach {url}: {exc or type(exc).__name__}",
            ) from exc
        except httpx.HTTPError as exc:  # the connection broke, or the answer was not HTTP
            raise UpstreamError(
                "the connection to the model endpoint failed",
                f"{url} failed: {exc or type(exc).__name__}",
            ) from exc

    async def aclose(self) -> None:
        await self.client.aclose()


_completions: Completions | None = None


@agent.setup
async def start() -> None:
    """Read the configuration and open the connection pool; exit at once if it is incomplete."""
    global _completions
    try:
        upstream = Upstream.from_env()
    except ConfigError as exc:
        raise SystemExit(f"kai.openai_agent: {exc}") from None
    # httpx logs every request at INFO; the hub's log of this agent is for its own news.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    _completions = Completions(upstream, concurrency=agent.max_concurrency)
    log.info("answering prompts with %s from %s", upstream.model, upstream.url)


@agent.teardown
async def stop() -> None:
    """Close the connection pool."""
    global _completions
    if _completions is not None:
        await _completions.aclose()
        _completions = None


@agent.prompt
async def answer(
    prompt: str, context: dict[str, Any], options: dict[str, Any]
) -> AsyncIterator[str]:
    """Stream the model's answer to ``prompt``, after the conversation in ``context``."""
    if _completions is None:
        raise RuntimeError("the agent is not set up")
    async for piece in _completions.stream(prompt, context, options):
        yield piece
