"""Uploads: multipart bodies streamed to storage chunk by chunk, capped, hashed and announced.

The body is parsed as it arrives (python-multipart's push parser); the file part goes straight
to a temporary file in the storage, never whole into memory, and the size cap is checked on
every chunk, so a body without ``Content-Length`` is cut off just the same. The stored name is
random; the client's file name is only shown, never used as a path.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
import unicodedata
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import orjson
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from kai.agents.relay import Relay
from kai.agents.service import Registry, Viewer
from kai.auth.models import User
from kai.config import Settings
from kai.db import Database, after_commit, new_id, utcnow
from kai.errors import NotFound, PayloadTooLarge, Unprocessable, UnsupportedMediaType
from kai.protocol.bounds import json_problem
from kai.storage import Blobs
from kai.work.models import StoredFile

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

log = logging.getLogger("kai.work.files")

FILE_NOT_FOUND = "File not found"
MAX_METADATA = 64 * 1024
UPLOAD_OVERHEAD = 4 * MAX_METADATA  # room in a body for the metadata and the part headers
MAX_FIELD_NAME = 100
PROGRESS_BYTES = 256 * 1024
PROGRESS_SECONDS = 0.25
# Control characters (C0 and C1), path separators, and the invisible marks that reorder or hide
# text (a name could otherwise pass "exe.txt" off as "txt.exe").
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f/\\\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def display_name(raw: str | None) -> str:
    """The client's file name, safe to show: its last path segment, no control characters."""
    name = unicodedata.normalize("NFC", raw or "")
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = _UNSAFE.sub("", name).strip().strip(".")
    return name[:255] or "upload"


def content_disposition(filename: str) -> str:
    """``attachment`` with an ASCII fallback name and the exact name as RFC 5987 ``filename*``."""
    fallback = re.sub(r"[^A-Za-z0-9._ -]", "_", filename) or "download"
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


@dataclass(slots=True)
class _Part:
    name: str | None = None
    filename: str | None = None
    content_type: str = "application/octet-stream"
    headers: dict[bytes, bytes] = field(default_factory=dict)


