"""The publish script on a real Redis: frames, offsets, epochs, fencing, de-duplication."""

from __future__ import annotations

import asyncio

import orjson
import redis.asyncio as aioredis

from listener.publisher import Event, Publisher
from pgcast.keys import FENCE_KEY, Layout, decode_live, message_frame, offset_of_stream_id

SINGLE = Layout()  # the key names of one Redis (and Sentinel)


async def _next_message(pubsub: aioredis.client.PubSub) -> bytes:
    async with asyncio.timeout(5.0):
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5.0)
            if message is not None:
                data: bytes = message["data"]
                return data


async def test_frame_bytes_equal_message_frame_and_live_payload_decodes(
    redis_client: aioredis.Redis,
) -> None:
    """The script's stream entry and pub/sub payload carry exactly message_frame's bytes."""
    channel = 'user:é "quoted" \\ ü'
    data = orjson.dumps({"text": "héllo", "n": [1, 2.5, None]})
    keys = SINGLE.channel_keys(channel)
    pubsub = redis_client.pubsub()
    await pubsub.subscribe(keys.live)
    try:
        results = await Publisher(redis_client).publish(1, [Event(channel, data, 7)])
        assert results[0].status == "published"
        assert results[0].offset == 1
        epoch = results[0].epoch
        assert epoch
        expected = message_frame(channel, 1, data)
        entries = await redis_client.xrange(keys.history)
        assert [(offset_of_stream_id(i), f[b"f"]) for i, f in entries] == [(1, expected)]
        live = decode_live(await _next_message(pubsub))
        assert (live.offset, live.epoch, live.frame) == (1, epoch, expected)
        assert orjson.loads(expected)["data"] == orjson.loads(data)
        meta = await redis_client.hgetall(keys.meta)
        # 'l': the leader epoch that made this epoch (a renewal happens once per leader)
        assert meta == {b"e": epoch.encode(), b"s": b"1", b"l": b"1"}
    finally:
        await pubsub.aclose()


async def test_offsets_are_contiguous_per_channel_and_epoch_is_stable(
    redis_client: aioredis.Redis,
) -> None:
    """Each channel numbers its own messages 1, 2, 3 ... under one epoch."""
    publisher = Publisher(redis_client)
    events = [Event(f"c{i % 2}", b"{}", i) for i in range(1, 7)]
    results = await publisher.publish(1, events[:3])
    results += await publisher.publish(1, events[3:])
    assert [r.offset for r in results] == [1, 1, 2, 2, 3, 3]
    assert len({r.epoch for r in results[0::2]}) == 1
    assert results[0].epoch != results[1].epoch


async def test_republished_outbox_id_is_a_duplicate(redis_client: aioredis.Redis) -> None:
    """A re-published outbox id is skipped: no second stream entry, no second offset."""
    publisher = Publisher(redis_client)
    first = await publisher.publish(1, [Event("c", b"1", 10), Event("c", b"2", 11)])
    again = await publisher.publish(2, [Event("c", b"1", 10), Event("c", b"3", 12)])
    assert [r.status for r in first] == ["published", "published"]
    assert [r.status for r in again] == ["duplicate", "published"]
    assert again[1].offset == 3
    assert await redis_client.xlen(SINGLE.channel_keys("c").history) == 3


def _wal(lsn: int, n: int) -> str:
    """A WAL event's id as listener/wal_capture.py makes it."""
    return f"{lsn:020d}.{n:010d}"


