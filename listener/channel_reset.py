"""New, empty epochs for every channel Redis holds: when events may be missing that Redis
never had, so that no client resumes across the hole as if nothing were lost.

The WAL capture needs it when Postgres invalidated its replication slot
(``max_slot_wal_keep_size``): what was committed between the slot's last confirmed
position and the fresh slot was never decoded, and any channel may have lost events.
``reset.lua`` starts a new epoch per channel and publishes the ``!r<epoch>`` notice, so a
gateway tells its live subscribers at once (``recovered:false``); a client resuming later
holds the old epoch and is told the same.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator
from typing import Any

from redis.exceptions import NoScriptError

from listener.publisher import Mark, Publisher
from listener.scripts import RESET_SCRIPT, RESET_SHA
from pgcast.keys import Layout

log = logging.getLogger(__name__)

CHUNK = 500  # channels per pipeline


def channel_of(key: str, layout: Layout) -> str | None:
    """The channel whose meta hash is ``key`` (pgcast.keys.Layout.channel_keys), else None."""
    if not key.startswith("pgcast:{") or not key.endswith(":meta"):
        return None
    inner = key[len("pgcast:{") : -len(":meta")]
    if not layout.partitions:
        channel = inner[:-1] if inner.endswith("}") else None
    else:
        _, sep, channel = inner.partition("}:")
        channel = channel if sep else None
    if not channel or layout.channel_keys(channel).meta != key:
        return None  # another key that merely looks alike
    return channel


async def stored_channels(redis: Any, layout: Layout) -> AsyncIterator[list[str]]:
    """Every channel with a meta hash in Redis (every master of a cluster), in chunks."""
    chunk: list[str] = []
    async for raw in redis.scan_iter(match="pgcast:{*:meta", count=1000):
        key = raw.decode() if isinstance(raw, bytes) else raw
        channel = channel_of(key, layout)
        if channel is not None:
            chunk.append(channel)
        if len(chunk) >= CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


async def reset_channels(publisher: Publisher, leader_epoch: int, channels: list[str]) -> bool:
    """Start a new, empty epoch for each of ``channels``; False when fenced (nothing after
    the first refusal is reset: a newer leader leads)."""
    layout = publisher.layout
    tokens = [secrets.token_hex(8) for _ in channels]

    async def run() -> list[Any]:
        pipe = publisher.redis.pipeline(transaction=False)
        for channel, token in zip(channels, tokens, strict=True):
            keys = layout.channel_keys(channel)
            pipe.evalsha(
                RESET_SHA,
                4,
                keys.meta,
                keys.history,
                keys.ids,
                layout.fence_key(channel),
                leader_epoch,
                token,
                publisher.history_ttl,
                keys.live,
                layout.publish_command,
            )
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        return replies

    replies = await run()
    if any(isinstance(reply, NoScriptError) for reply in replies):
        await publisher.load_script(RESET_SCRIPT)
        replies = await run()
    for channel, token, reply in zip(channels, tokens, replies, strict=True):
        if isinstance(reply, Exception):
            raise reply
        if isinstance(reply, list):  # {false, 'fenced'}
            return False
        publisher.known[channel] = Mark(token, 0)
    return True


async def reset_all(publisher: Publisher, leader_epoch: int) -> int:
    """Reset every channel Redis holds; returns how many (raises Fenced-worthy False as 0
    after logging: the caller's next publish is refused and ends its leadership)."""
    total = 0
    async for chunk in stored_channels(publisher.redis, publisher.layout):
        if not await reset_channels(publisher, leader_epoch, chunk):
            log.error("channel reset refused: fenced (a newer leader holds the fence)")
            return total
        total += len(chunk)
    return total
