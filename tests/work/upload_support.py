"""Helpers of the upload tests: multipart bodies built byte by byte (hostile names included),
uploads sent whole or as a chunked stream, and the file storage read back from disk."""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import orjson

from kai.config import Settings
from tests.agents.support import HubServer, Person, eventually
from tests.helpers import bearer
from tests.work.support import payload

BOUNDARY = "kai-test-boundary-7d1f9a"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"
STORED_NAME = re.compile(r"[0-9a-f]{32}")
KIB = 1024
MIB = 1024 * KIB


def part(
    name: str | bytes,
    data: bytes,
    *,
    filename: str | bytes | None = None,
    content_type: str | bytes | None = None,
) -> bytes:
    """One form part, its header bytes exactly as given (NUL and control characters too)."""
    raw_name = name.encode() if isinstance(name, str) else name
    disposition = b'Content-Disposition: form-data; name="' + raw_name + b'"'
    if filename is not None:
        raw = filename.encode() if isinstance(filename, str) else filename
        disposition += b'; filename="' + raw + b'"'
    lines = [b"--" + BOUNDARY.encode(), disposition]
    if content_type is not None:
        kind = content_type.encode("latin-1") if isinstance(content_type, str) else content_type
        lines.append(b"Content-Type: " + kind)
    return b"\r\n".join(lines) + b"\r\n\r\n" + data + b"\r\n"


def file_part(data: bytes, filename: str | bytes = "data.bin", **options: Any) -> bytes:
    return part("file", data, filename=filename, **options)


def metadata_part(metadata: Any) -> bytes:
    raw = metadata if isinstance(metadata, bytes) else orjson.dumps(metadata)
    return part("metadata", raw)


def form(*parts: bytes) -> bytes:
    """The parts, closed by the final boundary."""
    return b"".join(parts) + b"--" + BOUNDARY.encode() + b"--\r\n"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def upload_path(agent_id: str) -> str:
    return f"/api/agents/{agent_id}/upload"


async def upload(
    person: Person,
    agent_id: str,
    data: bytes,
    *,
    filename: str | bytes = "data.bin",
    metadata: Any = None,
    content_type: str | None = None,
) -> httpx.Response:
    """One file (and metadata, when given) as a body with ``Content-Length``."""
    parts = [file_part(data, filename, content_type=content_type)]
    if metadata is not None:
        parts.append(metadata_part(metadata))
    return await send(person, agent_id, form(*parts))


async def post(person: Person, agent_id: str, content: Any, content_type: str) -> httpx.Response:
    """POST ``content`` (bytes, or an async iterator of them) to the agent's upload route."""
    headers = {**bearer(person.token), "Content-Type": content_type}
    return await person.server.client.post(upload_path(agent_id), content=content, headers=headers)


async def send(person: Person, agent_id: str, body: bytes) -> httpx.Response:
    """``body`` as it is, declared as multipart with the tests' boundary."""
    return await post(person, agent_id, body, MULTIPART)


Pause = Callable[[int], Awaitable[None]]


async def until(check: Callable[[], bool], *, what: str, timeout: float = 10.0) -> None:
    """Poll a plain condition (the disk, say) until it holds."""

    async def holds() -> bool:
        return check()

    await eventually(holds, timeout, what=what)


async def _nothing(sent: int) -> None:
    return None


async def streamed(
    body: bytes, *, piece: int = 64 * KIB, pause: Pause = _nothing
) -> AsyncIterator[bytes]:
    """``body`` in pieces, as a chunked body without ``Content-Length``; ``pause(sent)`` is
    awaited after each piece, with the number of bytes sent so far."""
    for start in range(0, len(body), piece):
        yield body[start : start + piece]
        await pause(start + piece)


async def send_streamed(
    person: Person, agent_id: str, body: bytes, *, pause: Pause = _nothing
) -> httpx.Response:
    """``body`` as a chunked stream: the hub never learns its length up front."""
    response = await post(person, agent_id, streamed(body, pause=pause), MULTIPART)
    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    return response


@dataclass(frozen=True)
class Storage:
    """The hub's file storage on disk: ``data_dir/files`` and its ``.incoming`` folder."""

    root: Path

    @classmethod
    def of(cls, settings: Settings) -> Storage:
        return cls(settings.data_dir / "files")

    @property
    def incoming(self) -> Path:
        return self.root / ".incoming"

    def stored(self) -> dict[str, bytes]:
        """The stored files by name; any other entry than ``.incoming`` fails the test."""
        if not self.root.exists():
            return {}
        found = {}
        for entry in self.root.iterdir():
            if entry.name == ".incoming":
                continue
            assert STORED_NAME.fullmatch(entry.name), f"not a generated name: {entry.name!r}"
            assert entry.is_file(), entry
            found[entry.name] = entry.read_bytes()
        return found

    def partial(self) -> list[Path]:
        """What is being received right now (or was left behind)."""
        return sorted(self.incoming.iterdir()) if self.incoming.exists() else []

    def partial_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.partial())


MAX_METADATA = 64 * KIB
OVERHEAD = 4 * MAX_METADATA  # what an upload's body may carry beyond the file: kai's allowance
OCTET_STREAM = "application/octet-stream"


def path_of(url: str) -> str:
    """The path of a URL the hub handed out (its public base URL is not this test's host)."""
    return urlsplit(url).path


async def agent_download(server: HubServer, file_id: str, token: str | None) -> httpx.Response:
    headers = bearer(token) if token is not None else {}
    return await server.client.get(f"/api/files/{file_id}", headers=headers)


def check_download(response: httpx.Response, data: bytes, filename: str) -> None:
    """The exact bytes, always as an attachment of type application/octet-stream."""
    assert response.status_code == 200, response.text
    assert response.content == data
    assert response.headers["content-type"] == OCTET_STREAM
    assert response.headers["x-content-type-options"] == "nosniff"
    assert int(response.headers["content-length"]) == len(data)
    disposition = response.headers["content-disposition"]
    assert disposition.startswith("attachment; ")
    assert f"filename*=UTF-8''{quote(filename, safe='')}" in disposition


async def files_page(person: Person, agent_id: str, **params: Any) -> dict[str, Any]:
    response = await person.call("GET", f"/api/agents/{agent_id}/files", params=params)
    assert response.status_code == 200, response.text
    return payload(response)
