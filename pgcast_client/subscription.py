"""One channel subscription: an async iterator over its messages, in offset order.

The client's reader puts each accepted message into a bounded queue; when the
application falls behind, the reader waits, the socket stops being read, and the
gateway eventually closes with 4008, after which the client resumes from the last
offset: memory stays bounded and nothing is lost. A lost continuity
(``recovered:false``) reaches the application in stream order through ``on_gap``.
Presence and client messages are not in the stream: the reader hands them to
``on_presence`` / ``on_broadcast`` as they arrive. A subscription the server revokes
ends its iteration with :class:`SubscriptionRevoked`.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pgcast_client.position import Position
from pgcast_client.presence import (
    Broadcast,
    BroadcastHandler,
    Member,
    PresenceHandler,
    apply,
)

if TYPE_CHECKING:
    from pgcast_client.client import Client

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Message:
    """A message of a channel: ``data`` is the JSON the publisher sent."""

    channel: str
    offset: str
    data: Any


@dataclass(frozen=True, slots=True)
class Gap:
    """History could not cover a disconnect (or the gateway lost continuity): refetch."""

    channel: str
    epoch: str
    offset: str


GapHandler = Callable[[Gap], Awaitable[None] | None]


class _End:
    """Queue sentinel: the subscription ended (closed, or failed with ``error``)."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException | None) -> None:
        self.error = error


class SubscriptionError(Exception):
    """The gateway refused the subscription (``code``: forbidden, bad_request, ...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


class SubscriptionRevoked(SubscriptionError):
    """The server ended the subscription (``pgcast.unsubscribe``: permission revoked);
    it is not resubscribed. ``reason`` is the server's (``revoked``)."""

    def __init__(self, channel: str, reason: str) -> None:
        super().__init__("revoked", f"the server ended the subscription to {channel}: {reason}")
        self.reason = reason


class Subscription:
    """``async for msg in sub``; ``async with`` (or ``await sub.close()``) unsubscribes."""

    def __init__(
        self,
        client: Client,
        channel: str,
        position: Position,
        queue_size: int,
        on_gap: GapHandler | None,
    ) -> None:
        self.client = client
        self.channel = channel
        self.position = position
        self.state = "pending"  # pending | subscribing | active | closed
        self.resumed = False
        self._on_gap = on_gap
        self.on_presence: PresenceHandler | None = None
        self.on_broadcast: BroadcastHandler | None = None
        self.members: dict[str, Member] = {}  # conn -> Member, with on_presence
        self._queue: asyncio.Queue[Message | Gap | _End] = asyncio.Queue(queue_size)
        self._ended: _End | None = None
        self._ready = asyncio.Event()

    def request(self, request_id: int) -> dict[str, Any]:
        """The subscribe frame for the next (re)connection."""
        fields = self.position.resume_fields()
        self.resumed = bool(fields)
        self.state = "subscribing"
        frame: dict[str, Any] = {"type": "subscribe", "id": request_id, "channel": self.channel}
        if self.on_presence is not None:
            frame["presence"] = True
        return {**frame, **fields}

    def mark_ready(self) -> None:
        self._ready.set()

    async def ready(self) -> None:
        """Wait until the gateway confirmed the subscription (first ``subscribed`` frame).

        A worker subscribes, waits for this, then scans its table for backlog: a row
        inserted after the scan started then always wakes it up. Bound the wait with
        ``asyncio.timeout``.
        """
        await self._ready.wait()

    async def put(self, item: Message | Gap) -> None:
        """Called by the client's reader; waits while the application is behind."""
        if self._ended is None:
            await self._queue.put(item)

    async def presence_frame(self, frame: dict[str, Any]) -> None:
        """A snapshot (replaces ``members``), join or leave: update, then tell on_presence."""
        if self.on_presence is None or self._ended is not None:
            return
        event = apply(self.members, frame)
        if event is not None:
            await _call(self.on_presence, event)

    async def broadcast(self, message: Broadcast) -> None:
        if self.on_broadcast is not None and self._ended is None:
            await _call(self.on_broadcast, message)

    def end(self, error: BaseException | None = None) -> None:
        """Stop the iteration after what is queued (raising ``error``, if any)."""
        if self._ended is not None:
            return
        self._ended = _End(error)
        self.state = "closed"
        if not self._queue.full():  # else __anext__ finds it once the queue is drained
            self._queue.put_nowait(self._ended)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Message:
        while True:
            if self._ended is not None and self._queue.empty():
                self._queue.put_nowait(self._ended)
            item = await self._queue.get()
            if isinstance(item, Message):
                return item
            if isinstance(item, Gap):
                await self._gap(item)
                continue
            if item.error is not None:
                raise item.error
            raise StopAsyncIteration

    async def _gap(self, gap: Gap) -> None:
        if self._on_gap is None:
            log.warning(
                "channel %s lost continuity (epoch %s): refetch state", gap.channel, gap.epoch
            )
            return
        result = self._on_gap(gap)
        if inspect.isawaitable(result):
            await result

    async def close(self) -> None:
        """Unsubscribe; the iteration ends after the messages already queued."""
        self.client.unsubscribe(self)

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def _call(handler: Callable[[Any], Awaitable[None] | None], event: Any) -> None:
    """Run an application callback on the reader; its failure is logged, not fatal."""
    try:
        result = handler(event)
        if inspect.isawaitable(result):
            await result
    except Exception:  # the application's bug must not kill the connection
        log.exception("pgcast %s handler failed", type(event).__name__)


# -- the gateway's answers about subscriptions (Client's read loop) -----------------------
async def on_subscribed(
    subs: dict[str, Subscription], pending: dict[int, Any], frame: dict[str, Any]
) -> None:
    """``subscribed``: the answer to a (re)subscribe, or unsolicited (the gateway resynced
    the channel): the position moves, and a Gap is delivered when continuity was lost."""
    sub = subs.get(frame.get("channel", ""))
    if sub is None:
        return
    request = pending.pop(frame.get("id", -1), None)
    unsolicited = request is None and sub.state == "active"
    epoch, offset = str(frame["epoch"]), str(frame["offset"])
    lost = sub.position.subscribed(
        epoch,
        offset,
        recovered=bool(frame.get("recovered")),
        resumed=sub.resumed and not unsolicited,
        active=unsolicited,
    )
    sub.resumed = False
    sub.state = "active"
    sub.mark_ready()
    if lost:
        await sub.put(Gap(sub.channel, epoch, offset))


def on_unsubscribed(
    subs: dict[str, Subscription],
    pending: dict[int, Any],
    frame: dict[str, Any],
    sub: Subscription | None,
) -> None:
    """``unsubscribed``: the answer to our own unsubscribe, or a revocation (with a reason:
    the subscription ends for good and is never resubscribed)."""
    pending.pop(frame.get("id", -1), None)
    reason = frame.get("reason")
    if reason is None or sub is None or sub.state not in ("subscribing", "active"):
        return
    del subs[sub.channel]
    log.warning("pgcast subscription to %s ended by the server: %s", sub.channel, reason)
    sub.end(SubscriptionRevoked(sub.channel, str(reason)))
