"""Alembic environment: runs kai's migrations on SQLite and PostgreSQL alike."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from kai.db import Base, create_engine
from kai.models import load_all

load_all()
config = context.config
url: str = config.attributes.get("database_url") or config.get_main_option("sqlalchemy.url") or ""
# Nodes starting together on one PostgreSQL database migrate one after the other: each takes
# this lock until its transaction ends, then finds the schema already at its revision.
MIGRATION_LOCK = 0x6B6169  # "kai"


def _run(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    engine = create_engine(url)
    try:
        async with engine.execution_options(kai_write=True).connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()  # the engine's own pool: an options view would leave it open


if context.is_offline_mode():
    context.configure(url=url, target_metadata=Base.metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_async())
