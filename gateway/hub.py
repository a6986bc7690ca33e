"""The hub: channel -> local subscribers over ONE Redis pub/sub link per process.

It subscribes a channel in Redis when its first local subscriber arrives and
unsubscribes after the last leaves; it owns the link's whole life in ``run()``:
connect, subscribe, read each channel's history (first sync, gaps, and after every
reconnect, so nobody misses what history holds), and a heartbeat that travels
through Redis so a silently dead link is noticed, dropped and reconnected.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from gateway.batch import WriteBatch
from gateway.channel import Channel, Subscriber
from gateway.control import ControlFeed
from gateway.history import History
from gateway.message import Message
from gateway.metrics import Metrics
from gateway.pubsub import PubSubLink, open_link
from gateway.resume import Plan, Snapshot, plan_subscribe
from pgcast import redis_connect
from pgcast.backoff import Backoff
from pgcast.cancellation import raise_if_cancelled
from pgcast.keys import (
    BROADCAST_KIND,
    CONTROL_LIVE,
    EPHEMERAL_MARK,
    PRESENCE_KIND,
    encode_broadcast,
    heartbeat_channel,
    live_channel,
)

log = logging.getLogger(__name__)

SYNC_BATCH = 200
AHEAD_WAIT = 1.0  # how long a client that resumes ahead of this hub waits for it


class HubClosedError(Exception):
    """The subscriber left (or the hub stopped) while its subscribe was pending."""


class HubUnavailableError(Exception):
    """Redis did not answer in time (link down, or the history read failed)."""


@dataclass(frozen=True)
class HubOptions:
    redis_url: str
    gateway_id: str
    backlog_bytes: int = 1 << 20
    subscribe_timeout: float = 5.0
    heartbeat: float = 1.0
    heartbeat_timeout: float = 5.0
    connect_timeout: float = 5.0


class Hub:
    def __init__(
        self,
        options: HubOptions,
        redis: aioredis.Redis,  # type: ignore[type-arg, unused-ignore]
        history: History,
        metrics: Metrics,
        control: ControlFeed,
    ) -> None:
        self.options = options
        self.redis = redis
        self.history = history
        self.metrics = metrics
        self.control = control
        self.links = 0  # pub/sub links opened so far: a new one lost what came in between
        self.channels: dict[str, Channel] = {}
        self._by_live: dict[bytes, Channel] = {}
        self._link: PubSubLink | None = None
        self._on_link: set[bytes] = set()
        self._to_sync: dict[str, None] = {}
        self._sync_wanted = asyncio.Event()
        self._hb_key = heartbeat_channel(options.gateway_id).encode()
        self._control_key = CONTROL_LIVE.encode()
        self.batch = WriteBatch()
        self._retired: set[asyncio.Task[None]] = set()
        self._connected_once = False
        self._loop = asyncio.get_running_loop()
        metrics.gauge("channels", "Channels subscribed in Redis", lambda: len(self.channels))

    # -- state --------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        """Linked to Redis, and the link delivered something recently (at least our
        own heartbeat, published every PGCAST_REDIS_HEARTBEAT seconds)."""
        link = self._link
        if link is None:
            return False
        return self._loop.time() - link.last_activity < self.options.heartbeat_timeout

    # -- subscribers --------------------------------------------------------------------
    async def join(
        self, name: str, member: Subscriber, since: int | None, epoch: str | None
    ) -> Snapshot | None:
        """Start subscribing ``member``: returns the history read (if a resume needs one).

        The member is pending when this returns; call :meth:`activate` with no
        await in between. Raises HubUnavailableError when Redis cannot answer in time.
        """
        channel = self._channel(name)
        channel.add_pending(member)
        snapshot = None
        try:
            async with asyncio.timeout(self.options.subscribe_timeout):
                await channel.wait_ready()
            if since is not None and epoch == channel.epoch:
                if since > channel.offset:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(AHEAD_WAIT):
                            await channel.wait_offset(since)
                if since < channel.offset:
                    if channel.redis_behind:
                        # Redis lacks offsets we dispatched (it failed over): the leader is
                        # about to publish them again. Read history once it did, or the
                        # resume would be told recovered:false for nothing.
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(self.options.subscribe_timeout):
                                await channel.wait_offset(channel.offset)
                    # Bounded by the client's socket timeout (no cancellation mid-command).
                    snapshot = await self.history.snapshot(name, since, epoch)
        except (TimeoutError, OSError, aioredis.RedisError) as exc:
            self.leave(name, member)
            raise HubUnavailableError(name) from exc
        except BaseException:
            self.leave(name, member)
            raise
        if self.channels.get(name) is not channel or member not in channel.pending:
            raise HubClosedError(name)
        return snapshot

    def activate(
        self,
        name: str,
        member: Subscriber,
        since: int | None,
        epoch: str | None,
        snapshot: Snapshot | None,
    ) -> Plan:
        """Make a pending member live; the plan says what to tell and replay to it first."""
        channel = self.channels[name]
        backlog = channel.activate(member)
        if backlog.overflowed:
            return Plan(channel.epoch or "", channel.offset, recovered=False, overflowed=True)
        return plan_subscribe(
            name,
            since=since,
            client_epoch=epoch,
            hub_epoch=channel.epoch or "",
            hub_offset=channel.offset,
            snapshot=snapshot,
            backlog=backlog.entries,
        )

    def leave(self, name: str, member: Subscriber) -> None:
        channel = self.channels.get(name)
        if channel is None:
            return
        channel.remove(member)
        if channel.empty:
            del self.channels[name]
            del self._by_live[channel.live_key]
            self._to_sync.pop(name, None)
            if channel.live_key in self._on_link and self._link is not None:
                self._on_link.discard(channel.live_key)
                self._link.unsubscribe([channel.live_key])

    # -- presence watchers --------------------------------------------------------------
    def watch(self, name: str, member: Subscriber) -> None:
        """``member`` (subscribed to ``name``) wants presence; see :meth:`Channel.watch`."""
        self.channels[name].watch(member)

    def watching(self, name: str, member: Subscriber, seq: int) -> None:
        channel = self.channels.get(name)
        if channel is not None:
            channel.watching(member, seq)

    def unwatch(self, name: str, member: Subscriber) -> None:
        channel = self.channels.get(name)
        if channel is not None:
            channel.unwatch(member)

    def watched(self) -> list[str]:
        """Channels with a presence watcher here (swept by this process)."""
        return [c.name for c in self.channels.values() if c.watchers]

    def _channel(self, name: str) -> Channel:
        channel = self.channels.get(name)
        if channel is None:
            channel = Channel(name, self.options.backlog_bytes)
            self.channels[name] = channel
            self._by_live[channel.live_key] = channel
            self._queue_sync(channel)
        return channel

    def _queue_sync(self, channel: Channel) -> None:
        self._to_sync[channel.name] = None
        self._sync_wanted.set()

    async def broadcast(self, name: str, sender: str, frame: bytes) -> None:
        """Send a client message to every subscriber of ``name`` (every gateway's) but
        ``sender``'s connection; HubUnavailableError when Redis does not take it."""
        try:
            # Bounded by the client's socket timeout (never cancelled mid-command).
            await self.redis.publish(live_channel(name), encode_broadcast(sender, frame))
        except (OSError, TimeoutError, ConnectionError, aioredis.RedisError) as exc:
            raise HubUnavailableError(name) from exc

    # -- the live path ------------------------------------------------------------------
    def _on_message(self, live: bytes, payload: bytes) -> None:
        channel = self._by_live.get(live)
        if channel is None:
            if live == self._control_key:
                self.control.on_live(payload)
            return  # our heartbeat (its arrival was noted by the link), or a channel just left
        if payload and payload[0] == EPHEMERAL_MARK:
            self._on_ephemeral(channel, payload)
            return
        try:
            message = Message.from_live(channel.name, payload)
        except ValueError:
            self.metrics.hot.bad_payloads += 1
            log.warning("malformed payload on %s dropped", channel.name)
            return
        hot = self.metrics.hot
        hot.messages_in += 1
        before = channel.offset
        if channel.on_live(message):
            self._queue_sync(channel)
        elif channel.offset != before:
            hot.messages_out += len(channel.members)

    def _on_ephemeral(self, channel: Channel, payload: bytes) -> None:
        """A client message or a presence announcement (pgcast.keys): never in history."""
        self.metrics.hot.ephemeral_in += 1
        kind = payload[1] if len(payload) > 1 else 0
        if kind == BROADCAST_KIND:
            sender, _, frame = payload[2:].partition(b" ")
            channel.on_broadcast(sender.decode(errors="replace"), frame)
        elif kind == PRESENCE_KIND:
            seq, _, frame = payload[2:].partition(b":")
            if seq.isdigit():
                channel.on_presence(int(seq), frame)
                return
        if kind != BROADCAST_KIND:
            self.metrics.hot.bad_payloads += 1
            log.warning("malformed ephemeral payload on %s dropped", channel.name)

    # -- the link's life ----------------------------------------------------------------
    async def run(self) -> None:
        """Keep the pub/sub link up, synced and proven alive, until cancelled."""
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._heartbeat_loop(), name="hub-heartbeat")
                await self._link_loop()
        finally:
            for task in self._retired:
                task.cancel()
            if self._retired:
                await asyncio.wait(list(self._retired), timeout=1.0)

    async def _link_loop(self) -> None:
        backoff = Backoff(base=0.05, cap=2.0, healthy_after=10.0)
        while True:
            try:
                link = await open_link(
                    self.options.redis_url,
                    self._on_message,
                    name=f"pgcast-gateway-{self.options.gateway_id}",
                    within=self.options.connect_timeout,
                    begin=self.batch.begin,
                    end=self.batch.end,
                )
            except (OSError, TimeoutError, ConnectionError) as exc:
                raise_if_cancelled()
                delay = backoff.next()
                log.warning("redis pub/sub connect failed (%s); retry in %.2fs", exc, delay)
                await asyncio.sleep(delay)
                continue
            try:
                await self._serve(link, backoff)
            except Exception:
                raise_if_cancelled()
                log.exception("pub/sub link failed")
            finally:
                self._link = None
                await link.aclose()
                self.control.begin_sync()
                for channel in self.channels.values():
                    channel.begin_sync()
            await asyncio.sleep(backoff.next())

    async def _serve(self, link: PubSubLink, backoff: Backoff) -> None:
        """One connection's life: heartbeat channel, every channel re-synced, then live."""
        raise_if_cancelled()  # one redis-py swallowed while opening the link (the caller closes it)
        async with asyncio.timeout(self.options.connect_timeout):
            await asyncio.gather(*link.subscribe([self._hb_key, self._control_key]))
        # Bounded by the client's socket timeout (never cancelled mid-command).
        await self.control.sync()
        link.last_activity = self._loop.time()
        self._on_link = set()
        self._link = link
        self.links += 1
        if self._connected_once:
            self.metrics.redis_reconnects.inc()
            log.info("redis pub/sub reconnected; re-syncing %d channels", len(self.channels))
        else:
            log.info("redis pub/sub connected")
        self._connected_once = True
        for channel in self.channels.values():
            channel.begin_sync()
            self._queue_sync(channel)
        syncer = asyncio.create_task(self._syncer(link), name="hub-syncer")
        watched: list[asyncio.Future[Any]] = [syncer, link.closed]
        try:
            while not link.closed.done() and not syncer.done():
                await asyncio.wait(watched, timeout=self.options.heartbeat)
                age = self._loop.time() - link.last_activity
                if age > self.options.heartbeat_timeout:
                    self.metrics.heartbeat_stale.inc()
                    link.abort(TimeoutError(f"no heartbeat through redis for {age:.1f}s"))
                    break
                backoff.mark_healthy()
        finally:
            link.abort()
            await self._retire(syncer)
        lost = link.closed.result() if link.closed.done() else None
        log.warning("redis pub/sub link lost: %s", lost or "closed")

    async def _retire(self, syncer: asyncio.Task[None]) -> None:
        """Let the syncer of a dead link finish on its own (its link is closed, so it
        applies nothing): redis-py does not always survive a cancellation mid-command."""
        self._sync_wanted.set()
        await asyncio.wait([syncer], timeout=1.0)
        if not syncer.done():
            self._retired.add(syncer)  # kept, and awaited (bounded) when the hub stops
            syncer.add_done_callback(self._retired.discard)
        elif not syncer.cancelled() and syncer.exception() is not None:
            log.warning("history sync failed: %s", syncer.exception())

    async def _syncer(self, link: PubSubLink) -> None:
        """Subscribe queued channels on ``link`` and apply their history, in batches."""
        while not link.closed.done():
            raise_if_cancelled()
            await self._sync_wanted.wait()
            self._sync_wanted.clear()
            while self._to_sync and not link.closed.done():
                names = list(self._to_sync)[:SYNC_BATCH]
                for name in names:
                    del self._to_sync[name]
                await self._sync_batch(link, [self.channels[n] for n in names])

    async def _sync_batch(self, link: PubSubLink, batch: list[Channel]) -> None:
        fresh = [c.live_key for c in batch if c.live_key not in self._on_link]
        self._on_link.update(fresh)
        async with asyncio.timeout(self.options.subscribe_timeout):
            await asyncio.gather(*link.subscribe(fresh))
        # Bounded by the client's socket timeout, not by a cancellation (see _retire).
        snapshots = await self.history.snapshots(
            [(c.name, c.offset if c.epoch else None, c.epoch) for c in batch]
        )
        if link.closed.done():
            return  # too late: the next link re-syncs every channel from scratch
        for channel, snapshot in zip(batch, snapshots, strict=True):
            if self.channels.get(channel.name) is channel and channel.finish_sync(snapshot):
                self._queue_sync(channel)

    async def _heartbeat_loop(self) -> None:
        """Publish to our own heartbeat channel, so an idle link still carries traffic."""
        while True:
            raise_if_cancelled()
            await asyncio.sleep(self.options.heartbeat)
            if self._link is None:
                continue
            try:
                # Bounded by the client's socket timeout (never cancelled mid-command).
                await self.redis.publish(self._hb_key, b"1")
            except (OSError, TimeoutError, ConnectionError, aioredis.RedisError) as exc:
                raise_if_cancelled()
                log.debug("heartbeat publish failed: %s", redis_connect.reason(exc))
