"""Helpers for the gateway's tests: tokens, settings, a publisher, and a frame-level client.

Events are produced with the listener's real :class:`listener.publisher.Publisher`,
so the gateway tests prove the real Redis contract, not a copy of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, Any

import aiohttp
import jwt
import orjson
import redis.asyncio as aioredis

from gateway.config import GatewaySettings
from listener.publisher import Event, Publisher
from pgcast import redis_connect
from pgcast.keys import DEFAULT_PARTITIONS, Layout
from pgcast.redis_connect import RedisCluster
from pgcast.redis_url import layout_for, parse_redis_url
from tests.waiting import eventually

SECRET = "test-secret-0123456789abcdef-0123456789abcdef"
LEADER_EPOCH = 1
WAIT = 10.0  # seconds: the bound on every wait of these tests


def token(
    sub: str = "42",
    channels: Iterable[str] | None = None,
    *,
    ttl: float = 3600,
    secret: str = SECRET,
    **claims: Any,
) -> str:
    # Rounded up: a token asked for `ttl` seconds has at least that long left.
    payload: dict[str, Any] = {"sub": sub, "exp": math.ceil(time.time() + ttl), **claims}
    if channels is not None:
        payload["channels"] = list(channels)
    return jwt.encode(payload, secret, algorithm="HS256")


def settings(redis_url: str, **env: str) -> GatewaySettings:
    base = {
        "REDIS_URL": redis_url,
        "PGCAST_JWT_SECRET": SECRET,
        "PGCAST_REDIS_HEARTBEAT": "0.2",
        "PGCAST_REDIS_HEARTBEAT_TIMEOUT": "1.5",
        "PGCAST_DRAIN_SECONDS": "0.2",
        "PGCAST_CLOSE_TIMEOUT": "1",
    }
    return GatewaySettings.from_env({**base, **env})


class Events:
    """Publishes test events through the listener's publish script.

    ``redis`` is a client of one Redis or a ``RedisCluster``; the key Layout follows from
    it (on a cluster the default partition count, as the gateways of these tests use)
    unless ``layout`` says otherwise. :meth:`for_url` builds the client from a
    ``REDIS_URL`` as the listener does; that one is closed with :meth:`aclose`.
    """

    def __init__(
        self,
        redis: aioredis.Redis | RedisCluster,  # type: ignore[type-arg, unused-ignore]
        history_size: int = 1000,
        *,
        layout: Layout | None = None,
    ) -> None:
        if layout is None:
            layout = Layout(DEFAULT_PARTITIONS) if isinstance(redis, RedisCluster) else Layout()
        self.redis = redis
        self.layout = layout
        self.publisher = Publisher(redis, layout=layout, history_size=history_size)
        self._claimed = False
        self._owned = False

    @classmethod
    def for_url(cls, redis_url: str, history_size: int = 1000) -> Events:
        """Events on the Redis (or Redis Cluster) ``redis_url`` names, with its Layout."""
        target = parse_redis_url(redis_url)
        client = redis_connect.client(target, timeout=5.0)
        events = cls(client, history_size, layout=layout_for(target))
        events._owned = True
        return events

    async def aclose(self) -> None:
        """Closes the client :meth:`for_url` made (a client passed in is the caller's)."""
        if self._owned:
            await self.redis.aclose()

    async def publish(self, channel: str, *payloads: Mapping[str, Any]) -> list[int]:
        if not self._claimed:
            await self.publisher.claim_fence(LEADER_EPOCH)
            self._claimed = True
        events = [Event(channel, orjson.dumps(p)) for p in payloads]
        results = await self.publisher.publish(LEADER_EPOCH, events)
        return [r.offset for r in results if r.offset is not None]

    async def numbered(self, channel: str, start: int, count: int) -> list[int]:
        return await self.publish(channel, *({"n": n} for n in range(start, start + count)))


class Client:
    """A WebSocket client that reads JSON frames with a timeout on every wait."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.frames: list[dict[str, Any]] = []

    async def send(self, **frame: Any) -> None:
        await self.ws.send_str(orjson.dumps(frame).decode())

    async def recv(self, wait: float = WAIT) -> dict[str, Any]:
        msg = await self.ws.receive(timeout=wait)
        if msg.type is not aiohttp.WSMsgType.TEXT:
            raise AssertionError(f"expected a text frame, got {msg.type!r} {msg.data!r}")
        frame: dict[str, Any] = orjson.loads(msg.data)
        self.frames.append(frame)
        return frame

    async def expect(self, kind: str, wait: float = WAIT) -> dict[str, Any]:
        frame = await self.recv(wait)
        assert frame["type"] == kind, frame
        return frame

    async def subscribe(self, channel: str, **extra: Any) -> dict[str, Any]:
        await self.send(type="subscribe", channel=channel, **extra)
        return await self.recv()

    async def messages(self, count: int, wait: float = WAIT) -> list[dict[str, Any]]:
        """The next ``count`` frames, all of which must be messages."""
        out = []
        async with asyncio.timeout(wait):
            while len(out) < count:
                frame = await self.recv(wait)
                assert frame["type"] == "message", frame
                out.append(frame)
        return out

    async def closed(self, wait: float = WAIT) -> int | None:
        """Read until the server closes; returns the close code."""
        async with asyncio.timeout(wait):
            while True:
                msg = await self.ws.receive()
                if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                    return self.ws.close_code
                if msg.type is aiohttp.WSMsgType.CLOSING:
                    continue
                if msg.type is aiohttp.WSMsgType.TEXT:
                    self.frames.append(orjson.loads(msg.data))


def offsets(frames: Iterable[Mapping[str, Any]]) -> list[int]:
    return [int(f["offset"]) for f in frames]


async def wait_until(predicate: Any, wait: float = WAIT, what: str = "condition") -> None:
    """Poll ``predicate()`` (sync or async) until true, failing by name after ``wait``."""
    await eventually(predicate, wait, what, 0.02)


class SseReader:
    """Parses a ``text/event-stream`` response into (id, data-json) events."""

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self.resp = resp
        self.last_id: str | None = None

    async def event(self, wait: float = WAIT) -> dict[str, Any]:
        data: list[bytes] = []
        async with asyncio.timeout(wait):
            while True:
                line = await self.resp.content.readline()
                if not line:
                    raise EOFError("event stream ended")
                line = line.rstrip(b"\n")
                if not line:
                    if data:
                        frame: dict[str, Any] = orjson.loads(b"\n".join(data))
                        return frame
                    continue
                field, _, value = line.partition(b":")
                value = value.removeprefix(b" ")
                if field == b"id":
                    self.last_id = value.decode()
                elif field == b"data":
                    data.append(value)

    async def messages(self, count: int, wait: float = WAIT) -> list[dict[str, Any]]:
        out = []
        async with asyncio.timeout(wait):
            while len(out) < count:
                frame = await self.event(wait)
                assert frame["type"] == "message", frame
                out.append(frame)
        return out


ROOT = Path(__file__).resolve().parents[1]
# The README's production command: gunicorn on the app factory with aiohttp's uvloop worker.
GUNICORN_APP = ("gateway.app:gunicorn_app", "-k", "aiohttp.worker.GunicornUVLoopWebWorker")


async def start_gunicorn(
    *args: str, env: Mapping[str, str], out: IO[bytes]
) -> asyncio.subprocess.Process:
    """gunicorn (the venv's) with ``args``, its output (text logs) to ``out``."""
    return await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "gunicorn"),
        *args,
        env={**os.environ, "PGCAST_LOG_FORMAT": "text", **env},
        cwd=ROOT,
        stdout=out,
        stderr=subprocess.STDOUT,
    )


