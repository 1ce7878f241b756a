"""Bare ``websockets`` servers: the baselines kai is measured against.

python -m bench.baselines echo PORT        # echoes every message back
python -m bench.baselines broadcast PORT   # /publish: each record of a batch to every /watch
python -m bench.baselines relay PORT       # /publish: each message, numbered, to every /watch
"""

from __future__ import annotations

import asyncio
import json
import sys

from websockets.asyncio.server import ServerConnection, broadcast, serve


async def echo(ws: ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


class Broadcaster:
    def __init__(self) -> None:
        self.watchers: set[ServerConnection] = set()
        self.seq = 0

    async def handle(self, ws: ServerConnection) -> None:
        path = ws.request.path if ws.request else "/"
        if path.startswith("/watch"):
            self.watchers.add(ws)
            try:
                await ws.send(json.dumps({"type": "ready"}))
                await ws.wait_closed()
            finally:
                self.watchers.discard(ws)
            return
        async for message in ws:
            self.publish(message)

    def publish(self, message: str | bytes) -> None:
        for record in json.loads(message)["records"]:
            self.seq += 1
            broadcast(
                self.watchers, json.dumps({"type": "log_stream", "seq": self.seq, "entry": record})
            )


class Relay(Broadcaster):
    """What a relay must do at least: read each message, number it, pass it on."""

    def publish(self, message: str | bytes) -> None:
        self.seq += 1
        broadcast(self.watchers, json.dumps({**json.loads(message), "seq": self.seq}))


async def main(kind: str, port: int) -> None:
    handlers = {"echo": echo, "broadcast": Broadcaster().handle, "relay": Relay().handle}
    async with serve(handlers[kind], "127.0.0.1", port, compression=None, max_queue=None):
        print("ready", flush=True)  # noqa: T201
        await asyncio.Future()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
