"""Token buckets: RedisLimiter shares them between nodes, MemoryLimiter keeps them in-process.

(The limiters live in ``kai/ratelimit.py``; they are tested here with the other pieces that
several nodes share through Redis.)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as redis

from kai.kit.ratelimit import MemoryLimiter, RedisLimiter, Verdict
from tests.realtime.support import eventually

CAPACITY = 5
PER = 0.5  # seconds to refill the whole bucket: one token every PER / CAPACITY s


@pytest.fixture
async def redis_limiters(redis_url: str, prefix: str) -> AsyncIterator[list[RedisLimiter]]:
    """Two limiters, as two nodes would hold them: each with its own connection."""
    clients = [redis.Redis.from_url(redis_url) for _ in range(2)]
    try:
        yield [RedisLimiter(c, prefix=f"{prefix}bucket:") for c in clients]
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))


def assert_refused(verdict: Verdict) -> None:
    assert not verdict.allowed
    assert 0 < verdict.retry_after <= PER / CAPACITY + 0.01
    assert verdict.retry_after_seconds == 1


async def test_redis_buckets_are_shared_between_nodes(
    redis_limiters: list[RedisLimiter],
) -> None:
    one, two = redis_limiters
    verdicts = [
        await (one if i % 2 else two).hit("login:ann", capacity=CAPACITY, per=PER)
        for i in range(CAPACITY)
    ]
    assert all(v.allowed for v in verdicts)
    assert all(v.retry_after == 0 for v in verdicts)
    assert_refused(await one.hit("login:ann", capacity=CAPACITY, per=PER))
    assert_refused(await two.hit("login:ann", capacity=CAPACITY, per=PER))
    # Another key has a bucket of its own.
    assert (await two.hit("login:bob", capacity=CAPACITY, per=PER)).allowed


async def test_redis_buckets_refill_over_the_window(redis_limiters: list[RedisLimiter]) -> None:
    one, two = redis_limiters
    for _ in range(CAPACITY):
        assert (await one.hit("ws:a1", capacity=CAPACITY, per=PER)).allowed
    refused = await two.hit("ws:a1", capacity=CAPACITY, per=PER)
    assert_refused(refused)

    async def one_token_back() -> bool:
        return (await two.hit("ws:a1", capacity=CAPACITY, per=PER)).allowed

    # One token comes back after about retry_after; a whole window refills the bucket.
    await eventually(one_token_back, timeout=PER * 4, what="a token refilling", interval=0.01)
    await asyncio.sleep(PER)
    hits = [await one.hit("ws:a1", capacity=CAPACITY, per=PER) for _ in range(CAPACITY)]
    assert all(v.allowed for v in hits)
    assert_refused(await two.hit("ws:a1", capacity=CAPACITY, per=PER))


async def test_memory_buckets_limit_and_refill_within_a_process() -> None:
    limiter = MemoryLimiter()
    for _ in range(CAPACITY):
        assert (await limiter.hit("login:ann", capacity=CAPACITY, per=PER)).allowed
    assert_refused(await limiter.hit("login:ann", capacity=CAPACITY, per=PER))
    assert (await limiter.hit("login:bob", capacity=CAPACITY, per=PER)).allowed

    async def one_token_back() -> bool:
        return (await limiter.hit("login:ann", capacity=CAPACITY, per=PER)).allowed

    await eventually(one_token_back, timeout=PER * 4, what="a token refilling", interval=0.01)
    await asyncio.sleep(PER)
    for _ in range(CAPACITY):
        assert (await limiter.hit("login:ann", capacity=CAPACITY, per=PER)).allowed
    assert_refused(await limiter.hit("login:ann", capacity=CAPACITY, per=PER))


async def test_memory_pruning_keeps_buckets_that_are_not_yet_full() -> None:
    # Pruning (past max_keys) must judge each bucket by its own limits, not by those of
    # the call that happened to trigger it.
    limiter = MemoryLimiter(max_keys=1)
    assert (await limiter.hit("login:ann", capacity=1, per=60)).allowed
    assert not (await limiter.hit("login:ann", capacity=1, per=60)).allowed
    await asyncio.sleep(0.05)
    assert (await limiter.hit("ws:a1", capacity=1, per=0.01)).allowed  # prunes
    refused = await limiter.hit("login:ann", capacity=1, per=60)
    assert not refused.allowed
    assert 59 < refused.retry_after <= 60
