"""bench/presence.py's WebSocket client: one connection, its frames as JSON with their
arrival time, a hook that sees each frame first.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, cast

import orjson

from bench import wsframes as wf

HOST = "127.0.0.1"
WAIT = 30.0  # bound on every single wait


Hook = Callable[[float, dict[str, Any]], bool]


class Ws(asyncio.Protocol):
    """One client connection: upgrade, text frames as JSON with their arrival time.

    ``hook(now, frame)`` sees every text frame first (True: consumed); the rest go to
    ``inbox``. Server pings are answered.
    """

    def __init__(self, path: str, gateway: str) -> None:
        self.gateway = gateway
        self.key = wf.new_key()
        self.upgrade = wf.upgrade_request(f"{HOST}", path, self.key)
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.open: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.inbox: asyncio.Queue[tuple[float, dict[str, Any]]] = asyncio.Queue()
        self.hook: Hook | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport.write(self.upgrade)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.open.done():
            self.open.set_exception(ConnectionError(f"closed before the upgrade: {exc!r}"))

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        self.buf += data
        if not self.open.done():
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            try:
                wf.parse_upgrade_response(bytes(self.buf[:end]), self.key)
            except wf.HandshakeError as exc:
                self.open.set_exception(exc)
                return
            del self.buf[: end + 4]
            self.open.set_result(None)
        frames, used = wf.split_frames(self.buf)
        del self.buf[:used]
        for opcode, _, payload in frames:
            if opcode == wf.OP_TEXT:
                frame = orjson.loads(payload)
                if self.hook is None or not self.hook(now, frame):
                    self.inbox.put_nowait((now, frame))
            elif opcode == wf.OP_PING:
                self.write(payload, wf.OP_PONG)
            elif opcode == wf.OP_CLOSE:
                self.closed = True

    def write(self, payload: bytes, opcode: int = wf.OP_TEXT) -> None:
        assert self.transport is not None
        self.transport.write(wf.client_frame(payload, opcode))

    def send(self, **frame: Any) -> float:
        """Send one request; returns when (perf_counter) it was written."""
        payload = orjson.dumps(frame)
        sent = time.perf_counter()
        self.write(payload)
        return sent

    async def expect(self, kind: str) -> tuple[float, dict[str, Any]]:
        """The next frame of ``kind`` (and its arrival), skipping others; an error raises."""
        async with asyncio.timeout(WAIT):
            while True:
                at, frame = await self.inbox.get()
                if frame["type"] == kind:
                    return at, frame
                if frame["type"] == "error":
                    raise RuntimeError(f"{self.gateway}: waiting for {kind}: {frame}")

    async def request(self, kind: str, **frame: Any) -> tuple[float, dict[str, Any]]:
        self.send(**frame)
        return await self.expect(kind)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()
