"""``GET /ws``: the WebSocket edge — admission, upgrade, the read loop, and two transports.

Without compression (the default) a message's pre-built frame bytes go straight
to the socket's transport, and the transport's own write buffer is the send
queue: past ``PGCAST_SEND_QUEUE_BYTES`` the session is closed 4008. With
permessage-deflate negotiated, frames wait in a byte-bounded queue drained by
one writer task per connection (compression is per connection, so per client).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable

from aiohttp import WSMsgType, web

from gateway.admission import admit
from gateway.batch import WriteBatch
from gateway.codes import CloseCode, ErrorCode
from gateway.handshake import SUBPROTOCOL
from gateway.message import Message
from gateway.services import SERVICES
from gateway.session import Session
from gateway.wire import text_frame

log = logging.getLogger(__name__)


def _nothing() -> None:
    """Overflow callback until a session binds its own."""


class DirectTransport:
    """Writes frames to the socket itself; the socket's write buffer is the bounded queue.

    During a Redis read (``batch.active``) frames are only collected, then written
    in one call when the read is done (:meth:`flush`).
    """

    kind = "ws"
    __slots__ = (
        "_batch",
        "_close_timeout",
        "_closed",
        "_limit",
        "_on_overflow",
        "_pending",
        "_raw",
        "_ws",
    )

    def __init__(
        self,
        ws: web.WebSocketResponse,
        raw: asyncio.Transport,
        limit: int,
        close_timeout: float,
        batch: WriteBatch,
    ) -> None:
        self._ws = ws
        self._raw = raw
        self._limit = limit
        self._close_timeout = close_timeout
        self._batch = batch
        self._pending: list[bytes] = []
        self._closed = False
        self._on_overflow: Callable[[], None] = _nothing

    def bind(self, on_overflow: Callable[[], None]) -> None:
        self._on_overflow = on_overflow

    def deliver(self, message: Message) -> None:
        if self._closed:
            return
        if self._batch.active:
            if not self._pending:
                self._batch.dirty.append(self)
            self._pending.append(message.wire)
        else:
            self._write(message.wire)

    def send(self, frame: bytes) -> None:
        if self._closed:
            return
        if self._batch.active:
            if not self._pending:
                self._batch.dirty.append(self)
            self._pending.append(text_frame(frame))
        else:
            self._write(text_frame(frame))

    def flush(self) -> None:
        pending = self._pending
        if not pending or self._closed:
            pending.clear()
            return
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        pending.clear()
        self._write(data)

    def _write(self, data: bytes) -> None:
        raw = self._raw
        if raw.is_closing():
            # The peer is gone (its read loop tears the session down soon). uvloop raises
            # RuntimeError on a write to a closed transport, and this runs inside the hub's
            # fan-out: it would drop the pub/sub link and the other sockets' frames.
            self._closed = True
            return
        raw.write(data)
        if raw.get_write_buffer_size() > self._limit:
            self._closed = True
            self._on_overflow()

    def position(self, channel: str, epoch: str, offset: int) -> None:
        """WebSocket clients track their own positions."""

    def forget(self, channel: str) -> None:
        """Nothing kept per channel."""

    async def close(self, code: CloseCode, reason: str) -> None:
        self._closed = True
        await close_ws(self._ws, self._raw, code, reason, within=self._close_timeout)


class QueuedTransport:
    """permessage-deflate: frames queue (bounded in bytes) for one writer task."""

    kind = "ws"

    def __init__(
        self, ws: web.WebSocketResponse, raw: asyncio.Transport, limit: int, close_timeout: float
    ) -> None:
        self._ws = ws
        self._raw = raw
        self._limit = limit
        self._close_timeout = close_timeout
        self._queue: deque[bytes] = deque()
        self._size = 0
        self._wakeup = asyncio.Event()
        self._closed = False
        self._on_overflow: Callable[[], None] = _nothing

    def bind(self, on_overflow: Callable[[], None]) -> None:
        self._on_overflow = on_overflow

    def deliver(self, message: Message) -> None:
        self.send(message.frame)

    def send(self, frame: bytes) -> None:
        if self._closed:
            return
        self._queue.append(frame)
        self._size += len(frame)
        self._wakeup.set()
        if self._size + self._raw.get_write_buffer_size() > self._limit:
            self._closed = True
            self._queue.clear()
            self._on_overflow()

    def position(self, channel: str, epoch: str, offset: int) -> None:
        """WebSocket clients track their own positions."""

    def forget(self, channel: str) -> None:
        """Nothing kept per channel."""

    async def run(self) -> None:
        """The writer: send what is queued, in order, until closed or the peer is gone."""
        try:
            while not self._closed:
                await self._wakeup.wait()
                self._wakeup.clear()
                while self._queue and not self._closed:
                    frame = self._queue.popleft()
                    self._size -= len(frame)
                    await self._ws.send_frame(frame, WSMsgType.TEXT)
        except ConnectionError:
            self._closed = True  # the read loop sees the connection end and tears down

    async def close(self, code: CloseCode, reason: str) -> None:
        self._closed = True
        self._queue.clear()
        self._wakeup.set()
        await close_ws(self._ws, self._raw, code, reason, within=self._close_timeout)


async def close_ws(
    ws: web.WebSocketResponse, raw: asyncio.Transport, code: CloseCode, reason: str, within: float
) -> None:
    """Close handshake bounded by ``within`` seconds; a peer that never reads gets aborted."""
    try:
        async with asyncio.timeout(within):
            await ws.close(code=int(code), message=reason.encode())
    except (TimeoutError, ConnectionError):
        pass
    finally:
        # A stalled peer keeps the write buffer full forever: do not wait for it.
        if raw.get_write_buffer_size() > 0 or not raw.is_closing():
            raw.abort()


async def websocket_handler(request: web.Request) -> web.StreamResponse:
    services = request.app[SERVICES]
    settings = services.settings
    claims = await admit(request, services)
    ws = web.WebSocketResponse(
        protocols=(SUBPROTOCOL,),
        compress=settings.ws_compression,
        max_msg_size=settings.max_frame_bytes,
        heartbeat=settings.ws_heartbeat,
        timeout=settings.close_timeout,
    )
    await ws.prepare(request)
    raw = request.transport
    if raw is None:  # the client left during the upgrade
        return ws
    limit, close_timeout = settings.send_queue_bytes, settings.close_timeout
    transport: DirectTransport | QueuedTransport
    if ws.compress:
        transport = QueuedTransport(ws, raw, limit, close_timeout)
    else:
        transport = DirectTransport(ws, raw, limit, close_timeout, services.hub.batch)
    session = Session(services, transport, claims)
    services.sessions.add(session)
    try:
        if isinstance(transport, QueuedTransport):
            async with asyncio.TaskGroup() as tasks:
                writer = tasks.create_task(transport.run())
                await read_loop(ws, session)
                writer.cancel()
        else:
            await read_loop(ws, session)
    finally:
        session.teardown()
        services.sessions.remove(session)
    return ws


async def read_loop(ws: web.WebSocketResponse, session: Session) -> None:
    """Hand each client frame to the session until the connection closes."""
    with contextlib.suppress(ConnectionError):
        async for msg in ws:
            if msg.type is WSMsgType.TEXT:
                await session.handle(msg.data)
            elif msg.type is WSMsgType.BINARY:
                session.reply_error(ErrorCode.BAD_REQUEST, "frames must be JSON text", None)
            elif msg.type is WSMsgType.ERROR and getattr(msg.data, "code", None) == 1009:
                # aiohttp already closed with 1009 (max_msg_size); count the breach.
                session.services.metrics.limit_breaches.labels("frame_size").inc()
