"""Argon2id password hashing, with a constant-cost path for unknown accounts."""

from __future__ import annotations

import asyncio

from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

MIN_LENGTH = 8
MAX_LENGTH = 1024


class Passwords:
    """Hashes and verifies passwords off the event loop."""

    def __init__(self, *, time_cost: int, memory_cost: int, parallelism: int) -> None:
        hasher = Argon2Hasher(time_cost=time_cost, memory_cost=memory_cost, parallelism=parallelism)
        self._hash = PasswordHash((hasher,))
        # Verified against when the account does not exist, so both answers cost the same.
        self._decoy = self._hash.hash("kai-decoy-password-never-matches")

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self._hash.hash, password)

    async def verify(self, password: str, hashed: str | None) -> bool:
        """Whether ``password`` matches ``hashed``; with no hash, spend the same time and fail."""
        if hashed is None:
            await asyncio.to_thread(self._hash.verify, password, self._decoy)
            return False
        return await asyncio.to_thread(self._hash.verify, password, hashed)
