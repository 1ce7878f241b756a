"""Settings: one object, read from the environment (prefix ``KAI_``)."""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import secrets
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    SecretStr,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

MIN_SECRET_LENGTH = 32
SECRET_FILE = "secret_key"

# Keys seen in tutorials and defaults: a hub signed with one of these is signed with nothing.
WELL_KNOWN_SECRETS = frozenset(
    {
        "secret",
        "changeme",
        "change-me",
        "changethis",
        "development",
        "dev",
        "test",
        "password",
        "your-secret-key",
        "your-secret-key-here",
        "supersecret",
        "super-secret-key",
        "mysecretkey",
        "secret-key",
        "insecure",
        "kai",
    }
)


class ConfigError(ValueError):
    """The configuration cannot be used; the message says why."""


def _split_list(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


CommaList = Annotated[list[str], NoDecode]

# -- bounds of runtime settings: no value an operator may set can break a route or a loop --
DAY = 86_400
MAX_ORIGINS = 100
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _log_level(value: str) -> str:
    if value.upper() not in LOG_LEVELS:
        raise ValueError(f"one of {', '.join(LOG_LEVELS)}")
    return value.upper()


def _origin(value: str) -> str:
    if value != "*" and not re.fullmatch(r"[a-z][a-z0-9+.-]*://[A-Za-z0-9.\-\[\]:]+", value):
        raise ValueError("an origin is * or scheme://host[:port]")
    return value


LogLevel = Annotated[str, AfterValidator(_log_level)]
Origin = Annotated[str, StringConstraints(max_length=300), AfterValidator(_origin)]


class HostedAgent(BaseModel):
    """A local agent process the hub starts, watches and stops (``KAI_HOSTED_AGENTS``, JSON)."""

    name: str = Field(min_length=1, max_length=200)
    target: str = Field(pattern=r"^[\w.]+:[\w.]+$", description="module:attribute of the agent")
    owner: str | None = Field(default=None, description="Owner's email; default: first admin")
    env: dict[str, str] = Field(default_factory=dict)


class Settings(BaseSettings):
    """Everything kai reads from its environment."""

    model_config = SettingsConfigDict(env_prefix="KAI_", extra="ignore", allow_inf_nan=False)

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    data_dir: Path = Path("data")
    database_url: str | None = None
    redis_url: str | None = None
    redis_prefix: str = Field(default="kai:", min_length=1, max_length=60)
    secret_key: SecretStr | None = None

    access_token_ttl: int = Field(default=900, gt=0, description="Access token lifetime, s")
    refresh_token_ttl: int = Field(default=14 * 86400, gt=0, description="Refresh token, s")
    session_ttl: int = Field(default=30 * 86400, gt=0, description="Absolute session life, s")
    magic_link_ttl: int = Field(default=15 * 60, gt=0, description="Magic link lifetime, s")

    smtp_url: str | None = None
    mail_from: str = "kai <kai@localhost>"
    require_email_verification: bool = False
    public_base_url: str | None = None
    ws_allowed_origins: Annotated[list[Origin], NoDecode] = Field(
        default_factory=list,
        max_length=MAX_ORIGINS,
        description="Origins allowed on client WebSockets",
    )
    trusted_proxies: CommaList = Field(default_factory=list)

    # -- Accounts: who may register, which passwords are taken, how much hashing at once ----
    registration: Literal["open", "verified", "invite", "closed"] = Field(
        default="open",
        description="Who may create an account: anyone (the contract's default), anyone who "
        "proves the address, holders of an admin's invite, or only admins",
    )
    password_min_length: int = Field(
        default=8, ge=8, le=64, description="Shortest password accepted (NIST SP 800-63B)"
    )
    password_hash_concurrency: int = Field(
        default=2, ge=1, le=64, description="Argon2 hashes computed at once; more wait their turn"
    )
    invite_ttl: int = Field(default=7 * 86400, ge=60, le=365 * 86400, description="Invite life, s")

    auth_rate_limit: int = Field(
        default=10, ge=1, le=10_000, description="Attempts per window and key"
    )
    auth_rate_window: int = Field(default=60, ge=1, le=DAY, description="Throttle window, s")
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024, le=64 * 1024 * 1024)

    # Argon2id cost; the defaults are the OWASP-recommended profile. Tests lower them.
    argon2_time_cost: int = Field(default=3, ge=1)
    argon2_memory_cost: int = Field(default=65536, ge=8)
    argon2_parallelism: int = Field(default=4, ge=1)

    audit_flush_interval: float = Field(default=0.5, gt=0)
    audit_batch_size: int = Field(default=500, gt=0)

    agent_heartbeat_interval: float = Field(default=10.0, gt=0, description="Seconds")
    agent_heartbeat_timeout: float = Field(
        default=30.0, gt=0, description="Silence after which an agent is offline, s"
    )
    agent_restart_grace: float = Field(
        default=60.0, gt=0, description="How long a restarting agent stays 'restarting', s"
    )
    agent_max_message_bytes: int = Field(default=1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    log_retention_days: float = Field(default=7.0, gt=0)
    log_flush_interval: float = Field(default=0.2, gt=0, description="Agent log writes, s")
    log_batch_size: int = Field(default=1000, gt=0)

    command_timeout: float = Field(default=30.0, ge=0.1, le=300, description="Default, s")
    command_max_timeout: float = Field(
        default=300.0, ge=0.1, le=3600, description="Longest allowed, s"
    )

    task_lease_seconds: float = Field(
        default=30.0,
        ge=1,
        le=DAY,
        description="A running task goes back to the queue after this, s",
    )
    task_max_attempts: int = Field(default=3, ge=1, le=100, description="Default per task")
    task_dispatch_interval: float = Field(
        default=1.0, gt=0, description="How often queues are checked besides their wake-ups, s"
    )
    stream_ttl: float = Field(
        default=3600.0, ge=1, le=30 * DAY, description="How long a stream can be read back, s"
    )
    stream_flush_interval: float = Field(default=0.1, gt=0, description="Chunk writes, s")
    upload_max_bytes: int = Field(
        default=100 * 1024 * 1024, ge=1, le=1024**4, description="Per file"
    )
    upload_quota_bytes: int = Field(
        default=1024**3, ge=1, le=1024**5, description="Stored files per user"
    )

    event_window_count: int = Field(default=1000, gt=0, description="Events kept per agent")
    event_window_age: float = Field(default=3600.0, gt=0, description="Seconds events are kept")
    ws_max_message_bytes: int = Field(default=64 * 1024, ge=1024, le=16 * 1024 * 1024)
    ws_rate_limit: int = Field(default=60, ge=1, le=10**9, description="Client messages per window")
    ws_rate_window: float = Field(default=10.0, ge=0.1, le=DAY, description="Seconds")
    ws_send_queue: int = Field(
        default=1000, ge=10, le=10**6, description="Messages queued per client"
    )
    ws_ping_interval: float = Field(default=20.0, gt=0, description="Keepalive pings, s")

    # -- Bounded growth: audit retention and floods, agents' log quota, agents per user --------
    audit_retention_days: float = Field(
        default=90.0, gt=0, le=36_500, description="Audit entries older than this are deleted"
    )
    audit_flood_window: float = Field(
        default=60.0,
        ge=1,
        le=DAY,
        description="Failed anonymous attempts per action and address: one row, then one count",
    )
    agent_log_window: float = Field(
        default=10.0, ge=0.1, le=3600, description="The window of an agent's log quota, s"
    )
    agent_log_bytes_per_window: int = Field(
        default=1024 * 1024, ge=1024, le=1024**3, description="Log message bytes per window"
    )
    agent_log_records_per_window: int = Field(
        default=5000, ge=10, le=10**7, description="Log records per window"
    )
    max_agents_per_user: int = Field(
        default=100, ge=1, le=10**6, description="Agents one account may own (admins: any)"
    )

    # -- Limits before authentication (kai/server.py, docs/security.md) ---------------------
    http_max_head_bytes: int = Field(
        default=64 * 1024, ge=4096, le=1024 * 1024, description="Largest request head (431)"
    )
    http_head_timeout: float = Field(
        default=10.0, ge=0.5, le=300, description="Time to send a request head (408), s"
    )
    http_keepalive_timeout: int = Field(
        default=5, ge=1, le=300, description="Idle time between requests on a connection, s"
    )
    max_connections: int = Field(
        default=10_000, ge=10, le=1_000_000, description="Open connections on one node (503)"
    )
    max_connections_per_address: int = Field(
        default=512, ge=1, le=1_000_000, description="Open connections per client address (429)"
    )
    ws_unauthenticated_per_address: int = Field(
        default=128, ge=1, le=1_000_000, description="WebSockets not yet authenticated, per address"
    )
    ws_first_message_bytes: int = Field(
        default=16 * 1024, ge=1024, le=1024 * 1024, description="Largest message before auth"
    )
    ws_auth_timeout: float = Field(
        default=10.0, ge=0.5, le=300, description="Time a WebSocket has to authenticate, s"
    )

    hosted_agents: list[HostedAgent] = Field(default_factory=list)
    demo: bool = Field(default=False, description="Run the demo agent as a hosted agent")

    admin_email: str = "admin@example.com"
    admin_password: SecretStr | None = None
    log_level: LogLevel = "INFO"
    log_format: Literal["auto", "json", "console"] = Field(
        default="auto", description="JSON lines, or readable text; auto: text on a terminal"
    )

    @field_validator("ws_allowed_origins", "trusted_proxies", mode="before")
    @classmethod
    def _lists(cls, value: object) -> object:
        return _split_list(value)

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for item in value:
            ipaddress.ip_network(item, strict=False)
        return value

    @model_validator(mode="after")
    def _heartbeats(self) -> Settings:
        if self.agent_heartbeat_timeout <= self.agent_heartbeat_interval:
            raise ValueError("agent_heartbeat_timeout must be longer than the heartbeat interval")
        return self

    @cached_property
    def proxy_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return tuple(ipaddress.ip_network(item, strict=False) for item in self.trusted_proxies)

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'kai.db').resolve()}"

    @property
    def verification_required(self) -> bool:
        """Whether password login waits for a proven address (``KAI_REQUIRE_EMAIL_VERIFICATION``
        is the older name of ``KAI_REGISTRATION=verified``, and adds the proof to the others)."""
        return self.registration == "verified" or self.require_email_verification

    @property
    def base_url(self) -> str:
        if self.public_base_url:
            return self.public_base_url.rstrip("/")
        return f"http://{self.host}:{self.port}"

    def signing_key(self) -> str:
        """The key that signs tokens: given, or generated once and kept in the data dir."""
        if self.secret_key is not None:
            return check_secret(self.secret_key.get_secret_value())
        path = self.data_dir / SECRET_FILE
        if path.exists():
            return check_secret(path.read_text().strip())
        private_dir(self.data_dir)
        key = secrets.token_urlsafe(48)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(key + "\n")
        return key


def private_dir(path: Path) -> Path:
    """``path`` as a directory only its owner may enter (0700 when kai creates it; one that
    others may enter already is reported, not changed: it may hold more than kai's files)."""
    try:
        path.mkdir(mode=0o700, parents=True)
    except FileExistsError:
        if path.is_dir() and path.stat().st_mode & 0o077:
            logging.getLogger("kai.config").warning(
                "%s may be read by other users of this machine; chmod 700 it", path
            )
    return path


def private_file(path: Path) -> Path:
    """``path`` created empty with mode 0600 if it is missing, or taken down to 0600."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)
    return path


def check_secret(key: str) -> str:
    """Refuse a signing key that is short or well known."""
    if key.strip().lower() in WELL_KNOWN_SECRETS:
        raise ConfigError("KAI_SECRET_KEY is a well-known value; use a random one")
    if len(key) < MIN_SECRET_LENGTH:
        raise ConfigError(f"KAI_SECRET_KEY must be at least {MIN_SECRET_LENGTH} characters")
    if len(set(key)) < 8:
        raise ConfigError("KAI_SECRET_KEY has too few distinct characters to be random")
    return key
