"""The unit of work: what is queued for after a commit runs after it, never without it, and never
fails the work that was committed."""

from __future__ import annotations

import asyncio
import logging

import pytest
from sqlalchemy import select

from kai.auth.models import User
from kai.db import Database, after_commit


async def _emails(db: Database) -> set[str]:
    async with db.session(write=False) as session:
        return set(await session.scalars(select(User.email)))


async def test_a_failing_after_commit_hook_leaves_the_work_committed_and_the_rest_run(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    db = Database(database_url)
    ran: list[str] = []
    seen_after: list[set[str]] = []

    def broken() -> None:
        raise RuntimeError("the broker is down")

    async def publish() -> None:
        seen_after.append(await _emails(db))  # runs once the row is there for anyone to read
        ran.append("published")

    async def publish_fails() -> None:
        raise ConnectionError("no route to the broker")

    try:
        with caplog.at_level(logging.ERROR, logger="kai.db"):
            async with db.session() as session:
                session.add(User(email="kept@example.com"))
                after_commit(session, broken)
                after_commit(session, publish)
                after_commit(session, publish_fails)
                after_commit(session, lambda: ran.append("told"))
            for _ in range(200):
                if "published" in ran and len(caplog.records) >= 2:
                    break
                await asyncio.sleep(0.01)
        assert "kept@example.com" in await _emails(db)
        assert ran == ["told", "published"]  # the plain call at once; the awaitable after it
        assert seen_after == [{"kept@example.com"}]
        messages = [record.getMessage() for record in caplog.records]
        assert any("committed work stands" in m and "broken" in m for m in messages), messages
        assert any("queued by a commit failed" in m for m in messages), messages
    finally:
        await db.dispose()


async def test_nothing_queued_runs_when_the_work_rolls_back(database_url: str) -> None:
    db = Database(database_url)
    ran: list[str] = []

    async def publish() -> None:
        ran.append("published")

    async def failing_request() -> None:
        async with db.session() as session:
            session.add(User(email="gone@example.com"))
            after_commit(session, publish)
            after_commit(session, lambda: ran.append("told"))
            raise ValueError("the request failed after its writes")

    try:
        with pytest.raises(ValueError, match="failed after its writes"):
            await failing_request()
        await asyncio.sleep(0.05)
        assert ran == []
        assert "gone@example.com" not in await _emails(db)
    finally:
        await db.dispose()
