"""Outgoing mail: SMTP when configured, the server log otherwise."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.message import EmailMessage
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
    """The embedded default: the mail, link included, goes to the console for the operator."""

    async def send(self, mail: Mail) -> None:
        log.warning("mail to %s (no KAI_SMTP_URL set): %s\n%s", mail.to, mail.subject, mail.body)


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


def mailer_for(smtp_url: str | None, *, sender: str) -> Mailer:
    return SmtpMailer(smtp_url, sender=sender) if smtp_url else LogMailer()