class _Receiver:
    """Collects what the multipart parser finds; the caller writes file bytes out after each
    chunk of the body (the parser's callbacks are synchronous)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.part = _Part()
        self.header_field = b""
        self.header_value = b""
        self.file: _Part | None = None
        self.in_file = False
        self.file_done = False
        self.pending: list[bytes] = []
        self.size = 0
        self.digest = hashlib.sha256()
        self.metadata: bytearray | None = None
        self.problem: str | None = None

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }

    def _part_begin(self) -> None:
        self.part = _Part()

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def _header_end(self) -> None:
        self.part.headers[self.header_field.lower()] = self.header_value
        self.header_field = b""
        self.header_value = b""

    def _headers_finished(self) -> None:
        disposition, options = parse_options_header(
            self.part.headers.get(b"content-disposition", b"")
        )
        if disposition != b"form-data":
            self.problem = "Each part needs Content-Disposition: form-data"
            return
        name = options.get(b"name", b"").decode("utf-8", "replace")[:MAX_FIELD_NAME]
        self.part.name = name
        if b"filename" in options:
            self.part.filename = options[b"filename"].decode("utf-8", "replace")
        kind = self.part.headers.get(b"content-type", b"").decode("latin-1")
        kind = _CONTROL.sub("", kind).strip()[:200]
        self.part.content_type = kind or "application/octet-stream"
        if name == "file":
            if self.file is not None:
                self.problem = "Send one file per upload"
                return
            self.file = self.part
            self.in_file = True
        elif name == "metadata":
            if self.metadata is not None:
                self.problem = "Send metadata once"
                return
            self.metadata = bytearray()
        else:
            self.problem = f"Unknown form field: {name!r} (expected file and metadata)"

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self.problem is not None:
            return
        piece = data[start:end]
        if self.in_file:
            self.size += len(piece)
            if self.size <= self.limit:
                self.digest.update(piece)
                self.pending.append(piece)
        elif self.part.name == "metadata" and self.metadata is not None:
            self.metadata += piece
            if len(self.metadata) > MAX_METADATA:
                self.problem = f"metadata is larger than {MAX_METADATA} bytes"

    def _part_end(self) -> None:
        if self.in_file:
            self.in_file = False
            self.file_done = True

    def take(self) -> bytes:
        data = b"".join(self.pending)
        self.pending.clear()
        return data


@dataclass(frozen=True, slots=True)
class Upload:
    """What the client sent: where it came from and what to call it."""

    viewer: Viewer
    agent_id: str
    content_type: str
    content_length: int | None
    body: AsyncIterator[bytes]


class Files:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        *,
        registry: Registry,
        relay: Relay,
        storage: Blobs,
    ) -> None:
        self.settings = settings
        self.db = db
        self.registry = registry
        self.relay = relay
        self.storage = storage
        self.received_bytes = 0

    async def used(self, session: AsyncSession, user_id: str) -> int:
        """Bytes the user's stored files take."""
        total = await session.scalar(
            select(func.coalesce(func.sum(StoredFile.size), 0)).where(StoredFile.user_id == user_id)
        )
        return int(total or 0)

    async def receive(self, upload: Upload) -> StoredFile:
        """Stream the upload to storage and record it; 413 past the size cap or the quota."""
        boundary = self._boundary(upload.content_type)
        async with self.db.session(write=False) as session:
            agent = await self.registry.visible(session, upload.viewer, upload.agent_id)
            used = await self.used(session, upload.viewer.user_id)
        room = self.settings.upload_quota_bytes - used
        limit = min(self.settings.upload_max_bytes, room)
        if room <= 0:
            raise PayloadTooLarge(
                "Storage quota exceeded", quota=self.settings.upload_quota_bytes, used=used
            )
        if upload.content_length is not None and upload.content_length > limit + UPLOAD_OVERHEAD:
            raise self._too_large(limit, room)
        file_id = new_id()
        receiver = _Receiver(limit)
        parser = MultipartParser(boundary, receiver.callbacks())
        storage_name = self.storage.new_key()
        progress = _Progress(self, upload, file_id)
        async with self.storage.writer(storage_name) as out:  # kept only if all goes well
            async for chunk in upload.body:
                _parse(parser.write, chunk)
                if receiver.problem is not None:
                    raise Unprocessable(receiver.problem)
                if receiver.size > limit:
                    raise self._too_large(limit, room)
                data = receiver.take()
                if data:
                    await out.write(data)
                    await progress.report(receiver, done=False)
            _parse(parser.finalize)
            if receiver.file is None or not receiver.file_done:
                raise Unprocessable("The upload needs a complete file part named 'file'")
            metadata = _metadata(receiver.metadata)
        stored = StoredFile(
            id=file_id,
            agent_id=agent.id,
            user_id=upload.viewer.user_id,
            filename=display_name(receiver.file.filename),
            storage_name=storage_name,
            content_type=receiver.file.content_type,
            size=receiver.size,
            sha256=receiver.digest.hexdigest(),
            metadata_=metadata,
            created_at=utcnow(),
        )
        try:
            async with self.db.session() as session:
                await self._check_room(session, upload.viewer.user_id, stored.size)
                session.add(stored)
        except BaseException:
            await self.storage.delete([storage_name])
            raise
        self.received_bytes += stored.size
        progress.filename = stored.filename
        await progress.report(receiver, done=True)
        if (agent.capabilities or {}).get("files"):
            await self.relay.deliver(agent.id, self.announcement(stored))
        return stored

    async def _check_room(self, session: AsyncSession, user_id: str, size: int) -> None:
        """Count the quota again inside the writing transaction, the user's row locked, so
        that uploads finishing together cannot pass it between them."""
        await session.execute(select(User.id).where(User.id == user_id).with_for_update())
        used = await self.used(session, user_id)
        if used + size > self.settings.upload_quota_bytes:
            raise PayloadTooLarge(
                "Storage quota exceeded", quota=self.settings.upload_quota_bytes, used=used
            )

    def announcement(self, stored: StoredFile) -> dict[str, Any]:
        """The ``file`` message that tells the agent where to fetch the upload."""
        return {
            "type": "file",
            "fileId": stored.id,
            "filename": stored.filename,
            "size": stored.size,
            "sha256": stored.sha256,
            "contentType": stored.content_type,
            "url": f"{self.settings.base_url}/api/files/{stored.id}",
            "metadata": stored.metadata_,
        }

    @staticmethod
    def _boundary(content_type: str) -> bytes:
        kind, options = parse_options_header(content_type)
        boundary = options.get(b"boundary")
        if kind != b"multipart/form-data" or not boundary:
            raise UnsupportedMediaType("Upload with Content-Type multipart/form-data")
        return boundary

    def _too_large(self, limit: int, room: int) -> PayloadTooLarge:
        if room < self.settings.upload_max_bytes:
            return PayloadTooLarge(
                "Storage quota exceeded", quota=self.settings.upload_quota_bytes, limit=limit
            )
        return PayloadTooLarge(f"File is larger than {limit} bytes", limit=limit)

    async def visible(self, session: AsyncSession, viewer: Viewer, file_id: str) -> StoredFile:
        stored = await session.get(StoredFile, file_id)
        if stored is None or not await self.registry.sees(session, viewer, stored.agent_id):
            raise NotFound(FILE_NOT_FOUND)
        return stored

    async def listed(
        self, session: AsyncSession, agent_id: str, *, limit: int, offset: int
    ) -> tuple[list[StoredFile], int]:
        where = StoredFile.agent_id == agent_id
        total = await session.scalar(select(func.count()).select_from(StoredFile).where(where))
        rows = await session.scalars(
            select(StoredFile)
            .where(where)
            .order_by(StoredFile.created_at.desc(), StoredFile.id)
            .limit(limit)
            .offset(offset)
        )
        return list(rows), int(total or 0)

    async def delete(self, session: AsyncSession, stored: StoredFile) -> None:
        """Delete the record; its bytes go once that is committed."""
        key = stored.storage_name
        await session.delete(stored)
        await session.flush()
        after_commit(session, lambda: self.storage.delete_now([key]))


