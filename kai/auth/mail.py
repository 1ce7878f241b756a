"""Outgoing mail: SMTP when configured, files in the data directory otherwise."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlsplit

import aiosmtplib

log = logging.getLogger("kai.mail")


@dataclass(frozen=True, slots=True)
class Mail:
    to: str
    subject: str
    body: str


class Mailer(Protocol):
    async def send(self, mail: Mail) -> None: ...


class LogMailer:
    """The embedded default: the mail is written to a file of its own in ``spool`` (the data
    directory's ``mail``, 0700, each file 0600), and the log says where. A link in a mail
    signs its holder in, so it never goes to the log itself."""

    def __init__(self, spool: Path) -> None:
        self.spool = spool

    async def send(self, mail: Mail) -> None:
        path = await asyncio.to_thread(self._write, mail)
        log.warning(
            "mail to %s (no KAI_SMTP_URL set): %s; written to %s", mail.to, mail.subject, path
        )

    def _write(self, mail: Mail) -> Path:
        self.spool.mkdir(mode=0o700, parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        path = self.spool / f"{stamp}-{secrets.token_hex(4)}.txt"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(f"To: {mail.to}\nSubject: {mail.subject}\n\n{mail.body}\n")
        return path


class SmtpMailer:
    """Delivers through an SMTP server named by a URL: smtp://user:pass@host:port.

    ``smtps://`` connects with TLS; ``smtp://`` upgrades with STARTTLS when the server offers it.
    """

    def __init__(self, url: str, *, sender: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in {"smtp", "smtps"} or not parts.hostname:
            raise ValueError("KAI_SMTP_URL must look like smtp://user:password@host:port")
        self._tls = parts.scheme == "smtps"
        self._host = parts.hostname
        self._port = parts.port or (465 if self._tls else 25)
        self._username = unquote(parts.username) if parts.username else None
        self._password = unquote(parts.password) if parts.password else None
        self._sender = sender

    async def send(self, mail: Mail) -> None:
        message = EmailMessage()
        message["From"] = self._sender
        message["To"] = mail.to
        message["Subject"] = mail.subject
        message.set_content(mail.body)
        await aiosmtplib.send(
            message,
            hostname=self._host,
            port=self._port,
            username=self._username,
            password=self._password,
            use_tls=self._tls,
            start_tls=None if not self._tls else False,
            timeout=30,
        )


class Outbox:
    """Sends mail in the background, so that a request never waits on (or reveals) delivery."""

    def __init__(self, mailer: Mailer) -> None:
        self._mailer = mailer
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def sending(self) -> int:
        """Mails handed over and not yet sent."""
        return len(self._tasks)

    def post(self, mail: Mail) -> None:
        self.compose(lambda: _ready(mail))

    def compose(self, write: Callable[[], Awaitable[Mail | None]]) -> None:
        """Run ``write`` in the background and send the mail it returns, if any: what a mail
        needs (finding the account, storing a link) costs the request nothing either."""
        task = asyncio.create_task(self._deliver(write))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, write: Callable[[], Awaitable[Mail | None]]) -> None:
        to = "?"
        try:
            mail = await write()
            if mail is None:
                return
            to = mail.to
            await self._mailer.send(mail)
        except Exception as exc:
            log.error("mail to %s not delivered: %s", to, type(exc).__name__)

    async def drain(self) -> None:
        """Wait for every mail in flight (used on shutdown and by tests)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


async def _ready(mail: Mail) -> Mail:
    return mail


def mailer_for(smtp_url: str | None, *, sender: str, spool: Path) -> Mailer:
    return SmtpMailer(smtp_url, sender=sender) if smtp_url else LogMailer(spool)
