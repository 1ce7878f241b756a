"""What this process counts on its hot paths: plain integers, turned into metrics on a scrape."""

from __future__ import annotations

from collections import Counter as Tally
from dataclasses import dataclass, field


@dataclass
class Counts:
    """What this process counted since it started."""

    events_published: int = 0
    events_delivered: int = 0
    events_dropped: int = 0
    database_errors: int = 0
    broker_errors: int = 0
    agent_logs_dropped: int = 0
    audit_attempts_counted: int = 0
    commands: Tally[str] = field(default_factory=Tally)  # by outcome
    tasks: Tally[str] = field(default_factory=Tally)  # ended, by status
    peer_requests: Tally[tuple[str, str]] = field(default_factory=Tally)  # (kind, outcome)
    connections_refused: Tally[str] = field(default_factory=Tally)  # by reason (kai/server.py)


COUNTS = Counts()
