"""Server-side control from SQL (``pgcast.disconnect``, ``pgcast.unsubscribe``), applied
once each and in order, across pub/sub link drops.

The leader appends each control to the stream ``pgcast:control`` and publishes it on
``pgcast:control:live`` (pgcast.keys). The hub subscribes the live channel on every
link it opens, then calls :meth:`ControlFeed.sync`, which reads the stream after the
last control applied; live controls that arrive meanwhile wait, so none is skipped
or applied twice. With one Redis, the one link brings a control in order with the
events around it. On a Redis Cluster, the events its transaction published before it
travel on other nodes' links, and a connection must not close before they reached it:
each control is applied after a barrier through every link (:meth:`run`). Which
sessions a control reaches is the registry's business.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis

from pgcast.channels import pattern_error
from pgcast.keys import FRAME_FIELD, Layout, StreamId, decode_control, parse_stream_id

log = logging.getLogger(__name__)

READ_BATCH = 1000
MAX_REASON_BYTES = 120  # a WebSocket close reason must fit 123 bytes


@dataclass(frozen=True, slots=True)
class Disconnect:
    """Close every connection of ``sub`` (4003, ``reason``)."""

    sub: str
    reason: str


@dataclass(frozen=True, slots=True)
class Revoke:
    """End ``sub``'s subscriptions (and presence) in channels matching ``pattern``."""

    sub: str
    pattern: str


Control = Disconnect | Revoke


def parse_control(raw: bytes) -> Control:
    """A control's JSON as the listener wrote it; ValueError when it is not one."""
    obj = orjson.loads(raw)
    if not isinstance(obj, dict) or not isinstance(obj.get("sub"), str) or not obj["sub"]:
        raise ValueError("a control needs a non-empty string 'sub'")
    op, sub = obj.get("op"), obj["sub"]
    if op == "disconnect":
        reason = obj.get("reason") or ""
        if not isinstance(reason, str):
            raise ValueError("'reason' must be a string")
        return Disconnect(sub, _clip(reason))
    if op == "unsubscribe":
        pattern = obj.get("pattern")
        problem = pattern_error(pattern)
        if problem is not None:
            raise ValueError(problem)
        return Revoke(sub, str(pattern))
    raise ValueError(f"unknown control op {op!r}")


def _clip(reason: str) -> str:
    raw = reason.encode()[:MAX_REASON_BYTES]
    return raw.decode(errors="ignore")


class ControlFeed:
    """The control stream's position on this gateway, and the live controls held while a
    (re)connected link reads what it missed."""

    def __init__(
        self,
        redis: aioredis.Redis,  # type: ignore[type-arg, unused-ignore]
        apply: Callable[[Control], None],
        layout: Layout,
    ) -> None:
        self.redis = redis
        self.apply = apply
        self.stream = layout.control_keys()[0]
        self.last: StreamId | None = None  # the last entry applied; None until first synced
        self._held: list[bytes] | None = []
        self.applied = 0
        self.malformed = 0
        # Set by the gateway (Hub.barrier): controls then wait for :meth:`run`; without
        # one they are applied as they come.
        self.barrier: Callable[[], Awaitable[None]] | None = None
        self._ready: list[Control] = []
        self._wanted = asyncio.Event()

    async def run(self) -> None:
        """Apply the controls heard, in order, each batch after a barrier: what the nodes
        had sent before it, the events published before the controls included, has been
        read (and delivered) first."""
        while True:
            await self._wanted.wait()
            self._wanted.clear()
            if self.barrier is not None:
                await self.barrier()
            ready, self._ready = self._ready, []
            for control in ready:
                self._apply(control)

    def begin_sync(self) -> None:
        """The link is lost: hold live controls until :meth:`sync` read the stream."""
        if self._held is None:
            self._held = []

    def on_live(self, payload: bytes) -> None:
        if self._held is not None:
            self._held.append(payload)
            return
        try:
            entry, body = decode_control(payload)
        except ValueError:
            self._bad(payload)
            return
        self._take(entry, body)

    async def sync(self) -> None:
        """Apply what the stream holds after :attr:`last`, then what was held (call after
        subscribing the live channel). The first sync only positions: controls from
        before this gateway ran concern no connection of it."""
        if self.last is None:
            newest: Any = await self.redis.xrevrange(self.stream, count=1)
            self.last = parse_stream_id(newest[0][0]) if newest else (0, 0)
        else:
            while True:
                ms, seq = self.last
                entries: Any = await self.redis.xrange(
                    self.stream, min=f"({ms}-{seq}", count=READ_BATCH
                )
                for entry_id, fields in entries:
                    self._take(parse_stream_id(entry_id), bytes(fields.get(FRAME_FIELD, b"")))
                if len(entries) < READ_BATCH:
                    break
        held, self._held = self._held or [], None
        for payload in held:
            self.on_live(payload)

    def _take(self, entry: StreamId, body: bytes) -> None:
        if self.last is not None and entry <= self.last:
            return  # already applied (read from the stream, then heard live)
        self.last = entry
        try:
            control = parse_control(body)
        except ValueError as exc:
            self._bad(body, str(exc))
            return
        if self.barrier is None:
            self._apply(control)
            return
        self._ready.append(control)
        self._wanted.set()

    def _apply(self, control: Control) -> None:
        self.applied += 1
        self.apply(control)

    def _bad(self, payload: bytes, why: str = "malformed") -> None:
        self.malformed += 1
        log.warning("control message dropped (%s): %r", why, payload[:200])
