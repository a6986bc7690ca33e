"""This process's share of presence: the members its connections track, kept alive in
Redis, and the channels its connections watch, kept truthful.

Three loops, one task (:meth:`Presence.run`): refresh pushes every local member's
deadline out each third of the TTL (a member Redis lost joins again); sweep removes
and announces the expired members of the watched channels each second (how the
members of a gateway that died leave: within TTL + 1 s); flush sends the leaves of
closed connections. Writes go through one lock, so a refresh never re-adds a member
whose leave it raced. After the hub's pub/sub link was replaced (announcements were
lost meanwhile), every watcher gets a fresh snapshot.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from gateway import protocol
from gateway.hub import Hub, HubUnavailableError
from gateway.metrics import Metrics
from gateway.presence_store import PresenceStore
from pgcast import redis_connect
from pgcast.cancellation import raise_if_cancelled

log = logging.getLogger(__name__)

SWEEP_SECONDS = 1.0
# Channels swept per tick, in turn: with more watched channels than this, a dead gateway's
# members leave later (by a second per this many channels), but Redis' load stays bounded.
SWEEP_BATCH = 1000
FLUSH_WAIT = 1.0  # bound on sending the last leaves when the process stops
REDIS_ERRORS = redis_connect.ERRORS


class Presence:
    def __init__(self, store: PresenceStore, hub: Hub, metrics: Metrics, ttl: float) -> None:
        self.store = store
        self.hub = hub
        self.ttl = ttl
        self.tracked: dict[str, dict[str, bytes]] = {}  # channel -> conn -> member JSON
        self._lock = asyncio.Lock()
        self._gone: dict[str, list[str]] = {}
        self._wake = asyncio.Event()
        self._links_seen = 0
        self._sweep_from = 0
        self.swept = 0
        metrics.gauge(
            "presence_members",
            "Presence members tracked by this process's connections",
            lambda: sum(len(members) for members in self.tracked.values()),
        )

    # -- requests (awaited by sessions; HubUnavailableError when Redis does not answer) --
    async def track(self, channel: str, conn: str, member: bytes) -> bool:
        """Join or update; False when the channel is full."""
        async with self._lock:
            try:
                if not await self.store.track(channel, conn, member):
                    return False
            except REDIS_ERRORS as exc:
                raise HubUnavailableError(channel) from exc
            self.tracked.setdefault(channel, {})[conn] = member
        return True

    async def untrack(self, channel: str, conn: str) -> None:
        self._drop(channel, conn)
        async with self._lock:
            try:
                await self.store.untrack({channel: [conn]})
            except REDIS_ERRORS as exc:
                raise HubUnavailableError(channel) from exc

    async def members(self, channel: str) -> tuple[int, list[bytes]]:
        """(sequence, member JSONs) of ``channel``."""
        try:
            return await self.store.members(channel)
        except REDIS_ERRORS as exc:
            raise HubUnavailableError(channel) from exc

    def forget(self, channel: str, conn: str) -> None:
        """A connection closed (or lost the grant): its leave goes out from the flush loop."""
        if self._drop(channel, conn):
            self._gone.setdefault(channel, []).append(conn)
            self._wake.set()

    def _drop(self, channel: str, conn: str) -> bool:
        members = self.tracked.get(channel)
        if members is None or members.pop(conn, None) is None:
            return False
        if not members:
            del self.tracked[channel]
        return True

    # -- the loops ----------------------------------------------------------------------
    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._every(self.ttl / 3, self._refresh), name="presence-refresh")
                tasks.create_task(self._every(SWEEP_SECONDS, self._sweep), name="presence-sweep")
                await self._flush_loop()
        finally:
            if self._gone:  # the connections closed by the drain: leave now, not at expiry
                try:
                    async with asyncio.timeout(FLUSH_WAIT):
                        await self._flush()
                except REDIS_ERRORS as exc:
                    log.info("presence leaves not sent at exit (%r); they expire", exc)

    async def _every(self, seconds: float, step: Callable[[], Awaitable[None]]) -> None:
        """Run ``step`` every ``seconds``; a failed step is logged and retried next time
        (the TTL absorbs a few missed refreshes)."""
        while True:
            raise_if_cancelled()  # a cancellation redis-py swallowed in the last step
            await asyncio.sleep(seconds)
            try:
                await step()
            except REDIS_ERRORS as exc:
                raise_if_cancelled()
                log.warning("presence %s failed: %s", step.__name__, redis_connect.reason(exc))

    async def _refresh(self) -> None:
        if not self.tracked:
            return
        async with self._lock:
            await self.store.refresh(self.tracked)

    async def _sweep(self) -> None:
        if self.hub.links != self._links_seen:
            relinked = self._links_seen != 0
            self._links_seen = self.hub.links
            if relinked:
                await self._refresh()  # Redis may have restarted and lost members
                await self._resnapshot()
        watched = self.hub.watched()
        if len(watched) > SWEEP_BATCH:
            start = self._sweep_from % len(watched)
            self._sweep_from = start + SWEEP_BATCH
            watched = (watched + watched)[start : start + SWEEP_BATCH]
        if watched:
            self.swept += await self.store.sweep(watched)

    async def _resnapshot(self) -> None:
        """Announcements were lost with the old link: every watcher gets the members anew."""
        for name in self.hub.watched():
            channel = self.hub.channels.get(name)
            if channel is None or not channel.watchers:
                continue
            watchers = list(channel.watchers)
            for member in watchers:
                channel.watch(member)  # hold announcements until the snapshot is sent
            try:
                seq, members = await self.store.members(name)
            except BaseException:
                for member in watchers:
                    channel.watching(member, 0)  # as before: live, with what was held
                raise
            frame = protocol.presence(name, members)
            for member in watchers:
                if channel.watchers and member in channel.watchers:
                    member.ephemeral(frame)
                    channel.watching(member, seq)

    async def _flush_loop(self) -> None:
        while True:
            raise_if_cancelled()
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._flush()
            except REDIS_ERRORS as exc:
                raise_if_cancelled()
                log.warning("presence leaves failed (%s); they expire instead", exc)

    async def _flush(self) -> None:
        gone, self._gone = self._gone, {}
        if gone:
            async with self._lock:
                await self.store.untrack(gone)
