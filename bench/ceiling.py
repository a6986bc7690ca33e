"""The ceiling: the least work a server can do to push the same events to the same sockets.

A minimal uvloop program: it accepts WebSocket upgrades (channel in the URL),
generates events itself at the requested rate, encodes each frame once, and
for every socket writes everything pending for it since the last tick in ONE
``transport.write``. No Redis, no Postgres, no auth: the machine's limit for
the fan-out half. Driven over stdin like the load generator:
``{"cmd":"run","rate":500,"seconds":5,"mode":"broadcast"}`` -> ``{"sent":{...}}``.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

import orjson

from bench import wsframes as wf
from bench.loadgen import emit, raise_nofile

PAD = "x" * 100


class Upgrade(asyncio.Protocol):
    """One socket: answer the upgrade, then join the channel named in the URL."""

    def __init__(self, server: Ceiling) -> None:
        self.server = server
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.channel: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if self.channel is not None:
            return  # client frames (pongs, close) need no answer here
        self.buf += data
        head, sep, _ = self.buf.partition(b"\r\n\r\n")
        if not sep or self.transport is None:
            return
        request, *lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines)}
        query = parse_qs(urlsplit(request.split(" ")[1]).query)
        self.channel = query.get("channel", ["bench"])[0]
        accept = wf.accept_for(headers["sec-websocket-key"].encode()).decode()
        self.transport.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + f"Sec-WebSocket-Accept: {accept}\r\n\r\n".encode()
        )
        self.server.subs.setdefault(self.channel, set()).add(self.transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.channel is not None and self.transport is not None:
            self.server.subs.get(self.channel, set()).discard(self.transport)


class Ceiling:
    """Channel -> sockets, and the event generator."""

    def __init__(self) -> None:
        self.subs: dict[str, set[asyncio.Transport]] = {}

    async def run(self, rate: float, seconds: float, channels: list[str]) -> dict[str, int]:
        counts: dict[str, int] = {}
        total_due = int(rate * seconds)
        sent = 0
        start = time.monotonic()
        while sent < total_due:
            due = min(total_due, int((time.monotonic() - start) * rate) + 1)
            batch: dict[str, list[bytes]] = {}
            while sent < due:
                channel = channels[sent % len(channels)]
                seq = counts[channel] = counts.get(channel, 0) + 1
                batch.setdefault(channel, []).append(frame(channel, seq))
                sent += 1
            for channel, frames in batch.items():
                data = b"".join(frames)  # coalesce what is pending for these sockets
                for transport in self.subs.get(channel, ()):
                    transport.write(data)
            await asyncio.sleep(max(0.0, start + sent / rate - time.monotonic()))
        return counts


def frame(channel: str, seq: int) -> bytes:
    data = {"bseq": seq, "bts": time.time(), "pad": PAD}
    body = orjson.dumps({"type": "message", "channel": channel, "offset": str(seq), "data": data})
    return wf.server_frame(body)


async def serve(port: int) -> None:
    ceiling = Ceiling()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Upgrade(ceiling), "127.0.0.1", port, backlog=4096)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    emit({"event": "listening", "port": port})
    while line := await reader.readline():
        command: dict[str, Any] = orjson.loads(line)
        if command["cmd"] == "run":
            channels = command.get("channels") or sorted(ceiling.subs)
            counts = await ceiling.run(command["rate"], command["seconds"], channels)
            emit({"sent": counts})
    server.close()


def main() -> None:
    raise_nofile()
    import uvloop

    uvloop.run(serve(int(sys.argv[1])))


if __name__ == "__main__":
    main()
