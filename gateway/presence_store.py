"""Presence state in Redis, through one script (``presence.lua``): no aiohttp here.

Per channel a hash of members and a sorted set of their deadlines (Redis time), so
any gateway can answer "who is here", and the members of a gateway that died leave
(announced) once their deadline passes and someone sweeps the channel.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from importlib import resources
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.exceptions import NoScriptError

from pgcast.keys import Layout, channel_json

PRESENCE_SCRIPT = resources.files("gateway").joinpath("presence.lua").read_text()
PRESENCE_SHA = hashlib.sha1(PRESENCE_SCRIPT.encode()).hexdigest()  # noqa: S324 - Redis' script id
REFRESH_CHUNK = 500  # members per script call: one call must not stall Redis


class PresenceStore:
    def __init__(
        self,
        redis: aioredis.Redis,  # type: ignore[type-arg, unused-ignore]
        ttl: float,
        cap: int,
        layout: Layout,
    ) -> None:
        self.redis = redis
        self.layout = layout
        self.ttl_ms = max(1, int(ttl * 1000))
        self.cap = cap

    def _call(self, pipe: Pipeline, op: str, channel: str, *args: Any) -> None:
        keys = self.layout.presence_keys(channel)
        pipe.evalsha(
            PRESENCE_SHA,
            4,
            keys.members,
            keys.expiry,
            keys.seq,
            keys.live,
            self.layout.publish_command,
            op,
            channel_json(channel),
            self.ttl_ms,
            *args,
        )

    async def _run(self, build: Callable[[Pipeline], None]) -> list[Any]:
        """One round trip: the script calls ``build`` queues (loaded first if Redis lacks it)."""
        for attempt in (1, 2):
            pipe = self.redis.pipeline(transaction=False)
            build(pipe)
            try:
                replies: list[Any] = await pipe.execute()
            except NoScriptError:
                if attempt == 2:
                    raise
                await self.redis.script_load(PRESENCE_SCRIPT)  # type: ignore[no-untyped-call, unused-ignore]
                continue
            return replies
        raise AssertionError("unreachable")

    async def track(self, channel: str, conn: str, member: bytes) -> bool:
        """Join (or update); False when the channel already has ``cap`` members."""
        replies = await self._run(lambda p: self._call(p, "track", channel, conn, member, self.cap))
        return bool(replies[0])

    async def untrack(self, gone: Mapping[str, Sequence[str]]) -> None:
        """Leave: channel -> the connections that left it (one round trip)."""

        def build(pipe: Pipeline) -> None:
            for channel, conns in gone.items():
                self._call(pipe, "untrack", channel, *conns)

        await self._run(build)

    async def refresh(self, tracked: Mapping[str, Mapping[str, bytes]]) -> None:
        """Push the deadlines of these members out by one TTL (one round trip)."""

        def build(pipe: Pipeline) -> None:
            for channel, members in tracked.items():
                pairs = list(members.items())
                for start in range(0, len(pairs), REFRESH_CHUNK):
                    flat = [x for pair in pairs[start : start + REFRESH_CHUNK] for x in pair]
                    self._call(pipe, "refresh", channel, *flat)

        await self._run(build)

    async def sweep(self, channels: Iterable[str]) -> int:
        """Remove (and announce) the expired members of ``channels``; how many left."""
        names = list(channels)

        def build(pipe: Pipeline) -> None:
            for channel in names:
                self._call(pipe, "sweep", channel)

        return sum(int(n) for n in await self._run(build))

    async def members(self, channel: str) -> tuple[int, list[bytes]]:
        """(sequence, member JSONs) of ``channel``, expired members swept first."""
        (reply,) = await self._run(lambda p: self._call(p, "members", channel))
        seq, members = reply
        return int(seq), [bytes(m) for m in members]
