"""Waiting on a condition in tests: poll it until true, fail by name after a bound.

One helper for every suite (never a fixed sleep): ``check`` may be sync or async
and return anything truthy.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any


async def eventually(
    check: Callable[[], Any], within: float, what: str, interval: float = 0.05
) -> float:
    """Poll ``check`` until truthy; returns the seconds it took, raises TimeoutError naming it."""
    started = time.monotonic()
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return time.monotonic() - started
        if time.monotonic() - started > within:
            raise TimeoutError(f"not within {within}s: {what}")
        await asyncio.sleep(interval)
