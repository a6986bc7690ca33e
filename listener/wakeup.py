"""When the leader drains: its side of the wake-up protocol (sql/001_outbox.sql), per leadership.

Asleep, it waits for a NOTIFY or the poll interval. Dense traffic wakes it: a NOTIFY
within PGCAST_WAKE_GAP of the previous one, or one that arrived while it drained (NOTIFYing
writers queue on one commit lock, so under load they arrive one flush apart, however slow
the disk). Awake, it holds no wake lock, writers skip the NOTIFY, and it polls every
PGCAST_AWAKE_POLL seconds; when a PGCAST_AWAKE_LINGER window brings fewer rows than half
the wake rate it tries to fall asleep (a try-lock, refused while a writer that skipped
the NOTIFY is in flight) and, asleep, drains once more. ``notify`` mode falls asleep for
good; ``poll`` mode never sleeps.
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
        self.wake_gap = wake_gap
        # Rows per linger window under which the awake leader sleeps: half the wake rate
        # (hysteresis), at least one (notify mode: sleep after any empty drain).
        self.sleep_below = 1.0
        if mode == "auto" and wake_gap > 0:
            self.sleep_below = max(1.0, linger / (2 * wake_gap))
        self.clock = clock
        self.event = asyncio.Event()
        # A new leader holds no wake lock: writers skip the NOTIFY, so it starts awake.
        self.awake = True
        self.window_start = clock()
        self.window_rows = 0
        self.last_notify = -math.inf
        self.dense = False  # two NOTIFYs within the wake gap since the last transition
        metrics.awake.set(1)

    def notified(self) -> None:
        """A NOTIFY arrived (called from the sync LISTEN callback: never awaits)."""
        now = self.clock()
        if now - self.last_notify <= self.wake_gap:
            self.dense = True
        self.last_notify = now
        self.event.set()

    def clear(self) -> None:
        """Called just before a drain: what it will read needs no further wake-up."""
        self.event.clear()

    async def settle(self, drained: int) -> bool:
        """After a drain, fall asleep or wake up; True when a drain must follow at once."""
        now = self.clock()
        if not self.awake:
            # A NOTIFY that arrived during the drain: another commit right behind this one.
            if (self.dense or self.event.is_set()) and self.mode == "auto":
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

    @property
    def polling_fast(self) -> bool:
        """Whether the next drain comes within PGCAST_AWAKE_POLL (awake, not in poll mode)."""
        return self.awake and self.mode != "poll"

    async def wait(self) -> None:
        """Until the next drain: a NOTIFY, or the poll interval of the current state."""
        timeout = self.awake_poll if self.awake else self.poll_interval
        try:
            async with asyncio.timeout(timeout):
                await self.event.wait()
        except TimeoutError:
            pass  # the poll: all of the awake state, the safety net while asleep

    def _transition(self, *, awake: bool, now: float) -> None:
        self.awake = awake
        self.window_start, self.window_rows = now, 0
        self.dense = False
        self.metrics.awake.set(1 if awake else 0)
        log.debug("leader %s", "awake: polling" if awake else "asleep: waiting for NOTIFY")
