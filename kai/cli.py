"""The ``kai`` command: serve, migrate, and manage users."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from kai.auth.rbac import Role

# Only what every command needs is imported here: `kai agent run` starts an agent process with the
# SDK alone, and commands import the hub's stack (FastAPI, SQLAlchemy, the container) when run.
if TYPE_CHECKING:
    from kai.config import Settings
    from kai.container import Container as Hub
    from kai.kit.logs import LogFormat

T = TypeVar("T")

app = typer.Typer(
    help="kai: a self-hosted hub for AI agents.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
users = typer.Typer(help="Manage user accounts.", no_args_is_help=True)
app.add_typer(users, name="users")
agent_cli = typer.Typer(help="Run an agent process.", no_args_is_help=True)
app.add_typer(agent_cli, name="agent")
agents_cli = typer.Typer(help="Manage agents on the hub.", no_args_is_help=True)
app.add_typer(agents_cli, name="agents")


def _setup_logging(level: str, fmt: LogFormat) -> None:
    from kai.kit import logs

    logs.setup(level, fmt)


def _settings() -> Settings:
    from kai.config import Settings

    try:
        return Settings()
    except Exception as exc:
        typer.echo(f"kai: bad configuration: {exc}", err=True)
        raise typer.Exit(2) from None


def _warn_if_exposed_and_open(settings: Settings) -> None:
    """Say so when anyone who reaches this address may create an account."""
    import ipaddress

    try:
        loopback = settings.host == "localhost" or ipaddress.ip_address(settings.host).is_loopback
    except ValueError:
        loopback = False
    if settings.registration == "open" and not loopback:
        logging.getLogger("kai").warning(
            "registration is open on %s: anyone who reaches the hub may create an account; "
            "set KAI_REGISTRATION (invite, verified or closed), see docs/deploying.md",
            settings.host,
        )


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind (KAI_HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="Port to bind (KAI_PORT)")] = None,
    demo: Annotated[bool, typer.Option(help="Also run the demo agent (KAI_DEMO)")] = False,
) -> None:
    """Run the hub (migrating the database first)."""
    import os

    import uvicorn

    os.umask(0o077)  # whatever the hub writes (database, uploads, backups) is its own alone

    from kai.app import create_app
    from kai.config import ConfigError

    settings = _settings()
    if host is not None:
        settings.host = host
    if port is not None:
        settings.port = port
    if demo:
        settings.demo = True
    _setup_logging(settings.log_level, settings.log_format)
    _warn_if_exposed_and_open(settings)
    try:
        settings.signing_key()
    except ConfigError as exc:
        typer.echo(f"kai: {exc}", err=True)
        raise typer.Exit(2) from None
    from kai.server import protocols

    http, ws = protocols(settings)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        http=http,
        ws=ws,
        timeout_keep_alive=settings.http_keepalive_timeout,
        proxy_headers=False,  # kai reads X-Forwarded-For itself, from trusted proxies only
        ws_per_message_deflate=False,
        ws_ping_interval=settings.ws_ping_interval,
        ws_ping_timeout=settings.ws_ping_interval,
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=10,
    )


def _pending_revisions(url: str) -> tuple[str | None, list[str]]:
    """The revision the database is at (None if kai never migrated it) and those it lacks."""
    from alembic.script import ScriptDirectory

    from kai.db import MIGRATIONS

    script = ScriptDirectory(str(MIGRATIONS))
    revisions = [r.revision for r in reversed(list(script.walk_revisions()))]
    current = asyncio.run(_schema_revision(url))
    if current is not None and current not in revisions:
        raise typer.BadParameter(
            f"the database is at schema {current}, which this kai does not know: "
            "it was migrated by a newer kai",
            param_hint="KAI_DATABASE_URL",
        )
    return current, revisions[revisions.index(current) + 1 :] if current else revisions


@app.command("migrate")
def migrate_command(
    check: Annotated[
        bool, typer.Option("--check", help="Only list pending migrations; exit 1 if any")
    ] = False,
) -> None:
    """Upgrade the database to the newest schema."""
    from rich.progress import Progress

    from kai.db import migrate

    settings = _settings()
    _setup_logging(settings.log_level, settings.log_format)
    url = settings.resolved_database_url
    current, pending = _pending_revisions(url)
    if check:
        typer.echo(f"kai: database schema at {current or 'nothing'}; pending: {pending or 'none'}")
        raise typer.Exit(1 if pending else 0)
    with Progress() as progress:
        step = progress.add_task("migrating", total=len(pending))
        for revision in pending:
            migrate(url, revision)
            progress.advance(step)
    typer.echo(f"kai: database is up to date ({len(pending)} migrations applied)")


async def _schema_revision(url: str) -> str | None:
    """The revision the database is at; None for a database kai has never migrated."""
    from sqlalchemy.exc import DBAPIError

    from kai.db import create_engine

    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            result = await connection.exec_driver_sql("SELECT version_num FROM alembic_version")
            return result.scalar()
    except DBAPIError:
        return None
    finally:
        await engine.dispose()


def _with_hub(work: Callable[[Hub], Awaitable[T]]) -> T:
    from kai import container
    from kai.errors import KaiError

    settings = _settings()
    # A new database is set up; one behind this kai is left for `kai migrate` to upgrade, so
    # that no admin command changes the schema under running nodes of an older release.
    current, pending = _pending_revisions(settings.resolved_database_url)
    if current is not None and pending:
        typer.echo(
            f"kai: the database schema is behind this kai ({len(pending)} migrations pending): "
            "run `kai migrate` first",
            err=True,
        )
        raise typer.Exit(1)

    async def run() -> T:
        hub = await container.build(settings, run_migrations=current is None)
        try:
            return await work(hub)
        finally:
            await container.stop(hub)

    try:
        return asyncio.run(run())
    except KaiError as exc:
        typer.echo(f"kai: {exc.detail}", err=True)
        raise typer.Exit(1) from None


def _password(value: str | None) -> str:
    if value is None:
        value = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    if len(value) < 8:
        typer.echo("kai: a password needs at least 8 characters", err=True)
        raise typer.Exit(2)
    return value


@users.command("create")
def users_create(
    email: Annotated[str, typer.Option(help="The account's email address")],
    password: Annotated[str | None, typer.Option(help="Asked for when omitted")] = None,
    role: Annotated[Role, typer.Option(help="user, developer, agent or admin")] = Role.USER,
    name: Annotated[str | None, typer.Option(help="A display name")] = None,
) -> None:
    """Create an account (its email counts as verified)."""
    secret = _password(password)

    async def work(hub: Hub) -> str:
        async with hub.db.session() as session:
            user = await hub.identity.create_user(
                session, email=email.strip().lower(), password=secret, role=role, name=name
            )
            return user.id

    user_id = _with_hub(work)
    typer.echo(f"kai: created {role.value} {email} ({user_id})")


@users.command("set-role")
def users_set_role(
    email: Annotated[str, typer.Argument(help="The account's email address")],
    role: Annotated[Role, typer.Argument(help="user, developer, agent or admin")],
) -> None:
    """Change an account's role; it applies to the account's next request."""

    async def work(hub: Hub) -> None:
        from kai.auth import store

        async with hub.db.session() as session:
            user = await store.user_by_email(session, email.strip().lower())
            if user is None:
                typer.echo(f"kai: no account {email}", err=True)
                raise typer.Exit(1)
            await hub.identity.update_user(session, user.id, role=role)

    _with_hub(work)
    typer.echo(f"kai: {email} is now {role.value}")


@users.command("set-password")
def users_set_password(
    email: Annotated[str, typer.Argument(help="The account's email address")],
    password: Annotated[str | None, typer.Option(help="Asked for when omitted")] = None,
) -> None:
    """Set an account's password; its open sessions end."""
    secret = _password(password)

    async def work(hub: Hub) -> None:
        from kai.auth import store

        async with hub.db.session() as session:
            user = await store.user_by_email(session, email.strip().lower())
            if user is None:
                typer.echo(f"kai: no account {email}", err=True)
                raise typer.Exit(1)
            await hub.identity.set_password(session, user, secret)

    _with_hub(work)
    typer.echo(f"kai: password of {email} changed")


