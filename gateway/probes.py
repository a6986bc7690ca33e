"""``/healthz``, ``/readyz`` and ``/metrics``: what load balancers and Prometheus ask.

``/readyz`` is green only while the gateway is not draining AND a heartbeat went
through Redis pub/sub recently: an open-looking TCP connection is not enough.
``/metrics`` is the gateway's :class:`~gateway.metrics.Metrics` rendered.
"""

from __future__ import annotations

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from gateway.services import SERVICES, Services


def problems(services: Services) -> list[str]:
    """Why /readyz is red; empty while ready (also the source of ``pgcast_gateway_ready``)."""
    found = []
    if services.sessions.draining:
        found.append("draining")
    stale = services.hub.stale()
    if stale:
        found.append("redis pub/sub heartbeat stale: " + ", ".join(stale))
    return found


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def readyz(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    found = problems(services)
    services.metrics.ready.set(0 if found else 1)
    body = orjson.dumps({"ready": not found, "problems": found})
    return web.Response(body=body, status=503 if found else 200, content_type="application/json")


async def metrics(request: web.Request) -> web.Response:
    """This process's metrics, or every gunicorn worker's summed (PROMETHEUS_MULTIPROC_DIR)."""
    body = request.app[SERVICES].metrics.render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
