"""The listener's tiny HTTP server: ``/healthz`` and ``/metrics`` on PGCAST_LISTENER_PORT.

``/healthz`` answers 200 while the process runs (a standby is healthy too) with
its role and epoch as JSON; ``/metrics`` is the Prometheus text of the listener's
own registry. Started and stopped by the composition root (service.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from listener.metrics import ListenerMetrics
from pgcast.settings import ConfigError

METRICS_KEY = web.AppKey("metrics", ListenerMetrics)


async def healthz(request: web.Request) -> web.Response:
    metrics = request.app[METRICS_KEY]
    # Alive either way (a restart would not bring replicas back); the body says when the
    # leader holds its batch because too few Redis replicas acknowledged it.
    status = "replicas_behind" if metrics.replicas_lagging else "ok"
    body = {"status": status, "role": metrics.current_role, "epoch": metrics.current_epoch}
    return web.Response(body=orjson.dumps(body), content_type="application/json")


async def metrics_text(request: web.Request) -> web.Response:
    body = request.app[METRICS_KEY].render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def create_app(metrics: ListenerMetrics) -> web.Application:
    app = web.Application()
    app[METRICS_KEY] = metrics
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_text)
    return app


@contextlib.asynccontextmanager
async def serve(metrics: ListenerMetrics, host: str, port: int) -> AsyncIterator[web.AppRunner]:
    """Serve the probes for the duration of the block; a busy port is a ConfigError."""
    runner = web.AppRunner(create_app(metrics), access_log=None)
    await runner.setup()
    try:
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as exc:
            raise ConfigError(
                f"PGCAST_LISTENER_PORT: cannot listen on {host}:{port}: {exc.strerror or exc}"
            ) from None
        yield runner
    finally:
        await runner.cleanup()
