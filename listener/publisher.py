"""Publish events to Redis through ``publish.lua``: fenced, de-duplicated, numbered.

A batch is one pipelined round trip of EVALSHA calls (the script is loaded on
NOSCRIPT and the batch retried once). Knows redis, not asyncpg. Connection
errors propagate: the caller keeps its outbox rows and retries, and the script's
de-duplication makes the retry harmless.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal, cast

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
PUBLISH_SHA = hashlib.sha1(PUBLISH_SCRIPT.encode()).hexdigest()  # noqa: S324 - Redis' script id
CLAIM_SHA = hashlib.sha1(CLAIM_SCRIPT.encode()).hexdigest()  # noqa: S324 - Redis' script id


@dataclass(frozen=True, slots=True)
class Event:
    """One event to publish: ``data_json`` is already-encoded JSON (the jsonb text)."""

    channel: str
    data_json: bytes
    outbox_id: int | None = None


@dataclass(frozen=True, slots=True)
class PublishResult:
    status: PublishStatus
    offset: int | None
    epoch: str | None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def parse_result(reply: Sequence[Any]) -> PublishResult:
    """The script's ``{status, offset, epoch}`` reply as a :class:`PublishResult`."""
    status = _text(reply[0])
    if status not in ("published", "duplicate", "fenced"):
        raise ValueError(f"unexpected publish script reply: {reply!r}")
    offset = reply[1] if len(reply) > 1 else None
    epoch = reply[2] if len(reply) > 2 else None
    return PublishResult(
        cast(PublishStatus, status), None if offset is None else int(offset), _text(epoch)
    )


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
        """Publish ``events`` in order, in one round trip; one result per event."""
        if not events:
            return []
        try:
            replies = await self._run(leader_epoch, events)
        except NoScriptError:
            # Redis restarted or SCRIPT FLUSH: load once, run the whole batch again (the
            # script failed for every event, so nothing was published).
            await self._load(PUBLISH_SCRIPT)
            replies = await self._run(leader_epoch, events)
        return [parse_result(reply) for reply in replies]

    async def _run(self, leader_epoch: int, events: Sequence[Event]) -> list[Any]:
        keep = max(self.history_size, len(events), 1000)
        pipe = self.redis.pipeline(transaction=False)
        for event in events:
            keys = channel_keys(event.channel)
            pipe.evalsha(
                PUBLISH_SHA,
                4,
                keys.meta,
                keys.history,
                keys.ids,
                FENCE_KEY,
                leader_epoch,
                "" if event.outbox_id is None else event.outbox_id,
                secrets.token_hex(8),  # the epoch, should this event start a new history
                channel_json(event.channel),
                event.data_json,
                self.history_size,
                self.history_ttl,
                keys.live,
                keep,
            )
        replies: list[Any] = await pipe.execute()
        return replies
