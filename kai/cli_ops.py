"""Operators' commands: agents and their status, logs (followed live), tasks (watched live),
backups and users, as readable tables, with progress bars for long work.

They read the hub's database directly (the settings are the hub's: ``KAI_DATABASE_URL``,
``KAI_DATA_DIR``...), so they work on any node's machine, with or without the hub running.
"""

from __future__ import annotations

import asyncio
import io
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, BinaryIO

import typer
from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, Progress, TaskID, TaskProgressColumn, TextColumn
from rich.table import Table

from kai.cli import _with_hub, agents_cli, app, users

# The hub's stack is imported by the commands that use it, not by every `kai` process.
if TYPE_CHECKING:
    from kai.agents.models import Agent, AgentLog
    from kai.container import Container as Hub

console = Console()
tasks_cli = typer.Typer(help="Watch tasks.", no_args_is_help=True)
app.add_typer(tasks_cli, name="tasks")

FOLLOW_EVERY = 0.5


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


async def _agent(hub: Hub, name_or_id: str) -> Agent:
    """The agent with this id, or the only agent with this name."""
    from sqlalchemy import select

    from kai.agents import store
    from kai.agents.models import Agent
    from kai.errors import NotFound

    async with hub.db.session(write=False) as session:
        found = await store.get(session, name_or_id)
        if found is not None:
            return found
        named = list(await session.scalars(select(Agent).where(Agent.name == name_or_id)))
    if len(named) != 1:
        raise NotFound(
            f"No agent {name_or_id!r}"
            if not named
            else f"{len(named)} agents are named {name_or_id!r}: use the id"
        )
    return named[0]


@agents_cli.command("list")
def agents_list() -> None:
    """Every agent with its owner, status, health and last activity."""

    from sqlalchemy import select

    from kai.agents.models import Agent
    from kai.agents.service import effective_status
    from kai.auth.models import User
    from kai.db import utcnow

    async def work(hub: Hub) -> Table:
        now = utcnow()
        async with hub.db.session(write=False) as session:
            rows = (
                await session.execute(
                    select(Agent, User.email)
                    .join(User, User.id == Agent.owner_id, isouter=True)
                    .order_by(Agent.name)
                )
            ).all()
        table = Table("name", "id", "owner", "status", "health", "last activity")
        for agent, owner in rows:
            status = effective_status(agent, now)
            colour = {"online": "green", "busy": "yellow", "error": "red"}.get(status, "dim")
            table.add_row(
                agent.name,
                agent.id,
                owner or "-",
                f"[{colour}]{status}[/]",
                agent.health,
                _when(agent.last_activity),
            )
        return table

    table = _with_hub(work)
    console.print(table if table.row_count else "no agents yet")


@agents_cli.command("logs")
def agents_logs(
    agent: Annotated[str, typer.Argument(help="The agent's id or name")],
    lines: Annotated[int, typer.Option("--lines", "-n", help="How many recent lines")] = 20,
    level: Annotated[str | None, typer.Option(help="Lowest level shown (e.g. WARNING)")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines")] = False,
) -> None:
    """The agent's latest log lines; with --follow, new ones as they are written."""
    from sqlalchemy import select

    from kai.agents.models import AgentLog
    from kai.protocol.agent import LEVELS

    min_level = LEVELS.get(level.upper()) if level else None
    if level and min_level is None:
        console.print(f"kai: unknown level {level!r} (one of {', '.join(LEVELS)})")
        raise typer.Exit(2)

    async def work(hub: Hub) -> None:
        found = await _agent(hub, agent)
        where = [AgentLog.agent_id == found.id]
        if min_level is not None:
            where.append(AgentLog.level_no >= min_level)
        async with hub.db.session(write=False) as session:
            recent = list(
                await session.scalars(
                    select(AgentLog).where(*where).order_by(AgentLog.id.desc()).limit(lines)
                )
            )
        last = recent[0].id if recent else 0
        for record in reversed(recent):
            _print_log(record)
        while follow:
            await asyncio.sleep(FOLLOW_EVERY)
            async with hub.db.session(write=False) as session:
                fresh = list(
                    await session.scalars(
                        select(AgentLog)
                        .where(*where, AgentLog.id > last)
                        .order_by(AgentLog.id)
                        .limit(1000)
                    )
                )
            for record in fresh:
                _print_log(record)
                last = record.id

    try:
        _with_hub(work)
    except KeyboardInterrupt:
        pass


def _print_log(record: AgentLog) -> None:
    """One line; the agent's message is printed as text, never read as markup."""
    style = {"WARNING": "yellow", "ERROR": "red", "CRITICAL": "bold red", "DEBUG": "dim"}
    colour = style.get(record.level)
    level = f"[{colour}]{record.level:<8}[/]" if colour else f"{record.level:<8}"
    console.print(f"{_when(record.timestamp)} {level} ", end="", highlight=False)
    console.print(record.message, markup=False, highlight=False, soft_wrap=True)


@tasks_cli.command("watch")
def tasks_watch(
    agent: Annotated[str, typer.Argument(help="The agent's id or name")],
    until_done: Annotated[
        bool, typer.Option(help="Stop once no task is queued or running")
    ] = False,
    limit: Annotated[int, typer.Option(help="How many recent tasks to show")] = 20,
) -> None:
    """A live table of the agent's recent tasks: status, progress bar, attempts."""

    async def work(hub: Hub) -> Table:
        found = await _agent(hub, agent)
        table = await _task_table(hub, found.id, limit)
        with Live(table, console=console, refresh_per_second=4, transient=False) as live:
            while True:
                table = await _task_table(hub, found.id, limit)
                live.update(table)
                if until_done and not await _open_tasks(hub, found.id):
                    return table
                await asyncio.sleep(FOLLOW_EVERY)

    try:
        _with_hub(work)
    except KeyboardInterrupt:
        pass


async def _open_tasks(hub: Hub, agent_id: str) -> int:
    from sqlalchemy import select

    from kai.work.models import Task

    async with hub.db.session(write=False) as session:
        rows = await session.scalars(
            select(Task.id).where(Task.agent_id == agent_id, Task.status.in_(("queued", "running")))
        )
        return len(list(rows))


async def _task_table(hub: Hub, agent_id: str, limit: int) -> Table:
    from sqlalchemy import select

    from kai.work.models import PRIORITY_NAMES, TASK_FINAL, Task

    async with hub.db.session(write=False) as session:
        tasks = list(
            await session.scalars(
                select(Task)
                .where(Task.agent_id == agent_id)
                .order_by(Task.created_at.desc())
                .limit(limit)
            )
        )
    table = Table("task", "type", "priority", "status", "progress", "attempts", "message")
    for task in tasks:
        filled = round(task.progress * 20)
        bar = "█" * filled + "░" * (20 - filled)
        status = task.status if task.status not in TASK_FINAL else f"[bold]{task.status}[/]"
        table.add_row(
            task.id[:8],
            task.task_type,
            PRIORITY_NAMES[task.priority],
            status,
            f"{bar} {task.progress:4.0%}",
            f"{task.attempts}/{task.max_attempts}",
            task.error or task.message or "",
        )
    return table


@agents_cli.command("backup")
def agents_backup(
    agent: Annotated[str, typer.Argument(help="The agent's id or name")],
) -> None:
    """Write a backup of the agent (record, logs and all its work) without deleting it."""
    from kai.agents import backup, store

    async def work(hub: Hub) -> Path:
        found = await _agent(hub, agent)
        await hub.agents.flush_logs()
        with _progress() as progress:
            step = progress.add_task("reading", total=3)
            async with hub.db.session(write=False) as session:
                logs = await store.all_logs(session, found.id)
                progress.advance(step)
                work = await hub.agents.backups.work_of(session, found.id)
                progress.advance(step)
            archives = hub.agents.backup_store
            backup_id = await backup.write(archives, agent=found, logs=logs, work=work)
            progress.advance(step)
        return archives.path(backup.archive_key(backup_id))

    path = _with_hub(work)
    console.print(f"kai: backup written to {path}", soft_wrap=True)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), console=console
    )


