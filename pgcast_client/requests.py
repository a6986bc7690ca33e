"""Requests the application awaits (presence, publish, untrack) and the remembered tracks.

A request is queued until a connection is open, then sent with an id; its answer
(or an ``error`` frame with the same id) settles its future. What a dead connection
does to one still unanswered depends on its kind: ``presence`` is asked again,
``publish`` fails with ``disconnected`` (a client message is sent at most once),
``untrack`` succeeds (the dead connection's presence is gone). Tracks are state, not
requests: every new connection tracks each remembered channel again. :class:`RequestAPI`
is the client's side of them (track, untrack, presence, publish). No I/O here.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Any, Literal

from pgcast_client.presence import Member

log = logging.getLogger("pgcast_client.client")

Lost = Literal["retry", "reject", "resolve"]


class RequestError(Exception):
    """The gateway refused a request (``code``: forbidden, too_large, rate_limited,
    presence_full, bad_request), or the client's own: timeout, disconnected, closed."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


class Request:
    """A presence/publish/untrack frame and the future the caller awaits."""

    __slots__ = ("frame", "future", "id", "lost")

    def __init__(self, frame: dict[str, Any], lost: Lost) -> None:
        self.frame = frame
        self.lost = lost
        self.id: int | None = None
        self.future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    def settle(self, value: Any = None, error: BaseException | None = None) -> None:
        if self.future.done():
            return
        if error is None:
            self.future.set_result(value)
        else:
            self.future.set_exception(error)


class Track:
    """This client's presence in one channel: sent again on every new connection."""

    __slots__ = ("channel", "id", "meta", "state", "waiters")

    def __init__(self, channel: str) -> None:
        self.channel = channel
        self.meta: dict[str, Any] = {}
        self.state = "pending"  # pending | sent | tracked
        self.id: int | None = None
        self.waiters: list[asyncio.Future[None]] = []

    def settle(self, error: BaseException | None = None) -> int:
        """Wake every waiter (with ``error``, if any); returns how many were waiting."""
        waiters, self.waiters = self.waiters, []
        for waiter in waiters:
            if waiter.done():
                continue
            if error is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(error)
        return len(waiters)


class Requests:
    """The outbox of unsent requests and the remembered tracks of one client."""

    def __init__(self) -> None:
        self.outbox: deque[Request] = deque()
        self.tracked: dict[str, Track] = {}

    def track(self, channel: str, meta: dict[str, Any]) -> asyncio.Future[None]:
        entry = self.tracked.get(channel)
        if entry is None:
            entry = self.tracked[channel] = Track(channel)
        entry.meta = meta
        entry.state = "pending"
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry.waiters.append(waiter)
        return waiter

    def frames(self, register: Callable[[Track | Request], int]) -> list[dict[str, Any]]:
        """What to send now: pending tracks, then queued requests (each given an id)."""
        out: list[dict[str, Any]] = []
        for entry in self.tracked.values():
            if entry.state == "pending":
                entry.state = "sent"
                entry.id = register(entry)
                out.append(
                    {"type": "track", "id": entry.id, "channel": entry.channel, "meta": entry.meta}
                )
        while self.outbox:
            request = self.outbox.popleft()
            if request.future.done():  # timed out or cancelled while queued
                continue
            request.id = register(request)
            out.append({**request.frame, "id": request.id})
        return out

    def connection_lost(self, unanswered: list[Request]) -> None:
        """A connection ended: tracks go again, requests as their kind says."""
        for entry in self.tracked.values():
            entry.state = "pending"
        for request in unanswered:
            if request.lost == "retry":
                request.id = None
                self.outbox.appendleft(request)
            elif request.lost == "resolve":
                request.settle()
            else:
                kind = request.frame.get("type")
                request.settle(
                    error=RequestError(
                        "disconnected", f"connection lost before {kind} was answered"
                    )
                )
        for request in list(self.outbox):
            if request.lost == "resolve":
                request.settle()

    def abandon(self, error: BaseException, unanswered: list[Request]) -> None:
        """No connection will come: fail every request and track waiter with ``error``."""
        for request in [*self.outbox, *unanswered]:
            request.settle(error=error)
        self.outbox.clear()
        for entry in self.tracked.values():
            entry.settle(error)


