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


TEAM_LOG = "team:"  # the prefix of a team channel's log; every other log is an agent's


def team_log(team_id: str) -> str:
    """The broker log of a team's channel."""
    return TEAM_LOG + team_id


def subject(log: str) -> tuple[str, str]:
    """The field naming whose log an event is in: ``("agentId", id)`` or ``("teamId", id)``."""
    if log.startswith(TEAM_LOG):
        return "teamId", log[len(TEAM_LOG) :]
    return "agentId", log


def stamp(agent_id: str, event: dict[str, Any], *, seq: int, epoch: str) -> Event:
    """Number ``event`` as entry ``seq`` of the log ``epoch`` and serialize it."""
    field, value = subject(agent_id)
    body = {**event, field: value, "seq": seq, "epoch": epoch}
    body.setdefault("timestamp", utcnow())
    return Event(agent_id, seq, epoch, dumps(body), time.time())


def dumps(value: Any) -> str:
    """JSON text as kai sends it: compact, UTC times with a ``Z``."""
    return orjson.dumps(value, option=orjson.OPT_UTC_Z).decode()
