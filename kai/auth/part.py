"""The auth part: accounts, sessions and tokens (``Identity``), the audit log and the mail
outbox; what the hub does first when it starts empty."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from kai.auth import admin_routes, routes
from kai.auth.audit import AuditLog
from kai.auth.bootstrap import ensure_first_admin
from kai.auth.mail import Outbox, mailer_for
from kai.auth.passwords import Passwords
from kai.auth.service import Identity
from kai.auth.tokens import Signer
from kai.core import Core
from kai.kit.wiring import Wiring
from kai.realtime.part import Realtime

ROUTERS = (routes.router, admin_routes.router)


@dataclass(slots=True)
class Auth:
    identity: Identity
    audit: AuditLog
    outbox: Outbox


def register(core: Core, wiring: Wiring, realtime: Realtime) -> Auth:
    settings, db = core.settings, core.db
    audit = AuditLog(
        db,
        interval=settings.audit_flush_interval,
        batch_size=settings.audit_batch_size,
        flood_window=settings.audit_flood_window,
    )
    outbox = Outbox(
        mailer_for(settings.smtp_url, sender=settings.mail_from, spool=settings.data_dir / "mail")
    )
    identity = Identity(
        settings,
        db=db,
        passwords=Passwords(
            time_cost=settings.argon2_time_cost,
            memory_cost=settings.argon2_memory_cost,
            parallelism=settings.argon2_parallelism,
            concurrency=settings.password_hash_concurrency,
        ),
        signer=Signer(settings.signing_key()),
        audit=audit,
        outbox=outbox,
        limiter=realtime.limiter,
        clock=core.clock,
    )
    wiring.provide(identity=identity, audit=audit, outbox=outbox)
    wiring.writer("audit-writer", audit.writer)

    async def first_admin() -> None:
        await ensure_first_admin(settings, db, identity)

    async def settle() -> None:
        await audit.sweep(
            everything=True
        )  # open flood windows become rows before the writer closes
        await outbox.drain()

    wiring.starting(first_admin)
    wiring.stopping(settle)
    retention = timedelta(days=settings.audit_retention_days)
    wiring.loop(
        "audit-retention",
        every=min(3600.0, retention.total_seconds() / 4),
        work=lambda: audit.prune(older_than=retention),
    )
    wiring.loop("audit-floods", every=settings.audit_flood_window / 4, work=audit.sweep)
    return Auth(identity=identity, audit=audit, outbox=outbox)