def gateway_env(redis_url: str, port: int, **env: str) -> dict[str, str]:
    """Environment of a ``pgcast-gateway`` process for tests (fast heartbeats, short drain)."""
    return {
        "REDIS_URL": redis_url,
        "PGCAST_JWT_SECRET": SECRET,
        "PGCAST_HOST": "127.0.0.1",
        "PGCAST_PORT": str(port),
        "PGCAST_REDIS_HEARTBEAT": "0.2",
        "PGCAST_REDIS_HEARTBEAT_TIMEOUT": "1.5",
        "PGCAST_DRAIN_SECONDS": "1",
        "PGCAST_CLOSE_TIMEOUT": "2",
        **env,
    }


class Follower:
    """A client that follows one channel across gateways: on any close it reconnects to the
    next URL and resumes from its last position. Records every message with its epoch."""

    def __init__(self, session: aiohttp.ClientSession, urls: list[str], channel: str, tok: str):
        self.session = session
        self.urls = urls
        self.channel = channel
        self.token = tok
        self.received: list[tuple[str, int]] = []  # (epoch, offset) of each message
        self.epoch: str | None = None
        self.offset = 0
        self.closes: list[int | None] = []
        self.subscribed: list[dict[str, Any]] = []
        self.stop = asyncio.Event()
        self._turn = 0

    def offsets(self, epoch: str | None = None) -> list[int]:
        return [o for e, o in self.received if epoch is None or e == epoch]

    async def run(self) -> None:
        while not self.stop.is_set():
            url = self.urls[self._turn % len(self.urls)]
            with contextlib.suppress(aiohttp.ClientError, OSError):
                await self._follow(url)
            if not self.stop.is_set():
                self._turn += 1
                await asyncio.sleep(0.05)

    async def _follow(self, url: str) -> None:
        protocols = ("pgcast.v1", f"bearer.{self.token}")
        async with self.session.ws_connect(url, protocols=protocols) as ws:
            request: dict[str, Any] = {"type": "subscribe", "channel": self.channel}
            if self.epoch is not None:
                request.update(since=str(self.offset), epoch=self.epoch)
            await ws.send_str(orjson.dumps(request).decode())
            while not self.stop.is_set():
                msg = await ws.receive()
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    break
                self._frame(orjson.loads(msg.data))
            self.closes.append(ws.close_code)

    def _frame(self, frame: dict[str, Any]) -> None:
        if frame["type"] == "subscribed":
            self.subscribed.append(frame)
            self.epoch = frame["epoch"]
            if not frame["recovered"]:
                self.offset = int(frame["offset"])
        elif frame["type"] == "message":
            self.offset = int(frame["offset"])
            self.received.append((self.epoch or "", self.offset))


