"""The ``kai`` command, run for real in subprocesses: migrate, manage users, serve and stop."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import delete

from kai.auth import store
from kai.auth.bootstrap import ensure_first_admin
from kai.auth.models import User
from kai.container import Container as Hub
from kai.db import Database
from tests.services import free_port

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(sys.executable).with_name("kai")
BOSS = "boss@example.com"
DEV = "dev@example.com"


def _command() -> list[str]:
    """The installed console script, or the module when the venv has none."""
    return [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "kai"]


def kai_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAI_")}
    env.update(
        KAI_DATA_DIR=str(data_dir),
        KAI_ARGON2_TIME_COST="1",
        KAI_ARGON2_MEMORY_COST="1024",
        KAI_ARGON2_PARALLELISM="1",
        KAI_ADMIN_EMAIL=BOSS,
        PYTHONPATH=str(ROOT),  # this checkout, whichever one the venv was installed from
    )
    env.update(extra)
    return env


def kai(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_command(), *args],
        env=env,
        cwd=Path(env["KAI_DATA_DIR"]).parent,
        capture_output=True,
        text=True,
        timeout=45,
        check=False,
    )


class Server:
    """``kai serve`` in a subprocess, its stderr and stdout in files."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.log = log
        self.url = f"http://127.0.0.1:{self.port}"
        self.out = log.with_suffix(".out")
        with log.open("w") as errors, self.out.open("w") as out:
            self.process = subprocess.Popen(
                [*_command(), "serve", "--host", "127.0.0.1", "--port", str(self.port)],
                env=env,
                cwd=Path(env["KAI_DATA_DIR"]).parent,
                stdout=out,
                stderr=errors,
            )

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"kai serve exited early:\n{self.output}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"kai serve did not answer within {timeout}s:\n{self.output}")

    @property
    def output(self) -> str:
        return self.log.read_text()

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=20)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        server.kill()


def login(url: str, email: str, password: str) -> httpx.Response:
    body = {"credentials": {"email": email, "password": password}}
    return httpx.post(f"{url}/api/auth/login", json=body, timeout=10)


def session_of(url: str, token: str) -> httpx.Response:
    return httpx.get(
        f"{url}/api/auth/session", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )


def test_migrate_users_and_serve(tmp_path: Path, server_factory: list[Server]) -> None:
    data = tmp_path / "data"
    env = kai_env(data)

    done = kai(env, "migrate")
    assert done.returncode == 0, done.stderr
    assert "database is up to date" in done.stdout
    assert (data / "kai.db").is_file()

    # An hour-long audit timer: what reaches the database is what the shutdown writes.
    server = Server({**env, "KAI_AUDIT_FLUSH_INTERVAL": "3600"}, tmp_path / "serve.log")
    server_factory.append(server)
    server.wait_ready()
    url = server.url

    # First start on an empty hub: the banner on stderr names the admin and a new password.
    banners = re.findall(r"email:\s+(\S+)\n\s+password:\s+(\S+)\n", server.output)
    assert len(banners) == 1, server.output
    assert "password" not in server.out.read_text()
    email, password = banners[0]
    assert email == BOSS
    assert len(password) >= 12
    response = login(url, BOSS, password)
    assert response.status_code == 200, response.text
    assert response.json()["user"]["role"] == "admin"
    assert stat.S_IMODE((data / "secret_key").stat().st_mode) == 0o600

    role = ("--role", "developer")
    created = kai(env, "users", "create", "--email", DEV, "--password", "dev password 1", *role)
    assert created.returncode == 0, created.stderr
    assert created.stdout.startswith(f"kai: created developer {DEV} (")
    user_id = created.stdout.strip().rsplit("(", 1)[1].rstrip(")")
    short = kai(env, "users", "create", "--email", "x@example.com", "--password", "short")
    assert short.returncode == 2
    assert "at least 8 characters" in short.stderr

    response = login(url, DEV, "dev password 1")
    assert response.status_code == 200, response.text
    user = response.json()["user"]
    assert (user["id"], user["role"], user["emailVerified"]) == (user_id, "developer", True)
    token = response.json()["tokens"]["accessToken"]["token"]
    assert "services:restart" in session_of(url, token).json()["permissions"]

    promoted = kai(env, "users", "set-role", DEV, "admin")
    assert promoted.returncode == 0, promoted.stderr
    assert f"{DEV} is now admin" in promoted.stdout
    # Changed by another process, seen by the server on the user's next request.
    session = session_of(url, token)
    assert session.status_code == 200
    assert session.json()["user"]["role"] == "admin"
    assert "system:admin" in session.json()["permissions"]
    missing = kai(env, "users", "set-role", "nobody@example.com", "admin")
    assert missing.returncode == 1
    assert "no account nobody@example.com" in missing.stderr
    bad_role = kai(env, "users", "set-role", DEV, "root")
    assert bad_role.returncode == 2

    changed = kai(env, "users", "set-password", DEV, "--password", "new password 2")
    assert changed.returncode == 0, changed.stderr
    assert session_of(url, token).status_code == 401  # its sessions ended
    assert login(url, DEV, "dev password 1").status_code == 401
    response = login(url, DEV, "new password 2")
    assert response.status_code == 200
    assert response.json()["user"]["role"] == "admin"

    # SIGTERM: a graceful shutdown. (Uvicorn re-raises the signal once it has shut down, so
    # the exit status may say SIGTERM; what counts is that the shutdown ran to its end.)
    assert server.stop() in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in server.output
    assert "Traceback" not in server.output
    # Every login, the last one too, is in the audit log once the server has stopped.
    logins = asyncio.run(_logins(f"sqlite+aiosqlite:///{data / 'kai.db'}", user_id))
    assert logins == [True, False, True]


