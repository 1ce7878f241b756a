"""Counters an agent keeps of its own work, reported to the hub with each heartbeat."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any


@dataclass
class WorkStats:
    commands_handled: int = 0
    commands_failed: int = 0
    tasks_handled: int = 0
    tasks_failed: int = 0
    durations: deque[float] = field(default_factory=lambda: deque(maxlen=500))

    def record(self, kind: str, *, ok: bool, seconds: float) -> None:
        if kind == "command":
            self.commands_handled += 1
            self.commands_failed += 0 if ok else 1
        else:
            self.tasks_handled += 1
            self.tasks_failed += 0 if ok else 1
        self.durations.append(seconds)

    def as_message(self) -> dict[str, Any]:
        times = sorted(self.durations)
        mean = sum(times) / len(times) if times else None
        p95 = times[min(len(times) - 1, math.ceil(0.95 * len(times)) - 1)] if times else None
        return {
            "commandsHandled": self.commands_handled,
            "commandsFailed": self.commands_failed,
            "tasksHandled": self.tasks_handled,
            "tasksFailed": self.tasks_failed,
            "handlingTimeMean": round(mean, 6) if mean is not None else None,
            "handlingTimeP95": round(p95, 6) if p95 is not None else None,
        }
