"""A client that stops reading is closed 4008 while 200 others get everything; RSS stays bounded.

Measured here: the stalled client is offered 40 MiB; with the default 1 MiB bound the
gateway's RSS grew ~3 MiB, with the bound lifted (PGCAST_SEND_QUEUE_BYTES=1e9) ~50 MiB.
"""

from __future__ import annotations

import asyncio
import struct

import aiohttp
import orjson
import redis.asyncio as aioredis

from listener.publisher import Event
from tests.gateway_support import (
    LEADER_EPOCH,
    Events,
    gateway_env,
    masked_text,
    raw_ws,
    rss_bytes,
    server_frames,
    token,
    wait_until,
)
from tests.processes import Service
from tests.servers import free_port

OTHERS = 200
FEED = 300
BULK = 80
BULK_SIZE = 512 * 1024  # 80 x 512 KiB = 40 MiB offered to the stalled client


class PeakRss:
    """Samples a process's RSS every 20 ms while running."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.baseline = rss_bytes(pid)
        self.peak = self.baseline
        self._task = asyncio.create_task(self._sample())

    async def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, rss_bytes(self.pid))
            await asyncio.sleep(0.02)

    async def stop(self) -> int:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        return self.peak - self.baseline


async def _metric(session: aiohttp.ClientSession, port: int, name: str) -> float:
    async with session.get(f"http://127.0.0.1:{port}/metrics") as resp:
        for line in (await resp.text()).splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0


async def _subscribers(
    session: aiohttp.ClientSession, port: int
) -> list[aiohttp.ClientWebSocketResponse]:
    others = []
    for i in range(OTHERS):
        tok = token(str(i), channels=["feed"])
        ws = await session.ws_connect(f"ws://127.0.0.1:{port}/ws", params={"token": tok})
        await ws.send_str('{"type":"subscribe","channel":"feed"}')
        others.append(ws)
    for ws in others:
        assert (await ws.receive_json(timeout=10))["type"] == "subscribed"
    return others


async def _stalled(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw client (tiny receive buffer) subscribed to feed and bulk, then never reading."""
    reader, writer = await raw_ws(port, token("stalled", channels=["feed", "bulk"]), rcvbuf=4096)
    for channel in ("feed", "bulk"):
        writer.write(masked_text(orjson.dumps({"type": "subscribe", "channel": channel})))
    pending, heads = b"", 0
    while heads < 2:
        pending += await asyncio.wait_for(reader.read(4096), 10)
        frames, pending = server_frames(pending)
        heads += len(frames)
    return reader, writer


async def _close_code(reader: asyncio.StreamReader) -> int | None:
    """Read the rest of the stream; the code of the close frame at its end."""
    pending = b""
    async with asyncio.timeout(20):
        while chunk := await reader.read(1 << 20):
            frames, pending = server_frames(pending + chunk)
            for opcode, payload in frames:
                if opcode == 0x8:
                    code: int = struct.unpack("!H", payload[:2])[0]
                    return code
    return None


async def _feed_offsets(ws: aiohttp.ClientWebSocketResponse, count: int) -> list[int]:
    offsets = []
    async with asyncio.timeout(60):
        while len(offsets) < count:
            frame = await ws.receive_json()
            if frame["type"] == "message":
                offsets.append(int(frame["offset"]))
    return offsets


async def test_stalled_client_is_closed_4008_while_200_others_receive_everything(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    port = free_port()
    gateway = Service("gateway", gateway_env(redis_url, port, PGCAST_CLOSE_TIMEOUT="15")).start()
    try:
        gateway.wait_http(f"http://127.0.0.1:{port}/readyz")
        # limit=0: WebSockets hold their connection, and the default pool stops at 100.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            others = await _subscribers(session, port)
            reader, writer = await _stalled(port)
            rss = PeakRss(gateway.pid)
            events = Events(redis_client)
            received = [asyncio.create_task(_feed_offsets(ws, FEED)) for ws in others]
            blob = orjson.dumps({"pad": "x" * BULK_SIZE})
            for n in range(FEED):
                await events.publish("feed", {"n": n})
                if n % (FEED // BULK) == 0:
                    await events.publisher.publish(LEADER_EPOCH, [Event("bulk", blob)])
                    await asyncio.sleep(0.01)  # pace: Redis' pub/sub output limit is 32 MiB
            got = await asyncio.gather(*received)
            await asyncio.sleep(0.5)  # a last RSS sample after the burst
            growth = await rss.stop()
            print(f"RSS {rss.baseline / 2**20:.1f} MiB, peak growth {growth / 2**20:.1f} MiB")
            await wait_until(
                lambda: _metric(session, port, "pgcast_gateway_slow_consumer_closes_total"),
                what="slow consumer closed",
            )
            assert all(offsets == list(range(1, FEED + 1)) for offsets in got)
            assert await _close_code(reader) == 4008  # after what was buffered: the close
            writer.close()
            assert growth < 25 * 1024 * 1024, f"RSS grew {growth / 2**20:.1f} MiB"
            for ws in others:
                await ws.close()
    finally:
        gateway.stop()
