"""Presence state in Redis, through one script (``presence.lua``): no aiohttp here.

Per channel a hash of members and a sorted set of their deadlines (Redis time), so
any gateway can answer "who is here", and the members of a gateway that died leave
(announced) once their deadline passes and someone sweeps the channel.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from typing import Any

import redis.asyncio as aioredis

from pgcast.keys import channel_json, presence_keys

PRESENCE_SCRIPT = resources.files("gateway").joinpath("presence.lua").read_text()
REFRESH_CHUNK = 500  # members per script call: one call must not stall Redis


class PresenceStore:
    def __init__(
        self,
        redis: aioredis.Redis,  # type: ignore[type-arg, unused-ignore]
        ttl: float,
        cap: int,
    ) -> None:
        self.redis = redis
        self.ttl_ms = max(1, int(ttl * 1000))
        self.cap = cap
        self._script = redis.register_script(PRESENCE_SCRIPT)

    def _call(self, client: Any, op: str, channel: str, *args: Any) -> Any:
        keys = presence_keys(channel)
        return self._script(
            keys=[keys.members, keys.expiry, keys.seq, keys.live],
            args=[op, channel_json(channel), self.ttl_ms, *args],
            client=client,
        )

    async def track(self, channel: str, conn: str, member: bytes) -> bool:
        """Join (or update); False when the channel already has ``cap`` members."""
        return bool(await self._call(self.redis, "track", channel, conn, member, self.cap))

    async def untrack(self, gone: Mapping[str, Sequence[str]]) -> None:
        """Leave: channel -> the connections that left it (one round trip)."""
        pipe = self.redis.pipeline(transaction=False)
        for channel, conns in gone.items():
            self._call(pipe, "untrack", channel, *conns)
        await pipe.execute()

    async def refresh(self, tracked: Mapping[str, Mapping[str, bytes]]) -> None:
        """Push the deadlines of these members out by one TTL (one round trip)."""
        pipe = self.redis.pipeline(transaction=False)
        for channel, members in tracked.items():
            pairs = list(members.items())
            for start in range(0, len(pairs), REFRESH_CHUNK):
                flat = [x for pair in pairs[start : start + REFRESH_CHUNK] for x in pair]
                self._call(pipe, "refresh", channel, *flat)
        await pipe.execute()

    async def sweep(self, channels: Iterable[str]) -> int:
        """Remove (and announce) the expired members of ``channels``; how many left."""
        pipe = self.redis.pipeline(transaction=False)
        for channel in channels:
            self._call(pipe, "sweep", channel)
        counts = await pipe.execute()
        return sum(int(n) for n in counts)

    async def members(self, channel: str) -> tuple[int, list[bytes]]:
        """(sequence, member JSONs) of ``channel``, expired members swept first."""
        seq, members = await self._call(self.redis, "members", channel)
        return int(seq), [bytes(m) for m in members]
