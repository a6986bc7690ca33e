"""One channel's local state: its subscribers and its position in history; no I/O.

The hub feeds live messages in (:meth:`Channel.on_live`) and history snapshots
after (re)subscribing (:meth:`Channel.finish_sync`). The channel dispatches each
offset exactly once and in order, drops duplicates, notices gaps and epoch changes,
and tells the hub when it needs a history read. Pending subscribers (resuming)
collect a bounded backlog of what was dispatched until they go live.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from gateway.message import Entry, Message, Resync
from gateway.resume import Snapshot


class Subscriber(Protocol):
    """A session as the hub sees it; no method may block or raise."""

    conn: str  # the connection's id: a client message is not sent back to its sender

    def deliver(self, message: Message) -> None: ...

    def resync(self, channel: str, epoch: str, offset: int) -> None: ...

    def ephemeral(self, frame: bytes) -> None: ...


class Backlog:
    """What a pending subscriber missed, bounded in bytes (overflow = slow consumer)."""

    __slots__ = ("entries", "limit", "overflowed", "size")

    def __init__(self, limit: int) -> None:
        self.entries: list[Entry] = []
        self.size = 0
        self.limit = limit
        self.overflowed = False

    def add(self, entry: Entry) -> None:
        if self.overflowed:
            return
        self.entries.append(entry)
        if isinstance(entry, Message):
            self.size += len(entry.wire)
            if self.size > self.limit:
                self.overflowed = True
                self.entries.clear()


class Channel:
    """Subscribers of one channel and the last offset dispatched to them."""

    # Slots and no asyncio.Event: with per-user channels there is one Channel per
    # connection, and an Event alone (its deque) weighs more than the rest.
    __slots__ = (
        "_backlog_limit",
        "_ready_waiters",
        "_targets",
        "_waiters",
        "epoch",
        "live_key",
        "members",
        "name",
        "offset",
        "pending",
        "seen",
        "syncing",
        "watchers",
    )

    def __init__(self, name: str, live_key: bytes, backlog_limit: int) -> None:
        self.name = name
        self.live_key = live_key  # its (shard) pub/sub channel in Redis (pgcast.keys.Layout)
        self.members: dict[Subscriber, None] = {}
        self.pending: dict[Subscriber, Backlog] = {}
        self.epoch: str | None = None
        self.offset = 0
        # The highest offset of this epoch that Redis is known to hold: the last history
        # read's top, then every live message, duplicates included. Below ``offset`` only
        # while Redis lacks offsets this hub dispatched (a failover; see finish_sync).
        self.seen = 0
        # Not None while the channel waits for a history read: live messages wait here.
        self.syncing: list[Message] | None = []
        self._ready_waiters: list[asyncio.Future[None]] = []
        self._backlog_limit = backlog_limit
        self._targets: tuple[Callable[[Message], None], ...] | None = None
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        # Members that receive presence join/leave; a list holds (seq, frame) announcements
        # while the member's snapshot is being read. None until the first such member.
        self.watchers: dict[Subscriber, list[tuple[int, bytes]] | None] | None = None

    def __repr__(self) -> str:
        return f"Channel({self.name!r}, epoch={self.epoch!r}, offset={self.offset})"

    @property
    def ready(self) -> bool:
        """Synced with history: the epoch and last offset are known and current."""
        return self.syncing is None

    async def wait_ready(self) -> None:
        if self.syncing is None:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._ready_waiters.append(fut)
        try:
            await fut
        finally:
            if fut in self._ready_waiters:
                self._ready_waiters.remove(fut)

    @property
    def empty(self) -> bool:
        return not self.members and not self.pending

    # -- membership ---------------------------------------------------------------------
    def add_pending(self, member: Subscriber) -> Backlog:
        backlog = self.pending[member] = Backlog(self._backlog_limit)
        return backlog

    def activate(self, member: Subscriber) -> Backlog:
        """Move ``member`` from pending to live; returns its backlog (nothing is lost between)."""
        backlog = self.pending.pop(member)
        self.members[member] = None
        self._targets = None
        return backlog

    def remove(self, member: Subscriber) -> None:
        self.pending.pop(member, None)
        if self.members.pop(member, 0) is None:
            self._targets = None
        self.unwatch(member)

    # -- ephemeral traffic (never in history) -------------------------------------------
    def on_broadcast(self, sender: str, frame: bytes) -> None:
        """A client message: to every live member but the connection that sent it."""
        for member in self.members:
            if member.conn != sender:
                member.ephemeral(frame)

    def on_presence(self, seq: int, frame: bytes) -> None:
        """A join or leave: to watchers; held for those whose snapshot is on its way."""
        if not self.watchers:
            return
        for member, held in self.watchers.items():
            if held is None:
                member.ephemeral(frame)
            else:
                held.append((seq, frame))

    def watch(self, member: Subscriber) -> None:
        """``member`` wants presence; announcements wait until :meth:`watching` from ``seq``."""
        if self.watchers is None:
            self.watchers = {}
        self.watchers[member] = []

    def watching(self, member: Subscriber, seq: int) -> None:
        """``member`` got the snapshot at ``seq``: send what came after it, then go live."""
        if self.watchers is None or member not in self.watchers:
            return
        held = self.watchers[member] or []
        self.watchers[member] = None
        for announced, frame in held:
            if announced > seq:
                member.ephemeral(frame)

    def unwatch(self, member: Subscriber) -> None:
        if self.watchers is not None:
            self.watchers.pop(member, None)

    def on_reset(self, epoch: str) -> None:
        """The listener started the new, empty ``epoch`` (events may be missing that Redis
        never had): tell members now. While syncing, the history read finds it anyway."""
        if self.syncing is None and epoch != self.epoch:
            self._resync(epoch, 0)

    # -- the live path ------------------------------------------------------------------
    def on_live(self, message: Message) -> bool:
        """Take one live message; returns True when a history read must fill a gap."""
        if self.syncing is not None:
            self.syncing.append(message)
            return False
        if message.epoch != self.epoch:
            self._resync(message.epoch, message.offset - 1)
        elif message.offset <= self.offset:
            if message.offset > self.seen:  # published again after a failover
                self.seen = message.offset
                if self._waiters:
                    self._wake(message.offset)
            return False  # already dispatched (from history, after a reconnect)
        elif message.offset != self.offset + 1:
            self.syncing = [message]
            return True
        self._dispatch(message)
        return False

    def _dispatch(self, message: Message) -> None:
        self.offset = self.seen = message.offset
        targets = self._targets
        if targets is None:
            targets = self._targets = tuple(m.deliver for m in self.members)
        for deliver in targets:
            deliver(message)
        if self.pending:
            for backlog in self.pending.values():
                backlog.add(message)
        if self._waiters:
            self._wake(message.offset)

    def _resync(self, epoch: str, offset: int) -> None:
        self.epoch, self.offset, self.seen = epoch, offset, offset
        for member in list(self.members):
            member.resync(self.name, epoch, offset)
        mark = Resync(epoch, offset)
        for backlog in self.pending.values():
            backlog.add(mark)

    # -- history ------------------------------------------------------------------------
    def begin_sync(self) -> None:
        """The live feed is interrupted (reconnect): hold live messages until synced."""
        if self.syncing is None:
            self.syncing = []

    def finish_sync(self, snapshot: Snapshot) -> bool:
        """Apply a history read; returns True when another read is needed (a new gap)."""
        held = self.syncing or []
        self.syncing = None
        if self.epoch is None:
            self.epoch, self.offset = snapshot.epoch, snapshot.top
            self.seen = snapshot.top
        elif snapshot.epoch == self.epoch and snapshot.top < self.offset:
            # Redis lacks offsets we dispatched (it failed over to a replica, or restarted
            # from a snapshot). The listener either publishes those same events again at
            # the same offsets (its outbox still holds them; they are dropped here as
            # duplicates) or, where Redis fell behind its watermark, starts a new epoch,
            # which reaches us live and resyncs. Telling clients now would be a false alarm.
            self.seen = snapshot.top
        elif snapshot.epoch != self.epoch or not snapshot.continues(self.offset):
            self._resync(snapshot.epoch, snapshot.top)
        else:
            self.seen = max(self.seen, self.offset)  # Redis holds what we dispatched again
            for message in snapshot.messages(self.name, self.offset):
                self._dispatch(message)
        again = False
        for message in held:
            again = self.on_live(message) or again
        if self.syncing is None and self._ready_waiters:
            waiters, self._ready_waiters = self._ready_waiters, []
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)
        return again

    @property
    def redis_behind(self) -> bool:
        """Redis lacks offsets this hub dispatched (until the leader publishes them again)."""
        return self.seen < self.offset

    async def wait_offset(self, offset: int) -> None:
        """Wait until Redis is known to hold ``offset``: the hub dispatched it, or (after a
        failover) saw it published again. A client resumed ahead of us, or a resume needs
        history that Redis is about to have again."""
        if self.seen >= offset:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((offset, fut))
        try:
            await fut
        finally:
            self._waiters = [(o, f) for o, f in self._waiters if f is not fut]

    def _wake(self, reached: int) -> None:
        for offset, fut in self._waiters:
            if offset <= reached and not fut.done():
                fut.set_result(None)