async def test_wal_positions_are_published_once_however_long_the_replay(
    redis_client: aioredis.Redis,
) -> None:
    """A successor decodes the slot again from its confirmed position: every WAL event up
    to the channel's mark is a duplicate, 5,000 of them as well as one (no ids zset), and
    an outbox id in the same channel still goes by the zset."""
    publisher = Publisher(redis_client, history_size=10_000)
    first = [Event("w", b"%d" % i, _wal(9_000_000_000 + i // 10, i % 10)) for i in range(5000)]
    assert {r.status for r in await publisher.publish(1, first)} == {"published"}
    replay = [*first, Event("w", b"5000", _wal(9_000_000_500, 0)), Event("w", b"o", 77)]
    results = await publisher.publish(2, replay)
    assert [r.status for r in results] == ["duplicate"] * 5000 + ["published", "published"]
    assert results[-1].offset == 5002
    again = await publisher.publish(2, [Event("w", b"o", 77)])
    assert again[0].status == "duplicate"
    keys = SINGLE.channel_keys("w")
    assert await redis_client.zcard(keys.ids) == 1  # only the outbox id
    assert await redis_client.hget(keys.meta, "w") == _wal(9_000_000_500, 0).encode()


async def test_older_leader_epoch_is_fenced(redis_client: aioredis.Redis) -> None:
    """After a newer leader claimed the fence, an older one publishes nothing."""
    publisher = Publisher(redis_client)
    assert await publisher.claim_fence(5)
    assert not await publisher.claim_fence(4)
    results = await publisher.publish(4, [Event("c", b"1", 1)])
    assert [r.status for r in results] == ["fenced"]
    assert not await redis_client.exists(SINGLE.channel_keys("c").history)
    assert (await publisher.publish(5, [Event("c", b"1", 1)]))[0].status == "published"


async def test_publish_restores_a_lost_fence(redis_client: aioredis.Redis) -> None:
    """A publish raises the fence itself, so a Redis that lost it still fences older leaders."""
    publisher = Publisher(redis_client)
    await publisher.publish(3, [Event("c", b"1", 1)])
    assert await redis_client.get(FENCE_KEY) == b"3"
    assert (await publisher.publish(2, [Event("c", b"2", 2)]))[0].status == "fenced"


async def test_script_reloaded_after_script_flush(redis_client: aioredis.Redis) -> None:
    """NOSCRIPT (Redis restarted or flushed its scripts) is handled by loading the script."""
    publisher = Publisher(redis_client)
    await publisher.publish(1, [Event("c", b"1", 1)])
    await redis_client.script_flush()
    assert (await publisher.publish(1, [Event("c", b"2", 2)]))[0].offset == 2
    await redis_client.script_flush()
    assert await publisher.claim_fence(2)


async def test_history_is_trimmed_and_expires(redis_client: aioredis.Redis) -> None:
    """History keeps about history_size entries and every key carries the TTL."""
    publisher = Publisher(redis_client, history_size=10, history_ttl=60)
    await publisher.publish(1, [Event("c", b"1", i) for i in range(1, 501)])
    keys = SINGLE.channel_keys("c")
    assert 10 <= await redis_client.xlen(keys.history) < 500
    for key in (keys.meta, keys.history, keys.ids):
        assert 0 < await redis_client.ttl(key) <= 60
    # The ids set keeps at least 1000 (or the batch size) ids for de-duplication.
    assert await redis_client.zcard(keys.ids) == 500


async def test_new_history_after_meta_vanished_drops_stale_entries(
    redis_client: aioredis.Redis,
) -> None:
    """Meta gone (expired or evicted) means a new epoch and a fresh stream from offset 1."""
    publisher = Publisher(redis_client)
    old = await publisher.publish(1, [Event("c", b"1", 1), Event("c", b"2", 2)])
    keys = SINGLE.channel_keys("c")
    await redis_client.delete(keys.meta)
    new = await publisher.publish(1, [Event("c", b"3", 3)])
    assert new[0].offset == 1
    assert new[0].epoch != old[0].epoch
    assert await redis_client.xlen(keys.history) == 1


async def test_event_without_outbox_id_is_never_deduplicated(redis_client: aioredis.Redis) -> None:
    """Relayed NOTIFY events (no outbox id) are published every time."""
    publisher = Publisher(redis_client)
    results = await publisher.publish(1, [Event("c", b"1"), Event("c", b"1")])
    assert [r.offset for r in results] == [1, 2]


async def test_interleaved_channels_in_long_batches_map_results_back_in_order(
    redis_client: aioredis.Redis,
) -> None:
    """Runs are per channel and capped: results still come back one per event, in the
    caller's order, offsets contiguous per channel, re-published ids skipped."""
    publisher = Publisher(redis_client)
    events = [Event(f"i{n % 2}", str(n).encode(), n) for n in range(1, 251)]
    results = await publisher.publish(1, events)
    assert [r.offset for r in results] == [(n + 1) // 2 for n in range(1, 251)]
    again = await publisher.publish(
        1, [Event(f"i{n % 2}", str(n).encode(), n) for n in (249, 251, 250, 252)]
    )
    assert [(r.status, r.offset) for r in again] == [
        ("duplicate", None),
        ("published", 126),
        ("duplicate", None),
        ("published", 126),
    ]
    history = await redis_client.xrange(SINGLE.channel_keys("i1").history)
    assert [orjson.loads(f[b"f"])["data"] for _, f in history][-3:] == [247, 249, 251]
