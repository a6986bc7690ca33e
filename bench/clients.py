"""One load-generator connection per protocol: pgcast ``/ws``, Socket.IO (EIO 4), raw ceiling.

A connection is an ``asyncio.Protocol`` that upgrades by hand, subscribes to
its one channel, and then only does what a measurement needs per message:
find the event's sequence number (``bseq``) and, on sampled connections, its
timestamp (``bts``). Receipt bookkeeping is a per-connection bitmap of seen
sequence numbers, so reordering is allowed and duplicates are exact.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, cast

import orjson

from bench import wsframes as wf

if TYPE_CHECKING:
    from bench.loadgen import LoadGen


class BenchConnection(asyncio.Protocol):
    """Shared part: handshake, frame split, receipt bookkeeping."""

    message_prefix = b'{"type":"message"'

    def __init__(self, gen: LoadGen, index: int, channel: str, host: str, path: str) -> None:
        self.gen, self.index, self.channel = gen, index, channel
        self.key = wf.new_key()
        self.request = wf.upgrade_request(
            host, path, self.key, headers=gen.headers_for(index), deflate=gen.config.deflate
        )
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.upgraded = False
        self.inflate: Any = None
        self.subscribed = False
        self.done = False  # subscribed or failed: counted once towards readiness
        self.sampled = index % gen.config.sample_every == 0
        self.seen = bytearray(64)
        self.unique = 0
        self.dups = 0
        self.close_code: int | None = None

    # -- transport callbacks -------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.close_code is None:
            self.close_code = 1006
        self.gen.on_closed(self)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            try:
                deflate = wf.parse_upgrade_response(bytes(buf[:end]), self.key)
            except wf.HandshakeError as exc:
                self.gen.on_failed(self, str(exc))
                self.abort()
                return
            del buf[: end + 4]
            self.upgraded = True
            if deflate:
                self.inflate = wf.inflater()
            self.on_open()
        self.gen.deliveries += self.consume(buf)

    def consume(self, buf: bytearray) -> int:
        """Walk the complete frames in ``buf``; returns the events among them.

        The hot path: an event frame is recognised and booked without copying
        its payload (finds on the bytearray, one ``int()``); everything else
        takes the general path through :meth:`on_frame`.
        """
        pos, end, events, now = 0, len(buf), 0, 0.0
        prefix, inflating = self.message_prefix, self.inflate is not None
        while end - pos >= 2:
            length, head = buf[pos + 1] & 0x7F, 2
            if length == 126:
                if end - pos < 4:
                    break
                length, head = (buf[pos + 2] << 8) | buf[pos + 3], 4
            elif length == 127:
                if end - pos < 10:
                    break
                length, head = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
            start = pos + head
            stop = start + length
            if stop > end:
                break
            if buf[pos] == 0x81 and not inflating and buf.startswith(prefix, start):
                i = buf.find(b'"bseq":', start, stop) + 7
                j = buf.find(b",", i, stop)
                seq = int(buf[i : j if j > 0 else buf.find(b"}", i, stop)])
                if not now:
                    now = time.time()
                self.book(seq, buf, start, stop, now)
                events += 1
            else:
                events += self.on_frame(
                    buf[pos] & 0x0F, bool(buf[pos] & 0x40), bytes(buf[start:stop])
                )
            pos = stop
        if pos:
            del buf[:pos]
        return events

    def on_frame(self, opcode: int, rsv1: bool, payload: bytes) -> int:
        if opcode == wf.OP_TEXT or opcode == wf.OP_BINARY:
            text = wf.inflate(self.inflate, payload) if rsv1 else payload
            if text.startswith(self.message_prefix):
                self.on_event(text)
                return 1
            self.on_text(text)
        elif opcode == wf.OP_CLOSE:
            self.close_code = wf.close_code(payload)
        elif opcode == wf.OP_PING:
            self.send(payload, wf.OP_PONG)
        return 0

    def book(self, seq: int, buf: bytes | bytearray, start: int, stop: int, now: float) -> None:
        """Mark ``seq`` seen (a repeat is a duplicate); sample latency if chosen."""
        byte, bit = seq >> 3, 1 << (seq & 7)
        seen = self.seen
        if byte >= len(seen):
            seen.extend(bytes(byte - len(seen) + 256))
        if seen[byte] & bit:
            self.dups += 1
        else:
            seen[byte] |= bit
            self.unique += 1
        if self.sampled:
            i = buf.find(b'"bts":', start, stop) + 6
            j = buf.find(b",", i, stop)
            self.gen.record(self, seq, float(buf[i : j if j > 0 else buf.find(b"}", i, stop)]), now)

    # -- helpers ---------------------------------------------------------------
    def send(self, payload: bytes, opcode: int = wf.OP_TEXT) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(wf.client_frame(payload, opcode))

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def mark_subscribed(self) -> None:
        self.subscribed = True
        self.gen.on_subscribed(self)

    def on_event(self, payload: bytes) -> None:
        """One event on the general path (compressed frames)."""
        i = payload.find(b'"bseq":') + 7
        j = payload.find(b",", i)
        self.book(
            int(payload[i : j if j > 0 else payload.find(b"}", i)]),
            payload,
            0,
            len(payload),
            time.time(),
        )

    # -- per protocol ----------------------------------------------------------
    def on_open(self) -> None:
        raise NotImplementedError

    def on_text(self, payload: bytes) -> None:
        raise NotImplementedError


class PgcastConnection(BenchConnection):
    """pgcast ``/ws``: token in the Authorization header, one ``subscribe``."""

    def on_open(self) -> None:
        self.send(orjson.dumps({"type": "subscribe", "channel": self.channel, "id": 1}))

    def on_text(self, payload: bytes) -> None:
        frame = orjson.loads(payload)
        kind = frame.get("type")
        if kind == "subscribed" and not self.subscribed:
            self.mark_subscribed()
        elif kind == "subscribed":
            self.gen.resyncs += 1  # recovered:false under a live subscription
        elif kind == "error":
            self.gen.on_failed(self, f"error frame: {frame}")


class RawConnection(PgcastConnection):
    """The ceiling program: the channel rides in the URL, subscribed once upgraded."""

    def on_open(self) -> None:
        self.mark_subscribed()


class SocketIOConnection(BenchConnection):
    """Socket.IO over a direct Engine.IO 4 WebSocket: connect, ``subscribe`` with ack."""

    message_prefix = b'42["message",'

    def on_open(self) -> None:
        """Nothing yet: the server speaks first with the Engine.IO open packet."""

    def on_text(self, payload: bytes) -> None:
        if payload == b"2":
            self.send(b"3")  # Engine.IO ping -> pong, or the server drops us
        elif payload.startswith(b"0{"):
            self.send(b"40")
        elif payload.startswith(b"40"):
            self.send(b'421["subscribe",' + orjson.dumps(self.channel) + b"]")
        elif payload.startswith(b"431"):
            if b"true" in payload:
                self.mark_subscribed()
            else:
                self.gen.on_failed(self, f"subscribe refused: {payload[:200]!r}")
        elif payload.startswith(b"44"):
            self.gen.on_failed(self, f"connect refused: {payload[:200]!r}")


PROTOCOLS: dict[str, type[BenchConnection]] = {
    "pgcast": PgcastConnection,
    "raw": RawConnection,
    "sio": SocketIOConnection,
}
