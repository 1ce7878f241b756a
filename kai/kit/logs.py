"""The hub's own logs: structured JSON lines, or human-readable lines on a terminal.

Every record, kai's and its libraries' (uvicorn, SQLAlchemy...), goes through the standard
``logging`` module and is rendered by structlog. The request id of the request being served is
bound in a context variable by the request guard, so every line logged while serving it
carries it, and the same id is in the problem+json answer and the ``X-Request-ID`` header.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Iterable, Mapping
from typing import Any, Literal, TextIO
from urllib.parse import urlsplit

import structlog

LogFormat = Literal["auto", "json", "console"]

REDACTED = "[redacted]"
# Field names whose values are secrets wherever they appear (a log call's extra fields).
SECRET_FIELD = re.compile(
    r"pass(word|wd|phrase)?|secret|token|authorization|api_?key|cookie|credential", re.I
)
_KEYS = (
    r"token|access_?token|refresh_?token|agent_?token|id_?token|password|new_?password|"
    r"current_?password|secret|secret_?key|api_?key|authorization"
)
# Each pattern keeps what names the secret and replaces the secret itself.
PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Authorization: Bearer ... / Basic ...
    (re.compile(r"\b(bearer|basic)(\s+)[A-Za-z0-9._~+/=-]+", re.I), rf"\1\2{REDACTED}"),
    # JWTs (access tokens), whole or cut short by a library's excerpt
    (re.compile(r"eyJ[A-Za-z0-9_-]{4,}(?:\.[A-Za-z0-9_-]*)*"), REDACTED),
    # agent tokens (kai/agents/service.py's TOKEN_PREFIX)
    (re.compile(r"kai_agent_[A-Za-z0-9_-]*"), f"kai_agent_{REDACTED}"),
    # token=... in a URL's query or fragment (magic links), or in form data
    (re.compile(rf"(?i)((?:{_KEYS})=)[^&#\s'\"]+"), rf"\1{REDACTED}"),
    # "token": "..." in JSON or a Python repr
    (
        re.compile(rf"""(?i)(["'](?:{_KEYS})["']\s*:\s*["'])[^"']*"""),
        rf"\1{REDACTED}",
    ),
    # user:password@ in a URL (database, Redis, SMTP, an upstream)
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]*:)[^@\s/]+@"), rf"\1{REDACTED}@"),
    # SMTP authentication lines
    (re.compile(r"(?i)\b(AUTH\s+(?:PLAIN|LOGIN|XOAUTH2)\s+)\S+"), rf"\1{REDACTED}"),
)
# Something every pattern above needs to match: a line without any of these (an access line,
# most lines) skips the patterns, which cost more than the rest of the line's rendering.
MIGHT_HOLD_SECRET = re.compile(r"(?i)bearer|basic|eyJ|kai_agent_|=|://|auth|[\"']\s*:")
# Settings whose values are secrets, and settings that are URLs with a password in them.
_SECRET_SETTING = re.compile(r"^KAI_\w*(PASSWORD|SECRET|TOKEN|API_KEY)\w*$")
_URL_SETTING = re.compile(r"^KAI_\w*_URL$")
_MIN_SECRET = 6  # shorter values would redact ordinary words


def environment_secrets(environ: Mapping[str, str] | None = None) -> list[str]:
    """The secret values in ``KAI_*`` settings: passwords, keys, tokens, URL passwords."""
    environ = os.environ if environ is None else environ
    found: set[str] = set()
    for name, value in environ.items():
        if _SECRET_SETTING.match(name):
            found.add(value.strip())
        elif _URL_SETTING.match(name):
            try:
                password = urlsplit(value).password
            except ValueError:
                continue
            if password:
                found.add(password)
    return sorted((v for v in found if len(v) >= _MIN_SECRET), key=len, reverse=True)


class Redactor:
    """A structlog processor: no record, at any level, holds a token, password or magic link."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets = sorted({s for s in secrets if len(s) >= _MIN_SECRET}, key=len, reverse=True)

    def text(self, value: str) -> str:
        for secret in self.secrets:
            if secret in value:
                value = value.replace(secret, REDACTED)
        if MIGHT_HOLD_SECRET.search(value) is None:
            return value
        for pattern, replacement in PATTERNS:
            value = pattern.sub(replacement, value)
        return value

    def value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, bytes):
            return self.text(value.decode("utf-8", errors="replace"))
        if isinstance(value, Mapping):
            return {
                k: REDACTED if SECRET_FIELD.search(str(k)) else self.value(v)
                for k, v in value.items()
            }
        if isinstance(value, list | tuple | set):
            return [self.value(v) for v in value]
        if isinstance(value, int | float | bool) or value is None:
            return value
        return self.text(str(value))

    def __call__(
        self, _logger: object, _name: str, event: structlog.types.EventDict
    ) -> structlog.types.EventDict:
        for key, value in event.items():
            if key in ("level", "logger", "timestamp"):
                continue
            event[key] = (
                REDACTED if key != "event" and SECRET_FIELD.search(key) else self.value(value)
            )
        return event


def setup(level: str, fmt: LogFormat = "auto", stream: TextIO | None = None) -> None:
    """Send every log record to ``stream`` (stderr) as JSON lines, or as readable text when
    asked or when it is a terminal (coloured only there)."""
    stream = stream or sys.stderr
    terminal = stream.isatty()
    use_json = fmt == "json" or (fmt == "auto" and not terminal)
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.ExtraAdder(),
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=terminal)
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            # Tracebacks become text first, so that the redactor sees them too.
            structlog.processors.format_exc_info,
            Redactor(environment_secrets()),
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # Below INFO these write what goes over the wire (SMTP logins, request headers, frames):
    # the redactor would catch most of it, but base64 logins have no shape to catch.
    for name in QUIET_BELOW_INFO:
        logging.getLogger(name).setLevel(logging.INFO)


QUIET_BELOW_INFO = ("aiosmtplib", "hpack", "httpcore", "websockets", "asyncio")
