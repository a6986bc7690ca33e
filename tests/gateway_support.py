"""Helpers for the gateway's tests: tokens, settings, a publisher, and a frame-level client.

Events are produced with the listener's real :class:`listener.publisher.Publisher`,
so the gateway tests prove the real Redis contract, not a copy of it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from typing import Any

import aiohttp
import jwt
import orjson
import redis.asyncio as aioredis

from gateway.config import GatewaySettings
from listener.publisher import Event, Publisher

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
    payload: dict[str, Any] = {"sub": sub, "exp": int(time.time() + ttl), **claims}
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
    """Publishes test events through the listener's publish script."""

    def __init__(self, redis: aioredis.Redis, history_size: int = 1000) -> None:  # type: ignore[type-arg, unused-ignore]
        self.publisher = Publisher(redis, history_size=history_size)
        self._claimed = False

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
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        await asyncio.sleep(0.02)
    raise TimeoutError(f"{what} not reached within {wait}s")


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