async def _logins(url: str, user_id: str) -> list[bool]:
    """The user's login outcomes in the audit log, oldest first."""
    db = Database(url)
    try:
        async with db.session(write=False) as session:
            rows, _ = await store.audit_events(
                session,
                user_id=user_id,
                permission="auth:login",
                granted=None,
                kind=None,
                start=None,
                end=None,
                limit=100,
                offset=0,
            )
            return [row.granted for row in reversed(rows)]
    finally:
        await db.dispose()


def test_serve_refuses_a_weak_key(tmp_path: Path) -> None:
    env = kai_env(tmp_path / "data", KAI_SECRET_KEY="changeme")
    done = kai(env, "serve", "--port", str(free_port()))
    assert done.returncode == 2
    assert "well-known" in done.stderr
    assert "Traceback" not in done.stderr


def test_bad_configuration_is_reported(tmp_path: Path) -> None:
    env = kai_env(tmp_path / "data", KAI_TRUSTED_PROXIES="10.0.0.0/33")
    done = kai(env, "migrate")
    assert done.returncode == 2
    assert "bad configuration" in done.stderr
    assert "Traceback" not in done.stderr


async def test_users_create_on_postgresql(pg_database: str, tmp_path: Path) -> None:
    env = kai_env(tmp_path / "data", KAI_DATABASE_URL=pg_database)
    email = "pg-cli@example.com"
    done = kai(
        env, "users", "create", "--email", email, "--password", "pg password", "--role", "agent"
    )
    try:
        assert done.returncode == 0, done.stderr
        assert f"kai: created agent {email}" in done.stdout
        db = Database(pg_database)
        try:
            async with db.session(write=False) as session:
                user = await store.user_by_email(session, email)
                assert user is not None
                assert user.role == "agent"
                assert user.email_verified is True
                assert user.password_hash is not None
                assert user.password_hash.startswith("$argon2id$")
                assert "pg password" not in user.password_hash
        finally:
            await db.dispose()
        assert not (tmp_path / "data" / "kai.db").exists()  # it used PostgreSQL, not SQLite
    finally:
        db = Database(pg_database)
        try:
            async with db.session() as session:
                await session.execute(delete(User).where(User.email == email))
        finally:
            await db.dispose()


# -- the first-start banner, in process ------------------------------------------------------------


async def test_no_banner_once_users_exist(hub: Hub, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert await ensure_first_admin(hub.settings, hub.db, hub.identity) is None
    assert capsys.readouterr().err == ""


def test_migrate_check_and_admin_commands_never_upgrade_a_schema_behind(tmp_path: Path) -> None:
    """`kai migrate --check` lists what is pending (exit 1) or says none (exit 0); an admin
    command on a database behind this kai refuses instead of migrating it under older nodes."""
    from alembic.script import ScriptDirectory

    from kai.db import MIGRATIONS, migrate

    # A database an older release left behind: one migration before this kai's head.
    scripts = ScriptDirectory(str(MIGRATIONS))
    head = scripts.get_current_head()
    assert head is not None
    behind = scripts.get_revision(head).down_revision
    assert isinstance(behind, str)

    data = tmp_path / "data"
    data.mkdir()
    env = kai_env(data)
    url = f"sqlite+aiosqlite:///{data / 'kai.db'}"
    migrate(url, behind)

    check = kai(env, "migrate", "--check")
    assert check.returncode == 1, check.stderr
    assert f"schema at {behind}; pending: ['{head}']" in check.stdout

    refused = kai(env, "users", "list")
    assert refused.returncode == 1
    assert "1 migrations pending" in refused.stderr
    assert "run `kai migrate` first" in refused.stderr
    assert asyncio.run(_revision(url)) == behind  # untouched

    done = kai(env, "migrate")
    assert done.returncode == 0, done.stderr
    assert "(1 migrations applied)" in done.stdout
    assert kai(env, "migrate", "--check").returncode == 0
    listed = kai(env, "users", "list")
    assert listed.returncode == 0, listed.stderr


async def _revision(url: str) -> str | None:
    from kai.cli import _schema_revision

    return await _schema_revision(url)
