"""The work tables in an agent's backup: what is saved with the agent, and how work that was
under way when it was deleted comes back."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from kai.agents.backup import Backups, Row, TablePart
from kai.db import Base, after_commit, utcnow
from kai.storage import Blobs
from kai.work.models import Command, StoredFile, Stream, StreamChunk, Task


def register(backups: Backups, storage: Blobs) -> None:
    """Register the work tables, in the order they are restored (a stream before its chunks)."""
    backups.add(TablePart("commands", Command, _of(Command), settle=_settle_command))
    backups.add(
        TablePart("tasks", Task, _of(Task), settle=_settle_task, prepare=_drop_lost_parents)
    )
    backups.add(TablePart("streams", Stream, _of(Stream), settle=_settle_stream))
    backups.add(TablePart("streamChunks", StreamChunk, _chunks_of))

    def discard_files(session: AsyncSession, rows: list[Base]) -> None:
        # Without a backup the uploaded bytes go too; a backup keeps them for its restore.
        keys = [row.storage_name for row in rows if isinstance(row, StoredFile)]
        after_commit(session, lambda: storage.delete_now(keys))

    backups.add(TablePart("files", StoredFile, _of(StoredFile), discard=discard_files))


def _of(model: Any) -> Any:
    def rows(agent_id: str) -> Select[Any]:
        return select(model).where(model.agent_id == agent_id)

    return rows


def _chunks_of(agent_id: str) -> Select[Any]:
    return (
        select(StreamChunk)
        .join(Stream, Stream.id == StreamChunk.stream_id)
        .where(Stream.agent_id == agent_id)
    )


def _settle_task(row: Row) -> None:
    if row.get("status") == "running":
        row.update(status="queued", lease_owner=None, lease_expires_at=None)


def _settle_stream(row: Row) -> None:
    if row.get("status") in ("pending", "running"):
        row.update(status="failed", error="The agent was deleted", completed_at=utcnow())


def _settle_command(row: Row) -> None:
    if row.get("status") == "pending":
        row.update(status="failed", error="The agent was deleted", completed_at=utcnow())


async def _drop_lost_parents(session: AsyncSession, rows: list[Row]) -> None:
    """A subtask whose parent task is gone (its agent deleted) comes back without one."""
    parents = {row["parent_id"] for row in rows if row.get("parent_id")}
    if not parents:
        return
    here = {row["id"] for row in rows}
    found = set(await session.scalars(select(Task.id).where(Task.id.in_(parents))))
    for row in rows:
        if row.get("parent_id") and row["parent_id"] not in found | here:
            row["parent_id"] = None
