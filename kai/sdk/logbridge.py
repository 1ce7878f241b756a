"""The logging bridge: an agent's ``logging`` records, batched for the hub."""

from __future__ import annotations

import logging
from collections import deque
from datetime import UTC, datetime
from typing import Any

from kai.protocol.agent import MAX_LOG_BATCH, MAX_LOG_MESSAGE

_QUIET = ("websockets", "asyncio", "kai.sdk.connection")
_QUIET_CHILDREN = tuple(f"{name}." for name in _QUIET)  # not "asyncio_jobs": a logger of its own
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


def _level_name(levelno: int) -> str:
    if levelno >= logging.CRITICAL:
        return "CRITICAL"
    if levelno >= logging.ERROR:
        return "ERROR"
    if levelno >= logging.WARNING:
        return "WARNING"
    if levelno >= logging.INFO:
        return "INFO"
    return "DEBUG"


def _jsonable(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return repr(value)[:500]


class HubLogHandler(logging.Handler):
    """Keeps records for the hub in a bounded buffer; the oldest go first when it is full."""

    def __init__(self, *, capacity: int = 10_000, level: int = logging.INFO) -> None:
        super().__init__(level)
        self._buffer: deque[dict[str, Any]] = deque(maxlen=capacity)
        self.dropped = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.name in _QUIET or record.name.startswith(_QUIET_CHILDREN):
            return
        try:
            message = record.getMessage()
            if record.exc_info:
                message += "\n" + logging.Formatter().formatException(record.exc_info)
        except Exception:
            message = str(record.msg)
        extra = {k: _jsonable(v) for k, v in record.__dict__.items() if k not in _STANDARD}
        if len(self._buffer) == self._buffer.maxlen:
            self.dropped += 1
        self._buffer.append(
            {
                "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(),
                "level": _level_name(record.levelno),
                "message": message[:MAX_LOG_MESSAGE],
                "logger": record.name[:200],
                **({"extra": extra} if extra else {}),
            }
        )

    def __len__(self) -> int:
        return len(self._buffer)

    def take(self, limit: int = MAX_LOG_BATCH) -> list[dict[str, Any]]:
        batch: list[dict[str, Any]] = []
        while self._buffer and len(batch) < limit:
            batch.append(self._buffer.popleft())
        return batch

    def put_back(self, batch: list[dict[str, Any]]) -> None:
        """Return an unsent batch to the front, in order."""
        self._buffer.extendleft(reversed(batch))
