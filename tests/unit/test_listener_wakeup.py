"""WakeCycle decisions: when the leader falls asleep, wakes up, and how long it waits."""

from __future__ import annotations

import asyncio
import time

from listener.metrics import ListenerMetrics
from listener.wakeup import IDLE_DELETE, WAKE_QUEUED, WakeCycle


class FakeLock:
    """The wake lock: ``refuse`` sleep attempts are refused first (writers in flight)."""

    def __init__(self, refuse: int = 0) -> None:
        self.refuse = refuse
        self.calls: list[str] = []

    async def sleep(self) -> bool:
        self.calls.append("sleep")
        if self.refuse:
            self.refuse -= 1
            return False
        return True

    async def wake(self) -> None:
        self.calls.append("wake")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make(mode: str = "auto", refuse: int = 0) -> tuple[WakeCycle, FakeLock, Clock, ListenerMetrics]:
    """Linger 0.1 s and wake gap 0.01 s: awake from 10 rows per 0.1 s window (100/s),
    asleep below 5 (50/s)."""
    lock, clock, metrics = FakeLock(refuse), Clock(), ListenerMetrics()
    cycle = WakeCycle(
        lock,
        metrics,
        mode=mode,
        poll_interval=1.0,
        awake_poll=0.002,
        linger=0.1,
        wake_gap=0.01,
        clock=clock,
    )
    return cycle, lock, clock, metrics


def sample(metrics: ListenerMetrics, name: str, labels: dict[str, str] | None = None) -> float:
    value = metrics.registry.get_sample_value(name, labels or {})
    assert value is not None, name
    return value


async def notify_and_drain(cycle: WakeCycle, clock: Clock, after: float, rows: int = 1) -> bool:
    """A NOTIFY ``after`` seconds on, then the drain it triggers: settle's answer."""
    clock.now += after
    cycle.notified()
    cycle.clear()
    return await cycle.settle(drained=rows)


async def test_starts_awake_and_sleeps_after_a_quiet_window() -> None:
    """A new leader polls; a busy window keeps it awake; a window with fewer rows than half
    the wake rate puts it to sleep, and falling asleep asks for one more drain."""
    cycle, lock, clock, metrics = make()
    assert cycle.awake
    assert sample(metrics, "pgcast_listener_awake") == 1
    for _ in range(10):  # 10 rows in the first window: 100/s
        clock.now += 0.011
        assert not await cycle.settle(drained=1)
    assert lock.calls == []
    clock.now += 0.05
    assert not await cycle.settle(drained=2)
    clock.now += 0.06  # the next window brought 2 rows: 20/s
    assert await cycle.settle(drained=0)
    assert lock.calls == ["sleep"]
    assert not cycle.awake
    assert sample(metrics, "pgcast_listener_awake") == 0
    assert sample(metrics, "pgcast_listener_sleeps_total", {"result": "slept"}) == 1


async def test_refused_sleep_keeps_polling_and_retries_next_window() -> None:
    """A writer that skipped the NOTIFY is in flight: stay awake, retry a window later."""
    cycle, lock, clock, metrics = make(refuse=1)
    clock.now += 0.11
    assert not await cycle.settle(drained=0)
    assert cycle.awake
    assert sample(metrics, "pgcast_listener_sleeps_total", {"result": "refused"}) == 1
    clock.now += 0.05
    assert not await cycle.settle(drained=0)
    assert lock.calls == ["sleep"]
    clock.now += 0.06
    assert await cycle.settle(drained=0)
    assert lock.calls == ["sleep", "sleep"]


async def test_below_the_wake_rate_it_stays_asleep_at_the_rate_it_wakes() -> None:
    """Asleep, NOTIFYs under the wake rate (one row per wake gap over a linger window) are
    drained without waking, a close pair among them too (it comes by chance at a few
    hundred events/s); a window that brings the wake rate wakes it."""
    cycle, lock, clock, metrics = make()
    clock.now += 0.11
    assert await cycle.settle(drained=0)
    for gap in (0.02, 0.02, 0.001, 0.02, 0.02, 0.02):  # 50 events/s, one pair 1 ms apart
        assert not await notify_and_drain(cycle, clock, gap)
    assert not cycle.awake
    assert lock.calls == ["sleep"]
    for _ in range(12):  # 200 events/s: ten rows within one 0.1 s window
        assert not await notify_and_drain(cycle, clock, 0.005)
        if cycle.awake:
            break
    assert cycle.awake
    assert lock.calls == ["sleep", "wake"]
    assert sample(metrics, "pgcast_listener_wakes_total") == 1
    assert sample(metrics, "pgcast_listener_awake") == 1


