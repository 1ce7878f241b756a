"""Bounds on what clients and agents send, checked where it comes in so that nothing later (a
column, the JSON encoder, a parser) meets a value it cannot hold."""

from __future__ import annotations

import math
from typing import Annotated, Any, Final

from pydantic import AfterValidator

MAX_INT: Final = 2**31 - 1
"""The largest position, page offset or count a client may name: PostgreSQL's INTEGER."""

MAX_SEQ: Final = 2**53 - 1
"""The largest event ``seq`` or counter: the largest integer every JSON reader holds exactly."""

MAX_JSON_DEPTH: Final = 32
"""How deeply free-form JSON (command parameters, task input, metadata, results) may nest.
The encoder stops at 254 levels, and events wrap what an agent or a client sent."""

# orjson encodes integers from -2**63 to 2**64 - 1; anything wider fails when it is relayed.
_MIN_JSON_INT: Final = -(2**63)
_MAX_JSON_INT: Final = 2**64 - 1


def json_problem(
    value: Any, *, max_depth: int = MAX_JSON_DEPTH, numbers: bool = True
) -> str | None:
    """Why ``value`` (parsed JSON) cannot be taken, or None: nesting deeper than ``max_depth``,
    or (unless ``numbers`` is false, for values whose own schema bounds them) an integer wider
    than 64 bits or a number that is not finite."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth >= max_depth:
                return f"JSON is nested deeper than {max_depth} levels"
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
        elif isinstance(item, bool) or not numbers:
            continue
        elif isinstance(item, int):
            if not _MIN_JSON_INT <= item <= _MAX_JSON_INT:
                return "JSON holds an integer wider than 64 bits"
        elif isinstance(item, float) and not math.isfinite(item):
            return "JSON holds a number that is not finite"
    return None


def within_bounds(value: Any) -> Any:
    """``value``, or a ValueError saying why ``json_problem`` refuses it (for validators)."""
    problem = json_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


def nesting_within_bounds(value: Any) -> Any:
    """``value``, or a ValueError when it nests too deeply (its numbers checked elsewhere)."""
    problem = json_problem(value, numbers=False)
    if problem is not None:
        raise ValueError(problem)
    return value


FreeJson = Annotated[dict[str, Any], AfterValidator(within_bounds)]
"""A free-form JSON object from a client, within the bounds of ``json_problem``."""

AnyJson = Annotated[Any, AfterValidator(within_bounds)]
"""Any free-form JSON value from a client, within the bounds of ``json_problem``."""

TypedJson = Annotated[dict[str, Any], AfterValidator(nesting_within_bounds)]
"""A JSON object whose values a schema of their own checks (runtime settings, by name): only
its nesting is bounded here, so that a bad number is named by the field that holds it."""
