"""The asyncio client: one WebSocket to a gateway, reconnected and resumed for ever.

``async with Client(url, token=...) as c: async for msg in c.channel("jobs"): ...``
``run()`` owns the socket: it reconnects with full-jitter backoff (promptly, with
jitter, after 1012), asks the token factory again on each connect and before expiry
(a ``refresh`` frame), and resubscribes every channel from its last offset and epoch.
Presence tracks are remembered and sent again on every connection; ``presence()``,
``publish()`` and ``untrack()`` are requests answered by id (:mod:`pgcast_client.requests`).
Close code 4003 (the application disconnected this user) stops the client for good.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from pgcast.backoff import Backoff
from pgcast_client.codes import Outcome, reconnect_plan
from pgcast_client.position import Position
from pgcast_client.presence import Broadcast, BroadcastHandler, PresenceHandler
from pgcast_client.requests import Request, RequestAPI, RequestError, Requests, Track
from pgcast_client.subscription import (
    GapHandler,
    Message,
    Subscription,
    SubscriptionError,
    on_subscribed,
    on_unsubscribed,
)
from pgcast_client.tokens import TokenFactory, TokenSource, refresh_delay

log = logging.getLogger(__name__)


class Unauthorized(Exception):
    """The gateway refused the token and there is no token_factory to get another."""


class Disconnected(Exception):
    """The application disconnected this user (close code 4003, ``pgcast.disconnect``):
    the client stops and never reconnects by itself. ``reason`` is the application's text."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"disconnected by the application: {reason or '(no reason)'}")
        self.reason = reason


