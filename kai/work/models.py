"""Tables of work sent to agents."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Float, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from kai.db import Base, UTCDateTime, new_id, utcnow


class Command(Base):
    """One command: who sent it to which agent, and how it ended."""

    __tablename__ = "commands"
    __table_args__ = (Index("ix_commands_agent_time", "agent_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"))
    user_id: Mapped[str | None] = mapped_column(String(36))
    command: Mapped[str] = mapped_column(String(200))
    parameters: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    via: Mapped[str] = mapped_column(String(10))  # "rest" or "ws"
    status: Mapped[str] = mapped_column(String(20), default="pending")
    result: Mapped[Any] = mapped_column(JSON, nullable=True)
    error: Mapped[str | None] = mapped_column(Text)
    execution_time: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
