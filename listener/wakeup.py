"""When the leader drains: its side of the wake-up protocol (sql/001_outbox.sql), per leadership.

Asleep, it waits for a NOTIFY or the poll interval, and each NOTIFY costs one statement
(the drain that deletes the last rows and reads the new ones). Traffic that is cheaper to
poll for wakes it: a PGCAST_AWAKE_LINGER window that brings the wake rate (one row per
PGCAST_WAKE_GAP), or WAKE_QUEUED drains in a row that each saw the next NOTIFY arrive
meanwhile (NOTIFYing writers queue on one commit lock, so under load they arrive one flush
apart, however slow the disk, and fewer rows than the wake rate may get through). A single
pair of close NOTIFYs does not: at a few hundred events/s they come by chance, and 1 ms
polls, most of them empty, cost more than a NOTIFY per event. Awake, it holds no wake lock,
writers skip the NOTIFY, and it polls every PGCAST_AWAKE_POLL seconds; when a window
brings fewer rows than half the wake rate it tries to fall asleep (a try-lock, refused
while a writer that skipped the NOTIFY is in flight) and, asleep, drains once more.
``notify`` mode falls asleep for good; ``poll`` mode never sleeps.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from typing import Protocol

from listener.metrics import ListenerMetrics

log = logging.getLogger(__name__)

# Published rows wait for the next drain, whose one statement deletes them and reads on
# (outbox.FETCH_AFTER_DELETE_SQL): a lone event costs one statement, not two. When nothing
# follows, a drain this soon deletes them.
IDLE_DELETE = 0.05
# Drains in a row that each saw a NOTIFY arrive while they ran: writers queued on NOTIFY's
# lock (one by chance, at a few hundred events/s, is not).
WAKE_QUEUED = 3


class WakeLock(Protocol):
    """The listener's wake lock on its own connection (listener.outbox.Outbox)."""

    async def sleep(self) -> bool: ...

    async def wake(self) -> None: ...


class WakeCycle:
    """Owns the wake-up event and the awake/asleep state of one leadership."""

    def __init__(
        self,
        lock: WakeLock,
        metrics: ListenerMetrics,
        *,
        mode: str,
        poll_interval: float,
        awake_poll: float,
        linger: float,
        wake_gap: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lock = lock
        self.metrics = metrics
        self.mode = mode
        self.poll_interval = poll_interval
        self.awake_poll = poll_interval if mode == "poll" else awake_poll
        self.linger = 0.0 if mode == "notify" else linger
        # Rows per linger window that wake the sleeping leader (the wake rate; none with a
        # zero gap), and under which the awake one sleeps: half that (hysteresis), at least
        # one (notify mode: sleep after any empty drain).
        self.wake_rows = math.inf
        self.sleep_below = 1.0
        if mode == "auto" and wake_gap > 0:
            self.wake_rows = max(2.0, linger / wake_gap)
            self.sleep_below = max(1.0, linger / (2 * wake_gap))
        self.clock = clock
        self.event = asyncio.Event()
        # A new leader holds no wake lock: writers skip the NOTIFY, so it starts awake.
        self.awake = True
        self.window_start = clock()
        self.window_rows = 0
        self.queued = 0  # drains in a row, asleep, that a NOTIFY arrived during
        metrics.awake.set(1)

    def notified(self) -> None:
        """A NOTIFY arrived (called from the sync LISTEN callback: never awaits)."""
        self.event.set()

    def clear(self) -> None:
        """Called just before a drain: what it will read needs no further wake-up."""
        self.event.clear()

    async def settle(self, drained: int) -> bool:
        """After a drain, fall asleep or wake up; True when a drain must follow at once."""
        now = self.clock()
        if not self.awake:
            if self.mode == "auto" and self._wake_due(drained, now):
                await self.lock.wake()
                self._transition(awake=True, now=now)
                self.metrics.wakes.inc()
            return False
        if self.mode == "poll":
            return False
        self.window_rows += drained
        if now - self.window_start < self.linger:
            return False
        quiet = self.window_rows < self.sleep_below
        self.window_start, self.window_rows = now, 0
        if not quiet:
            return False
        if await self.lock.sleep():
            self._transition(awake=False, now=now)
            self.metrics.sleeps.labels("slept").inc()
            return True  # rows of writers that skipped the NOTIFY are committed: drain them
        # A writer that skipped the NOTIFY is still in flight: poll on, retry next window.
        self.metrics.sleeps.labels("refused").inc()
        return False

    def _wake_due(self, drained: int, now: float) -> bool:
        """Asleep: count this drain (rows in the window, NOTIFY during it), then whether the
        window reached the wake rate or writers queue on NOTIFY."""
        if now - self.window_start >= self.linger:
            self.window_start, self.window_rows = now, 0
        self.window_rows += drained
        # A NOTIFY that arrived during the drain: another commit right behind this one.
        self.queued = self.queued + 1 if self.event.is_set() else 0
        return self.window_rows >= self.wake_rows or self.queued >= WAKE_QUEUED

    async def wait(self, *, rows_to_delete: bool = False) -> None:
        """Until the next drain: a NOTIFY, or the poll interval of the current state (at
        most IDLE_DELETE while published rows wait to be deleted)."""
        timeout = self.awake_poll if self.awake else self.poll_interval
        if rows_to_delete:
            timeout = min(timeout, IDLE_DELETE)
        try:
            async with asyncio.timeout(timeout):
                await self.event.wait()
        except TimeoutError:
            pass  # the poll: all of the awake state, the safety net while asleep

    def _transition(self, *, awake: bool, now: float) -> None:
        self.awake = awake
        self.window_start, self.window_rows = now, 0
        self.queued = 0
        self.metrics.awake.set(1 if awake else 0)
        log.debug("leader %s", "awake: polling" if awake else "asleep: waiting for NOTIFY")