class Client(RequestAPI):
    """A resilient pgcast client; see the module docstring. Not thread-safe."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        token_factory: TokenFactory | None = None,
        backoff_base: float = 0.5,
        backoff_cap: float = 20.0,
        healthy_after: float = 10.0,
        restart_jitter: float = 1.0,
        refresh_margin: float = 30.0,
        heartbeat: float = 20.0,
        connect_timeout: float = 10.0,
        queue_size: int = 1000,
        request_timeout: float = 10.0,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.url = url
        self._tokens = TokenSource(token, token_factory)
        self._backoff = Backoff(backoff_base, backoff_cap)
        self._healthy_after = healthy_after
        self._restart_jitter = restart_jitter
        self._refresh_margin = refresh_margin
        self._heartbeat = heartbeat
        self._connect_timeout = connect_timeout
        self._queue_size = queue_size
        self._session = session
        self._own_session = session is None
        self._subs: dict[str, Subscription] = {}
        self._pending: dict[int, Subscription | Track | Request | str] = {}
        self._requests = Requests()
        self._request_timeout = request_timeout
        self._unsubs: list[str] = []
        self._dirty = asyncio.Event()
        self._throttled = False
        self._next_id = 0
        self._task: asyncio.Task[None] | None = None
        self.state = "idle"
        self.connected = asyncio.Event()
        self.connections = 0  # connections opened so far
        self.refreshes = 0  # refresh frames sent so far
        # Why the client stopped for good (Unauthorized, Disconnected), None while it runs.
        self.error: BaseException | None = None

    # -- public API ------------------------------------------------------------------

    async def __aenter__(self) -> Client:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def start(self) -> None:
        """Start the connection loop (``async with`` does it)."""
        if self._task is None:
            if self._session is None:
                self._session = aiohttp.ClientSession()
            self._task = asyncio.create_task(self.run(), name="pgcast-client")

    async def close(self) -> None:
        """Stop the loop, end every subscription's iteration, close the session we made."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for sub in list(self._subs.values()):
            sub.end()
        self._subs.clear()
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    def channel(
        self,
        name: str,
        *,
        since: str | None = None,
        epoch: str | None = None,
        on_gap: GapHandler | None = None,
        on_presence: PresenceHandler | None = None,
        on_broadcast: BroadcastHandler | None = None,
        queue_size: int | None = None,
    ) -> Subscription:
        """Subscribe to ``name`` (resuming after ``since`` in ``epoch`` when given).

        ``on_presence`` subscribes with presence: it gets a ``PresenceSnapshot`` (the
        whole set, replacing what was held: after subscribing and after each reconnect),
        then ``Join``/``Leave``; ``sub.members`` is the current set. ``on_broadcast`` gets
        the client messages other connections publish. Both may be sync or async; the
        reader awaits them, so keep them short.
        """
        if name in self._subs:
            raise ValueError(f"already subscribed to {name!r}")
        position = Position(epoch, since)
        sub = Subscription(self, name, position, queue_size or self._queue_size, on_gap)
        sub.on_presence = on_presence
        sub.on_broadcast = on_broadcast
        self._subs[name] = sub
        self._dirty.set()
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        if self._subs.get(sub.channel) is not sub:
            return
        del self._subs[sub.channel]
        if sub.state in ("subscribing", "active"):
            self._unsubs.append(sub.channel)
            self._dirty.set()
        sub.end()

    # -- the connection loop ---------------------------------------------------------

    async def run(self) -> None:
        """Connect, serve, and reconnect until cancelled (or the token is refused for good)."""
        try:
            while True:
                try:
                    outcome = await self._attempt()
                except Exception as exc:  # the loop boundary: a factory or a bug, not fatal
                    log.exception("pgcast connection attempt failed")
                    outcome = Outcome(False, 0, repr(exc))
                if outcome.lived >= self._healthy_after:
                    self._backoff.reset()
                plan = reconnect_plan(
                    outcome,
                    self._backoff,
                    refreshable=self._tokens.refreshable,
                    restart_jitter=self._restart_jitter,
                )
                if plan.stop:
                    if outcome.code == 4003:
                        self._fail_all(Disconnected(plan.reason))
                    else:
                        self._fail_all(Unauthorized(plan.reason))
                    return
                self._set_state("disconnected")
                log.info(
                    "pgcast disconnected (code %s: %s); reconnecting in %.2fs",
                    outcome.code,
                    outcome.reason,
                    plan.delay,
                )
                await asyncio.sleep(plan.delay)
        finally:
            self.connected.clear()
            self._set_state("closed")

    def _fail_all(self, error: BaseException) -> None:
        log.error("pgcast client stopped: %s", error)
        self.error = error
        for sub in list(self._subs.values()):
            sub.end(error)
        self._subs.clear()
        self._requests.abandon(error, self._unanswered())
        self._pending.clear()

    def _unanswered(self) -> list[Request]:
        return [r for r in self._pending.values() if isinstance(r, Request)]

    def _set_state(self, state: str) -> None:
        self.state = state

    async def _attempt(self) -> Outcome:
        self._set_state("connecting")
        token = await self._tokens.get()
        if self._session is None:
            raise RuntimeError("Client.start() was not called")
        try:
            async with asyncio.timeout(self._connect_timeout):
                ws = await self._session.ws_connect(
                    self.url,
                    headers={"Authorization": f"Bearer {token}"},
                    heartbeat=self._heartbeat,
                )
        except aiohttp.WSServerHandshakeError as exc:
            code = 4001 if exc.status == 401 else 0
            return Outcome(False, code, f"handshake refused with HTTP {exc.status}")
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            return Outcome(False, 0, f"{type(exc).__name__}: {exc}")
        try:
            return await self._serve(ws, token)
        finally:
            await ws.close()

    async def _serve(self, ws: aiohttp.ClientWebSocketResponse, token: str) -> Outcome:
        opened = time.monotonic()
        self.connections += 1
        for sub in self._subs.values():
            sub.state = "pending"
        self._requests.connection_lost(self._unanswered())
        self._pending.clear()
        self._unsubs.clear()
        self._dirty.set()
        self._set_state("connected")
        self.connected.set()
        log.info("pgcast connected to %s", _safe_url(self.url))
        try:
            async with asyncio.TaskGroup() as group:
                writer = group.create_task(self._write_loop(ws))
                refresher = group.create_task(self._refresh_loop(ws, token))
                close_reason = await self._read_loop(ws)
                writer.cancel()
                refresher.cancel()
        finally:
            self.connected.clear()
        exc = ws.exception()
        reason = close_reason if exc is None else f"{type(exc).__name__}: {exc}"
        return Outcome(True, ws.close_code or 0, reason, time.monotonic() - opened)

    async def _read_loop(self, ws: aiohttp.ClientWebSocketResponse) -> str:
        """The hot path: parse each frame once, de-duplicate by offset, hand it over.
        Returns the close frame's reason (4003 carries the application's)."""
        subs = self._subs
        loads = orjson.loads
        while True:
            msg = await ws.receive()
            if msg.type is aiohttp.WSMsgType.CLOSE:
                return str(msg.extra or "")
            if msg.type in _ENDED:
                return ""
            if msg.type is not aiohttp.WSMsgType.TEXT:
                continue
            frame = loads(msg.data)
            kind = frame.get("type")
            if kind == "message":
                channel = frame["channel"]
                sub = subs.get(channel)
                if sub is not None and sub.position.accept(frame["offset"]):
                    await sub.put(Message(channel, frame["offset"], frame.get("data")))
            elif kind == "subscribed":
                await on_subscribed(subs, self._pending, frame)
            elif kind == "error":
                self._on_error(frame)
            else:
                await self._on_other(kind, frame)

    async def _on_other(self, kind: str | None, frame: dict[str, Any]) -> None:
        """Presence, client messages, request answers, revocations; pong and frame types
        added later need nothing."""
        sub = self._subs.get(frame.get("channel", ""))
        if kind == "broadcast":
            if sub is not None and sub.state == "active":
                sender = str(frame.get("from", ""))
                await sub.broadcast(Broadcast(sub.channel, sender, frame.get("data")))
        elif kind == "presence":
            if not self._answer(frame, frame.get("members") or []) and sub is not None:
                await sub.presence_frame(frame)
        elif kind in ("join", "leave"):
            if sub is not None:
                await sub.presence_frame(frame)
        elif kind == "tracked":
            self._on_tracked(frame)
        elif kind in ("published", "untracked"):
            self._answer(frame, None)
        elif kind == "unsubscribed":
            on_unsubscribed(self._subs, self._pending, frame, sub)

    def _on_error(self, frame: dict[str, Any]) -> None:
        request = self._pending.pop(frame.get("id", -1), None)
        code, text = str(frame.get("code")), str(frame.get("message", ""))
        if isinstance(request, Request):
            request.settle(error=RequestError(code, text))
            return
        if isinstance(request, Track):
            self._track_refused(request, frame, code, text)
            return
        if isinstance(request, Subscription) and request.state != "closed":
            if code == "rate_limited":
                request.state = "pending"
                self._throttled = True
                self._dirty.set()
                return
            if self._subs.get(request.channel) is request:
                del self._subs[request.channel]
            request.end(SubscriptionError(code, text))
            return
        log.warning("pgcast gateway error %s on %s: %s", code, request or "a request", text)

    def _request_id(self, request: Subscription | Track | Request | str) -> int:
        self._next_id += 1
        self._pending[self._next_id] = request
        return self._next_id

    async def _write_loop(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """Send what changed: unsubscribes, then tracks and requests, then pending subscribes."""
        with contextlib.suppress(ConnectionError, aiohttp.ClientError):
            while True:
                await self._dirty.wait()
                self._dirty.clear()
                if self._throttled:
                    self._throttled = False
                    await asyncio.sleep(self._backoff.base)
                unsubs, self._unsubs = self._unsubs, []
                for channel in unsubs:
                    await ws.send_str(_dumps({"type": "unsubscribe", "channel": channel}))
                # Tracks go first: a presence snapshot after a subscribe then includes us.
                for frame in self._requests.frames(self._request_id):
                    await ws.send_str(_dumps(frame))
                for sub in list(self._subs.values()):
                    if sub.state == "pending":
                        await ws.send_str(_dumps(sub.request(self._request_id(sub))))

    async def _refresh_loop(self, ws: aiohttp.ClientWebSocketResponse, token: str) -> None:
        """Before the token expires, get a fresh one and send it as a ``refresh`` frame."""
        if not self._tokens.refreshable:
            return
        current = token
        with contextlib.suppress(ConnectionError, aiohttp.ClientError):
            while (delay := refresh_delay(current, time.time(), self._refresh_margin)) is not None:
                await asyncio.sleep(delay)
                try:
                    fresh = await self._tokens.get()
                except Exception:  # the factory's failure; the gateway closes 4001 if it lasts
                    log.warning("pgcast token_factory failed; retrying in 1s", exc_info=True)
                    await asyncio.sleep(1.0)
                    continue
                frame = {"type": "refresh", "id": self._request_id("refresh"), "token": fresh}
                await ws.send_str(_dumps(frame))
                self.refreshes += 1
                current = fresh


_ENDED = (aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)


def _dumps(frame: dict[str, Any]) -> str:
    return orjson.dumps(frame).decode()


def _safe_url(url: str) -> str:
    """The URL without its query (a ``?token=`` must never reach a log)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"
