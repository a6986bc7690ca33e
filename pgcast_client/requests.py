"""Requests the application awaits (presence, publish, untrack) and the remembered tracks.

A request is queued until a connection is open, then sent with an id; its answer
(or an ``error`` frame with the same id) settles its future. What a dead connection
does to one still unanswered depends on its kind: ``presence`` is asked again,
``publish`` fails with ``disconnected`` (a client message is sent at most once),
``untrack`` succeeds (the dead connection's presence is gone). Tracks are state, not
requests: every new connection tracks each remembered channel again. No I/O here.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any, Literal

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
