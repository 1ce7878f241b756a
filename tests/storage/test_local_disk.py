"""The local disk behind the blob interface: a blob exists whole or not at all, only its owner
may read it, and a key is never a path."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from kai.storage import LocalDisk


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_a_blob_written_in_pieces_is_there_whole_and_private(tmp_path: Path) -> None:
    disk = LocalDisk(tmp_path / "files")
    key = disk.new_key()
    async with disk.writer(key) as out:
        await out.write(b"first ")
        assert not disk.path(key).exists()  # not until the write is done
        await out.write(b"second")
    assert disk.path(key).read_bytes() == b"first second"
    assert mode(disk.path(key)) == 0o600
    assert mode(tmp_path / "files") == 0o700
    assert list(disk.incoming.iterdir()) == []


async def test_a_failed_write_leaves_nothing(tmp_path: Path) -> None:
    disk = LocalDisk(tmp_path / "files")
    key = disk.new_key()

    async def interrupted() -> None:
        async with disk.writer(key) as out:
            await out.write(b"half")
            raise RuntimeError("the client went away")

    with pytest.raises(RuntimeError):
        await interrupted()
    assert not disk.path(key).exists()
    assert list(disk.incoming.iterdir()) == []


async def test_put_replace_and_delete(tmp_path: Path) -> None:
    disk = LocalDisk(tmp_path / "backups")
    await disk.put("agent-1.json.gz", b"one")
    await disk.put("agent-1.json.gz", b"two")  # a new version replaces the old whole
    assert disk.path("agent-1.json.gz").read_bytes() == b"two"
    await disk.delete(["agent-1.json.gz", "never-written"])  # gone already is no error
    assert not disk.path("agent-1.json.gz").exists()
    await disk.put("agent-2.json.gz", b"three")
    disk.delete_now(["agent-2.json.gz"])
    assert not disk.path("agent-2.json.gz").exists()


@pytest.mark.parametrize("key", ["../escape", "/etc/passwd", ".incoming", "a/b", "", "x" * 201])
def test_a_key_is_never_a_path(tmp_path: Path, key: str) -> None:
    with pytest.raises(ValueError, match="not a blob key"):
        LocalDisk(tmp_path).path(key)


def test_the_check_writes_and_cleans_up(tmp_path: Path) -> None:
    disk = LocalDisk(tmp_path / "files")
    disk.check()
    assert list(disk.incoming.iterdir()) == []
    (tmp_path / "occupied").write_bytes(b"a file where the storage should be")
    with pytest.raises(NotADirectoryError):
        LocalDisk(tmp_path / "occupied").check()
