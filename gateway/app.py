"""Composition root: ``create_app(settings)`` wires the gateway; ``gunicorn_app`` serves it.

Resources live in one cleanup context (Redis client, hub task); the drain runs
in ``on_shutdown`` (1012 closes spread over PGCAST_DRAIN_SECONDS) so gunicorn's
graceful timeout bounds it. With PROMETHEUS_MULTIPROC_DIR set, a metrics sync task
runs beside the hub and /metrics sums every worker (docs/observability.md). Production::

    gunicorn 'gateway.app:gunicorn_app' -k aiohttp.worker.GunicornUVLoopWebWorker \\
        -w 4 -b 0.0.0.0:8080 --graceful-timeout 15
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from gateway import probes
from gateway.auth import Verifier
from gateway.config import GatewaySettings
from gateway.control import ControlFeed
from gateway.history import History
from gateway.hub import Hub, HubOptions
from gateway.metrics import Metrics, multiprocess_dir
from gateway.presence import Presence
from gateway.presence_store import PresenceStore
from gateway.services import SERVICES, Services
from gateway.sessions import Sessions
from gateway.sse import sse_handler
from gateway.topology import Topology
from gateway.ws import websocket_handler
from pgcast import logs, redis_connect
from pgcast.settings import ConfigError

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
REDIS_POOL_SIZE = 32  # command connections per process (history reads, heartbeats)


class PathAccessLogger(AbstractAccessLogger):
    """Access log lines with the path only: a query string may carry a token."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        self.logger.debug(
            '%s "%s %s" %s %.3fs',
            request.remote,
            request.method,
            request.path,
            response.status,
            time,
        )


def create_app(settings: GatewaySettings) -> web.Application:
    """The gateway application for ``settings`` (raises ConfigError on a bad key)."""
    verifier = Verifier(settings)
    metrics_dir = multiprocess_dir()
    app = web.Application(client_max_size=64 * 1024)
    app.cleanup_ctx.append(_services_context(settings, verifier, metrics_dir))
    app.on_shutdown.append(_drain)
    app.router.add_get("/ws", websocket_handler)
    app.router.add_get("/sse", sse_handler)
    app.router.add_get("/healthz", probes.healthz)
    app.router.add_get("/readyz", probes.readyz)
    app.router.add_get("/metrics", probes.metrics)
    if STATIC_DIR.is_dir():
        app.router.add_static("/static/", STATIC_DIR)
        if (STATIC_DIR / "client.js").is_file():
            app.router.add_get("/client.js", _client_js)
    return app


async def _client_js(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "client.js")


def _services_context(
    settings: GatewaySettings, verifier: Verifier, metrics_dir: str | None
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def context(app: web.Application) -> AsyncIterator[None]:
        metrics = Metrics(metrics_dir)
        # Fail fast (one quick retry, for a pooled connection that died with a Redis
        # restart): the hub's own loop owns the backoff and the history re-sync.
        # A bounded pool whose callers wait (up to the subscribe timeout) for a connection:
        # redis-py's default pool fails past 100, so a reconnect herd of resuming clients
        # would be answered 'unavailable' beyond the 100th concurrent history read.
        redis = redis_connect.client(
            settings.redis,
            timeout=5.0,
            retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), 1),
            pool_size=REDIS_POOL_SIZE,
            pool_wait=settings.subscribe_timeout,
        )
        sessions = Sessions(settings, metrics)
        layout = settings.layout
        control = ControlFeed(redis, sessions.apply, layout)
        hub = Hub(
            HubOptions(
                gateway_id=settings.gateway_id,
                backlog_bytes=settings.send_queue_bytes,
                subscribe_timeout=settings.subscribe_timeout,
                heartbeat=settings.redis_heartbeat,
                heartbeat_timeout=settings.redis_heartbeat_timeout,
            ),
            redis,
            History(redis, settings.history_ttl, layout),
            metrics,
            control,
            Topology(settings.redis, layout, redis),
        )
        if settings.redis.cluster:
            # One link carries events and controls in order; a cluster's nodes do not.
            control.barrier = hub.barrier
        store = PresenceStore(redis, settings.presence_ttl, settings.presence_max_members, layout)
        presence = Presence(store, hub, metrics, settings.presence_ttl)
        services = app[SERVICES] = Services(settings, verifier, metrics, hub, sessions, presence)
        metrics.ready_when(lambda: not probes.problems(services))
        tasks = [
            asyncio.create_task(hub.run(), name="pgcast-hub"),
            asyncio.create_task(control.run(), name="pgcast-control"),
            asyncio.create_task(presence.run(), name="pgcast-presence"),
        ]
        if metrics_dir is not None:
            tasks.append(asyncio.create_task(metrics.run(), name="pgcast-metrics-sync"))
        try:
            yield
        finally:
            await sessions.aclose()
            for task in tasks:
                task.cancel()
            # Bounded: shutdown must finish inside gunicorn's graceful timeout, whatever
            # a library does with the cancellation.
            await asyncio.wait(tasks, timeout=2.0)
            if not all(task.done() for task in tasks):
                log.warning("the hub did not stop within 2s; exiting anyway")
            await redis.aclose()  # type: ignore[attr-defined, unused-ignore]

    return context


