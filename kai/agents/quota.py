"""How much each agent may log: records and bytes per window, the rest dropped and counted."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson

# Windows kept at most; past it, those that ended are forgotten before a new one opens.
_MAX_WINDOWS: Final = 10_000


@dataclass(slots=True)
class _Window:
    opened: float
    records: int = 0
    bytes: int = 0
    dropped: int = 0


@dataclass(frozen=True, slots=True)
class Admitted:
    kept: int  # how many of the records, from the first, fit in the quota
    dropped: int
    first_drop: bool  # the first records this window dropped: the agent is told, once
    retry_after: float  # seconds until the window ends


class LogQuota:
    """Per agent, at most ``max_records`` records and ``max_bytes`` bytes each ``window``."""

    def __init__(
        self,
        *,
        window: float,
        max_records: int,
        max_bytes: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window = window
        self.max_records = max_records
        self.max_bytes = max_bytes
        self._clock = clock
        self._windows: dict[str, _Window] = {}

    def admit(self, agent_id: str, sizes: Sequence[int]) -> Admitted:
        """Take the records of ``sizes`` (bytes each) in order, until one does not fit."""
        now = self._clock()
        current = self._windows.get(agent_id)
        if current is None or now - current.opened >= self.window:
            if current is None and len(self._windows) >= _MAX_WINDOWS:
                self._forget_ended(now)
            current = self._windows[agent_id] = _Window(opened=now)
        kept = 0
        if not current.dropped:  # once over, nothing more this window: no trickle past it
            for size in sizes:
                if current.records + 1 > self.max_records or current.bytes + size > self.max_bytes:
                    break
                current.records += 1
                current.bytes += size
                kept += 1
        dropped = len(sizes) - kept
        first = dropped > 0 and current.dropped == 0
        current.dropped += dropped
        return Admitted(kept, dropped, first, max(0.0, current.opened + self.window - now))

    def _forget_ended(self, now: float) -> None:
        for agent_id, window in list(self._windows.items()):
            if now - window.opened >= self.window:
                del self._windows[agent_id]


def log_size(row: dict[str, Any]) -> int:
    """What a log record weighs against the quota: its text and its extra fields, in bytes."""
    extra = row.get("extra")
    size = len(str(row.get("message") or "").encode()) + len(str(row.get("logger") or ""))
    return size + (len(orjson.dumps(extra, default=str)) if extra else 0)
