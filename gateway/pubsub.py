"""One Redis connection in subscribe mode, as an asyncio Protocol: the hub's ear.

Messages are handed to ``on_message(channel, payload)`` synchronously from
``data_received``: no task, no queue, no await between the socket and the
fan-out. SUBSCRIBE is confirmed per channel through a future. The link never
reconnects by itself; its owner (the hub) sees :attr:`closed` resolve and decides.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, cast
from urllib.parse import unquote, urlsplit

from gateway.resp import ProtocolError, Reply, RespError, RespParser, encode_command

log = logging.getLogger(__name__)

MessageHandler = Callable[[bytes, bytes], None]


def _nothing() -> None:
    """Default batch hook."""


class LinkClosedError(ConnectionError):
    """The pub/sub connection is gone; pending confirmations fail with this."""


class PubSubLink(asyncio.Protocol):
    """A subscribe-mode Redis connection; create it with :func:`open_link`."""

    def __init__(
        self,
        on_message: MessageHandler,
        begin: Callable[[], None] = _nothing,
        end: Callable[[], None] = _nothing,
    ) -> None:
        self._on_message = on_message
        self._begin = begin
        self._end = end
        self._loop = asyncio.get_running_loop()
        # Any byte from Redis proves the link alive: under a backlog the heartbeat
        # itself waits behind messages, and must not get a busy link dropped.
        self.last_activity = self._loop.time()
        self._parser = RespParser()
        self._transport: asyncio.Transport | None = None
        self._replies: list[asyncio.Future[Reply]] = []  # handshake commands, in order
        # Per channel, one future per SUBSCRIBE sent, in order: Redis confirms each
        # SUBSCRIBE once, in order, even when an UNSUBSCRIBE came in between.
        self._confirm: dict[bytes, deque[asyncio.Future[None]]] = {}
        self._subscribe_mode = False
        self.closed: asyncio.Future[BaseException | None] = self._loop.create_future()

    # -- asyncio.Protocol -------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.last_activity = self._loop.time()
        try:
            replies = self._parser.feed(data)
        except ProtocolError as exc:
            self.abort(exc)
            return
        if not self._subscribe_mode:
            for reply in replies:
                if self._replies:
                    self._replies.pop(0).set_result(reply)
            return
        self._begin()
        try:
            for reply in replies:
                self._push(reply)
        finally:
            self._end()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        error = LinkClosedError(f"redis pub/sub connection lost: {exc or 'closed'}")
        waiting: list[asyncio.Future[Any]] = list(self._replies)
        for queue in self._confirm.values():
            waiting.extend(queue)
        for fut in waiting:
            if not fut.done():
                fut.set_exception(error)
                fut.exception()  # retrieved here: a waiter may have timed out already
        self._replies.clear()
        self._confirm.clear()
        if not self.closed.done():
            self.closed.set_result(exc)

    # -- replies ------------------------------------------------------------------------
    def _push(self, reply: Reply) -> None:
        if isinstance(reply, list) and len(reply) == 3:
            kind = reply[0]
            if kind == b"message":
                self._on_message(reply[1], reply[2])  # type: ignore[arg-type]
                return
            if kind == b"subscribe":
                self._confirmed(reply[1])  # type: ignore[arg-type]
                return
            if kind == b"unsubscribe":
                return
        if isinstance(reply, RespError):
            # A refused SUBSCRIBE (ACL) cannot be tied to its channel: drop the link.
            self.abort(ConnectionError(f"redis refused a pub/sub command: {reply.message}"))
            return
        log.debug("ignoring unexpected pub/sub reply %r", reply)

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
    def _write(self, data: bytes) -> None:
        if self._transport is None or self._transport.is_closing():
            raise LinkClosedError("redis pub/sub connection is closed")
        self._transport.write(data)

    async def command(self, *args: bytes | str | int) -> Reply:
        """A command before subscribe mode (AUTH, CLIENT SETNAME); returns its reply."""
        fut: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._write(encode_command(*args))
        self._replies.append(fut)
        reply = await fut
        if isinstance(reply, RespError):
            raise ConnectionError(f"redis refused {args[0]!s}: {reply.message}")
        return reply

    def subscribe(self, channels: Iterable[bytes]) -> list[asyncio.Future[None]]:
        """Send SUBSCRIBE; each returned future resolves once Redis confirmed its channel."""
        names = list(channels)
        if not names:
            return []
        loop = asyncio.get_running_loop()
        futures = []
        for name in names:
            fut: asyncio.Future[None] = loop.create_future()
            self._confirm.setdefault(name, deque()).append(fut)
            futures.append(fut)
        self._subscribe_mode = True
        self._write(encode_command(b"SUBSCRIBE", *names))
        return futures

    def unsubscribe(self, channels: Iterable[bytes]) -> None:
        names = list(channels)
        if names and self._transport is not None and not self._transport.is_closing():
            self._write(encode_command(b"UNSUBSCRIBE", *names))

    def abort(self, exc: BaseException | None = None) -> None:
        """Drop the connection now (the owner reconnects); ``closed`` resolves soon after."""
        if exc is not None:
            log.warning("dropping redis pub/sub connection: %s", exc)
        if self._transport is not None:
            self._transport.abort()
        elif not self.closed.done():
            self.closed.set_result(exc)


async def open_link(
    url: str,
    on_message: MessageHandler,
    *,
    name: str,
    within: float,
    begin: Callable[[], None] = _nothing,
    end: Callable[[], None] = _nothing,
) -> PubSubLink:
    """Connect to the Redis of ``url`` (redis:// or rediss://), authenticate, name the client."""
    parts = urlsplit(url)
    loop = asyncio.get_running_loop()
    context = ssl.create_default_context() if parts.scheme == "rediss" else None
    async with asyncio.timeout(within):
        _, link = await loop.create_connection(
            lambda: PubSubLink(on_message, begin, end),
            parts.hostname or "localhost",
            parts.port or 6379,
            ssl=context,
        )
        try:
            if parts.password is not None:
                user = unquote(parts.username) if parts.username else "default"
                await link.command(b"AUTH", user, unquote(parts.password))
            await link.command(b"CLIENT", b"SETNAME", name)
        except BaseException:
            link.abort()
            raise
    return link
