"""python-socketio peer's listener: the classic LISTEN/NOTIFY bridge, emitting to Redis.

``python -m bench.peers.sio_listener DSN REDIS_URL``. One asyncpg connection
LISTENs on ``bench_classic`` (a per-row ``pg_notify`` trigger carries
``{"channel", "data"}``); each notification is emitted to the room ``channel``
through a write-only ``AsyncRedisManager``, as python-socketio's docs advise
for emitting from an external process. Prints ``ready`` once listening.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import asyncpg
import orjson
import socketio  # type: ignore[import-untyped]
import uvloop


async def run(dsn: str, redis_url: str) -> None:
    manager = socketio.AsyncRedisManager(redis_url, write_only=True)
    queue: asyncio.Queue[bytes | str] = asyncio.Queue(maxsize=100_000)
    conn = await asyncpg.connect(dsn)

    def on_notify(_c: Any, _pid: int, _channel: str, payload: str) -> None:
        queue.put_nowait(payload)  # asyncpg callbacks are sync: hand over to the emitter

    await conn.add_listener("bench_classic", on_notify)
    print("ready", flush=True)
    try:
        while True:
            event = orjson.loads(await queue.get())
            await manager.emit("message", event["data"], room=event["channel"])
    finally:
        await conn.close()


def main() -> None:
    uvloop.run(run(sys.argv[1], sys.argv[2]))


if __name__ == "__main__":
    main()
