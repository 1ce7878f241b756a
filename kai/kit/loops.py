"""Background loops: named, periodic, logged when they fail, stopped together."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

log = logging.getLogger("kai.loops")


@dataclass
class Loop:
    name: str
    every: float
    work: Callable[[], Awaitable[object]]
    runs: int = 0
    failures: int = 0
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            try:
                await self.work()
                self.runs += 1
            except Exception:
                self.failures += 1
                log.exception("background loop %s failed; it will run again", self.name)


class Loops:
    """The hub's background loops."""

    def __init__(self) -> None:
        self.loops: dict[str, Loop] = {}

    def start(self, name: str, *, every: float, work: Callable[[], Awaitable[object]]) -> Loop:
        loop = Loop(name, every, work)
        loop.task = asyncio.create_task(loop._run(), name=f"kai-loop-{name}")
        self.loops[name] = loop
        return loop

    async def stop(self) -> None:
        tasks = [loop.task for loop in self.loops.values() if loop.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.loops.clear()

    def running(self, name: str) -> bool:
        loop = self.loops.get(name)
        return loop is not None and loop.task is not None and not loop.task.done()

    async def halt(self, name: str) -> None:
        """Stop one loop (it keeps its counts, and may be started again)."""
        loop = self.loops[name]
        if loop.task is not None:
            loop.task.cancel()
            await asyncio.gather(loop.task, return_exceptions=True)

    async def restart(self, name: str) -> None:
        loop = self.loops[name]
        await self.halt(name)
        loop.task = asyncio.create_task(loop._run(), name=f"kai-loop-{name}")