class RequestAPI:
    """The request API of :class:`~pgcast_client.client.Client`: track, untrack, presence
    and publish, and the matching of their answers (by id) to what was asked."""

    _requests: Requests
    _pending: dict[int, Any]
    _dirty: asyncio.Event
    _throttled: bool
    _request_timeout: float
    connected: asyncio.Event
    error: BaseException | None

    async def track(self, channel: str, meta: dict[str, Any] | None = None) -> None:
        """Join (or update) this client's presence in ``channel`` with ``meta``; remembered
        and tracked again on every new connection until :meth:`untrack`. Returns once the
        gateway confirmed; raises :class:`RequestError` (forbidden, presence_full, ...)."""
        waiter = self._requests.track(channel, dict(meta or {}))
        self._dirty.set()
        await self._wait(waiter, "track")

    async def untrack(self, channel: str) -> None:
        """Leave ``channel``'s presence; no longer tracked on reconnects."""
        entry = self._requests.tracked.pop(channel, None)
        if entry is None:
            return
        entry.settle(
            RequestError("cancelled", f"untrack({channel}) before the track was confirmed")
        )
        if entry.state == "pending" or not self.connected.is_set():
            return  # nothing on the gateway
        await self._ask({"type": "untrack", "channel": channel}, "resolve")

    async def presence(self, channel: str) -> list[Member]:
        """The members of ``channel``'s presence now (asked again after a lost connection)."""
        members = await self._ask({"type": "presence", "channel": channel}, "retry")
        return [Member.from_frame(m) for m in members or ()]

    async def publish(self, channel: str, data: Any) -> None:
        """Send ``data`` (JSON) to every other connection subscribed to ``channel`` (their
        ``on_broadcast``); needs the token's ``publish`` claim. Ephemeral: at most once,
        never replayed; ``RequestError('disconnected')`` if the connection died unanswered."""
        await self._ask({"type": "publish", "channel": channel, "data": data}, "reject")

    async def _ask(self, frame: dict[str, Any], lost: Lost) -> Any:
        if self.error is not None:
            raise self.error
        request = Request(frame, lost)
        self._requests.outbox.append(request)
        self._dirty.set()
        return await self._wait(request.future, str(frame["type"]))

    async def _wait(self, future: asyncio.Future[Any], what: str) -> Any:
        try:
            async with asyncio.timeout(self._request_timeout):
                return await asyncio.shield(future)
        except TimeoutError:
            future.cancel()
            raise RequestError(
                "timeout", f"no answer to {what} in {self._request_timeout}s"
            ) from None

    def _answer(self, frame: dict[str, Any], value: Any) -> bool:
        """Settle the request ``frame`` answers (by id); False when it answers none."""
        request = self._pending.get(frame.get("id", -1))
        if not isinstance(request, Request):
            return False
        del self._pending[frame["id"]]
        request.settle(value)
        return True

    def _on_tracked(self, frame: dict[str, Any]) -> None:
        entry = self._pending.pop(frame.get("id", -1), None)
        current = isinstance(entry, Track) and self._requests.tracked.get(entry.channel) is entry
        if isinstance(entry, Track) and current and entry.id == frame.get("id"):
            entry.state = "tracked"
            entry.settle()

    def _track_refused(self, entry: Track, frame: dict[str, Any], code: str, text: str) -> None:
        if entry.id != frame.get("id") or self._requests.tracked.get(entry.channel) is not entry:
            return  # superseded by a newer track or an untrack
        if code == "rate_limited":
            entry.state = "pending"
            self._throttled = True
            self._dirty.set()
            return
        del self._requests.tracked[entry.channel]  # refused: not tracked again on reconnect
        if entry.settle(RequestError(code, text)) == 0:
            log.warning("pgcast track of %s refused: %s %s", entry.channel, code, text)
