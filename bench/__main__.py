"""``make bench``: kai's real-time figures, each beside its baseline measured in the same run.

Prints a table and writes it as JSON under bench/results/. Options: ``--quick`` for smaller
runs, ``--only fanout,latency,connections,redis,commands,streams,tasks``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import orjson
from websockets.asyncio.client import ClientConnection, connect

from bench.hub import (
    Process,
    log_batch,
    login,
    raw_agent,
    rss_bytes,
    start_baseline,
    start_hub,
    two_nodes,
    watcher,
)
from bench.report import Row, Sizes, latency, rate, say, table
from bench.tasks import tasks_rows
from bench.work import commands_row, streams_row

RESULTS = Path(__file__).parent / "results"
FIGURES = ("fanout", "latency", "connections", "redis", "commands", "streams", "tasks")
BATCH = 100


async def _count(ws: ClientConnection, total: int) -> None:
    seen = 0
    async for raw in ws:
        if b'"log_stream"' in (raw if isinstance(raw, bytes) else raw.encode()):
            seen += 1
            if seen == total:
                return


async def fanout_kai(agent_port: int, watch_port: int, watchers: int, events: int) -> float:
    """Deliveries per second from one agent to ``watchers`` clients through the hub."""
    session = await login(agent_port)
    agent_id, token = await session.create_agent(f"fanout-{uuid.uuid4().hex[:6]}")
    watch_session = await login(watch_port)
    async with raw_agent(agent_port, token) as agent:
        sockets = await asyncio.gather(
            *(watcher(watch_port, agent_id, watch_session.token) for _ in range(watchers))
        )
        counters = [asyncio.create_task(_count(ws, events)) for ws in sockets]
        started = time.perf_counter()
        for start in range(0, events, BATCH):
            await agent.send(log_batch(start, min(BATCH, events - start)))
        await asyncio.gather(*counters)
        elapsed = time.perf_counter() - started
        await asyncio.gather(*(ws.close() for ws in sockets))
    return watchers * events / elapsed


async def fanout_bare(port: int, watchers: int, events: int) -> float:
    sockets = []
    for _ in range(watchers):
        ws = await connect(f"ws://127.0.0.1:{port}/watch", compression=None, max_size=None)
        await ws.recv()
        sockets.append(ws)
    counters = [asyncio.create_task(_count(ws, events)) for ws in sockets]
    async with connect(f"ws://127.0.0.1:{port}/publish", compression=None) as publisher:
        started = time.perf_counter()
        for start in range(0, events, BATCH):
            records = [{"message": str(i)} for i in range(start, min(events, start + BATCH))]
            await publisher.send(json.dumps({"records": records}))
        await asyncio.gather(*counters)
        elapsed = time.perf_counter() - started
    await asyncio.gather(*(ws.close() for ws in sockets))
    return watchers * events / elapsed


async def latency_kai(agent_port: int, watch_port: int, rounds: int) -> list[float]:
    """Seconds from an agent's log record leaving it to the watcher having it."""
    session = await login(agent_port)
    agent_id, token = await session.create_agent(f"latency-{uuid.uuid4().hex[:6]}")
    watch_session = await login(watch_port)
    samples = []
    async with raw_agent(agent_port, token) as agent:
        ws = await watcher(watch_port, agent_id, watch_session.token)
        for i in range(rounds + rounds // 10):
            marker = f"m{i}"
            sent = time.perf_counter()
            await agent.send(json.dumps({"type": "log", "records": [{"message": marker}]}))
            while True:
                message = orjson.loads(await ws.recv())
                if message["type"] == "log_stream" and message["entry"]["message"] == marker:
                    break
            if i >= rounds // 10:  # the first tenth warms up
                samples.append(time.perf_counter() - sent)
        await ws.close()
    return samples


async def latency_bare(port: int, rounds: int) -> list[float]:
    samples = []
    async with connect(f"ws://127.0.0.1:{port}", compression=None) as ws:
        for i in range(rounds + rounds // 10):
            sent = time.perf_counter()
            await ws.send(json.dumps({"type": "ping", "n": i}))
            await ws.recv()
            if i >= rounds // 10:
                samples.append(time.perf_counter() - sent)
    return samples


async def idle_memory(hub: Process, connections: int) -> float:
    """Bytes of hub RSS per idle, authenticated client connection."""
    session = await login(hub.port)
    agent_id, _ = await session.create_agent("idle")
    warm = [await watcher(hub.port, agent_id, session.token) for _ in range(20)]
    await asyncio.sleep(1)
    before = rss_bytes(hub.pid)
    sockets: list[ClientConnection] = []
    for start in range(0, connections, 100):
        sockets += await asyncio.gather(
            *(
                watcher(hub.port, agent_id, session.token)
                for _ in range(min(100, connections - start))
            )
        )
    await asyncio.sleep(2)
    after = rss_bytes(hub.pid)
    await asyncio.gather(*(ws.close() for ws in sockets + warm))
    return (after - before) / connections


async def idle_memory_bare(connections: int) -> float:
    server = start_baseline("echo")
    try:
        warm = [await connect(f"ws://127.0.0.1:{server.port}", compression=None) for _ in range(20)]
        await asyncio.sleep(1)
        before = rss_bytes(server.pid)
        sockets: list[ClientConnection] = []
        for start in range(0, connections, 200):
            sockets += await asyncio.gather(
                *(
                    connect(f"ws://127.0.0.1:{server.port}", compression=None)
                    for _ in range(min(200, connections - start))
                )
            )
        await asyncio.sleep(2)
        after = rss_bytes(server.pid)
        await asyncio.gather(*(ws.close() for ws in sockets + warm))
        return (after - before) / connections
    finally:
        server.stop()


async def fanout_row(name: str, agent_port: int, watch_port: int, sizes: Sizes, goal: str) -> Row:
    say(name)
    bare = start_baseline("broadcast")
    try:
        base = await fanout_bare(bare.port, sizes.watchers, sizes.events)
    finally:
        bare.stop()
    kai = await fanout_kai(agent_port, watch_port, sizes.watchers, sizes.events)
    return rate(name, "deliveries/s", kai, base, baseline="bare websockets broadcast", goal=goal)


async def latency_row(name: str, agent_port: int, watch_port: int, sizes: Sizes, goal: str) -> Row:
    say(name)
    echo = start_baseline("echo")
    try:
        base = await latency_bare(echo.port, sizes.rounds)
    finally:
        echo.stop()
    kai = await latency_kai(agent_port, watch_port, sizes.rounds)
    return latency(name, kai, base, baseline="bare websockets echo round trip", goal=goal)


async def memory_row(hub: Process, sizes: Sizes) -> Row:
    name = f"memory per idle client connection at {sizes.connections}"
    say(name)
    base = await idle_memory_bare(sizes.connections)
    kai = await idle_memory(hub, sizes.connections)
    return {
        "name": name,
        "unit": "KiB",
        "kai": kai / 1024,
        "baseline": base / 1024,
        "baselineName": "bare websockets server, idle connection",
        "ratio": kai / base if base > 0 else None,
        "goal": "< 50 KiB",
    }


async def embedded(only: set[str], sizes: Sizes, work: Path) -> list[Row]:
    rows: list[Row] = []
    if not only & {"fanout", "latency", "connections", "commands", "streams"}:
        return rows
    hub = start_hub(work)
    try:
        await login(hub.port)
        if "fanout" in only:
            name = f"fan-out, 1 agent to {sizes.watchers} watchers"
            rows.append(await fanout_row(name, hub.port, hub.port, sizes, ">= 0.60 of baseline"))
        if "latency" in only:
            name = "latency, agent event to watcher (p50)"
            rows.append(
                await latency_row(name, hub.port, hub.port, sizes, "p50 < 3 echo round trips")
            )
        if "commands" in only:
            name = "command round trip, client to agent and back (p50)"
            goal = "p50 < 4 echo round trips"
            rows.append(await commands_row(name, hub.port, hub.port, sizes, goal))
        if "streams" in only:
            rows.append(await streams_row(hub.port, sizes))
        if "connections" in only:
            rows.append(await memory_row(hub, sizes))
    finally:
        hub.stop()
    return rows


async def scaled_out(only: set[str], sizes: Sizes, work: Path) -> list[Row]:
    rows: list[Row] = []
    async with two_nodes(work) as (a, b):
        if "redis" in only:
            name = f"fan-out over Redis, agent on node A, {sizes.watchers} watchers on B"
            rows.append(await fanout_row(name, a.port, b.port, sizes, "(reported)"))
            name = "latency over Redis, agent on A to watcher on B (p50)"
            rows.append(await latency_row(name, a.port, b.port, sizes, "(reported)"))
        if "commands" in only:
            name = "command round trip over Redis, client on B, agent on A (p50)"
            rows.append(await commands_row(name, a.port, b.port, sizes, "(reported)"))
    return rows


async def run(only: set[str], quick: bool) -> list[Row]:
    sizes = Sizes(quick)
    work = Path(tempfile.mkdtemp(prefix="kai-bench-"))
    rows = await embedded(only, sizes, work)
    if only & {"redis", "commands"}:
        rows += await scaled_out(only, sizes, work)
    if "tasks" in only:
        rows += await tasks_rows(sizes, work)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller runs")
    parser.add_argument("--only", default=",".join(FIGURES))
    args = parser.parse_args()
    only = set(args.only.split(","))
    if only - set(FIGURES):
        parser.error(f"unknown figures {sorted(only - set(FIGURES))}; choose from {FIGURES}")
    print("kai benchmarks (each beside its baseline, same machine, same run)")  # noqa: T201
    rows = asyncio.run(run(only, args.quick))
    print()  # noqa: T201
    print(table(rows))  # noqa: T201
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS / f"bench-{stamp}.json"
    out.write_text(
        json.dumps(
            {
                "when": stamp,
                "machine": platform.platform(),
                "python": platform.python_version(),
                "quick": args.quick,
                "results": rows,
            },
            indent=2,
        )
    )
    print(f"\nwritten to {out}")  # noqa: T201


if __name__ == "__main__":
    main()