@users.command("list")
def users_list() -> None:
    """Every account with its role and state."""
    from sqlalchemy import select

    from kai.auth.models import User

    async def work(hub: Hub) -> Table:
        async with hub.db.session(write=False) as session:
            accounts = list(await session.scalars(select(User).order_by(User.email)))
        table = Table("email", "name", "role", "verified", "disabled", "created")
        for user in accounts:
            table.add_row(
                user.email,
                user.name or "-",
                user.role,
                "yes" if user.email_verified else "no",
                "[red]yes[/]" if user.disabled else "no",
                _when(user.created_at),
            )
        return table

    console.print(_with_hub(work))


files_cli = typer.Typer(help="Upload files to agents.", no_args_is_help=True)
app.add_typer(files_cli, name="files")


class _Counted(io.RawIOBase):
    """A file read for an upload, advancing a progress bar with every read."""

    def __init__(self, handle: BinaryIO, progress: Progress, task: TaskID) -> None:
        self._handle = handle
        self._progress = progress
        self._task = task

    def readable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._handle.fileno()  # lets httpx learn the size for Content-Length

    def read(self, size: int = -1) -> bytes:
        data = self._handle.read(size)
        self._progress.advance(self._task, len(data))
        return data


@files_cli.command("upload")
def files_upload(
    agent_id: Annotated[str, typer.Argument(help="The agent's id")],
    path: Annotated[Path, typer.Argument(help="The file", exists=True, dir_okay=False)],
    url: Annotated[str, typer.Option(envvar="KAI_URL", help="The hub")] = "http://127.0.0.1:8000",
    email: Annotated[str | None, typer.Option(envvar="KAI_EMAIL")] = None,
    password: Annotated[str | None, typer.Option(envvar="KAI_PASSWORD")] = None,
    metadata: Annotated[str | None, typer.Option(help="A JSON object kept with the file")] = None,
) -> None:
    """Upload a file to an agent through the hub's API, with a progress bar."""
    from kai.sdk.client import KaiApiError, KaiClient

    if email is None or password is None:
        console.print("kai: give --email and --password (or KAI_EMAIL and KAI_PASSWORD)")
        raise typer.Exit(2)

    async def upload() -> dict[str, object]:
        async with KaiClient(url) as kai:
            await kai.login(email, password)
            with path.open("rb") as handle, _progress() as progress:
                task = progress.add_task(path.name, total=path.stat().st_size)
                counted = _Counted(handle, progress, task)
                files = {"file": (path.name, counted, "application/octet-stream")}
                data = {"metadata": metadata} if metadata else None
                response = await kai.request(
                    "POST", f"/api/agents/{agent_id}/upload", files=files, data=data
                )
                body: dict[str, object] = response.json()
                return body

    try:
        uploaded = asyncio.run(upload())
    except KaiApiError as exc:
        console.print(f"kai: {exc.status} {exc.detail}", markup=False)
        raise typer.Exit(1) from None
    console.print(
        f"kai: uploaded {uploaded['filename']} ({uploaded['size']} bytes, "
        f"sha256 {uploaded['sha256']}) as {uploaded['fileId']}",
        markup=False,
    )
