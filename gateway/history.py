"""Reads a channel's history from Redis in one atomic script: epoch, top offset, entries.

The script also creates the channel's epoch when none exists yet (a channel
nobody published to, or whose history expired), exactly as the publish script
would: so every ``subscribed`` frame carries a real epoch that a later resume can
check, even for a channel with no message yet. Knows redis, not aiohttp.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from gateway.resume import Snapshot
from pgcast.keys import FRAME_FIELD, Layout, offset_of_stream_id

# KEYS: meta, history, ids. ARGV: new epoch, ttl, after ('' = no entries), epoch the
# reader knows ('' = any), max entries. Mirrors publish.lua's "new history" branch:
# a missing meta means a new epoch, and leftovers of an older history are dropped.
SNAPSHOT_SCRIPT = """
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then
  redis.call('DEL', KEYS[2], KEYS[3])
  epoch = ARGV[1]
  redis.call('HSET', KEYS[1], 'e', epoch, 's', 0)
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
end
local top = tonumber(redis.call('HGET', KEYS[1], 's') or '0')
local entries = {}
if ARGV[3] ~= '' and (ARGV[4] == '' or ARGV[4] == epoch) then
  local after = tonumber(ARGV[3])
  if after < top then
    local start = string.format('%d', after + 1) .. '-0'
    entries = redis.call('XRANGE', KEYS[2], start, '+', 'COUNT', tonumber(ARGV[5]))
  end
end
return {epoch, top, entries}
"""
SNAPSHOT_SHA = hashlib.sha1(SNAPSHOT_SCRIPT.encode()).hexdigest()  # noqa: S324 - Redis' script id
MAX_ENTRIES = 10_000


class History:
    """Snapshot reads over the command connection pool (not the pub/sub link)."""

    # The venv's types-redis stubs make Redis generic; redis' own inline types do not.
    def __init__(self, redis: aioredis.Redis, ttl: int, layout: Layout) -> None:  # type: ignore[type-arg, unused-ignore]
        self.redis = redis
        self.ttl = ttl
        self.layout = layout

    def _args(self, channel: str, after: int | None, epoch: str | None) -> list[Any]:
        keys = self.layout.channel_keys(channel)
        return [
            SNAPSHOT_SHA,
            3,
            keys.meta,
            keys.history,
            keys.ids,
            secrets.token_hex(8),
            self.ttl,
            "" if after is None else after,
            epoch or "",
            MAX_ENTRIES,
        ]

    async def snapshot(
        self, channel: str, after: int | None = None, epoch: str | None = None
    ) -> Snapshot:
        """Epoch and top of ``channel``, with entries after ``after`` if in ``epoch``."""
        snaps = await self.snapshots([(channel, after, epoch)])
        return snaps[0]

    async def snapshots(
        self, requests: Sequence[tuple[str, int | None, str | None]]
    ) -> list[Snapshot]:
        """Several snapshots in one round trip (a pipeline of script calls)."""
        try:
            replies = await self._run(requests)
        except NoScriptError:
            await self.redis.script_load(SNAPSHOT_SCRIPT)  # type: ignore[no-untyped-call, unused-ignore]
            replies = await self._run(requests)
        return [parse_snapshot(reply) for reply in replies]

    async def _run(self, requests: Sequence[tuple[str, int | None, str | None]]) -> list[Any]:
        pipe = self.redis.pipeline(transaction=False)
        for channel, after, epoch in requests:
            pipe.evalsha(*self._args(channel, after, epoch))
        replies: list[Any] = await pipe.execute()
        return replies


def parse_snapshot(reply: Sequence[Any]) -> Snapshot:
    """The script's ``{epoch, top, entries}`` as a :class:`Snapshot`."""
    epoch_raw, top, raw_entries = reply
    epoch = epoch_raw.decode() if isinstance(epoch_raw, bytes) else str(epoch_raw)
    entries = []
    for entry_id, fields in raw_entries:
        pairs = dict(zip(fields[::2], fields[1::2], strict=True))
        frame = pairs.get(FRAME_FIELD)
        if frame is not None:
            entries.append((offset_of_stream_id(entry_id), bytes(frame)))
    return Snapshot(epoch, int(top), tuple(entries))
