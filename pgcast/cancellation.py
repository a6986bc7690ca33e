"""Cancellation that a library lost on its way: every background loop re-checks it.

A task's ``cancel()`` must end its loop. Two library behaviours can lose it, and
both leave the request pending on the task (``Task.cancelling()`` stays above 0):

- **Swallowed.** On Python 3.11 ``asyncio.wait_for`` returns the inner result when
  a cancellation races with its completion. redis-py wraps every command it sends in
  ``wait_for`` once ``socket_timeout`` is set, so the command returns normally. A
  leader publishing steadily lost its SIGTERM this way in 11 of 27 tries.
- **Swapped.** redis-py cleans up a cancelled command with awaits of its own; an
  error raised there replaces the CancelledError, and ``except Exception`` retries.
  A TaskGroup whose child failed that way raises the error, not the cancellation.

So wherever a service awaits such a library, :func:`raise_if_cancelled` follows the
call, on success and on error (the listener's retrying publisher; the hub's loops, once
per round): a lost cancellation stops the loop around it within one round.

The count can also be left too high, which this would obey: before Python 3.13 a
TaskGroup whose child fails after the body has ended cancels the parent and never
takes it back (gh-116720). A TaskGroup body in such a task keeps awaiting until the
group ends.
"""

from __future__ import annotations

import asyncio


def raise_if_cancelled() -> None:
    """Raise CancelledError if the current task has a cancellation nobody delivered."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
