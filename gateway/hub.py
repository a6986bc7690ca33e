"""The hub: channel -> local subscribers over ONE Redis pub/sub link per node per process.

It subscribes a channel in Redis when its first local subscriber arrives and
unsubscribes after the last leaves. With one Redis (or Sentinel) there is one link;
in a Redis Cluster one sharded link per master that serves a channel of ours, each
with its own heartbeat (gateway.shard_link owns a link's life). The hub routes each
channel to the link of the node that serves its slot (gateway.topology), moves it when
the slot moves (Redis ends the shard subscription, or the slot map changed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

import redis.asyncio as aioredis

from gateway.batch import WriteBatch
from gateway.channel import Channel, Subscriber
from gateway.control import ControlFeed
from gateway.history import History
from gateway.message import Message
from gateway.metrics import Metrics
from gateway.resume import Plan, Snapshot, plan_subscribe
from gateway.shard_link import ShardLink
from gateway.topology import Topology
from pgcast import redis_connect
from pgcast.cancellation import raise_if_cancelled
from pgcast.keys import (
    BROADCAST_KIND,
    EPHEMERAL_MARK,
    PRESENCE_KIND,
    RESET_KIND,
    encode_broadcast,
)

log = logging.getLogger(__name__)

AHEAD_WAIT = 1.0  # how long a client that resumes ahead of this hub waits for it
TOPOLOGY_EVERY = 5.0  # seconds between reads of a cluster's slot map (a node added)
REDIS_ERRORS = redis_connect.ERRORS


class HubClosedError(Exception):
    """The subscriber left (or the hub stopped) while its subscribe was pending."""


class HubUnavailableError(Exception):
    """Redis did not answer in time (link down, or the history read failed)."""


@dataclass(frozen=True)
class HubOptions:
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
        topology: Topology,
    ) -> None:
        self.options = options
        self.redis = redis
        self.history = history
        self.metrics = metrics
        self.control = control
        self.topology = topology
        self.layout = topology.layout
        self.links = 0  # pub/sub links opened so far: a new one lost what came in between
        self.channels: dict[str, Channel] = {}
        self._by_live: dict[bytes, Channel] = {}
        self.shards: dict[str, ShardLink] = {}
        self._shard_of: dict[str, ShardLink] = {}  # channel name -> the link serving it
        self.control_key = self.layout.control_keys()[2].encode()
        self.batch = WriteBatch()
        self._topology_suspect = asyncio.Event()
        self._gone: set[asyncio.Task[None]] = set()  # links of nodes that left, stopping
        self._loop = asyncio.get_running_loop()
        metrics.gauge("channels", "Channels subscribed in Redis", lambda: len(self.channels))

    # -- state --------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        """Linked to Redis, and every link delivered something recently (at least its
        own heartbeat, published every PGCAST_REDIS_HEARTBEAT seconds)."""
        return not self.stale()

    def stale(self) -> list[str]:
        """The nodes whose link is down or silent ("redis" before any link exists)."""
        needed = [shard for shard in self.shards.values() if shard.needed]
        if not needed:
            return ["redis"]
        return [shard.node for shard in needed if not shard.alive]

    async def barrier(self) -> None:
        """Until every link has read what its node had sent before now (ShardLink.barrier)."""
        await asyncio.gather(*(shard.barrier() for shard in list(self.shards.values())))

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
        except REDIS_ERRORS as exc:
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
            shard = self._shard_of.pop(name, None)
            if shard is not None:
                shard.drop(channel, unsubscribe=True)

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
            channel = Channel(
                name, self.layout.live_channel(name).encode(), self.options.backlog_bytes
            )
            self.channels[name] = channel
            self._by_live[channel.live_key] = channel
            self._route(channel)
        return channel

    def _route(self, channel: Channel) -> None:
        """Hand ``channel`` to the link of the node serving it (none known yet: it waits,
        syncing, for the next read of the slot map)."""
        node = self.topology.node_of(channel.live_key)
        if node is None:
            self.suspect_topology()
            return
        shard = self._shard(node)
        self._shard_of[channel.name] = shard
        shard.add(channel)

    def _shard(self, node: str) -> ShardLink:
        shard = self.shards.get(node)
        if shard is None:
            shard = self.shards[node] = ShardLink(self, node)
            shard.task = asyncio.create_task(shard.run(), name=f"pgcast-shard-{node}")
        return shard

    async def broadcast(self, name: str, sender: str, frame: bytes) -> None:
        """Send a client message to every subscriber of ``name`` (every gateway's) but
        ``sender``'s connection; HubUnavailableError when Redis does not take it."""
        try:
            # Bounded by the client's socket timeout (never cancelled mid-command).
            await self.redis.execute_command(  # type: ignore[no-untyped-call, unused-ignore]
                self.layout.publish_command,
                self.layout.live_channel(name),
                encode_broadcast(sender, frame),
            )
        except REDIS_ERRORS as exc:
            raise HubUnavailableError(name) from exc

    # -- the live path ------------------------------------------------------------------
    def on_message(self, live: bytes, payload: bytes) -> None:
        channel = self._by_live.get(live)
        if channel is None:
            if live == self.control_key:
                self.control.on_live(payload)
                return
            # Our heartbeat (its arrival was noted by the link) or a barrier's token on it,
            # or a channel just left.
            for link in self.shards.values():
                link.heard(live, payload)
            return
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
            shard = self._shard_of.get(channel.name)
            if shard is not None:
                shard.queue_sync(channel)
        elif channel.offset != before:
            hot.messages_out += len(channel.members)

    def _on_ephemeral(self, channel: Channel, payload: bytes) -> None:
        """A client message, a presence announcement or a channel reset (pgcast.keys): never
        in history."""
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
        elif kind == RESET_KIND and len(payload) > 2:
            channel.on_reset(payload[2:].decode(errors="replace"))
            return
        if kind != BROADCAST_KIND:
            self.metrics.hot.bad_payloads += 1
            log.warning("malformed ephemeral payload on %s dropped", channel.name)

    # -- links and topology -------------------------------------------------------------
    def linked(self, shard: ShardLink, *, again: bool) -> None:
        """``shard``'s link is up (``again``: it replaced a lost one)."""
        self.links += 1
        if again:
            self.metrics.redis_reconnects.inc()
            log.info(
                "redis pub/sub reconnected (%s); re-syncing %d channels",
                shard.node,
                len(shard.channels),
            )
        else:
            log.info("redis pub/sub connected (%s)", shard.node)

    def on_moved(self, shard: ShardLink, live: bytes) -> None:
        """Redis ended one of ``shard``'s subscriptions (its slot moved, or a failover): the
        channel waits, syncing, until it is subscribed where its slot lives now. A notice
        from a node the channel has already left changes nothing."""
        channel = self._by_live.get(live)
        if channel is not None and self._shard_of.get(channel.name) is shard:
            shard.forget_subscription(live)
            channel.begin_sync()
        self.suspect_topology()

    def suspect_topology(self) -> None:
        """The slot map may have changed: read it again soon (cluster only)."""
        self._topology_suspect.set()

    async def run(self) -> None:
        """Keep the links up, routed and proven alive, until cancelled."""
        try:
            await self._topology_loop()
        finally:
            links = [s.task for s in self.shards.values() if s.task is not None]
            links += self._gone
            for task in links:
                task.cancel()
            if links:
                await asyncio.wait(links, timeout=2.0)

    async def _topology_loop(self) -> None:
        """Read the slot map (cluster: now, when suspect, every TOPOLOGY_EVERY seconds) and
        move what it moved; without a cluster, start the one link and stay."""
        while True:
            try:
                # Bounded by the client's socket timeout (never cancelled mid-command).
                await self.topology.refresh()
            except REDIS_ERRORS as exc:
                raise_if_cancelled()
                log.warning("reading the cluster's slot map failed: %s", redis_connect.reason(exc))
            else:
                # On success too: a RedisCluster's first command (it reads the slot map and
                # connects to every node) can return normally from a cancelled task, and this
                # loop would go on forever, starting links while the gateway stops.
                raise_if_cancelled()
                self._rebalance()
            if not self.topology.sharded:
                await asyncio.Event().wait()  # one link, nothing to move: until cancelled
            self._topology_suspect.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(TOPOLOGY_EVERY):
                    await self._topology_suspect.wait()
            await asyncio.sleep(0.1)  # a burst of moved slots: one read for all of them

    def _route_control(self) -> None:
        node = self.topology.node_of(self.control_key)
        if node is None:
            return
        keeper = self._shard(node)
        for shard in self.shards.values():
            if shard is not keeper:
                shard.carries_control = False
        if not keeper.carries_control:
            keeper.take_control()

    def _rebalance(self) -> None:
        """Route every channel (and the control stream) to the node serving it now."""
        self._route_control()
        for channel in self.channels.values():
            current = self._shard_of.get(channel.name)
            node = self.topology.node_of(channel.live_key)
            if node is None or (current is not None and current.node == node):
                continue
            if current is not None:
                # No SUNSUBSCRIBE: the old node no longer serves the slot (Redis ends that
                # subscription itself, and would answer MOVED, which ends the whole link).
                current.drop(channel, unsubscribe=False)
            channel.begin_sync()
            self._route(channel)
        for node, shard in list(self.shards.items()):
            if not shard.needed and node not in self.topology.nodes():
                del self.shards[node]  # a node gone from the cluster, with nothing of ours
                if shard.task is not None:
                    shard.task.cancel()
                    self._gone.add(shard.task)
                    shard.task.add_done_callback(self._gone.discard)
