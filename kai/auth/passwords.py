"""Argon2id password hashing, with a constant-cost path for unknown accounts, and the
password policy (NIST SP 800-63B: length, a list of common passwords, no composition rules)."""

from __future__ import annotations

import asyncio
import gzip
from dataclasses import dataclass
from functools import cache
from importlib import resources

from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

MIN_LENGTH = 8
MAX_LENGTH = 1024


class Passwords:
    """Hashes and verifies passwords off the event loop, ``concurrency`` at a time.

    Argon2id is built to cost memory and CPU: a burst of hashes would take every core and every
    worker thread from the rest of the hub, so the rest wait their turn here instead.
    """

    def __init__(
        self, *, time_cost: int, memory_cost: int, parallelism: int, concurrency: int = 2
    ) -> None:
        hasher = Argon2Hasher(time_cost=time_cost, memory_cost=memory_cost, parallelism=parallelism)
        self._hash = PasswordHash((hasher,))
        self._slots = asyncio.Semaphore(concurrency)
        # Verified against when the account does not exist, so both answers cost the same.
        self._decoy = self._hash.hash("kai-decoy-password-never-matches")

    async def hash(self, password: str) -> str:
        async with self._slots:
            return await asyncio.to_thread(self._hash.hash, password)

    async def verify(self, password: str, hashed: str | None) -> bool:
        """Whether ``password`` matches ``hashed``; with no hash, spend the same time and fail."""
        async with self._slots:
            if hashed is None:
                await asyncio.to_thread(self._hash.verify, password, self._decoy)
                return False
            return await asyncio.to_thread(self._hash.verify, password, hashed)


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a password is refused: ``rule`` names the rule, ``message`` says it to a person."""

    rule: str
    message: str


@cache
def common_passwords() -> frozenset[str]:
    """Passwords too common to accept (lower case, 8 characters and more): Django's list of
    20,000 (Royce Williams' list, BSD licence, from django/contrib/auth), plus a few of kai's."""
    data = resources.files("kai.auth").joinpath("common-passwords.txt.gz").read_bytes()
    return frozenset(gzip.decompress(data).decode().split("\n")) - {""}


def check_password(password: str, *, email: str, min_length: int) -> Rejection | None:
    """The first rule ``password`` breaks, or None: length, not blank, not one character over
    and over, not a common password, not the email address or its name part."""
    if len(password) < min_length:
        return Rejection("too_short", f"Password must be at least {min_length} characters")
    if len(password) > MAX_LENGTH:
        return Rejection("too_long", f"Password must be at most {MAX_LENGTH} characters")
    if not password.strip():
        return Rejection("blank", "Password must not be only spaces")
    folded = password.strip().lower()
    if len(set(folded)) == 1:
        return Rejection("repetitive", "Password must not be one character repeated")
    if folded in common_passwords():
        return Rejection("common", "Password is on the list of commonly used passwords")
    address = email.lower()
    if address in folded or folded == address.partition("@")[0]:
        return Rejection("contains_email", "Password must not contain the email address")
    return None