async def _drain(app: web.Application) -> None:
    services = app[SERVICES]
    await services.sessions.drain(services.settings.drain_seconds)


async def check_redis(settings: GatewaySettings) -> None:
    """Refuse to start (ConfigError) on what retrying cannot fix: a wrong password, a master
    no Sentinel knows, Sentinels that stay unreachable for PGCAST_STARTUP_TIMEOUT. One
    unreachable Redis is not fatal: the gateway starts unready and its hub reconnects.
    Called by each entry point before it serves (pgcast-gateway, gunicorn's factory)."""
    # Sentinels and cluster nodes must answer (the URL names nothing else to fall back on).
    must_answer = settings.redis.kind in ("sentinel", "cluster")
    deadline = time.monotonic() + (settings.startup_timeout if must_answer else 0.0)
    probe = redis_connect.client(settings.redis, timeout=5.0)
    try:
        await redis_connect.verify(
            settings.redis, probe, deadline=deadline, must_answer=must_answer
        )
        key = settings.layout.layout_key()
        if key is not None:
            await _check_partitions(probe, key, settings.redis_partitions)
    finally:
        await probe.aclose()


async def _check_partitions(probe: Any, key: str, partitions: int) -> None:
    """A cluster's leader records its partition count: a gateway with another one would
    read and subscribe other keys than the listener writes."""
    try:
        recorded = await probe.get(key)
    except redis_connect.ERRORS:
        return  # not fatal here: the hub retries Redis; the listener writes it at claim
    if recorded is not None and int(recorded) != partitions:
        raise ConfigError(
            f"PGCAST_REDIS_PARTITIONS={partitions}, but the listener uses {int(recorded)}:"
            " set the same value on the listener and every gateway"
        )


def load_settings() -> GatewaySettings:
    """Settings from the environment, logging configured, unused variables reported."""
    settings = GatewaySettings.from_env()
    logs.configure(settings.log_level, settings.log_format)
    for name in settings.unused_env:
        log.info("%s is set but the gateway does not use it (typo?)", name)
    return settings


def make_runner(app: web.Application, settings: GatewaySettings) -> web.AppRunner:
    return web.AppRunner(
        app,
        access_log_class=PathAccessLogger,
        handle_signals=False,
        shutdown_timeout=settings.close_timeout + 1.0,
    )


# gunicorn halts (instead of respawning the worker forever) when a worker exits with this.
GUNICORN_WORKER_BOOT_ERROR = 3


async def gunicorn_app() -> web.AppRunner:
    """gunicorn's app factory (aiohttp.worker.GunicornUVLoopWebWorker awaits it).

    A configuration error, Redis' refusal included, stops the worker with gunicorn's
    boot-error code, so the arbiter halts with one line instead of respawning it forever.
    """
    try:
        settings = load_settings()
        app = create_app(settings)
        await check_redis(settings)
    except ConfigError as exc:
        log.error("pgcast: configuration error: %s", exc)
        raise SystemExit(GUNICORN_WORKER_BOOT_ERROR) from None
    return make_runner(app, settings)
