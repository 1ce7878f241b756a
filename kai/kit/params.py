"""Query parameters many routes share, each bounded once so that no value a client picks
overflows a column or a computation behind it."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

from kai.protocol.bounds import MAX_INT

Offset = Annotated[int, Query(ge=0, le=MAX_INT, description="Rows to skip")]
