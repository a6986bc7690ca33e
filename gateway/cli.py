"""``pgcast-gateway``: one gateway process on PGCAST_HOST:PGCAST_PORT until SIGTERM.

On SIGTERM/SIGINT: ``/readyz`` turns red and new connections get 503 while the
listening socket stays open, connections close with 1012 spread over
PGCAST_DRAIN_SECONDS, then the server stops. Production runs several of these
under gunicorn instead (see :mod:`gateway.app`).
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from gateway.app import check_redis, create_app, load_settings, make_runner
from gateway.services import SERVICES
from pgcast.runtime import run_service
from pgcast.settings import redact_url

log = logging.getLogger(__name__)


async def serve() -> None:
    settings = load_settings()
    app = create_app(settings)
    await check_redis(settings)
    runner = make_runner(app, settings)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.host, settings.port)
        await site.start()
        log.info(
            "gateway %s listening on %s:%d (redis %s)",
            settings.gateway_id,
            settings.host,
            settings.port,
            redact_url(settings.redis_url),
        )
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            # Shutting down is the expected way out: finish it as normal work, so
            # the timeouts inside the drain still fire as timeouts.
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
        await app[SERVICES].sessions.drain(settings.drain_seconds)
    finally:
        await runner.cleanup()
        log.info("gateway %s stopped", settings.gateway_id)


def main() -> int:
    return run_service(serve)
