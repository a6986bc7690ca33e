"""``GET /sse?channel=c[&channel=d]``: Server-Sent Events with ``Last-Event-ID`` resume.

Same admission and authorization as ``/ws``. Every event's ``id`` encodes the
position (epoch, offset) of every channel of the stream, so the browser's
EventSource, reconnecting with ``Last-Event-ID``, resumes them all with no loss.
Events queue in a byte-bounded buffer drained by the handler itself, which also
writes keep-alive comments; a close is announced by a ``{"type":"close"}`` event.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import orjson
from aiohttp import hdrs, web

from gateway.admission import admit, refuse
from gateway.codes import CloseCode
from gateway.message import Message
from gateway.protocol import Position, RequestError, decode_event_id, encode_event_id
from gateway.services import SERVICES, Services
from gateway.session import Session
from pgcast.channels import channel_error

log = logging.getLogger(__name__)

RETRY_MS = 2000


class SseTransport:
    kind = "sse"

    def __init__(
        self,
        resp: web.StreamResponse,
        raw: asyncio.Transport,
        limit: int,
        keepalive: float,
        close_timeout: float,
    ) -> None:
        self._resp = resp
        self._raw = raw
        self._limit = limit
        self._keepalive = keepalive
        self._close_timeout = close_timeout
        self._queue: list[bytes] = []
        self._size = 0
        self._wakeup = asyncio.Event()
        self._positions: dict[str, Position] = {}
        self._closed = False
        self._finished = asyncio.Event()
        self._on_overflow: Callable[[], None] = lambda: None

    def bind(self, on_overflow: Callable[[], None]) -> None:
        self._on_overflow = on_overflow

    def _event_id(self) -> bytes:
        return b"id: " + encode_event_id(self._positions).encode() + b"\n"

    def _put(self, event: bytes) -> None:
        self._queue.append(event)
        self._size += len(event)
        self._wakeup.set()
        if self._size + self._raw.get_write_buffer_size() > self._limit:
            self._closed = True
            self._queue.clear()
            self._on_overflow()

    def deliver(self, message: Message) -> None:
        if self._closed:
            return
        self._positions[message.channel] = (message.epoch, message.offset)
        self._put(self._event_id() + message.sse_data())

    def send(self, frame: bytes) -> None:
        if not self._closed:
            self._put(self._event_id() + b"data: " + frame.replace(b"\n", b" ") + b"\n\n")

    def position(self, channel: str, epoch: str, offset: int) -> None:
        self._positions[channel] = (epoch, offset)

    def forget(self, channel: str) -> None:
        self._positions.pop(channel, None)

    async def run(self) -> None:
        """Write queued events (coalesced) and keep-alives until closed or the client left."""
        try:
            await self._resp.write(b"retry: %d\n\n" % RETRY_MS)
            while not self._raw.is_closing():
                try:
                    async with asyncio.timeout(self._keepalive):
                        await self._wakeup.wait()
                except TimeoutError:
                    await self._resp.write(b": keepalive\n\n")
                    continue
                self._wakeup.clear()
                chunk, self._queue, self._size = b"".join(self._queue), [], 0
                if chunk:
                    await self._resp.write(chunk)
                if self._closed:
                    return
        except ConnectionError:
            self._closed = True
        finally:
            self._finished.set()

    async def close(self, code: CloseCode, reason: str) -> None:
        """Announce the close as a last event, let the writer flush it, then end (bounded)."""
        self._closed = True
        frame = orjson.dumps({"type": "close", "code": int(code), "reason": reason})
        self._queue.append(b"data: " + frame + b"\n\n")
        self._wakeup.set()
        try:
            async with asyncio.timeout(self._close_timeout):
                await self._finished.wait()
        except TimeoutError:
            self._raw.abort()


def _requested_channels(request: web.Request, services: Services) -> list[str]:
    channels = list(dict.fromkeys(request.query.getall("channel", [])))
    if not channels:
        raise refuse(400, "bad_request", "name at least one ?channel=")
    if len(channels) > services.settings.max_subscriptions:
        services.metrics.limit_breaches.labels("subscriptions").inc()
        raise refuse(400, "too_many_subscriptions", "too many channels for one stream")
    for channel in channels:
        problem = channel_error(channel)
        if problem is not None:
            raise refuse(400, "bad_request", problem)
    return channels


async def _open_stream(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(
        headers={
            hdrs.CONTENT_TYPE: "text/event-stream",
            hdrs.CACHE_CONTROL: "no-cache",
            "X-Accel-Buffering": "no",  # nginx: stream, do not buffer
        }
    )
    await resp.prepare(request)
    return resp


async def sse_handler(request: web.Request) -> web.StreamResponse:
    services = request.app[SERVICES]
    settings = services.settings
    claims = await admit(request, services)
    channels = _requested_channels(request, services)
    for channel in channels:
        if not claims.allows(channel):
            raise refuse(403, "forbidden", f"token does not grant {channel}")
    positions = decode_event_id(
        request.headers.get("Last-Event-ID") or request.query.get("lastEventId")
    )
    resp = await _open_stream(request)
    raw = request.transport
    if raw is None:
        return resp
    transport = SseTransport(
        resp, raw, settings.send_queue_bytes, settings.sse_keepalive, settings.close_timeout
    )
    session = Session(services, transport, claims)
    services.sessions.add(session)
    try:
        for channel in channels:
            position = positions.get(channel)
            try:
                if position is None:
                    await session.subscribe(channel, None, None)
                else:
                    await session.subscribe(channel, position[1], position[0])
            except RequestError as exc:
                session.reply_error(exc.code, exc.message, None)
                session.close(CloseCode.TRY_AGAIN_LATER, exc.message)
                break
        await transport.run()
    finally:
        session.teardown()
        services.sessions.remove(session)
    return resp
