"""Events: what happened to an agent, numbered in that agent's log."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

import orjson

from kai.db import utcnow


@dataclass(frozen=True, slots=True)
class Event:
    """One entry of an agent's event log, serialized once for every watcher."""

    agent_id: str
    seq: int
    epoch: str
    text: str  # the JSON object sent to clients, with seq, epoch and timestamp in it
    at: float  # wall-clock seconds when it was logged, for the age window

    @property
    def message(self) -> dict[str, Any]:
        value: dict[str, Any] = orjson.loads(self.text)
        return value

    @property
    def type(self) -> str:
        return str(self.message.get("type"))


def new_epoch() -> str:
    return secrets.token_hex(8)


def stamp(agent_id: str, event: dict[str, Any], *, seq: int, epoch: str) -> Event:
    """Number ``event`` as entry ``seq`` of the log ``epoch`` and serialize it."""
    body = {**event, "agentId": agent_id, "seq": seq, "epoch": epoch}
    body.setdefault("timestamp", utcnow())
    return Event(agent_id, seq, epoch, dumps(body), time.time())


def dumps(value: Any) -> str:
    """JSON text as kai sends it: compact, UTC times with a ``Z``."""
    return orjson.dumps(value, option=orjson.OPT_UTC_Z).decode()
