"""Coalesced writes: one write per socket per Redis read, in call order, bound checked."""

from __future__ import annotations

from typing import Any

from gateway.batch import WriteBatch
from gateway.message import Message
from gateway.wire import text_frame
from gateway.ws import DirectTransport


class FakeSocket:
    def __init__(self, stuck: bool = False) -> None:
        self.writes: list[bytes] = []
        self.stuck = stuck
        self.closed = False

    def write(self, data: bytes) -> None:
        if self.closed:
            raise RuntimeError("unable to perform operation on a closed transport")  # uvloop
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def get_write_buffer_size(self) -> int:
        return sum(map(len, self.writes)) if self.stuck else 0


def make(
    batch: WriteBatch, sock: FakeSocket, limit: int = 1 << 20
) -> tuple[DirectTransport, list[str]]:
    events: list[str] = []
    transport = DirectTransport(None, sock, limit, 1.0, batch)  # type: ignore[arg-type]
    transport.bind(lambda: events.append("overflow"))
    return transport, events


def msg(n: int) -> Message:
    return Message("c", n, "E", b'{"n":%d}' % n)


def test_one_write_per_socket_per_read_in_order() -> None:
    batch = WriteBatch()
    a_sock, b_sock = FakeSocket(), FakeSocket()
    a, _ = make(batch, a_sock)
    b, _ = make(batch, b_sock)
    batch.begin()
    a.deliver(msg(1))
    b.deliver(msg(1))
    a.send(b'{"type":"subscribed"}')  # an unsolicited frame keeps its place
    a.deliver(msg(2))
    assert a_sock.writes == []
    assert b_sock.writes == []
    batch.end()
    assert a_sock.writes == [msg(1).wire + text_frame(b'{"type":"subscribed"}') + msg(2).wire]
    assert b_sock.writes == [msg(1).wire]


def test_outside_a_read_frames_go_out_at_once() -> None:
    batch = WriteBatch()
    sock = FakeSocket()
    transport, _ = make(batch, sock)
    transport.send(b"{}")
    transport.deliver(msg(1))
    assert sock.writes == [text_frame(b"{}"), msg(1).wire]


def test_past_the_bound_the_transport_overflows_once_and_goes_quiet() -> None:
    batch = WriteBatch()
    sock = FakeSocket(stuck=True)
    transport, events = make(batch, sock, limit=20)
    batch.begin()
    for n in range(5):
        transport.deliver(msg(n))
    batch.end()
    assert events == ["overflow"]
    written: Any = list(sock.writes)
    transport.deliver(msg(9))
    batch.begin()
    transport.deliver(msg(10))
    batch.end()
    assert sock.writes == written


def test_a_socket_the_peer_closed_is_never_written() -> None:
    """The peer vanished under the transport: it goes quiet, no RuntimeError (uvloop)."""
    batch = WriteBatch()
    sock = FakeSocket()
    transport, events = make(batch, sock)
    sock.closed = True
    transport.deliver(msg(1))
    batch.begin()
    transport.deliver(msg(2))
    batch.end()
    assert sock.writes == []
    assert events == []
