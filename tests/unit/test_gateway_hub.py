"""The hub's loops stop when cancelled, even if a library swaps the CancelledError."""

from __future__ import annotations

import asyncio

from gateway.hub import raise_if_cancelled


async def _cleanup_that_fails() -> None:
    """What redis-py can do: on cancellation, clean up, and the clean-up raises."""
    try:
        await asyncio.sleep(10)
    except asyncio.CancelledError:
        raise OSError("connection reset during clean-up") from None


async def test_a_swapped_cancellation_still_stops_the_loop() -> None:
    rounds = 0

    async def loop() -> None:
        nonlocal rounds
        while True:
            rounds += 1
            try:
                await _cleanup_that_fails()
            except OSError:
                raise_if_cancelled()

    task = asyncio.create_task(loop())
    await asyncio.sleep(0.01)
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=1)
    assert task in done
    assert task.cancelled()
    assert rounds == 1


async def test_no_cancellation_no_raise() -> None:
    raise_if_cancelled()  # nothing pending: returns
