"""The pub/sub link: messages handed over synchronously, SUBSCRIBEs confirmed one by one."""

from __future__ import annotations

import asyncio

from gateway.pubsub import LinkClosedError, PubSubLink
from gateway.resp import encode_command


class FakeTransport:
    def __init__(self) -> None:
        self.written = bytearray()
        self.closing = False

    def write(self, data: bytes) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.closing

    def abort(self) -> None:
        self.closing = True


def push(*items: bytes | int) -> bytes:
    return encode_command(*items).replace(b"$1\r\n1\r\n", b":1\r\n")


async def test_each_subscribe_is_confirmed_by_its_own_reply() -> None:
    """SUBSCRIBE, UNSUBSCRIBE, SUBSCRIBE: the second future waits for the second reply."""
    got: list[tuple[bytes, bytes]] = []
    link = PubSubLink(lambda c, p: got.append((c, p)))
    link.connection_made(FakeTransport())  # type: ignore[arg-type]
    (first,) = link.subscribe([b"x"])
    link.unsubscribe([b"x"])
    (second,) = link.subscribe([b"x"])
    link.data_received(push(b"subscribe", b"x", 1))
    assert first.done()
    assert not second.done()
    link.data_received(push(b"unsubscribe", b"x", 0) + push(b"subscribe", b"x", 1))
    assert second.done()
    link.data_received(push(b"message", b"x", b"1:e:{}"))
    assert got == [(b"x", b"1:e:{}")]


async def test_a_lost_connection_fails_what_waits_and_resolves_closed() -> None:
    link = PubSubLink(lambda c, p: None)
    link.connection_made(FakeTransport())  # type: ignore[arg-type]
    pending = link.subscribe([b"a", b"b"])
    link.connection_lost(ConnectionResetError("reset"))
    assert all(isinstance(f.exception(), LinkClosedError) for f in pending)
    assert link.closed.done()
    await asyncio.sleep(0)
