"""Token buckets keyed by name: login throttling now, WebSocket message limits later."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    retry_after: float = 0.0

    @property
    def retry_after_seconds(self) -> int:
        return max(1, math.ceil(self.retry_after))


class Limiter(Protocol):
    async def hit(self, key: str, *, capacity: int, per: float) -> Verdict:
        """Take one token from ``key``'s bucket (``capacity`` tokens, refilled over ``per`` s)."""
        ...


class MemoryLimiter:
    """Buckets in this process; enough when one process serves everything."""

    def __init__(self, *, max_keys: int = 100_000) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}
        self._max_keys = max_keys

    async def hit(self, key: str, *, capacity: int, per: float) -> Verdict:
        now = time.monotonic()
        rate = capacity / per
        tokens, stamp = self._buckets.get(key, (float(capacity), now))
        tokens = min(float(capacity), tokens + (now - stamp) * rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return Verdict(False, (1.0 - tokens) / rate)
        self._buckets[key] = (tokens - 1.0, now)
        if len(self._buckets) > self._max_keys:
            self._prune(now, rate, capacity)
        return Verdict(True)

    def _prune(self, now: float, rate: float, capacity: int) -> None:
        # A bucket that has refilled completely is the same as no bucket at all.
        full = [k for k, (t, s) in self._buckets.items() if t + (now - s) * rate >= capacity]
        for key in full:
            del self._buckets[key]
