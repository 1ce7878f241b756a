"""What every figure shares: the run's sizes, percentiles, and the rows of the results table."""

from __future__ import annotations

import statistics
from typing import Any

Row = dict[str, Any]
RATES = frozenset({"deliveries/s", "chunks/s", "tasks/s"})


class Sizes:
    def __init__(self, quick: bool) -> None:
        self.watchers, self.events = (100, 1000) if quick else (100, 5000)
        self.rounds = 300 if quick else 2000
        self.connections = 1000 if quick else 5000
        self.chunks = 50_000 if quick else 200_000
        self.tasks = 500 if quick else 2000


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def say(what: str) -> None:
    print(f"  measuring {what} ...", flush=True)  # noqa: T201


def latency(name: str, kai: list[float], base: list[float], *, baseline: str, goal: str) -> Row:
    """A row of round trips in seconds, written as p50 and p99 in milliseconds."""
    return {
        "name": name,
        "unit": "ms",
        "kai": statistics.median(kai) * 1000,
        "kaiP99": percentile(kai, 0.99) * 1000,
        "baseline": statistics.median(base) * 1000,
        "baselineP99": percentile(base, 0.99) * 1000,
        "baselineName": baseline,
        "ratio": statistics.median(kai) / statistics.median(base),
        "goal": goal,
    }


def rate(name: str, unit: str, kai: float, base: float, *, baseline: str, goal: str) -> Row:
    """A row of things per second, kai's beside the baseline's."""
    return {
        "name": name,
        "unit": unit,
        "kai": kai,
        "baseline": base,
        "baselineName": baseline,
        "ratio": kai / base,
        "goal": goal,
    }


def table(rows: list[Row]) -> str:
    lines = [f"{'figure':72} {'kai':>14} {'baseline':>14} {'ratio':>7}  goal", "-" * 124]
    for row in rows:
        digits = 0 if row["unit"] in RATES else 2 if row["unit"] == "ms" else 1
        kai = f"{row['kai']:,.{digits}f}"
        base = f"{row['baseline']:,.{digits}f}"
        ratio = f"{row['ratio']:.2f}" if row.get("ratio") is not None else "-"
        lines.append(
            f"{row['name'] + ' (' + row['unit'] + ')':72} {kai:>14} {base:>14} "
            f"{ratio:>7}  {row['goal']}"
        )
        if "kaiP99" in row:
            lines.append(f"{'  p99':72} {row['kaiP99']:>14,.2f} {row['baselineP99']:>14,.2f}")
    return "\n".join(lines)