def _parse(step: Callable[..., object], *args: bytes) -> None:
    try:
        step(*args)
    except MultipartParseError:
        raise Unprocessable("The body is not well-formed multipart/form-data") from None


def _metadata(raw: bytearray | None) -> dict[str, Any]:
    if raw is None or not raw.strip():
        return {}
    try:
        value = orjson.loads(bytes(raw))
    except orjson.JSONDecodeError:
        raise Unprocessable("metadata must be JSON") from None
    if not isinstance(value, dict):
        raise Unprocessable("metadata must be a JSON object")
    problem = json_problem(value)
    if problem is not None:
        raise Unprocessable(f"metadata: {problem}")
    return value


class _Progress:
    """``upload_progress`` events while the bytes arrive: at most every 256 KiB or 0.25 s."""

    def __init__(self, files: Files, upload: Upload, file_id: str) -> None:
        self.relay = files.relay
        self.agent_id = upload.agent_id
        self.total = upload.content_length
        self.file_id = file_id
        self.filename: str | None = None
        self.sent_bytes = 0
        self.sent_at = 0.0

    async def report(self, receiver: _Receiver, *, done: bool) -> None:
        now = time.monotonic()
        if not done and (
            receiver.size - self.sent_bytes < PROGRESS_BYTES
            and now - self.sent_at < PROGRESS_SECONDS
        ):
            return
        self.sent_bytes, self.sent_at = receiver.size, now
        name = self.filename or display_name(receiver.file.filename if receiver.file else None)
        await self.relay.publish(
            self.agent_id,
            {
                "type": "upload_progress",
                "fileId": self.file_id,
                "filename": name,
                "bytesReceived": receiver.size,
                "totalBytes": receiver.size if done else self.total,
                "done": done,
            },
        )
