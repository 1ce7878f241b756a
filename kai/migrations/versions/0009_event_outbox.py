"""the event outbox: events committed with the state change they report

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05 05:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import kai.db

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "event_outbox",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("log_key", sa.String(length=80), nullable=False),
        sa.Column("event", sa.JSON(), nullable=False),
        sa.Column("created_at", kai.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_event_outbox")),
    )
    op.create_index(op.f("ix_event_outbox_created_at"), "event_outbox", ["created_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_event_outbox_created_at"), table_name="event_outbox")
    op.drop_table("event_outbox")
