"""Tables of work sent to agents."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from kai.db import Base, UTCDateTime, new_id, utcnow
from kai.protocol import states
from kai.protocol.states import TaskStatus


class Command(Base):
    """One command: who sent it to which agent, and how it ended."""

    __tablename__ = "commands"
    __table_args__ = (Index("ix_commands_agent_time", "agent_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"))
    user_id: Mapped[str | None] = mapped_column(String(36))
    command: Mapped[str] = mapped_column(String(200))
    parameters: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    via: Mapped[str] = mapped_column(String(10))  # "rest", "ws" or "agent"
    source_agent_id: Mapped[str | None] = mapped_column(String(36))  # the agent that sent it
    status: Mapped[str] = mapped_column(String(20), default="pending")
    result: Mapped[Any] = mapped_column(JSON, nullable=True)
    error: Mapped[str | None] = mapped_column(Text)
    execution_time: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


PRIORITIES: dict[str, int] = {"low": 0, "medium": 1, "high": 2, "critical": 3}
PRIORITY_NAMES: dict[int, str] = {number: name for name, number in PRIORITIES.items()}
TASK_STATES = tuple(TaskStatus)
TASK_FINAL = states.TASK_FINAL


class Task(Base):
    """One durable task in an agent's queue, and how far it got."""

    __tablename__ = "tasks"
    __table_args__ = (
        # The claim: an agent's queued tasks, highest priority first, then oldest first.
        Index("ix_tasks_queue", "agent_id", "status", "priority", "created_at"),
        Index("ix_tasks_idempotency", "agent_id", "idempotency_key", unique=True),
        Index("ix_tasks_lease", "status", "lease_expires_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"))
    user_id: Mapped[str | None] = mapped_column(String(36))
    task_type: Mapped[str] = mapped_column(String(200))
    parameters: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    priority: Mapped[int] = mapped_column(Integer, default=1)
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    request_digest: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(20), default=TaskStatus.QUEUED)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    message: Mapped[str | None] = mapped_column(Text)
    result: Mapped[Any] = mapped_column(JSON, nullable=True)
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    lease_owner: Mapped[str | None] = mapped_column(String(36))
    # A subtask: the task whose agent created it (its result goes back to that agent).
    parent_id: Mapped[str | None] = mapped_column(
        ForeignKey("tasks.id", ondelete="SET NULL"), index=True
    )
    source_agent_id: Mapped[str | None] = mapped_column(String(36))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Stream(Base):
    """One prompt stream: the prompt handed to an agent and how its answer ended."""

    __tablename__ = "streams"
    __table_args__ = (
        Index("ix_streams_agent_time", "agent_id", "created_at"),
        Index("ix_streams_expiry", "expires_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"))
    user_id: Mapped[str | None] = mapped_column(String(36))
    prompt: Mapped[str] = mapped_column(Text)
    context: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    source_agent_id: Mapped[str | None] = mapped_column(String(36))  # the agent that opened it
    status: Mapped[str] = mapped_column(String(20), default="pending")
    chunks: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class StreamChunk(Base):
    """A piece of a stream's answer, by its place in the stream."""

    __tablename__ = "stream_chunks"

    stream_id: Mapped[str] = mapped_column(
        ForeignKey("streams.id", ondelete="CASCADE"), primary_key=True
    )
    index: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    chunk: Mapped[str] = mapped_column(Text)


class StoredFile(Base):
    """A file uploaded for an agent; its bytes live in the storage under ``storage_name``."""

    __tablename__ = "files"
    __table_args__ = (
        Index("ix_files_agent_time", "agent_id", "created_at"),
        Index("ix_files_user", "user_id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"))
    user_id: Mapped[str | None] = mapped_column(String(36))
    filename: Mapped[str] = mapped_column(String(255))
    storage_name: Mapped[str] = mapped_column(String(64), unique=True)
    content_type: Mapped[str] = mapped_column(String(200))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
