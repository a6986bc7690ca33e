"""``/healthz``, ``/readyz`` and ``/metrics``: what load balancers and Prometheus ask.

``/readyz`` is green only while the gateway is not draining AND a heartbeat went
through Redis pub/sub recently: an open-looking TCP connection is not enough.
"""

from __future__ import annotations

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.services import SERVICES


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def readyz(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    problems = []
    if services.sessions.draining:
        problems.append("draining")
    if not services.hub.ready:
        problems.append("redis pub/sub heartbeat stale")
    services.metrics.ready.set(0 if problems else 1)
    body = orjson.dumps({"ready": not problems, "problems": problems})
    return web.Response(body=body, status=503 if problems else 200, content_type="application/json")


async def metrics(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    services.metrics.ready.set(1 if services.hub.ready and not services.sessions.draining else 0)
    body = generate_latest(services.metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
