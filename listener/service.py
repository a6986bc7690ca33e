"""Composition root of pgcast-listener: startup checks, probes, Redis, the election loop.

Start-up refuses to run (ConfigError, one line, exit 2) on a bad DSN, on
credentials or a database the servers reject, on a schema pgcast-migrate has not
created, or when a server stays unreachable for PGCAST_STARTUP_TIMEOUT seconds.
After start-up every failure is retried: the listener never exits on its own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import asyncpg

from listener import outbox, pgconn, probes, wal_slot
from listener.config import ListenerSettings
from listener.leader import Elector
from listener.metrics import ListenerMetrics
from listener.publisher import Mark, Publisher
from listener.session import LeaderSession
from pgcast import redis_connect
from pgcast.settings import ConfigError

log = logging.getLogger(__name__)

# SQLSTATE classes that retrying cannot fix: 28 = bad credentials, 3D = no such database.
FATAL_SQLSTATE_CLASSES = ("28", "3D")


def redis_client(settings: ListenerSettings) -> Any:
    """The Redis client (one address, a Sentinel-managed primary, or a Redis Cluster); its
    own retries are off: the drain retries with backoff itself (a cluster client still
    follows MOVED and ASK redirections)."""
    return redis_connect.client(settings.redis, timeout=settings.redis_timeout)


def _reason(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


async def check_postgres(settings: ListenerSettings, deadline: float) -> None:
    where = f"Postgres at {settings.safe_database_url}"
    while True:
        try:
            conn = await pgconn.connect(settings)
        except ValueError as exc:
            raise ConfigError(f"DATABASE_URL is not a valid DSN: {_reason(exc)}") from None
        except asyncpg.PostgresError as exc:
            if str(exc.sqlstate or "")[:2] in FATAL_SQLSTATE_CLASSES or time.monotonic() > deadline:
                raise ConfigError(f"{where} refused the connection: {_reason(exc)}") from None
        except (OSError, TimeoutError, asyncpg.InterfaceError) as exc:
            if time.monotonic() > deadline:
                raise ConfigError(f"cannot reach {where}: {_reason(exc)}") from None
        else:
            try:
                ready = await outbox.schema_ready(conn, settings.query_timeout)
            finally:
                await pgconn.close(conn)
            if not ready:
                raise ConfigError(f"{where} has no pgcast schema: run pgcast-migrate first")
            if settings.capture == "wal":
                conn = await pgconn.connect(settings)
                try:
                    await wal_slot.check_prerequisites(conn, settings.query_timeout)
                finally:
                    await pgconn.close(conn)
            return
        await asyncio.sleep(0.2)


def _count_behind(metrics: ListenerMetrics) -> Callable[[str, str, Mark | None], None]:
    def behind(channel: str, had: str, mark: Mark | None) -> None:
        metrics.history_lost.inc()
        said = (
            "renewed (another Redis than the last leader's)"
            if mark is None
            else (f"the watermark says {mark.epoch}:{mark.top}")
        )
        log.warning(
            "Redis went back in time on channel %r: it had %s, %s;"
            " a new epoch starts (its clients are told recovered:false)",
            channel[:300],
            had,
            said,
        )

    return behind


async def run(settings: ListenerSettings) -> None:
    """Run one listener until cancelled (SIGTERM/SIGINT via pgcast.runtime)."""
    metrics = ListenerMetrics()
    client = redis_client(settings)
    try:
        deadline = time.monotonic() + settings.startup_timeout
        await check_postgres(settings, deadline)
        await redis_connect.verify(settings.redis, client, deadline=deadline)
        publisher = Publisher(
            client,
            layout=settings.layout(),
            history_size=settings.history_size,
            history_ttl=settings.history_ttl,
            min_replicas=settings.redis_min_replicas,
            replica_timeout=settings.redis_replica_timeout,
            replica_policy="degrade" if settings.redis_replica_policy == "degrade" else "stall",
            on_behind=_count_behind(metrics),
            on_replicas=metrics.set_replicas,
        )

        async def lead(conn: asyncpg.Connection, epoch: int) -> None:
            await LeaderSession(conn, epoch, publisher, settings, metrics).run()

        capture = "outbox" if settings.capture == "outbox" else f"wal (slot {settings.wal_slot})"
        async with probes.serve(metrics, settings.host, settings.port):
            log.info(
                "listener started: %s, %s%s, capture %s, mode %s, probes on %s:%d",
                settings.safe_database_url,
                settings.safe_redis_url,
                f" ({settings.redis_partitions} partitions)" if settings.redis.cluster else "",
                capture,
                settings.notify_mode,
                settings.host,
                settings.port,
            )
            await Elector(settings, metrics, lead).run()
    finally:
        await client.aclose()
        log.info("listener stopped")
