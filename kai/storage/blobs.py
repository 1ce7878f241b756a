"""The blob interface and the local disk behind it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import BinaryIO, Protocol

# A key names one blob: letters, digits, dots, dashes and underscores, never a path.
KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


class BlobWriter(Protocol):
    async def write(self, data: bytes) -> None: ...


class Blobs(Protocol):
    def new_key(self) -> str:
        """A fresh random key."""
        ...

    def writer(self, key: str) -> contextlib.AbstractAsyncContextManager[BlobWriter]:
        """Write the blob in pieces: it exists under ``key`` only once the block ends without
        an error (a failed write leaves nothing behind)."""
        ...

    async def put(self, key: str, data: bytes) -> None:
        """Write the blob whole, and make it durable."""
        ...

    def path(self, key: str) -> Path:
        """Where the blob is on this node's disk, to send it from."""
        ...

    async def delete(self, keys: Iterable[str]) -> None:
        """Delete the blobs (those already gone are no error)."""
        ...

    def delete_now(self, keys: Iterable[str]) -> None:
        """Delete the blobs before returning (blocking): for a commit's after-hook, so that the
        answer that says they are deleted comes after they are."""
        ...

    def check(self) -> None:
        """Raise if the storage cannot be written."""
        ...


class _FileWriter:
    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle

    async def write(self, data: bytes) -> None:
        await asyncio.to_thread(self.handle.write, data)


class LocalDisk:
    """Blobs as files under ``root`` (0700), each 0600; written to ``root/.incoming`` first and
    moved into place when complete."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.incoming = root / ".incoming"

    def new_key(self) -> str:
        return secrets.token_hex(16)

    def path(self, key: str) -> Path:
        if not KEY.fullmatch(key):
            raise ValueError("not a blob key")
        return self.root / key

    def _prepare(self) -> None:
        self.incoming.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.root, 0o700)

    @asynccontextmanager
    async def writer(self, key: str) -> AsyncIterator[BlobWriter]:
        final = self.path(key)
        await asyncio.to_thread(self._prepare)
        temporary = self.incoming / f"{key}.{secrets.token_hex(4)}.part"
        handle = await asyncio.to_thread(_create, temporary)
        try:
            yield _FileWriter(handle)
            await asyncio.to_thread(_finish, handle)
            os.replace(temporary, final)
        except BaseException:
            handle.close()
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()
            raise

    async def put(self, key: str, data: bytes) -> None:
        async with self.writer(key) as out:
            await out.write(data)

    async def delete(self, keys: Iterable[str]) -> None:
        paths = [self.path(key) for key in keys]
        await asyncio.to_thread(_unlink_all, paths)

    def delete_now(self, keys: Iterable[str]) -> None:
        _unlink_all([self.path(key) for key in keys])

    def check(self) -> None:
        self._prepare()
        probe = self.incoming / f"probe-{secrets.token_hex(4)}"
        probe.write_bytes(b"ok")
        probe.unlink()


def _create(path: Path) -> BinaryIO:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    return os.fdopen(fd, "wb")


def _finish(handle: BinaryIO) -> None:
    handle.flush()
    os.fsync(handle.fileno())
    handle.close()


def _unlink_all(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)
