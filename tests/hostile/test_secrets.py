"""The storage of secrets, against a real ``kai serve``: no log line at DEBUG holds a token,
password or magic link, and a fresh data directory is the hub's alone (0700, files 0600)."""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path

import orjson
from websockets.asyncio.client import connect

from tests.agents.support import agent_socket
from tests.helpers import ADMIN_PASSWORD, bearer
from tests.hostile.conftest import TEST_SECRET, HubStarter, ServedHub, serve_env
from tests.services import free_port

USER_PASSWORD = "a user's own long passphrase 9"
WRONG_PASSWORD = "a wrong but secret guess 4242"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def magic_link_token(hub: ServedHub, client_email: str) -> str:
    """Ask for a link and read its token from the mail the hub spooled (no SMTP here)."""
    spool = hub.data_dir / "mail"
    before = set(spool.glob("*.txt")) if spool.exists() else set()
    async with hub.client() as client:
        asked = await client.post("/api/auth/magic-link", json={"email": client_email})
    assert asked.status_code == 202, asked.text
    for _ in range(100):
        new = set(spool.glob("*.txt")) - before if spool.exists() else set()
        if new:
            text = new.pop().read_text()
            return text.split("#token=", 1)[1].split()[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no mail spooled:\n{hub.output()[-3000:]}")


async def test_no_log_line_at_debug_holds_a_secret(start_hub: HubStarter) -> None:
    smtp_password = "smtp-password-never-logged-77"
    hub = start_hub(log_level="DEBUG", registration="open")
    secrets = {"admin password": ADMIN_PASSWORD, "signing key": TEST_SECRET}
    async with hub.client() as client:
        login = await client.post(
            "/api/auth/login",
            json={"credentials": {"email": "admin@example.com", "password": ADMIN_PASSWORD}},
        )
        assert login.status_code == 200, login.text
        tokens = login.json()["tokens"]
        access = tokens["accessToken"]["token"]
        secrets |= {"access token": access, "refresh token": tokens["refreshToken"]["token"]}
        refreshed = await client.post(
            "/api/auth/refresh", json={"refreshToken": tokens["refreshToken"]["token"]}
        )
        assert refreshed.status_code == 200, refreshed.text
        again = refreshed.json()["tokens"]
        secrets |= {
            "refreshed access token": again["accessToken"]["token"],
            "refreshed refresh token": again["refreshToken"]["token"],
        }
        wrong = await client.post(
            "/api/auth/login",
            json={"credentials": {"email": "admin@example.com", "password": WRONG_PASSWORD}},
        )
        assert wrong.status_code == 401
        secrets["wrong password"] = WRONG_PASSWORD
        registered = await client.post(
            "/api/auth/register",
            json={"userData": {"email": "ann@example.com", "password": USER_PASSWORD}},
        )
        assert registered.status_code == 201, registered.text
        secrets["user's password"] = USER_PASSWORD

        link = await magic_link_token(hub, "ann@example.com")
        secrets["magic link"] = link
        verified = await client.post("/api/auth/verify-magic", json={"token": link})
        assert verified.status_code == 200, verified.text
        secrets["magic link's access token"] = verified.json()["tokens"]["accessToken"]["token"]

        created = await client.post(
            "/api/agents", json={"agentData": {"name": "probe"}}, headers=bearer(access)
        )
        assert created.status_code == 201, created.text
        agent_id, agent_token = created.json()["agentId"], created.json()["agentToken"]
        secrets["agent token"] = agent_token
        # An agent connects and greets; a browser-like client authenticates by message.
        async with agent_socket(f"{hub.ws_url}/ws/agent", agent_token) as raw:
            await raw.hello("probe")
            async with connect(
                f"{hub.ws_url}/ws/agents/{agent_id}", compression=None, open_timeout=5
            ) as watcher:
                await watcher.send(orjson.dumps({"type": "auth", "token": access}).decode())
                first = json.loads(await asyncio.wait_for(watcher.recv(), 5))
                assert first["type"] == "status_update"
        # A token that does not work is not logged either.
        forged = access[:-6] + "AAAAAA"
        refused = await client.get("/api/auth/session", headers=bearer(forged))
        assert refused.status_code == 401
        secrets["forged token"] = forged
        # The SMTP password a request never sees, but the configuration holds.
        assert smtp_password not in hub.output()

    hub.stop()  # every line written
    output = hub.output()
    assert '"level": "debug"' in output  # DEBUG was on
    assert "[redacted]" in output  # and had secrets to hide
    leaked = {
        what: value for what, value in secrets.items() if value in output or value[-16:] in output
    }
    assert leaked == {}


async def test_a_fresh_data_directory_is_the_hubs_alone(tmp_path: Path) -> None:
    data_dir = tmp_path / "fresh" / "data"
    env = serve_env(data_dir, log_level="INFO", registration="open")
    del env["KAI_SECRET_KEY"]  # the hub generates its key and keeps it in the data directory
    hub = ServedHub(free_port(), data_dir, tmp_path / "hub.log", env)
    hub.start()
    try:
        hub.wait_ready()
        admin = await hub.admin()
        async with hub.client() as client:
            created = await client.post(
                "/api/agents", json={"agentData": {"name": "files"}}, headers=admin
            )
            agent_id = created.json()["agentId"]
            uploaded = await client.post(
                f"/api/agents/{agent_id}/upload", files={"file": ("a.txt", b"abc")}, headers=admin
            )
            assert uploaded.status_code == 201, uploaded.text
            deleted = await client.delete(f"/api/agents/{agent_id}", headers=admin)
            assert deleted.status_code == 200, deleted.text
            asked = await client.post("/api/auth/magic-link", json={"email": "admin@example.com"})
            assert asked.status_code == 202
        await asyncio.sleep(0.5)  # the mail is written off the request's path
        assert mode(data_dir) == 0o700
        for name in ("kai.db", "kai.db-wal", "kai.db-shm", "secret_key"):
            assert mode(data_dir / name) == 0o600, name
        everything = list(data_dir.rglob("*"))
        assert {p.relative_to(data_dir).parts[0] for p in everything} >= {
            "files",
            "backups",
            "mail",
        }
        loose = {str(p.relative_to(data_dir)): oct(mode(p)) for p in everything if mode(p) & 0o077}
        assert loose == {}
    finally:
        hub.stop()
