"""The Python client's subscription queue: order, gaps in stream order, ending, bounds."""

from __future__ import annotations

import asyncio

import pytest

from pgcast_client import Client, Gap, Message, SubscriptionError
from pgcast_client.position import Position
from pgcast_client.subscription import Subscription


def make_sub(queue_size: int = 10, on_gap: object = None) -> tuple[Client, Subscription]:
    client = Client("ws://127.0.0.1:9/ws", token="t")
    sub = client.channel("jobs", queue_size=queue_size, on_gap=on_gap)  # type: ignore[arg-type]
    return client, sub


async def test_messages_come_out_in_order_and_gaps_call_the_handler_in_place() -> None:
    """A gap is seen between the messages around it, through on_gap (async allowed)."""
    seen: list[str] = []

    async def on_gap(gap: Gap) -> None:
        seen.append(f"gap@{gap.epoch}")

    _, sub = make_sub(on_gap=on_gap)
    await sub.put(Message("jobs", "1", {"n": 1}))
    await sub.put(Gap("jobs", "e2", "0"))
    await sub.put(Message("jobs", "1", {"n": 2}))
    sub.end()
    async with asyncio.timeout(5):
        async for msg in sub:
            seen.append(f"{msg.offset}:{msg.data['n']}")
    assert seen == ["1:1", "gap@e2", "1:2"]


async def test_end_with_error_raises_after_the_queued_messages() -> None:
    """A refused subscription ends the iteration with SubscriptionError."""
    _, sub = make_sub()
    await sub.put(Message("jobs", "1", None))
    sub.end(SubscriptionError("forbidden", "not allowed"))
    async with asyncio.timeout(5):
        assert (await anext(sub)).offset == "1"
        with pytest.raises(SubscriptionError, match="forbidden"):
            await anext(sub)
        with pytest.raises(SubscriptionError):  # and stays ended
            await anext(sub)


async def test_a_full_queue_makes_the_reader_wait_and_end_still_arrives() -> None:
    """Bounded: put waits while the app is behind; end() on a full queue is not lost."""
    _, sub = make_sub(queue_size=2)
    await sub.put(Message("jobs", "1", None))
    await sub.put(Message("jobs", "2", None))
    blocked = asyncio.ensure_future(sub.put(Message("jobs", "3", None)))
    await asyncio.sleep(0)
    assert not blocked.done()
    assert (await anext(sub)).offset == "1"
    async with asyncio.timeout(5):
        await blocked
    sub.end()
    async with asyncio.timeout(5):
        offsets = [msg.offset async for msg in sub]
    assert offsets == ["2", "3"]


async def test_subscribe_request_carries_the_resume_position() -> None:
    """A channel opened with since/epoch resumes from there on the first connection."""
    client = Client("ws://127.0.0.1:9/ws", token="t")
    sub = client.channel("jobs", since="41", epoch="abc")
    assert sub.request(1) == {
        "type": "subscribe",
        "id": 1,
        "channel": "jobs",
        "since": "41",
        "epoch": "abc",
    }
    assert sub.resumed
    with pytest.raises(ValueError, match="already subscribed"):
        client.channel("jobs")
    await sub.close()
    assert sub.state == "closed"
    fresh = Subscription(client, "other", Position(), 1, None)
    assert "since" not in fresh.request(2)
    await client.close()
