"""Bare ``websockets`` servers: the baselines kai is measured against.

python -m bench.baselines echo PORT        # echoes every message back
python -m bench.baselines broadcast PORT   # /publish: each record of a batch to every /watch
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
        seq = 0
        async for message in ws:
            for record in json.loads(message)["records"]:
                seq += 1
                broadcast(
                    self.watchers, json.dumps({"type": "log_stream", "seq": seq, "entry": record})
                )


async def main(kind: str, port: int) -> None:
    handler = echo if kind == "echo" else Broadcaster().handle
    async with serve(handler, "127.0.0.1", port, compression=None, max_queue=None):
        print("ready", flush=True)  # noqa: T201
        await asyncio.Future()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
