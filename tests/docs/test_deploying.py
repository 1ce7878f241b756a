"""docs/deploying.md, as it stands: its settings file, its systemd unit and its shell blocks
bring up two ``kai serve`` nodes on one PostgreSQL database and one Redis, and its nginx
configuration fits the settings the nodes run with."""

from __future__ import annotations

import contextlib
import shlex
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as redis

from kai.config import Settings
from kai.work.streams import KEEPALIVE
from tests.agents.processes import REPO_ROOT, child_env
from tests.agents.support import eventually
from tests.docs.blocks import (
    Block,
    blocks,
    env_assignments,
    ini_sections,
    nginx_config,
    seconds,
    settings_from,
    size,
)
from tests.docs.runner import Page, hub_directory, run, script
from tests.helpers import ADMIN_PASSWORD
from tests.multinode.conftest import distinct_ports
from tests.multinode.support import ready_with_broker
from tests.services import create_database, drop_database, redis_server

PAGE = "docs/deploying.md"
DATABASE = "postgresql+asyncpg://kai:secret@db.internal/kai"
REDIS = "redis://redis.internal:6379/0"
ENV_FILE = "/etc/kai/kai.env"
NODES = ("10.0.0.11:8000", "10.0.0.12:8000")
UPLOAD_OVERHEAD = 256 * 1024  # what an upload's body may carry besides the file


def page_blocks(tag: str) -> list[Block]:
    return [b for b in blocks(REPO_ROOT / PAGE) if b.tag == tag]


def node_settings() -> Settings:
    (env,) = page_blocks("env")
    return settings_from(env_assignments(env.text))


def replaced(text: str, replacements: dict[str, str]) -> str:
    for old, new in replacements.items():
        text = text.replace(old, new)
    return text


