"""One Redis connection in subscribe mode, through redis.asyncio's PubSub: the hub's ear.

One reader task (:meth:`PubSubLink.run`) hands each message to
``on_message(channel, payload)`` synchronously and confirms each SUBSCRIBE per channel
through a future; a sender task sends the (UN)SUBSCRIBEs queued without an await.
The link never reconnects (redis-py's retries are off); its owner (the hub) sees
:attr:`closed` resolve, calls :meth:`aclose` and decides.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from pgcast import redis_connect
from pgcast.redis_url import RedisTarget

log = logging.getLogger(__name__)

MessageHandler = Callable[[bytes, bytes], None]
MovedHandler = Callable[[bytes], None]
CLOSE_WAIT = 1.0  # bound on each step of tearing a link down


def _nothing() -> None:
    """Default batch hook."""


class LinkClosedError(ConnectionError):
    """The pub/sub connection is gone; pending confirmations fail with this."""


class PubSubLink:
    """A subscribe-mode Redis connection; create it with :func:`open_link`."""

    def __init__(
        self,
        client: aioredis.Redis,  # type: ignore[type-arg, unused-ignore]
        pubsub: PubSub,
        on_message: MessageHandler,
        begin: Callable[[], None] = _nothing,
        end: Callable[[], None] = _nothing,
        *,
        sharded: bool = False,
        on_moved: MovedHandler | None = None,
        stale_after: float = 0.0,
    ) -> None:
        self._client = client
        self.stale_after = stale_after  # 0: never judged by silence here
        # Redis Cluster: SSUBSCRIBE/SUNSUBSCRIBE; Redis ends a shard subscription on its
        # own when the channel's slot moves (reshard, failover): on_moved hears of it.
        self.sharded = sharded
        self._on_moved = on_moved
        self._leaving: dict[bytes, int] = {}  # SUNSUBSCRIBEs sent and not yet confirmed
        self._pubsub = pubsub
        self._conn: Any = pubsub.connection
        self._on_message = on_message
        self._begin = begin
        self._end = end
        self._loop = asyncio.get_running_loop()
        # Any reply from Redis proves the link alive: under a backlog the heartbeat
        # itself waits behind messages, and must not get a busy link dropped.
        self.last_activity = self._loop.time()
        # Per channel, one future per SUBSCRIBE sent, in order: Redis confirms each
        # SUBSCRIBE once, in order, even when an UNSUBSCRIBE came in between.
        self._confirm: dict[bytes, deque[asyncio.Future[None]]] = {}
        self._outbox: deque[tuple[bool, list[bytes]]] = deque()  # (subscribe?, names)
        self._wake = asyncio.Event()
        self.closed: asyncio.Future[BaseException | None] = self._loop.create_future()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """Start the reader and the sender; :meth:`aclose` stops and awaits them."""
        self._tasks = [
            asyncio.create_task(self.run(), name="pubsub-reader"),
            asyncio.create_task(self._send_loop(), name="pubsub-sender"),
        ]

    # -- reading ------------------------------------------------------------------------
    async def run(self) -> None:
        """Read and dispatch until the connection fails or the link is closed."""
        try:
            while self._usable():
                reply = await self._pubsub.get_message(timeout=None)
                self._begin()
                try:
                    self._handle(reply)
                    # What is already buffered came with the same read: dispatch it in
                    # the same batch, so each socket gets one write for all of it.
                    while self._usable() and await self._conn.can_read():
                        self._handle(await self._pubsub.get_message(timeout=None))
                finally:
                    self._end()
        except Exception as exc:
            # A refused SUBSCRIBE (ACL) cannot be tied to its channel: drop the link too.
            self._finish(exc)

    def _usable(self) -> bool:
        # A disconnected redis-py connection reconnects (and resubscribes) on its next
        # use: never let it, the hub re-syncs history on a link of its own making.
        if not self.closed.done() and not self._conn.is_connected:
            self._finish(LinkClosedError("redis pub/sub connection is closed"))
        return not self.closed.done()

    def _handle(self, reply: dict[str, Any] | None) -> None:
        now = self._loop.time()
        if self.stale_after and now - self.last_activity > self.stale_after:
            # Silent for longer than a heartbeat may be: whatever was published meanwhile
            # may be lost, even if the connection carries traffic again. Start afresh.
            self._finish(TimeoutError(f"silent for {now - self.last_activity:.1f}s"))
            return
        self.last_activity = now
        if reply is None:
            return
        kind = reply["type"]
        if kind in ("message", "smessage"):
            self._on_message(reply["channel"], reply["data"])
        elif kind in ("subscribe", "ssubscribe"):
            self._confirmed(reply["channel"])
        elif kind == "sunsubscribe":
            self._unsubscribed(reply["channel"])

    def _unsubscribed(self, name: bytes) -> None:
        asked = self._leaving.get(name, 0)
        if asked > 1:
            self._leaving[name] = asked - 1
        elif asked == 1:
            del self._leaving[name]
        elif self._on_moved is not None:
            self._on_moved(name)  # not ours: the slot moved away from this node

    def _confirmed(self, name: bytes) -> None:
        queue = self._confirm.get(name)
        if not queue:
            return
        fut = queue.popleft()
        if not queue:
            del self._confirm[name]
        if not fut.done():
            fut.set_result(None)

    # -- commands -----------------------------------------------------------------------
    def subscribe(self, channels: Iterable[bytes]) -> list[asyncio.Future[None]]:
        """Queue SUBSCRIBE; each returned future resolves once Redis confirmed its channel."""
        names = list(channels)
        if not names:
            return []
        if self.closed.done():
            raise LinkClosedError("redis pub/sub connection is closed")
        futures = []
        for name in names:
            fut: asyncio.Future[None] = self._loop.create_future()
            self._confirm.setdefault(name, deque()).append(fut)
            futures.append(fut)
        self._outbox.append((True, names))
        self._wake.set()
        return futures

    def unsubscribe(self, channels: Iterable[bytes]) -> None:
        names = list(channels)
        if names and not self.closed.done():
            self._outbox.append((False, names))
            self._wake.set()

    async def _send_loop(self) -> None:
        """Send queued commands in order; writes are bounded by the socket timeout."""
        try:
            while self._usable():
                if not self._outbox:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                subscribe, names = self._outbox.popleft()
                if not self.sharded:
                    if subscribe:
                        await self._pubsub.subscribe(*names)
                    else:
                        await self._pubsub.unsubscribe(*names)
                elif subscribe:
                    # One slot per command (Redis refuses a multi-slot SSUBSCRIBE).
                    for name in names:
                        await self._pubsub.ssubscribe(name)
                else:
                    for name in names:
                        self._leaving[name] = self._leaving.get(name, 0) + 1
                        await self._pubsub.sunsubscribe(name)
        except Exception as exc:
            self._finish(exc)

    # -- closing ------------------------------------------------------------------------
    def _finish(self, exc: BaseException | None) -> None:
        if self.closed.done():
            return
        if exc is not None:
            log.warning("dropping redis pub/sub connection: %s", exc)
        error = LinkClosedError(f"redis pub/sub connection lost: {exc or 'closed'}")
        for queue in self._confirm.values():
            for fut in queue:
                if not fut.done():
                    fut.set_exception(error)
                    fut.exception()  # retrieved here: a waiter may have timed out already
        self._confirm.clear()
        self._outbox.clear()
        self.closed.set_result(exc)
        self._wake.set()

    def abort(self, exc: BaseException | None = None) -> None:
        """Mark the link closed now (``closed`` resolves); :meth:`aclose` disconnects."""
        self._finish(exc)

    async def aclose(self) -> None:
        """Close the link, stop its tasks and disconnect; every step is bounded."""
        self._finish(None)
        reader, sender = self._tasks or (None, None)
        if reader is not None and sender is not None:
            # The reader may wait on a silent socket: a blocking PubSub read has nothing
            # to clean up, so cancelling it is safe. The sender ends on its own (its
            # writes are bounded by socket_timeout) and is cancelled only past that.
            reader.cancel()
            await asyncio.wait(self._tasks, timeout=CLOSE_WAIT)
            if not sender.done():
                sender.cancel()
                await asyncio.wait([sender], timeout=CLOSE_WAIT)
        await _discard(self._pubsub, self._client)


async def _discard(
    pubsub: PubSub,
    client: aioredis.Redis,  # type: ignore[type-arg, unused-ignore]
) -> None:
    """Disconnect without waiting on the peer (redis-py closes with nowait here)."""
    try:
        async with asyncio.timeout(CLOSE_WAIT):
            await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]
            await client.aclose()
    except (OSError, TimeoutError, aioredis.RedisError) as exc:
        log.debug("closing redis pub/sub connection: %s", exc)


async def open_link(
    target: RedisTarget,
    on_message: MessageHandler,
    *,
    name: str,
    within: float,
    begin: Callable[[], None] = _nothing,
    end: Callable[[], None] = _nothing,
    sharded: bool = False,
    on_moved: MovedHandler | None = None,
    stale_after: float = 0.0,
) -> PubSubLink:
    """Connect to the Redis primary of ``target`` (one address, or the one Sentinels name
    now, or one cluster node with ``sharded``; AUTH and TLS per the target), name the
    client, and start reading. The caller must :meth:`PubSubLink.aclose` it."""
    client = redis_connect.client(
        target,
        # Bounds writes and the handshake; blocking pub/sub reads opt out of it.
        timeout=within,
        client_name=name,
        health_check_interval=0,  # a PING read would race the reader; the hub heartbeats
        retry=Retry(NoBackoff(), 0, supported_errors=()),  # the hub reconnects, not redis-py
    )
    pubsub = client.pubsub()
    try:
        async with asyncio.timeout(within):
            await pubsub.connect()  # type: ignore[no-untyped-call, unused-ignore]
    except BaseException as exc:
        await _discard(pubsub, client)
        if isinstance(exc, aioredis.RedisError):
            raise LinkClosedError(
                f"redis pub/sub connect failed: {redis_connect.reason(exc)}"
            ) from exc
        raise
    link = PubSubLink(
        client,
        pubsub,
        on_message,
        begin,
        end,
        sharded=sharded,
        on_moved=on_moved,
        stale_after=stale_after,
    )
    link.start()
    return link
