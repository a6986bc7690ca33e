"""Run a service until SIGTERM/SIGINT: signals -> cancel the main task -> bounded wait.

``run_service(main)`` installs uvloop when available, runs ``main()``, turns
the first signal into a cancellation of the main task, and returns an exit code:
0 after a clean stop, 1 after a crash, 2 on a :class:`ConfigError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from pgcast.settings import ConfigError

log = logging.getLogger(__name__)


def install_uvloop() -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


async def _run_until_signal(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(main())
    stopping = False

    def on_signal(signame: str) -> None:
        nonlocal stopping
        if stopping:
            return
        stopping = True
        log.info("received %s, shutting down", signame)
        task.cancel()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig.name)
    try:
        await task
    except asyncio.CancelledError:
        if not stopping:
            raise
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def run_service(main: Callable[[], Coroutine[Any, Any, None]]) -> int:
    """Run ``main`` until it returns or a signal stops it; return the exit code."""
    install_uvloop()
    try:
        asyncio.run(_run_until_signal(main))
    except ConfigError as exc:
        print(f"pgcast: configuration error: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    except Exception:
        log.exception("service crashed")
        return 1
    return 0
