"""One client connection's protocol logic, the same for WebSocket and SSE.

A Session owns the client's identity (token claims, expiry timer, refresh), its
subscriptions (through the hub), the request rate limit and the subscription
limit. It talks to the client only through a :class:`Transport`; closing is
requested synchronously (:meth:`Session.close`) and carried out by the registry.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from gateway import protocol
from gateway.auth import AuthError, Claims
from gateway.codes import CloseCode, ErrorCode
from gateway.hub import HubClosedError, HubUnavailableError
from gateway.limits import TokenBucket
from gateway.message import Message
from gateway.protocol import (
    Ping,
    PresenceQuery,
    Publish,
    Refresh,
    Request,
    RequestError,
    Subscribe,
    Track,
    Unsubscribe,
    Untrack,
)
from pgcast.channels import matches

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
        "_publish_bucket",
        "claims",
        "close_code",
        "closing",
        "conn",
        "deliver",
        "revoked",
        "services",
        "subscriptions",
        "tracking",
        "transport",
    )

    def __init__(self, services: Services, transport: Transport, claims: Claims) -> None:
        self.services = services
        self.transport = transport
        self.claims = claims
        self.subscriptions: dict[str, bool] = {}  # channel -> live (False while pending)
        self.tracking: set[str] = set()  # channels whose presence this connection joined
        self.revoked: tuple[str, ...] = ()  # patterns pgcast.unsubscribe took away
        self.conn = secrets.token_urlsafe(9)  # presence member id; never sent back to itself
        self.closing = False
        self.close_code: CloseCode | None = None
        self.deliver = transport.deliver  # the hub calls the transport directly
        settings = services.settings
        self._bucket = TokenBucket(settings.rate_limit, settings.rate_burst)
        self._publish_bucket: TokenBucket | None = None  # made on the first publish
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

    def ephemeral(self, frame: bytes) -> None:
        """A client message or presence frame (no offset, never replayed)."""
        if not self.closing:
            self.transport.send(frame)

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
        handler: Callable[[Session, Any], Awaitable[None]] = _HANDLERS[type(request)]
        await handler(self, request)

    async def _unsubscribe_request(self, req: Unsubscribe) -> None:
        self._unsubscribe(req.channel)
        self.transport.send(protocol.unsubscribed(req.channel, request_id=req.id))

    async def _ping(self, req: Ping) -> None:
        self.transport.send(protocol.pong(req.id))

    def _check_grant(self, granted: bool, channel: str, rid: protocol.RequestId) -> None:
        if not granted:
            raise RequestError(ErrorCode.FORBIDDEN, f"token does not grant {channel}", rid)
        if any(matches(pattern, channel) for pattern in self.revoked):
            raise RequestError(ErrorCode.FORBIDDEN, f"{channel} was revoked", rid)

    async def _subscribe(self, req: Subscribe) -> None:
        channel, rid = req.channel, req.id
        if channel in self.subscriptions:
            raise RequestError(
                ErrorCode.ALREADY_SUBSCRIBED, f"already subscribed to {channel}", rid
            )
        if len(self.subscriptions) >= self.services.settings.max_subscriptions:
            self.services.metrics.limit_breaches.labels("subscriptions").inc()
            raise RequestError(ErrorCode.TOO_MANY_SUBSCRIPTIONS, "subscription limit reached", rid)
        self._check_grant(self.claims.allows(channel), channel, rid)
        if req.presence and not self.claims.may_join_presence(channel):
            raise RequestError(
                ErrorCode.FORBIDDEN, f"token does not grant {channel}'s presence", rid
            )
        await self.subscribe(channel, req.since, req.epoch, rid)
        if req.presence and self.subscriptions.get(channel):
            await self._watch(channel, rid)

    async def _watch(self, channel: str, rid: protocol.RequestId) -> None:
        """Send the channel's members, then its joins and leaves (none lost in between)."""
        hub = self.services.hub
        hub.watch(channel, self)
        try:
            seq, members = await self.services.presence.members(channel)
        except HubUnavailableError:
            hub.unwatch(channel, self)
            raise RequestError(ErrorCode.UNAVAILABLE, "presence unavailable; retry", rid) from None
        if self.closing or not self.subscriptions.get(channel):
            return
        self.transport.send(protocol.presence(channel, members))
        hub.watching(channel, self, seq)

    # -- presence and client messages ---------------------------------------------------
    async def _track(self, req: Track) -> None:
        channel, rid, settings = req.channel, req.id, self.services.settings
        self._check_grant(self.claims.may_join_presence(channel), channel, rid)
        if len(req.meta) > settings.presence_meta_bytes:
            self.services.metrics.limit_breaches.labels("presence_meta").inc()
            raise RequestError(
                ErrorCode.TOO_LARGE, f"'meta' over {settings.presence_meta_bytes} bytes", rid
            )
        if channel not in self.tracking and len(self.tracking) >= settings.max_subscriptions:
            self.services.metrics.limit_breaches.labels("presence").inc()
            raise RequestError(ErrorCode.TOO_MANY_SUBSCRIPTIONS, "presence limit reached", rid)
        presence = self.services.presence
        member = protocol.member(self.user, self.conn, req.meta)
        try:
            joined = await presence.track(channel, self.conn, member)
        except HubUnavailableError:
            raise RequestError(ErrorCode.UNAVAILABLE, "presence unavailable; retry", rid) from None
        if not joined:
            self.services.metrics.limit_breaches.labels("presence_members").inc()
            raise RequestError(ErrorCode.PRESENCE_FULL, f"{channel}'s presence is full", rid)
        if self.closing:
            presence.forget(channel, self.conn)  # closed meanwhile: teardown missed this one
            return
        self.tracking.add(channel)
        self.transport.send(protocol.acknowledged("tracked", channel, rid))

    async def _untrack(self, req: Untrack) -> None:
        if req.channel in self.tracking:
            self.tracking.discard(req.channel)
            try:
                await self.services.presence.untrack(req.channel, self.conn)
            except HubUnavailableError:
                self.services.presence.forget(req.channel, self.conn)  # retried by the loop
        self.transport.send(protocol.untracked(req.channel, request_id=req.id))

    async def _presence(self, req: PresenceQuery) -> None:
        channel, rid = req.channel, req.id
        self._check_grant(self.claims.may_join_presence(channel), channel, rid)
        try:
            _, members = await self.services.presence.members(channel)
        except HubUnavailableError:
            raise RequestError(ErrorCode.UNAVAILABLE, "presence unavailable; retry", rid) from None
        self.transport.send(protocol.presence(channel, members, rid))

    async def _publish(self, req: Publish) -> None:
        channel, rid, settings = req.channel, req.id, self.services.settings
        self._check_grant(self.claims.may_publish(channel), channel, rid)
        if len(req.data) > settings.client_message_bytes:
            self.services.metrics.limit_breaches.labels("client_message").inc()
            raise RequestError(
                ErrorCode.TOO_LARGE, f"'data' over {settings.client_message_bytes} bytes", rid
            )
        bucket = self._publish_bucket
        if bucket is None:
            bucket = TokenBucket(settings.client_publish_rate, settings.client_publish_burst)
            self._publish_bucket = bucket
        if not bucket.take():
            self.services.metrics.limit_breaches.labels("client_publish_rate").inc()
            raise RequestError(ErrorCode.RATE_LIMITED, "too many messages; slow down", rid)
        frame = protocol.broadcast(channel, self.user, req.data)
        try:
            await self.services.hub.broadcast(channel, self.conn, frame)
        except HubUnavailableError:
            raise RequestError(ErrorCode.UNAVAILABLE, "message not sent; retry", rid) from None
        self.services.metrics.client_messages.inc()
        self.transport.send(protocol.acknowledged("published", channel, rid))

    # -- server-side control ------------------------------------------------------------
    def revoke(self, pattern: str) -> None:
        """pgcast.unsubscribe: end the matching subscriptions and presence, and refuse them
        on this connection from now on."""
        if self.closing:
            return
        self.revoked += (pattern,)
        for channel in [c for c in self.subscriptions if matches(pattern, c)]:
            self._unsubscribe(channel)
            self.transport.send(protocol.unsubscribed(channel, reason="revoked"))
        for channel in [c for c in self.tracking if matches(pattern, c)]:
            self.tracking.discard(channel)
            self.services.presence.forget(channel, self.conn)
            self.transport.send(protocol.untracked(channel, reason="revoked"))

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
        for channel in [c for c in self.tracking if not claims.may_join_presence(c)]:
            self.tracking.discard(channel)
            self.services.presence.forget(channel, self.conn)
            self.transport.send(protocol.untracked(channel, reason="forbidden"))
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
        for channel in self.tracking:
            self.services.presence.forget(channel, self.conn)
        self.tracking.clear()


_HANDLERS: dict[type, Callable[[Session, Any], Awaitable[None]]] = {
    Subscribe: Session._subscribe,
    Unsubscribe: Session._unsubscribe_request,
    Refresh: Session._refresh,
    Ping: Session._ping,
    Track: Session._track,
    Untrack: Session._untrack,
    PresenceQuery: Session._presence,
    Publish: Session._publish,
}