async def _slow_drain_with_a_notify_behind(cycle: WakeCycle, clock: Clock) -> bool:
    """A NOTIFY, then a slow drain during which the next commit's NOTIFY arrives."""
    clock.now += 0.001
    cycle.notified()
    cycle.clear()
    clock.now += 0.05  # 20 rows/s: far under the wake rate
    cycle.notified()
    return await cycle.settle(drained=1)


async def test_notifies_queued_behind_every_drain_wake_it_whatever_the_rate() -> None:
    """Writers queued on NOTIFY's commit lock arrive one disk flush apart, which may be
    slower than the wake rate: WAKE_QUEUED drains in a row that each saw the next NOTIFY
    arrive wake the leader; one by chance does not."""
    cycle, lock, clock, _ = make()
    clock.now += 0.11
    assert await cycle.settle(drained=0)
    assert not await _slow_drain_with_a_notify_behind(cycle, clock)
    assert not await notify_and_drain(cycle, clock, 0.05)  # nothing arrived meanwhile
    assert not cycle.awake
    for _ in range(WAKE_QUEUED):
        assert not await _slow_drain_with_a_notify_behind(cycle, clock)
    assert cycle.awake
    assert lock.calls == ["sleep", "wake"]


async def test_notify_mode_sleeps_at_once_and_never_wakes() -> None:
    """notify: the first empty drain falls asleep; dense NOTIFYs never wake it."""
    cycle, lock, clock, _ = make("notify")
    assert await cycle.settle(drained=0)
    for _ in range(5):
        assert not await notify_and_drain(cycle, clock, 0.001)
    assert lock.calls == ["sleep"]
    assert not cycle.awake


async def test_poll_mode_never_sleeps() -> None:
    """poll: never touches the wake lock, however long it stays idle."""
    cycle, lock, clock, _ = make("poll")
    for _ in range(5):
        clock.now += 10
        assert not await cycle.settle(drained=0)
    assert lock.calls == []
    assert cycle.awake


async def _timed_wait(mode: str, *, asleep: bool, rows_to_delete: bool = False) -> float:
    """Seconds one wait() takes with poll interval 1 s and awake poll 0.01 s (far apart:
    a loaded machine may stall the loop for a few hundred milliseconds)."""
    cycle = WakeCycle(
        FakeLock(),
        ListenerMetrics(),
        mode=mode,
        poll_interval=1.0,
        awake_poll=0.01,
        linger=0,
        wake_gap=0,
    )
    if asleep:
        assert await cycle.settle(drained=0)
    started = time.monotonic()
    async with asyncio.timeout(5):
        await cycle.wait(rows_to_delete=rows_to_delete)
    return time.monotonic() - started


async def test_wait_polls_at_the_interval_of_the_state() -> None:
    """Awake waits PGCAST_AWAKE_POLL; asleep, and in poll mode, PGCAST_POLL_INTERVAL."""
    assert await _timed_wait("auto", asleep=False) < 0.5
    assert await _timed_wait("auto", asleep=True) >= 0.99
    assert await _timed_wait("poll", asleep=False) >= 0.99


async def test_published_rows_shorten_a_long_wait_to_the_idle_delete() -> None:
    """Rows the last drain published are deleted by the next drain: asleep, or in poll
    mode, it comes IDLE_DELETE after the last one when no NOTIFY comes first."""
    for mode, asleep in (("auto", True), ("poll", False)):
        waited = await _timed_wait(mode, asleep=asleep, rows_to_delete=True)
        assert IDLE_DELETE - 0.01 <= waited < 0.5


async def test_a_notify_ends_the_wait_at_once() -> None:
    """Asleep, a NOTIFY ends the wait long before the poll interval."""
    cycle = WakeCycle(
        FakeLock(),
        ListenerMetrics(),
        mode="auto",
        poll_interval=30,
        awake_poll=30,
        linger=0,
        wake_gap=0,
    )
    assert await cycle.settle(drained=0)
    cycle.clear()
    waiter = asyncio.create_task(cycle.wait())
    await asyncio.sleep(0)
    cycle.notified()
    async with asyncio.timeout(5):
        await waiter
