"""One Redis node's pub/sub link and the channels it serves: its whole life in ``run()``.

With one Redis (or Sentinel) the hub has exactly one ShardLink; in a Redis Cluster one
per master that serves a channel of ours (or the control stream). Each owns its link:
connect, its own heartbeat channel through that node (so a silently dead shard is
noticed on its own), (S)SUBSCRIBE, a history read for each channel after every
(re)connect so nobody misses what history holds, reconnect with backoff. What the link
hears goes to the hub (``on_message``; ``on_moved`` for a shard subscription Redis
ended: the slot moved).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gateway.channel import Channel
from gateway.pubsub import PubSubLink, open_link
from pgcast import redis_connect
from pgcast.backoff import Backoff
from pgcast.cancellation import raise_if_cancelled

if TYPE_CHECKING:
    from gateway.hub import Hub

log = logging.getLogger(__name__)

SYNC_BATCH = 200
RETIRE_WAIT = 1.0
_TOKENS = itertools.count(1)  # barrier tokens, unique in this process


class ShardLink:
    """The channels one node serves, and the link to it."""

    def __init__(self, hub: Hub, node: str) -> None:
        self.hub = hub
        self.node = node
        self.channels: dict[str, Channel] = {}
        self.carries_control = False  # this node serves the control stream's slot
        self.link: PubSubLink | None = None
        self._on_link: set[bytes] = set()
        self._to_sync: dict[str, None] = {}
        self._sync_wanted = asyncio.Event()
        self._control_wanted = False
        self._heartbeat: bytes | None = None
        self._barriers: dict[bytes, asyncio.Future[None]] = {}
        self._retired: set[asyncio.Task[None]] = set()
        self._connected_once = False
        self._loop = asyncio.get_running_loop()
        self.task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"ShardLink({self.node!r}, {len(self.channels)} channels)"

    # -- state --------------------------------------------------------------------------
    @property
    def needed(self) -> bool:
        return bool(self.channels) or self.carries_control

    @property
    def alive(self) -> bool:
        """Linked, and the link delivered something recently (at least its heartbeat)."""
        link = self.link
        if link is None:
            return False
        return self._loop.time() - link.last_activity < self.hub.options.heartbeat_timeout

    @property
    def heartbeat(self) -> bytes | None:
        """The channel to publish this link's heartbeat to (while linked)."""
        return self._heartbeat if self.link is not None else None

    # -- barrier ------------------------------------------------------------------------
    async def barrier(self) -> None:
        """Until this link has read what its node had sent it before now: a token published
        to the link's heartbeat channel through the node comes back after all of it (a
        node writes a connection in order). Bounded by the heartbeat timeout; a link lost
        meanwhile re-syncs its channels from history anyway."""
        key = self.heartbeat
        if key is None:
            return
        token = b"b%d" % next(_TOKENS)
        heard = self._barriers[token] = self._loop.create_future()
        try:
            try:
                # Bounded by the client's socket timeout (never cancelled mid-command).
                await self.hub.redis.execute_command(  # type: ignore[no-untyped-call, unused-ignore]
                    self.hub.layout.publish_command, key, token
                )
            except redis_connect.ERRORS:
                raise_if_cancelled()
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.hub.options.heartbeat_timeout):
                    await heard
        finally:
            self._barriers.pop(token, None)

    def heard(self, live: bytes, payload: bytes) -> None:
        """A message on a channel no subscriber has: on this link's heartbeat channel, a
        barrier's token ends its wait (a beat ends none)."""
        if live != self._heartbeat or not self._barriers:
            return
        heard = self._barriers.pop(payload, None)
        if heard is not None and not heard.done():
            heard.set_result(None)

    # -- channels -----------------------------------------------------------------------
    def add(self, channel: Channel) -> None:
        """Serve ``channel`` from now on: subscribe it and read its history."""
        self.channels[channel.name] = channel
        self.queue_sync(channel)

    def drop(self, channel: Channel, *, unsubscribe: bool) -> None:
        """Stop serving ``channel`` (it left, or its slot moved to another node)."""
        self.channels.pop(channel.name, None)
        self._to_sync.pop(channel.name, None)
        if channel.live_key in self._on_link:
            self._on_link.discard(channel.live_key)
            if unsubscribe and self.link is not None:
                self.link.unsubscribe([channel.live_key])

    def forget_subscription(self, live: bytes) -> None:
        """Redis ended this subscription itself (the slot moved)."""
        self._on_link.discard(live)

    def queue_sync(self, channel: Channel) -> None:
        self._to_sync[channel.name] = None
        self._sync_wanted.set()

    def take_control(self) -> None:
        """Serve the control stream's live channel from now on."""
        self.carries_control = True
        self._control_wanted = True
        self._sync_wanted.set()

    # -- the link's life ----------------------------------------------------------------
    async def run(self) -> None:
        """Keep the link up, synced and proven alive, until cancelled."""
        backoff = Backoff(base=0.05, cap=2.0, healthy_after=10.0)
        hub = self.hub
        try:
            while True:
                self._heartbeat = hub.topology.heartbeat_key(self.node, hub.options.gateway_id)
                try:
                    link = await open_link(
                        hub.topology.node_target(self.node),
                        hub.on_message,
                        name=f"pgcast-gateway-{hub.options.gateway_id}",
                        within=hub.options.connect_timeout,
                        begin=hub.batch.begin,
                        end=hub.batch.end,
                        sharded=hub.topology.sharded,
                        on_moved=lambda live: hub.on_moved(self, live),
                        stale_after=hub.options.heartbeat_timeout,
                    )
                except (OSError, TimeoutError, ConnectionError, KeyError) as exc:
                    raise_if_cancelled()
                    delay = backoff.next()
                    log.warning(
                        "redis pub/sub connect to %s failed (%s); retry in %.2fs",
                        self.node,
                        exc,
                        delay,
                    )
                    hub.suspect_topology()
                    await asyncio.sleep(delay)
                    continue
                try:
                    await self._serve(link, backoff)
                except Exception:
                    raise_if_cancelled()
                    log.exception("pub/sub link to %s failed", self.node)
                finally:
                    self.link = None
                    await link.aclose()
                    if self.carries_control:
                        hub.control.begin_sync()
                    for channel in self.channels.values():
                        channel.begin_sync()
                hub.suspect_topology()
                await asyncio.sleep(backoff.next())
        finally:
            for task in self._retired:
                task.cancel()
            if self._retired:
                await asyncio.wait(list(self._retired), timeout=RETIRE_WAIT)

    async def _serve(self, link: PubSubLink, backoff: Backoff) -> None:
        """One connection's life: heartbeat channel, every channel re-synced, then live."""
        raise_if_cancelled()  # one redis-py swallowed while opening the link (the caller closes it)
        hub = self.hub
        first = [self._heartbeat] if self._heartbeat is not None else []
        async with asyncio.timeout(hub.options.connect_timeout):
            await asyncio.gather(*link.subscribe(first))
        # The control stream is subscribed and read by the syncer, first thing: a slow
        # command connection must not hold the whole link back.
        if self.carries_control:
            self._control_wanted = True
            self._sync_wanted.set()
        link.last_activity = self._loop.time()
        self._on_link = set()
        self.link = link
        hub.linked(self, again=self._connected_once)
        self._connected_once = True
        for channel in self.channels.values():
            channel.begin_sync()
            self.queue_sync(channel)
        syncer = asyncio.create_task(self._syncer(link), name=f"hub-syncer-{self.node}")
        beat = asyncio.create_task(self._heartbeat_loop(link), name=f"hub-heartbeat-{self.node}")
        watched: list[asyncio.Future[Any]] = [syncer, link.closed]
        try:
            while not link.closed.done() and not syncer.done():
                await asyncio.wait(watched, timeout=hub.options.heartbeat)
                age = self._loop.time() - link.last_activity
                if age > hub.options.heartbeat_timeout:
                    hub.metrics.heartbeat_stale.inc()
                    link.abort(TimeoutError(f"no heartbeat through redis for {age:.1f}s"))
                    break
                backoff.mark_healthy()
        finally:
            link.abort()
            await self._retire(syncer)
            await self._retire(beat)
        lost = link.closed.result() if link.closed.done() else None
        log.warning("redis pub/sub link to %s lost: %s", self.node, lost or "closed")

    async def _retire(self, task: asyncio.Task[None]) -> None:
        """Let a task of a dead link finish on its own (its link is closed, so it applies
        nothing): redis-py does not always survive a cancellation mid-command."""
        self._sync_wanted.set()
        await asyncio.wait([task], timeout=RETIRE_WAIT)
        if not task.done():
            self._retired.add(task)  # kept, and awaited (bounded) when the link stops
            task.add_done_callback(_forget_retired(self._retired))
        elif not task.cancelled() and task.exception() is not None:
            log.warning("%s failed: %s", task.get_name(), task.exception())

    async def _heartbeat_loop(self, link: PubSubLink) -> None:
        """Publish to this link's own heartbeat channel through its node, so an idle link
        still carries traffic. One per link: a frozen node delays only its own beats."""
        hub, key = self.hub, self._heartbeat
        if key is None:
            return
        command = hub.layout.publish_command
        while not link.closed.done():
            raise_if_cancelled()
            await asyncio.sleep(hub.options.heartbeat)
            try:
                # Bounded by the client's socket timeout (never cancelled mid-command).
                await hub.redis.execute_command(command, key, b"1")  # type: ignore[no-untyped-call, unused-ignore]
            except redis_connect.ERRORS as exc:
                raise_if_cancelled()
                log.debug("heartbeat through %s failed: %s", self.node, redis_connect.reason(exc))

    async def _syncer(self, link: PubSubLink) -> None:
        """Subscribe queued channels on ``link`` and apply their history, in batches."""
        while not link.closed.done():
            raise_if_cancelled()
            await self._sync_wanted.wait()
            self._sync_wanted.clear()
            if self._control_wanted and self.carries_control and not link.closed.done():
                self._control_wanted = False
                await self._sync_control(link)
            while self._to_sync and not link.closed.done():
                names = list(self._to_sync)[:SYNC_BATCH]
                for name in names:
                    del self._to_sync[name]
                batch = [self.channels[n] for n in names if n in self.channels]
                if batch:
                    await self._sync_batch(link, batch)

    async def _sync_control(self, link: PubSubLink) -> None:
        """Subscribe the control stream's live channel, then read what it missed (a new
        link, or the stream's slot moved here)."""
        hub = self.hub
        hub.control.begin_sync()
        async with asyncio.timeout(hub.options.subscribe_timeout):
            await asyncio.gather(*link.subscribe([hub.control_key]))
        await hub.control.sync()

    async def _sync_batch(self, link: PubSubLink, batch: list[Channel]) -> None:
        hub = self.hub
        fresh = [c.live_key for c in batch if c.live_key not in self._on_link]
        self._on_link.update(fresh)
        async with asyncio.timeout(hub.options.subscribe_timeout):
            await asyncio.gather(*link.subscribe(fresh))
        # Bounded by the client's socket timeout, not by a cancellation (see _retire).
        snapshots = await hub.history.snapshots(
            [(c.name, c.offset if c.epoch else None, c.epoch) for c in batch]
        )
        if link.closed.done():
            return  # too late: the next link re-syncs every channel from scratch
        for channel, snapshot in zip(batch, snapshots, strict=True):
            if self.channels.get(channel.name) is channel and channel.finish_sync(snapshot):
                self.queue_sync(channel)


def _forget_retired(retired: set[asyncio.Task[None]]) -> Callable[[asyncio.Task[None]], None]:
    """Drop a retired task once it ends, its failure logged (its link is gone anyway)."""

    def done(task: asyncio.Task[None]) -> None:
        retired.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.debug("%s of a dead link ended: %s", task.get_name(), task.exception())

    return done
