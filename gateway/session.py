"""One client connection's protocol logic, the same for WebSocket and SSE.

A Session owns the client's identity (token claims, expiry timer, refresh), its
subscriptions (through the hub), the request rate limit and the subscription
limit. It talks to the client only through a :class:`Transport`; closing is
requested synchronously (:meth:`Session.close`) and carried out by the registry.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from gateway import protocol
from gateway.auth import AuthError, Claims
from gateway.codes import CloseCode, ErrorCode
from gateway.hub import HubClosedError, HubUnavailableError
from gateway.limits import TokenBucket
from gateway.message import Message
from gateway.protocol import Ping, Refresh, Request, RequestError, Subscribe, Unsubscribe

if TYPE_CHECKING:
    from gateway.services import Services

log = logging.getLogger(__name__)


class Transport(Protocol):
    """How a session reaches its client (WebSocket or SSE)."""

    kind: str

    def bind(self, on_overflow: Callable[[], None]) -> None: ...

    def send(self, frame: bytes) -> None: ...

    def deliver(self, message: Message) -> None: ...

    def position(self, channel: str, epoch: str, offset: int) -> None: ...

    def forget(self, channel: str) -> None: ...

    async def close(self, code: CloseCode, reason: str) -> None: ...


class Session:
    # Slots: one Session per connection, 10,000s per process.
    __slots__ = (
        "_bucket",
        "_expiry",
        "claims",
        "close_code",
        "closing",
        "deliver",
        "services",
        "subscriptions",
        "transport",
    )

    def __init__(self, services: Services, transport: Transport, claims: Claims) -> None:
        self.services = services
        self.transport = transport
        self.claims = claims
        self.subscriptions: dict[str, bool] = {}  # channel -> live (False while pending)
        self.closing = False
        self.close_code: CloseCode | None = None
        self.deliver = transport.deliver  # the hub calls the transport directly
        settings = services.settings
        self._bucket = TokenBucket(settings.rate_limit, settings.rate_burst)
        self._expiry: asyncio.TimerHandle | None = None
        transport.bind(self._overflow)
        self._schedule_expiry()

    @property
    def user(self) -> str:
        return self.claims.sub

    # -- hub callbacks ------------------------------------------------------------------
    def resync(self, channel: str, epoch: str, offset: int) -> None:
        """History lost continuity under a live subscription: tell the client to refetch."""
        if self.closing:
            return
        self.services.metrics.resyncs.inc()
        self.transport.position(channel, epoch, offset)
        self.transport.send(
            protocol.subscribed(channel, epoch, offset, recovered=False, replayed=0)
        )

    def _overflow(self) -> None:
        if not self.closing:
            self.services.metrics.slow_consumer_closes.inc()
            self.close(CloseCode.SLOW_CONSUMER, "send queue full")

    # -- requests -----------------------------------------------------------------------
    async def handle(self, raw: str | bytes) -> None:
        """Handle one client frame; every refusal becomes an error frame."""
        if self.closing:
            return  # frames still in flight after a close was decided
        try:
            if not self._bucket.take():
                self.services.metrics.limit_breaches.labels("rate").inc()
                raise RequestError(ErrorCode.RATE_LIMITED, "too many requests; slow down")
            await self._dispatch(protocol.parse_request(raw))
        except RequestError as exc:
            self.reply_error(exc.code, exc.message, exc.request_id)

    def reply_error(self, code: ErrorCode, message: str, request_id: protocol.RequestId) -> None:
        self.services.metrics.request_errors.labels(code.value).inc()
        if not self.closing:
            self.transport.send(protocol.error(code, message, request_id))

    async def _dispatch(self, request: Request) -> None:
        if isinstance(request, Subscribe):
            await self._subscribe(request)
        elif isinstance(request, Unsubscribe):
            self._unsubscribe(request.channel)
            self.transport.send(protocol.unsubscribed(request.channel, request_id=request.id))
        elif isinstance(request, Refresh):
            await self._refresh(request)
        elif isinstance(request, Ping):
            self.transport.send(protocol.pong(request.id))

    async def _subscribe(self, req: Subscribe) -> None:
        channel, rid = req.channel, req.id
        if channel in self.subscriptions:
            raise RequestError(
                ErrorCode.ALREADY_SUBSCRIBED, f"already subscribed to {channel}", rid
            )
        if len(self.subscriptions) >= self.services.settings.max_subscriptions:
            self.services.metrics.limit_breaches.labels("subscriptions").inc()
            raise RequestError(ErrorCode.TOO_MANY_SUBSCRIPTIONS, "subscription limit reached", rid)
        if not self.claims.allows(channel):
            raise RequestError(ErrorCode.FORBIDDEN, f"token does not grant {channel}", rid)
        await self.subscribe(channel, req.since, req.epoch, rid)

    async def subscribe(
        self, channel: str, since: int | None, epoch: str | None, rid: protocol.RequestId = None
    ) -> None:
        """Subscribe (authorization already checked): replay what was missed, then live."""
        if self.closing:
            return  # torn down: joining now would leave a member nobody removes
        hub = self.services.hub
        self.subscriptions[channel] = False
        try:
            snapshot = await hub.join(channel, self, since, epoch)
        except HubUnavailableError:
            self.subscriptions.pop(channel, None)
            raise RequestError(ErrorCode.UNAVAILABLE, "history unavailable; retry", rid) from None
        except HubClosedError:
            self.subscriptions.pop(channel, None)
            return
        # From here to the end: no await, so no message can slip between replay and live.
        plan = hub.activate(channel, self, since, epoch, snapshot)
        self.subscriptions[channel] = True
        if plan.overflowed:
            self._overflow()  # closes 4008: the client resumes from the same position
            return
        if since is not None:
            self.services.metrics.resumes.labels(str(plan.recovered).lower()).inc()
        start = plan.replay[0].offset - 1 if plan.replay else plan.offset
        self.transport.position(channel, plan.epoch, start)
        frame = protocol.subscribed(
            channel,
            plan.epoch,
            plan.offset,
            recovered=plan.recovered,
            replayed=len(plan.replay),
            request_id=rid,
        )
        self.transport.send(frame)
        for message in plan.replay:
            self.transport.deliver(message)

    def _unsubscribe(self, channel: str) -> None:
        if self.subscriptions.pop(channel, None) is not None:
            self.services.hub.leave(channel, self)
            self.transport.forget(channel)

    async def _refresh(self, req: Refresh) -> None:
        verifier = self.services.verifier
        try:
            if verifier.blocking:
                claims = await asyncio.to_thread(verifier.verify, req.token)
            else:
                claims = verifier.verify(req.token)
        except AuthError as exc:
            self.services.metrics.auth_failures.labels("refresh_" + exc.reason).inc()
            raise RequestError(ErrorCode.INVALID_TOKEN, exc.message, req.id) from None
        if claims.sub != self.claims.sub:
            raise RequestError(ErrorCode.INVALID_TOKEN, "refresh token is for another sub", req.id)
        self.claims = claims
        self._schedule_expiry()
        for channel in [c for c in self.subscriptions if not claims.allows(c)]:
            self._unsubscribe(channel)
            self.transport.send(protocol.unsubscribed(channel, reason="forbidden"))
        self.transport.send(protocol.refreshed(int(claims.exp), req.id))

    # -- lifetime -----------------------------------------------------------------------
    def _schedule_expiry(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
        loop = asyncio.get_running_loop()
        delay = self.claims.exp + self.services.settings.jwt_leeway - time.time()
        self._expiry = loop.call_later(max(delay, 0.0), self._expired)

    def _expired(self) -> None:
        self._expiry = None
        self.close(CloseCode.TOKEN_INVALID, "token expired")

    def close(self, code: CloseCode, reason: str) -> None:
        """Stop delivering now; the registry closes the transport with ``code``."""
        if self.closing:
            return
        self.close_code = code
        self.teardown()
        self.services.sessions.schedule_close(self, code, reason)

    def teardown(self) -> None:
        """Leave every channel and stop timers (idempotent)."""
        self.closing = True
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        hub = self.services.hub
        for channel in list(self.subscriptions):
            hub.leave(channel, self)
        self.subscriptions.clear()
