"""Every live session of this process: admission limits, closing, and the drain.

The registry counts connections (per process and per user) for the handshake's
limits, owns the tasks that carry out close requests (each bounded by a timeout,
all awaited at shutdown), and drains on SIGTERM: 1012 closes spread evenly over
the drain window so the clients do not reconnect elsewhere all at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from typing import TYPE_CHECKING

from gateway.codes import CloseCode
from gateway.config import GatewaySettings
from gateway.control import Control, Disconnect
from gateway.metrics import Metrics

if TYPE_CHECKING:
    from gateway.session import Session

log = logging.getLogger(__name__)

DRAIN_TICK = 0.05


class Sessions:
    def __init__(self, settings: GatewaySettings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.live: set[Session] = set()
        self.by_user: dict[str, set[Session]] = {}
        self.draining = False
        self._closing: set[asyncio.Task[None]] = set()
        self._drained = asyncio.Event()
        metrics.gauge("connections", "Open client connections", lambda: len(self.live))
        metrics.gauge(
            "subscriptions",
            "Subscriptions held by open connections",
            lambda: sum(len(s.subscriptions) for s in self.live),
        )

    # -- admission ----------------------------------------------------------------------
    def refusal(self, user: str | None) -> tuple[int, str] | None:
        """(HTTP status, reason) when a new connection must be refused, else None."""
        if self.draining:
            return 503, "draining"
        if len(self.live) >= self.settings.max_connections:
            self.metrics.limit_breaches.labels("connections").inc()
            return 503, "connections"
        limit = self.settings.max_user_connections
        if user is not None and limit and len(self.by_user.get(user, ())) >= limit:
            self.metrics.limit_breaches.labels("user_connections").inc()
            return 429, "user_connections"
        return None

    def add(self, session: Session) -> None:
        self.live.add(session)
        self.by_user.setdefault(session.user, set()).add(session)
        self.metrics.connections_total.labels(session.transport.kind).inc()

    def remove(self, session: Session) -> None:
        if session in self.live:
            self.live.discard(session)
            mine = self.by_user[session.user]
            mine.discard(session)
            if not mine:
                del self.by_user[session.user]
        if self.draining and not self.live:
            self._drained.set()

    # -- server-side control -----------------------------------------------------------
    def apply(self, control: Control) -> None:
        """pgcast.disconnect / pgcast.unsubscribe, for this process's connections of the user."""
        kind = "disconnect" if isinstance(control, Disconnect) else "unsubscribe"
        self.metrics.controls.labels(kind).inc()
        for session in list(self.by_user.get(control.sub, ())):
            if isinstance(control, Disconnect):
                session.close(CloseCode.DISCONNECTED, control.reason or "disconnected")
            else:
                session.revoke(control.pattern)

    # -- closing ------------------------------------------------------------------------
    def schedule_close(self, session: Session, code: CloseCode, reason: str) -> None:
        """Close ``session``'s transport in a task this registry keeps and awaits."""
        self.metrics.closes.labels(str(int(code))).inc()
        task = asyncio.get_running_loop().create_task(self._close(session, code, reason))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _close(self, session: Session, code: CloseCode, reason: str) -> None:
        try:
            await session.transport.close(code, reason)
        except Exception:
            log.exception("closing a %s connection failed", session.transport.kind)

    async def drain(self, seconds: float) -> None:
        """Refuse new connections, then close every session with 1012 over ``seconds``."""
        if self.draining:
            return
        self.draining = True
        victims = list(self.live)
        random.shuffle(victims)
        total = len(victims)
        log.info("draining %d connections over %.1fs", total, seconds)
        loop = asyncio.get_running_loop()
        start = loop.time()
        done = 0
        while done < total:
            elapsed = loop.time() - start
            due = total if seconds <= 0 else min(total, int(total * elapsed / seconds) + 1)
            for session in victims[done:due]:
                session.close(CloseCode.SHUTTING_DOWN, "gateway shutting down")
            done = due
            if done < total:
                await asyncio.sleep(DRAIN_TICK)
        await self.wait_closed(within=self.settings.close_timeout + 1.0)
        log.info("drain done: %d connections closed, %d left", total, len(self.live))

    async def wait_closed(self, within: float) -> None:
        """Wait (bounded) for the close tasks to finish and the sessions to leave."""
        if self._closing:
            await asyncio.wait(list(self._closing), timeout=within)
        if self.live and self.draining:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(within):
                    await self._drained.wait()

    async def aclose(self) -> None:
        """Cancel whatever close is still running (shutdown's last step)."""
        tasks = list(self._closing)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
