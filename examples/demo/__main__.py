"""``python -m examples.demo``: run the demo web app and print where to open it."""

from __future__ import annotations

import asyncio
import os
import sys

from aiohttp import web

from examples.demo.app import create_app
from examples.demo.config import DemoSettings
from pgcast.logs import configure
from pgcast.runtime import run_service


async def serve() -> None:
    settings = DemoSettings.from_env(os.environ)
    configure(
        os.environ.get("PGCAST_LOG_LEVEL", "info"), os.environ.get("PGCAST_LOG_FORMAT", "text")
    )
    runner = web.AppRunner(create_app(settings), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.host, settings.port)
        await site.start()
        print(
            f"pgcast demo: live search at http://{settings.host}:{settings.port}/ and "
            f"orders at http://{settings.host}:{settings.port}/orders "
            f"(gateway: {settings.gateway_url or 'same origin'})",
            flush=True,
        )
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main() -> int:
    return run_service(serve)


if __name__ == "__main__":
    sys.exit(main())
