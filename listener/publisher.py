"""Publish events to Redis through ``publish.lua``: fenced, de-duplicated, numbered.

A batch is one pipelined round trip of EVALSHA calls, one per run of events on the
same channel (at most RUN_MAX events each); the script is loaded on
NOSCRIPT and the batch retried once. Knows redis, not asyncpg. Connection errors
propagate: the caller keeps its outbox rows and retries, and the script's
de-duplication makes the retry harmless.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from importlib import resources
from typing import Any, Literal, NamedTuple

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from pgcast.keys import FENCE_KEY, channel_json, channel_keys

PublishStatus = Literal["published", "duplicate", "fenced"]

PUBLISH_SCRIPT = resources.files("listener").joinpath("publish.lua").read_text()

# Raise the fence to ARGV[1] unless a newer leader already raised it past: 1 = ours.
CLAIM_SCRIPT = """
local fence = tonumber(redis.call('GET', KEYS[1]) or '0')
local epoch = tonumber(ARGV[1])
if epoch < fence then return 0 end
if epoch > fence then redis.call('SET', KEYS[1], ARGV[1]) end
return 1
"""
# Events per script call: bounds how long one call holds Redis (about 5 µs an event).
RUN_MAX = 100
PUBLISH_SHA = hashlib.sha1(PUBLISH_SCRIPT.encode()).hexdigest()  # noqa: S324 - Redis' script id
CLAIM_SHA = hashlib.sha1(CLAIM_SCRIPT.encode()).hexdigest()  # noqa: S324 - Redis' script id


# NamedTuples, not frozen dataclasses: one of each is built per event, and a frozen
# dataclass' __init__ (object.__setattr__ per field) costs several times a tuple's.
class Event(NamedTuple):
    """One event to publish: ``data_json`` is already-encoded JSON (the jsonb text)."""

    channel: str
    data_json: bytes
    outbox_id: int | None = None


class PublishResult(NamedTuple):
    status: PublishStatus
    offset: int | None
    epoch: str | None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def parse_result(reply: Sequence[Any], count: int) -> list[PublishResult]:
    """The script's ``{epoch, last offset, statuses}`` reply for ``count`` events."""
    if len(reply) == 2 and _text(reply[1]) == "fenced":
        return [PublishResult("fenced", None, None)] * count
    if len(reply) != 3 or not isinstance(reply[1], int):
        raise ValueError(f"unexpected publish script reply: {reply!r}")
    epoch, statuses = _text(reply[0]), _text(reply[2]) or ""
    if len(statuses) != count or statuses.strip("pd"):
        raise ValueError(f"unexpected publish script reply: {reply!r}")
    offset = reply[1] - statuses.count("p")  # the offset before the first published event
    results = []
    duplicate = PublishResult("duplicate", None, epoch)
    for status in statuses:
        if status == "p":
            offset += 1
            results.append(PublishResult("published", offset, epoch))
        else:
            results.append(duplicate)
    return results


def runs(events: Sequence[Event]) -> list[list[int]]:
    """Indexes of ``events`` grouped by channel, at most RUN_MAX per run: in order within
    a channel (offsets follow it); across channels there is no order to keep."""
    by_channel: dict[str, list[int]] = {}
    for index, event in enumerate(events):
        by_channel.setdefault(event.channel, []).append(index)
    return [
        indexes[start : start + RUN_MAX]
        for indexes in by_channel.values()
        for start in range(0, len(indexes), RUN_MAX)
    ]


class Publisher:
    """Publishes batches of events for the leader with epoch ``leader_epoch``."""

    # The venv's types-redis stubs make Redis generic; redis' own inline types do not.
    # "unused-ignore" keeps the ignore valid under either.
    def __init__(
        self,
        redis: aioredis.Redis,  # type: ignore[type-arg, unused-ignore]
        *,
        history_size: int = 1000,
        history_ttl: int = 86400,
    ) -> None:
        self.redis = redis
        self.history_size = history_size
        self.history_ttl = history_ttl

    async def claim_fence(self, leader_epoch: int) -> bool:
        """Raise the fence to ``leader_epoch``; False when a newer leader already holds it."""
        try:
            result = await self._evalsha(CLAIM_SHA, 1, FENCE_KEY, leader_epoch)
        except NoScriptError:
            await self._load(CLAIM_SCRIPT)
            result = await self._evalsha(CLAIM_SHA, 1, FENCE_KEY, leader_epoch)
        return bool(int(result))

    async def _evalsha(self, sha: str, numkeys: int, *args: str | int) -> Any:
        return await self.redis.evalsha(sha, numkeys, *args)  # type: ignore[no-untyped-call, unused-ignore]

    async def _load(self, script: str) -> None:
        await self.redis.script_load(script)  # type: ignore[no-untyped-call, unused-ignore]

    async def publish(self, leader_epoch: int, events: Sequence[Event]) -> list[PublishResult]:
        """Publish ``events`` (in order per channel) in one round trip; a result per event."""
        if not events:
            return []
        indexes = runs(events)
        batch = [[events[i] for i in run] for run in indexes]
        try:
            replies = await self._run(leader_epoch, batch)
        except NoScriptError:
            # Redis restarted or SCRIPT FLUSH: load once, run the whole batch again (the
            # script failed for every run, so nothing was published).
            await self._load(PUBLISH_SCRIPT)
            replies = await self._run(leader_epoch, batch)
        results: list[PublishResult | None] = [None] * len(events)
        for reply, run in zip(replies, indexes, strict=True):
            for index, result in zip(run, parse_result(reply, len(run)), strict=True):
                results[index] = result
        return [result for result in results if result is not None]

    async def _run(self, leader_epoch: int, batch: list[list[Event]]) -> list[Any]:
        keep = max(self.history_size, sum(len(run) for run in batch), 1000)
        pipe = self.redis.pipeline(transaction=False)
        for run in batch:
            channel = run[0].channel
            keys = channel_keys(channel)
            args: list[str | int | bytes] = [
                keys.meta,
                keys.history,
                keys.ids,
                FENCE_KEY,
                leader_epoch,
                secrets.token_hex(8),  # the epoch, should this run start a new history
                channel_json(channel),
                self.history_size,
                self.history_ttl,
                keys.live,
                keep,
            ]
            args.append(
                ",".join(
                    f"{'' if e.outbox_id is None else e.outbox_id}:{len(e.data_json)}" for e in run
                )
            )
            args.append(b"".join(event.data_json for event in run))
            pipe.evalsha(PUBLISH_SHA, 4, *args)
        replies: list[Any] = await pipe.execute()
        return replies
