"""The publish script's watermark check and WAIT on a real Redis: Redis that went back in
time never continues an epoch whose offsets clients may hold."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from listener.publisher import Event, Mark, Publisher, ReplicasBehindError
from pgcast.keys import Layout

SINGLE = Layout()  # the key names of one Redis (and Sentinel)


def _events(channel: str, first: int, count: int) -> list[Event]:
    return [Event(channel, b"%d" % n, n) for n in range(first, first + count)]


async def test_redis_behind_its_watermark_starts_a_new_epoch(
    redis_client: aioredis.Redis,
) -> None:
    """A channel whose top fell below the watermark (an older snapshot) gets a new epoch,
    numbered from 1, and the publisher hears what Redis had gone back to."""
    heard: list[tuple[str, str, Mark]] = []
    publisher = Publisher(redis_client, on_behind=lambda *args: heard.append(args))
    first = await publisher.publish(1, _events("feed", 1, 5))
    epoch = first[-1].epoch
    assert publisher.mark("feed") == Mark(epoch or "", 5)
    # Redis goes back in time: offsets 3-5 are gone, the counter says 2.
    keys = SINGLE.channel_keys("feed")
    await redis_client.hset(keys.meta, "s", 2)
    await redis_client.xtrim(keys.history, minid="3-0")
    fresh = Publisher(redis_client, on_behind=lambda *args: heard.append(args))
    again = await fresh.publish(1, _events("feed", 6, 2), {"feed": Mark(epoch or "", 5)})
    assert [r.offset for r in again] == [1, 2]
    assert {r.epoch for r in again} != {epoch}
    assert heard == [("feed", f"{epoch}:2", Mark(epoch or "", 5))]
    assert await redis_client.xlen(keys.history) == 2  # the old epoch's entries are gone


async def test_another_epoch_than_the_watermark_starts_a_new_epoch(
    redis_client: aioredis.Redis,
) -> None:
    """Redis restored to a history of another epoch cannot be continued either."""
    publisher = Publisher(redis_client)
    first = await publisher.publish(1, _events("feed", 1, 3))
    results = await Publisher(redis_client).publish(
        1, _events("feed", 4, 1), {"feed": Mark("not-" + (first[0].epoch or ""), 1)}
    )
    assert results[0].offset == 1
    assert results[0].epoch != first[0].epoch


async def test_an_empty_epoch_a_reader_made_after_a_loss_is_adopted(
    redis_client: aioredis.Redis,
) -> None:
    """After Redis lost the channel a gateway's subscribe made a new epoch with no message:
    nobody holds an offset of it, so the leader publishes into it (clients are told once)."""
    keys = SINGLE.channel_keys("feed")
    await redis_client.hset(keys.meta, mapping={"e": "fresh", "s": 0})
    results = await Publisher(redis_client).publish(
        1, _events("feed", 1, 2), {"feed": Mark("old", 9)}
    )
    assert [(r.epoch, r.offset) for r in results] == [("fresh", 1), ("fresh", 2)]


async def test_redis_at_or_ahead_of_its_watermark_continues_the_epoch(
    redis_client: aioredis.Redis,
) -> None:
    """The normal case: Redis has at least what Postgres recorded (a crashed leader's batch
    may be ahead of it), so numbering goes on in the same epoch."""
    publisher = Publisher(redis_client)
    first = await publisher.publish(1, _events("feed", 1, 4))
    epoch = first[0].epoch or ""
    again = await Publisher(redis_client).publish(
        1, _events("feed", 5, 1), {"feed": Mark(epoch, 2)}
    )
    assert (again[0].epoch, again[0].offset) == (epoch, 5)


async def test_own_marks_override_an_older_watermark(redis_client: aioredis.Redis) -> None:
    """Within one leadership the publisher's own knowledge wins over Postgres' (one batch
    older), and a rollback it saw itself is caught even without a watermark."""
    publisher = Publisher(redis_client)
    first = await publisher.publish(1, _events("feed", 1, 4))
    epoch = first[0].epoch or ""
    await redis_client.hset(SINGLE.channel_keys("feed").meta, "s", 3)  # lost offset 4
    again = await publisher.publish(1, _events("feed", 5, 1), {"feed": Mark(epoch, 2)})
    assert again[0].epoch != epoch
    assert again[0].offset == 1


async def test_wait_without_replicas_stalls_or_degrades_as_configured(
    redis_client: aioredis.Redis,
) -> None:
    """PGCAST_REDIS_MIN_REPLICAS with no replica: 'stall' raises (rows kept, the publish is
    retried as a duplicate), 'degrade' goes on and reports it."""
    reports: list[tuple[int, bool, bool]] = []
    stall = Publisher(
        redis_client,
        min_replicas=1,
        replica_timeout=0.05,
        on_replicas=lambda *args: reports.append(args),
    )
    with pytest.raises(ReplicasBehindError, match="0 of 1"):
        await stall.publish(1, _events("feed", 1, 2))
    assert stall.mark("feed") is None  # not acknowledged: not a watermark
    assert reports == [(0, True, False)]
    degrade = Publisher(
        redis_client,
        min_replicas=1,
        replica_timeout=0.05,
        replica_policy="degrade",
        on_replicas=lambda *args: reports.append(args),
    )
    results = await degrade.publish(1, _events("feed", 1, 3))
    assert [r.status for r in results] == ["duplicate", "duplicate", "published"]
    assert reports[-1] == (0, True, True)


async def test_renewal_starts_one_new_epoch_per_leader(redis_client: aioredis.Redis) -> None:
    """A renewed channel gets a new epoch once per leader: a retried batch (its first try's
    reply lost) continues it, and a later leader's renewal starts another."""
    heard: list[tuple[str, str, Mark | None]] = []
    first = await Publisher(redis_client).publish(1, _events("feed", 1, 3))
    renewing = Publisher(redis_client, on_behind=lambda *args: heard.append(args))
    renewed = await renewing.publish(2, _events("feed", 4, 1), renew={"feed"})
    assert renewed[0].epoch != first[0].epoch
    assert renewed[0].offset == 1
    assert heard == [("feed", f"{first[0].epoch}:3", None)]
    retried = await Publisher(redis_client).publish(2, _events("feed", 4, 2), renew={"feed"})
    assert [(r.status, r.epoch, r.offset) for r in retried] == [
        ("duplicate", renewed[0].epoch, None),
        ("published", renewed[0].epoch, 2),
    ]
    later = await Publisher(redis_client).publish(3, _events("feed", 6, 1), renew={"feed"})
    assert later[0].epoch not in (first[0].epoch, renewed[0].epoch)


async def test_identity_names_the_redis_process_and_its_history(
    redis_client: aioredis.Redis,
) -> None:
    """The identity is the run id and the replication id: stable while Redis runs."""
    publisher = Publisher(redis_client)
    identity = await publisher.identity()
    assert identity is not None
    assert identity == await publisher.identity()
    run_id, replid = identity.split("/")
    assert len(run_id) == len(replid) == 40
