"""One leadership: everything the leader does on its connection for one epoch.

``LeaderSession.run()`` LISTENs (the ``pgcast`` wake-up unless in poll mode or
capturing from the WAL, and each relayed channel), then runs the drain (or, with
PGCAST_CAPTURE=wal, the WAL capture), the relay, the liveness query and the
connection watcher in one TaskGroup. It returns only by raising: the connection
died (ConnectionLost), the liveness query went unanswered, or a newer leader
fenced this one (Fenced). LISTEN callbacks are sync and only set events or queue.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import asyncpg

from listener.config import ListenerSettings
from listener.forward import Forwarder
from listener.leader import LeadershipEnded
from listener.metrics import ListenerMetrics
from listener.outbox import Outbox
from listener.publisher import Publisher
from listener.relay import Drainer, RetryingPublisher
from listener.wakeup import WakeCycle
from listener.wal_capture import WalCapture

log = logging.getLogger(__name__)

WAKEUP_CHANNEL = "pgcast"


class ConnectionLost(LeadershipEnded):
    """The leader's Postgres connection closed or stopped answering: the lock is gone."""

    server = "postgres"


def first_leaf(group: BaseExceptionGroup[Any]) -> BaseException:
    """The first non-group exception of ``group`` (what actually went wrong)."""
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


class LeaderSession:
    def __init__(
        self,
        conn: asyncpg.Connection,
        epoch: int,
        publisher: Publisher,
        settings: ListenerSettings,
        metrics: ListenerMetrics,
    ) -> None:
        self.conn = conn
        self.settings = settings
        self.metrics = metrics
        self.outbox = Outbox(conn, settings.query_timeout, mark_ttl=settings.history_ttl)
        retrying = RetryingPublisher(publisher, epoch, metrics, settings.backoff_max)
        self.cycle = WakeCycle(
            self.outbox,
            metrics,
            mode=settings.notify_mode,
            poll_interval=settings.poll_interval,
            awake_poll=settings.awake_poll,
            linger=settings.awake_linger,
            wake_gap=settings.wake_gap,
        )
        self.drainer = Drainer(
            self.outbox,
            retrying,
            metrics,
            self.cycle,
            batch_size=settings.batch_size,
            vacuum_every=settings.vacuum_every,
            hold_batch=settings.debug_hold_batch,
        )
        # wal: the capture; outbox: it only finishes a slot a WAL leader left (hand_back).
        self.capture = WalCapture(epoch, self.outbox, self.drainer, publisher, settings, metrics)
        self.wal = settings.capture == "wal"
        self.forwarder = Forwarder(
            retrying,
            metrics,
            queue_size=settings.relay_queue_size,
            batch_size=settings.batch_size,
        )
        self.lost = asyncio.Event()

    def _on_wakeup(self, conn: object, pid: int, channel: str, payload: str) -> None:
        self.drainer.wake_up()

    def _on_relayed(self, conn: object, pid: int, channel: str, payload: str) -> None:
        self.forwarder.notified(channel, payload)

    def _on_terminated(self, conn: object) -> None:
        self.lost.set()

    async def run(self) -> None:
        self.conn.add_termination_listener(self._on_terminated)
        if not self.wal and await self.conn.fetchval(
            "SELECT mode <> 'outbox' FROM pgcast.capture", timeout=self.settings.query_timeout
        ):
            # A WAL leader ran before: its triggers back on (set_capture may be EXECUTEd only
            # by roles it was granted to, so an outbox-only deployment never calls it).
            await self.conn.execute(
                "SELECT pgcast.set_capture('outbox')", timeout=self.settings.query_timeout
            )
        if self.settings.notify_mode != "poll" and not self.wal:
            await self.conn.add_listener(WAKEUP_CHANNEL, self._on_wakeup)
        for channel in self.settings.relay_channels:
            await self.conn.add_listener(channel, self._on_relayed)
        try:
            async with asyncio.TaskGroup() as group:
                if self.wal:
                    group.create_task(self.capture.run(), name="wal-capture")
                else:
                    group.create_task(self._drain(), name="drain")
                group.create_task(self._liveness(), name="liveness")
                if self.settings.relay_channels:
                    group.create_task(self.forwarder.run(), name="relay")
                # The body waits too, so a failing child interrupts it: before Python 3.13
                # a child that fails after the body has ended leaves a stray cancel request
                # on this task (gh-116720), which pgcast.cancellation would then obey.
                await self._watch()
        except ExceptionGroup as group:
            raise first_leaf(group) from None
        finally:
            self.conn.remove_termination_listener(self._on_terminated)

    async def _drain(self) -> None:
        await self.drainer.start()
        await self.capture.hand_back()  # a slot a WAL leader left: its events first
        await self.drainer.serve()

    async def _watch(self) -> None:
        await self.lost.wait()
        raise ConnectionLost("the Postgres connection closed")

    async def _liveness(self) -> None:
        """Query every liveness interval; no answer in time means the connection is dead."""
        while True:
            try:
                async with asyncio.timeout(self.settings.liveness_timeout):
                    health = await self.outbox.health()
            except TimeoutError:
                raise ConnectionLost(
                    f"liveness query unanswered after {self.settings.liveness_timeout}s"
                ) from None
            self.metrics.lag.set(health.lag)
            self.metrics.queue_usage.set(health.queue_usage)
            if self.wal:
                await self.capture.sample_lag()
            await asyncio.sleep(self.settings.liveness_interval)
