"""Leader election on a Postgres advisory lock: at most one leader, on ONE connection.

``Elector.run()`` loops: connect -> ``pg_try_advisory_lock(K)``. Won: take a new
epoch from ``pgcast.leader`` and lead on that same connection until the session
fails; the lock dies with the connection, which is then closed. Lost: close the
connection (standbys hold none) and retry after a jittered interval. Failures to
reach Postgres are retried with capped backoff. Knows asyncpg, not redis.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
from collections.abc import Awaitable, Callable

import asyncpg

from listener import outbox, pgconn
from listener.config import ListenerSettings
from listener.metrics import ListenerMetrics
from pgcast.backoff import Backoff
from pgcast.cancellation import raise_if_cancelled
from pgcast.settings import ConfigError

log = logging.getLogger(__name__)

Lead = Callable[[asyncpg.Connection, int], Awaitable[None]]


class LeadershipEnded(Exception):
    """Leadership ended for a reason the design expects (logged in one line, no traceback)."""

    server: str | None = None  # the server whose failure ended it, for the errors metric


def holder_name() -> str:
    """Who holds the lock, for pgcast.leader.holder (operators read it)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def jittered(interval: float) -> float:
    """``interval`` +-50%, so standbys do not knock on the lock in lockstep."""
    return interval * random.uniform(0.5, 1.5)


class Elector:
    def __init__(self, settings: ListenerSettings, metrics: ListenerMetrics, lead: Lead) -> None:
        self.settings = settings
        self.metrics = metrics
        self.lead = lead
        self.holder = holder_name()
        self.backoff = Backoff(base=min(0.1, settings.backoff_max), cap=settings.backoff_max)
        self.led = False  # whether the current round won the lock

    async def run(self) -> None:
        while True:
            raise_if_cancelled()
            self.led = False
            try:
                await self._attempt()
                delay = jittered(self.settings.standby_retry)
            except ConfigError:
                raise  # what retrying cannot fix (a slot another application holds): exit 2
            except Exception as exc:  # the loop boundary: log, back off, try again
                raise_if_cancelled()  # a SIGTERM a child task turned into an error
                delay = self.backoff.next()
                if self.led:
                    # A deposed leader waits out a standby round, so that a healthy
                    # standby (retrying every <= 1.5 x interval) takes over first.
                    delay += 1.5 * self.settings.standby_retry
                known = is_postgres_failure(exc)
                if known or getattr(exc, "server", None) == "postgres":
                    self.metrics.errors.labels("postgres").inc()
                where = f"Postgres at {self.settings.safe_database_url}" if known else "leader"
                log.warning(
                    "%s: %s: %s; retrying in %.2fs",
                    where,
                    type(exc).__name__,
                    exc,
                    delay,
                    exc_info=not known and not isinstance(exc, LeadershipEnded),
                )
            await asyncio.sleep(delay)

    async def _attempt(self) -> None:
        """One election round; returns when standby, raises when leadership ended badly."""
        conn = await pgconn.connect(self.settings)
        try:
            timeout = self.settings.query_timeout
            won = await conn.fetchval(
                "SELECT pg_try_advisory_lock($1)", self.settings.lock_key, timeout=timeout
            )
            self.backoff.reset()
            if not won:
                if self.metrics.current_role != "standby":
                    self.metrics.set_standby()
                return
            epoch = await outbox.next_epoch(conn, self.holder, timeout)
            self.led = True
            self.metrics.set_leader(epoch)
            log.info(
                "leader: acquired the lock, epoch %d (backend pid %d)", epoch, conn.get_server_pid()
            )
            try:
                await self.lead(conn, epoch)
            finally:
                self.metrics.set_standby()
                log.info("leadership of epoch %d ended", epoch)
        finally:
            await pgconn.close(conn)


def is_postgres_failure(exc: BaseException) -> bool:
    """Whether ``exc`` says Postgres went away or refused (not a bug, no traceback)."""
    # InternalClientError: asyncpg's protocol state when the server ended the session in
    # the middle of a statement (a Postgres restart under load); the connection is gone.
    known = (
        OSError,
        asyncpg.PostgresError,
        asyncpg.InterfaceError,
        asyncpg.InternalClientError,
        TimeoutError,
    )
    return isinstance(exc, known)
