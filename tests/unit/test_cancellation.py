"""Loops stop when cancelled, even if a library swaps or swallows the CancelledError."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from pgcast.cancellation import raise_if_cancelled


async def _cleanup_that_fails() -> None:
    """What redis-py can do: on cancellation, clean up, and the clean-up raises."""
    try:
        await asyncio.sleep(10)
    except asyncio.CancelledError:
        raise OSError("connection reset during clean-up") from None


async def _result_despite_cancel() -> None:
    """What asyncio.wait_for does on Python 3.11 when a cancel races with completion:
    the inner call finished, so its result is returned and the cancel is dropped."""
    try:
        await asyncio.sleep(10)
    except asyncio.CancelledError:
        return


async def _rounds_until_cancelled(call: Callable[[], Awaitable[None]]) -> int:
    """Run a guarded retry loop around ``call``, cancel it; how many rounds it ran."""
    rounds = 0

    async def loop() -> None:
        nonlocal rounds
        while True:
            raise_if_cancelled()
            rounds += 1
            try:
                await call()
            except OSError:
                raise_if_cancelled()

    task = asyncio.create_task(loop())
    await asyncio.sleep(0.01)
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=1)
    assert task in done
    assert task.cancelled()
    return rounds


async def test_a_swapped_cancellation_still_stops_the_loop() -> None:
    assert await _rounds_until_cancelled(_cleanup_that_fails) == 1


async def test_a_swallowed_cancellation_still_stops_the_loop() -> None:
    assert await _rounds_until_cancelled(_result_despite_cancel) == 1


async def test_no_cancellation_no_raise() -> None:
    raise_if_cancelled()  # nothing pending: returns


async def test_an_acknowledged_cancellation_does_not_raise_again() -> None:
    """Code that uncancels (the gateway's drain on SIGTERM) may go on awaiting."""
    task = asyncio.current_task()
    assert task is not None
    task.cancel()
    try:
        await asyncio.sleep(1)
    except asyncio.CancelledError:
        task.uncancel()
    raise_if_cancelled()