def contiguous(values: list[int], first: int, last: int) -> bool:
    return values == list(range(first, last + 1))


def rss_bytes(pid: int) -> int:
    """Resident set size of process ``pid`` (Linux)."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def masked_text(payload: bytes) -> bytes:
    """One final, masked client text frame (clients must mask, RFC 6455 §5.3)."""
    import os
    import struct

    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x81, 0x80 | n)
    elif n < 65536:
        header = struct.pack("!BBH", 0x81, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", 0x81, 0x80 | 127, n)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return header + mask + body


def server_frames(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """Complete unmasked server frames in ``data`` as (opcode, payload), and the rest."""
    frames = []
    pos = 0
    while len(data) - pos >= 2:
        opcode, length = data[pos] & 0x0F, data[pos + 1] & 0x7F
        head = 2
        if length == 126:
            if len(data) - pos < 4:
                break
            length, head = int.from_bytes(data[pos + 2 : pos + 4], "big"), 4
        elif length == 127:
            if len(data) - pos < 10:
                break
            length, head = int.from_bytes(data[pos + 2 : pos + 10], "big"), 10
        if len(data) - pos < head + length:
            break
        frames.append((opcode, data[pos + head : pos + head + length]))
        pos += head + length
    return frames, data[pos:]


async def raw_ws(
    port: int, tok: str, rcvbuf: int, *, deflate: bool = False
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A bare WebSocket connection with a small receive buffer, upgraded by hand."""
    import base64
    import os
    import socket

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=16 * 1024)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {tok}\r\n"
            + ("Sec-WebSocket-Extensions: permessage-deflate\r\n" if deflate else "")
            + "\r\n"
        ).encode()
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
    if not head.startswith(b"HTTP/1.1 101"):
        raise AssertionError(head.decode(errors="replace"))
    return reader, writer