def _agent_token(ctx: typer.Context, token: str | None, token_file: Path | None) -> str:
    """The agent's token: from ``--token-file``, else ``KAI_AGENT_TOKEN`` (or ``--token``,
    which still works but shows the token in ``ps``, so it is warned about)."""
    source = ctx.get_parameter_source("token")
    on_command_line = source is not None and source.name == "COMMANDLINE"
    if token_file is not None:
        if on_command_line:
            typer.echo("kai: give the token once: --token-file or --token", err=True)
            raise typer.Exit(2)
        try:
            token = token_file.read_text().strip()
            mode = token_file.stat().st_mode
        except OSError as exc:
            typer.echo(f"kai: cannot read the token file: {exc.strerror}", err=True)
            raise typer.Exit(2) from None
        if mode & 0o077:
            typer.echo(f"kai: warning: {token_file} is readable by others; chmod 600 it", err=True)
    elif on_command_line:
        typer.echo(
            "kai: warning: --token shows the token to every user of this machine (ps); "
            "use KAI_AGENT_TOKEN or --token-file",
            err=True,
        )
    if not token:
        typer.echo("kai: an agent token is needed (KAI_AGENT_TOKEN or --token-file)", err=True)
        raise typer.Exit(2)
    return token


@agent_cli.command("run")
def agent_run(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(help="module:attribute of a kai.sdk.Agent")],
    url: Annotated[
        list[str] | None,
        typer.Option(help="Hub WebSocket URL (repeat for fallbacks); KAI_AGENT_URL"),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            envvar="KAI_AGENT_TOKEN",
            help="The agent's token; give it as KAI_AGENT_TOKEN or --token-file: on the "
            "command line every user of this machine sees it (ps)",
        ),
    ] = None,
    token_file: Annotated[
        Path | None,
        typer.Option(help="A file holding the agent's token (readable by you alone)"),
    ] = None,
    log_level: Annotated[str, typer.Option(envvar="KAI_AGENT_LOG_LEVEL")] = "INFO",
) -> None:
    """Run an agent written with kai.sdk until it is stopped."""
    import importlib
    import os

    from kai.sdk import Agent, AgentStopped

    urls = url or [u for u in os.environ.get("KAI_AGENT_URL", "").split(",") if u]
    if not urls:
        urls = ["ws://127.0.0.1:8000/ws/agent"]
    token = _agent_token(ctx, token, token_file)
    module_name, _, attribute = target.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `python -m` would: an agent module beside you loads
    try:
        found: object = importlib.import_module(module_name)
        for part in attribute.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError) as exc:
        typer.echo(f"kai: cannot load {target}: {exc}", err=True)
        raise typer.Exit(2) from None
    if not isinstance(found, Agent):
        typer.echo(f"kai: {target} is not a kai.sdk.Agent", err=True)
        raise typer.Exit(2)
    if os.environ.get("KAI_AGENT_LOG_CONSOLE", "1") != "0":
        # Plain lines: a hosted agent's output is stored as its log, one record a line.
        logging.basicConfig(
            level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
    else:
        logging.getLogger().setLevel(log_level.upper())
    try:
        found.run_forever(urls, token)
    except AgentStopped as exc:
        typer.echo(f"kai: the hub stopped this agent: {exc.code} {exc.reason}", err=True)
        raise typer.Exit(3) from None


@agents_cli.command("restore")
def agents_restore(
    archive: Annotated[Path, typer.Argument(help="A backup archive written on delete")],
) -> None:
    """Bring back a deleted agent from its backup (it returns offline, with its old token)."""

    from rich.progress import Progress

    async def work(hub: Hub) -> str:
        with Progress(transient=True) as progress:
            step = progress.add_task("restoring", total=2)
            async with hub.db.session() as session:
                agent = await hub.agents.restore(session, archive)
                progress.advance(step)
            progress.advance(step)  # committed
            return f"{agent.name} ({agent.id})"

    restored = _with_hub(work)
    typer.echo(f"kai: restored agent {restored}")


def main() -> None:
    app()


# The operators' commands register themselves on the apps above.
import kai.cli_ops  # noqa: E402, F401
