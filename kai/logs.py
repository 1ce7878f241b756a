"""The hub's own logs: structured JSON lines, or human-readable lines on a terminal.

Every record, kai's and its libraries' (uvicorn, SQLAlchemy...), goes through the standard
``logging`` module and is rendered by structlog. The request id of the request being served is
bound in a context variable by the request guard, so every line logged while serving it
carries it, and the same id is in the problem+json answer and the ``X-Request-ID`` header.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal, TextIO

import structlog

LogFormat = Literal["auto", "json", "console"]


def setup(level: str, fmt: LogFormat = "auto", stream: TextIO | None = None) -> None:
    """Send every log record to ``stream`` (stderr) as JSON lines, or as readable text when
    asked or when it is a terminal (coloured only there)."""
    stream = stream or sys.stderr
    terminal = stream.isatty()
    use_json = fmt == "json" or (fmt == "auto" and not terminal)
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.ExtraAdder(),
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=terminal)
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info if use_json else _keep,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    logging.getLogger("alembic").setLevel(logging.WARNING)


def _keep(
    _logger: object, _name: str, event: structlog.types.EventDict
) -> structlog.types.EventDict:
    return event  # the console renderer shows tracebacks itself
