"""ControlFeed's order of work: a control heard is applied only after the hub's barrier
(the events published before it, on other nodes' links, have been read), in order."""

from __future__ import annotations

import asyncio
import contextlib

import orjson

from gateway.control import Control, ControlFeed, Disconnect
from pgcast.keys import Layout, encode_control


def _live(entry: str, sub: str) -> bytes:
    body = orjson.dumps({"op": "disconnect", "sub": sub, "reason": "banned"})
    return encode_control(entry, body)


class Applied(list[Control]):
    """The controls applied, with an event per application."""

    def __init__(self) -> None:
        super().__init__()
        self.more = asyncio.Event()

    def __call__(self, control: Control) -> None:
        self.append(control)
        self.more.set()

    async def until(self, count: int) -> None:
        async with asyncio.timeout(2):
            while len(self) < count:
                self.more.clear()
                await self.more.wait()


async def test_controls_wait_for_the_barrier_and_keep_their_order() -> None:
    applied = Applied()
    feed = ControlFeed(None, applied, Layout())  # type: ignore[arg-type]
    feed.last = (0, 0)
    feed._held = None  # synced: live controls are taken as they come
    gate, barriers = asyncio.Event(), []

    async def barrier() -> None:
        barriers.append(len(applied))
        await gate.wait()

    feed.barrier = barrier
    runner = asyncio.create_task(feed.run())
    try:
        feed.on_live(_live("1-0", "42"))
        feed.on_live(_live("2-0", "43"))
        feed.on_live(_live("2-0", "43"))  # heard again (stream, then live): once
        await asyncio.sleep(0.01)
        assert applied == []  # held by the barrier
        gate.set()
        await applied.until(2)
        assert applied == [Disconnect("42", "banned"), Disconnect("43", "banned")]
        assert barriers == [0]  # one barrier for what was heard before it
        assert feed.applied == 2
        feed.on_live(_live("3-0", "44"))
        await applied.until(3)
        assert barriers == [0, 2]
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner


async def test_without_a_barrier_a_control_is_applied_as_it_comes() -> None:
    applied: list[Control] = []
    feed = ControlFeed(None, applied.append, Layout())  # type: ignore[arg-type]
    feed.last = (0, 0)
    feed._held = None
    feed.on_live(_live("1-0", "42"))
    assert applied == [Disconnect("42", "banned")]