@contextlib.contextmanager
def nodes(
    command: list[str], env: dict[str, str], ports: list[int], cwd: Path, logs: Path
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """The nodes, started with the unit's command; stopped with SIGTERM as systemd would."""
    started = []
    try:
        for i, port in enumerate(ports):
            with (logs / f"node{i}.log").open("wb") as sink:
                started.append(
                    subprocess.Popen(
                        command,
                        cwd=cwd,
                        env={**env, "KAI_PORT": str(port)},
                        stdin=subprocess.DEVNULL,
                        stdout=sink,
                        stderr=subprocess.STDOUT,
                    )
                )
        yield started
    finally:
        for process in started:
            process.send_signal(signal.SIGTERM)
        for process in started:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


async def forget_keys(url: str, prefix: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.mark.timeout(150)
async def test_two_nodes_come_up_from_the_page(pg_admin_url: str, tmp_path: Path) -> None:
    (env_block,) = page_blocks("env")
    (unit_block,) = page_blocks("ini")
    shell = page_blocks("sh")
    split = next(i for i, b in enumerate(shell) if any(node in b.text for node in NODES))
    unit = ini_sections(unit_block.text)["Service"]
    assert unit["EnvironmentFile"] == ENV_FILE, "the unit reads the file the page writes"

    directory = hub_directory(tmp_path / "node")
    shared, env_path = tmp_path / "shared", tmp_path / "kai.env"
    shared.mkdir()
    ports = distinct_ports(len(NODES))
    prefix = f"kai-docs-{uuid.uuid4().hex[:12]}:"
    database_url = await create_database(pg_admin_url)
    try:
        with redis_server() as redis_url:
            replacements = {
                DATABASE: database_url,
                REDIS: redis_url,
                "/var/lib/kai": str(shared),
                ENV_FILE: str(env_path),
                "KAI_HOST=0.0.0.0": "KAI_HOST=127.0.0.1",  # not every interface of a test box
                **{node: f"127.0.0.1:{port}" for node, port in zip(NODES, ports, strict=True)},
            }
            # Each test has its own keys in a Redis that others may share.
            settings_text = replaced(env_block.text, replacements) + f"KAI_REDIS_PREFIX={prefix}\n"
            env_path.write_text(settings_text)
            session_env = child_env(PASSWORD=ADMIN_PASSWORD, CURL_HOME=str(directory))
            page = Page(PAGE, login=False)

            before = await run(
                script(page, shell[:split], replacements),
                cwd=directory,
                env=session_env,
                timeout=60,
            )
            assert before.returncode == 0, before.explain()
            assert "kai: database is up to date" in before.stdout, before.explain()
            assert "kai: created admin ops@example.com" in before.stdout, before.explain()

            command = shlex.split(unit["ExecStart"])
            assert command[0] == f"{unit['WorkingDirectory']}/.venv/bin/kai"
            command[0] = str(directory / ".venv" / "bin" / "kai")
            node_env = child_env(**env_assignments(settings_text))
            with nodes(command, node_env, ports, directory, tmp_path) as started:
                for port in ports:

                    async def ready(port: int = port) -> bool:
                        for i, process in enumerate(started):
                            assert process.poll() is None, (tmp_path / f"node{i}.log").read_text()
                        async with httpx.AsyncClient(timeout=5) as client:
                            try:
                                answer = await client.get(f"http://127.0.0.1:{port}/ready")
                            except httpx.TransportError:
                                return False
                        return ready_with_broker(answer)

                    await eventually(ready, 60, what=f"the node on {port} ready", interval=0.2)
                after = await run(
                    script(page, shell[split:], replacements),
                    cwd=directory,
                    env=session_env,
                    timeout=60,
                )
            assert after.returncode == 0, after.explain()
            assert '{"status":"ok","version":' in after.stdout, after.explain()
            assert '"broker":"ok"' in after.stdout, after.explain()
            assert "\nops@example.com\n" in after.stdout, after.explain()
            await forget_keys(redis_url, prefix)
    finally:
        await drop_database(pg_admin_url, database_url)


def test_the_nginx_configuration_fits_the_nodes() -> None:
    """The balancer's upstreams are the nodes the page checks; its timeouts outlast every
    silence kai allows, and its body limit lets the largest upload through."""
    settings = node_settings()
    (block,) = page_blocks("nginx")
    config = nginx_config(block.text)
    (upstream,) = [d for d in config.children or [] if d.name == "upstream"]
    servers = [d.args[0] for d in upstream.find("server")]
    assert servers == list(NODES)
    (mapping,) = [d for d in config.children or [] if d.name == "map"]
    assert mapping.args == ["$http_upgrade", "$connection_upgrade"]

    servers_blocks = [d for d in config.children or [] if d.name == "server"]
    (tls,) = [s for s in servers_blocks if any("ssl" in d.args for d in s.find("listen"))]
    assert tls.find("ssl_certificate")
    assert tls.find("ssl_certificate_key")
    (body,) = tls.find("client_max_body_size")
    assert size(body.args[0]) >= settings.upload_max_bytes + UPLOAD_OVERHEAD
    assert [d.args for d in tls.find("proxy_request_buffering")] == [["off"]]

    (root,) = [d for d in tls.find("location") if d.args == ["/"]]
    headers = {d.args[0]: d.args[1] for d in root.find("proxy_set_header")}
    assert headers["Upgrade"] == "$http_upgrade"
    assert headers["Connection"] == "$connection_upgrade"
    assert headers["X-Forwarded-For"] == "$proxy_add_x_forwarded_for"
    assert [d.args for d in root.find("proxy_http_version")] == [["1.1"]]
    quiet = max(
        settings.ws_ping_interval,
        settings.agent_heartbeat_interval,
        settings.agent_heartbeat_timeout,
        KEEPALIVE,
    )
    for name in ("proxy_read_timeout", "proxy_send_timeout"):
        (timeout,) = root.find(name)
        assert seconds(timeout.args[0]) >= 2 * quiet, f"{name} {timeout.args[0]} is too short"
    assert all(d.args == ["http://kai"] for d in config.find("proxy_pass"))


def test_the_settings_file_is_what_the_page_says() -> None:
    """Every name in the page's settings file is a setting, every value valid; the nodes are
    scaled out and share one signing key."""
    settings = node_settings()
    assert settings.database_url == DATABASE
    assert settings.redis_url == REDIS
    assert settings.secret_key is not None
    assert settings.public_base_url == "https://kai.example.com"
    assert settings.trusted_proxies == ["10.0.0.10"]
