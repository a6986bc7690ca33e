"""Relay of plain ``NOTIFY <channel>, '<json>'`` to the gateway channel of the same name.

Best effort, as in the classic LISTEN/NOTIFY bridge: a payload lives only in
this process (a bounded queue; when full, new payloads are dropped and counted),
is never de-duplicated, and is lost if the leader dies before publishing it.
Malformed payloads (not JSON) are logged and counted, never published.
"""

from __future__ import annotations

import asyncio
import logging

import orjson

from listener.metrics import ListenerMetrics
from listener.publisher import Event
from listener.relay import Fenced, RetryingPublisher

log = logging.getLogger(__name__)


class Forwarder:
    """Owns the queue of relayed notifications for one leader epoch, and its publish loop."""

    def __init__(
        self,
        publisher: RetryingPublisher,
        metrics: ListenerMetrics,
        *,
        queue_size: int,
        batch_size: int,
    ) -> None:
        self.publisher = publisher
        self.metrics = metrics
        self.batch_size = batch_size
        self.queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue(queue_size)

    def notified(self, channel: str, payload: str) -> None:
        """Called from the (sync) LISTEN callback: enqueue or drop, never block."""
        try:
            self.queue.put_nowait((channel, payload))
        except asyncio.QueueFull:
            self.metrics.relayed.labels("dropped").inc()
            log.warning("relay queue full: dropped a notification on %r", channel)

    def _event(self, channel: str, payload: str) -> Event | None:
        try:
            orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            self.metrics.relayed.labels("malformed").inc()
            log.warning(
                "malformed NOTIFY payload on relayed channel %r (%d bytes): %s",
                channel,
                len(payload),
                exc,
            )
            return None
        return Event(channel, payload.encode())

    async def run(self) -> None:
        while True:
            batch = [await self.queue.get()]
            while len(batch) < self.batch_size and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            events = [e for e in (self._event(c, p) for c, p in batch) if e is not None]
            if not events:
                continue
            results = await self.publisher.publish(events)
            for result in results:
                self.metrics.relayed.labels(result.status).inc()
            if any(result.status == "fenced" for result in results):
                raise Fenced(f"epoch {self.publisher.epoch} was fenced by a newer leader")
