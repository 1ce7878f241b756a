"""Token buckets keyed by name: login throttling now, WebSocket message limits later."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Protocol


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
        # key -> (tokens, stamp, rate, capacity): each bucket keeps its own limits for pruning
        self._buckets: dict[str, tuple[float, float, float, int]] = {}
        self._max_keys = max_keys

    async def hit(self, key: str, *, capacity: int, per: float) -> Verdict:
        now = time.monotonic()
        rate = capacity / per
        tokens, stamp, _, _ = self._buckets.get(key, (float(capacity), now, rate, capacity))
        tokens = min(float(capacity), tokens + (now - stamp) * rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now, rate, capacity)
            return Verdict(False, (1.0 - tokens) / rate)
        self._buckets[key] = (tokens - 1.0, now, rate, capacity)
        if len(self._buckets) > self._max_keys:
            self._prune(now)
        return Verdict(True)

    def _prune(self, now: float) -> None:
        # A bucket that has refilled completely is the same as no bucket at all.
        full = [k for k, (t, s, r, c) in self._buckets.items() if t + (now - s) * r >= c]
        for key in full:
            del self._buckets[key]


# KEYS: bucket. ARGV: capacity, refill per ms, ttl ms. The clock is Redis's own.
# Returns {allowed (0/1), ms until one token}.
_TAKE = """
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 't', 's')
local tokens = tonumber(state[1]) or capacity
local stamp = tonumber(state[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - stamp) * rate)
local allowed = 0
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait = math.ceil((1 - tokens) / rate)
end
redis.call('HSET', KEYS[1], 't', tostring(tokens), 's', tostring(now))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {allowed, wait}
"""


class RedisLimiter:
    """Buckets in Redis, shared by every node; the clock is Redis's own."""

    def __init__(self, client: Any, *, prefix: str = "kai:bucket:") -> None:
        self._redis = client
        self._take = client.register_script(_TAKE)
        self._prefix = prefix

    async def hit(self, key: str, *, capacity: int, per: float) -> Verdict:
        allowed, wait_ms = await self._take(
            keys=[self._prefix + key],
            args=[capacity, capacity / (per * 1000), int(per * 1000) + 1000],
        )
        return Verdict(bool(allowed), int(wait_ms) / 1000)
