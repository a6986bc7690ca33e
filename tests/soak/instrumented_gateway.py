"""pgcast-gateway plus one route for soak runs: ``GET /_soak/tasks`` -> ``{"tasks": n}``.

The gateway exposes no count of its asyncio tasks; this wrapper (test harness
only, never deployed) adds one without touching gateway/, so a soak can check
that tasks return to their baseline after churn.
"""

from __future__ import annotations

import asyncio
import sys

from aiohttp import web

import gateway.cli
from gateway.app import create_app
from gateway.config import GatewaySettings


async def task_count(request: web.Request) -> web.Response:
    return web.json_response({"tasks": len(asyncio.all_tasks())})


def create_app_with_probe(settings: GatewaySettings) -> web.Application:
    app = create_app(settings)
    app.router.add_get("/_soak/tasks", task_count)
    return app


def main() -> int:
    gateway.cli.create_app = create_app_with_probe  # type: ignore[attr-defined]
    return gateway.cli.main()


if __name__ == "__main__":
    sys.exit(main())
