"""The demo web app: pages, a search API, a token endpoint, and an optional order simulator.

This is "your application" in the pgcast picture: it owns the tables, answers
queries, and mints short-lived connection tokens for its visitors; the browser
then talks to the pgcast gateway directly for live updates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path

import asyncpg
import jwt
from aiohttp import web

from examples.demo import db
from examples.demo.config import DemoSettings
from pgcast.backoff import Backoff

log = logging.getLogger(__name__)
STATIC = Path(__file__).with_name("static")
SETTINGS = web.AppKey("settings", DemoSettings)
POOL = web.AppKey("pool", asyncpg.Pool)
VISITOR_COOKIE = "demo_visitor"
CHANNELS = ["articles", "orders"]
# Client messages: the search page's "… is typing" on `articles`. Presence: who is viewing
# the orders dashboard. Both are claims of the token (the gateway enforces them).
PUBLISH = ["articles"]
PRESENCE = ["orders"]
MAX_LIMIT = 100


def mint_token(settings: DemoSettings, visitor: str) -> tuple[str, int]:
    """A connection token for ``visitor``, allowed on the demo's channels (subscribe), to
    send client messages on ``articles`` and to join the presence of ``orders``."""
    now = int(time.time())
    claims = {
        "sub": visitor,
        "iat": now,
        "exp": now + settings.token_ttl,
        "channels": CHANNELS,
        "publish": PUBLISH,
        "presence": PRESENCE,
    }
    return jwt.encode(claims, settings.jwt_secret, algorithm="HS256"), settings.token_ttl


async def token(request: web.Request) -> web.Response:
    visitor = request.cookies.get(VISITOR_COOKIE) or secrets.token_hex(8)
    value, ttl = mint_token(request.app[SETTINGS], visitor)
    # `sub` lets the page tell its own presence entry from the others'.
    response = web.json_response({"token": value, "expiresIn": ttl, "sub": visitor})
    response.set_cookie(VISITOR_COOKIE, visitor, httponly=True, samesite="Lax")
    response.headers["Cache-Control"] = "no-store"
    return response


def _ids(raw: str | None) -> list[int] | None:
    if raw is None:
        return None
    try:
        return [int(part) for part in raw.split(",") if part.strip()][:MAX_LIMIT]
    except ValueError:
        raise web.HTTPBadRequest(text="ids must be comma-separated integers") from None


async def search(request: web.Request) -> web.Response:
    query = request.query.get("q", "")[:200]
    ids = _ids(request.query.get("ids"))
    try:
        limit = min(MAX_LIMIT, max(1, int(request.query.get("limit", "20"))))
    except ValueError:
        raise web.HTTPBadRequest(text="limit must be an integer") from None
    results = await db.search(request.app[POOL], query, ids, limit)
    return web.json_response({"query": query, "results": results})


async def order_counts(request: web.Request) -> web.Response:
    counts = await db.order_counts(request.app[POOL])
    return web.json_response({"counts": counts, "total": sum(counts.values())})


async def config(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    return web.json_response(
        {"gatewayUrl": settings.gateway_url, "clientUrl": "vendor/pgcast-client.js"}
    )


async def client_js(request: web.Request) -> web.Response:
    # The same file the gateway serves at /client.js, served same-origin so the demo
    # works even where the gateway is on another origin without CORS headers.
    text = resources.files("gateway").joinpath("static/client.js").read_text()
    return web.Response(text=text, content_type="text/javascript")


def page(name: str) -> web.RouteDef:
    async def handler(request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / name)

    return web.get("/" if name == "index.html" else "/" + name.removesuffix(".html"), handler)


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


class OrderSimulator:
    """Changes an order every ``every`` seconds so the dashboard has something to show."""

    def __init__(self, pool: asyncpg.Pool, every: float) -> None:
        self.pool = pool
        self.every = every

    async def run(self) -> None:
        backoff = Backoff(base=1.0, cap=30.0)
        while True:
            try:
                await db.simulate_order_change(self.pool)
                backoff.mark_healthy()
                await asyncio.sleep(self.every)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                log.warning("order simulator: database error, retrying", exc_info=True)
                await asyncio.sleep(backoff.next())


async def _database(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=5)
    async with pool.acquire() as conn:
        await db.apply_schema(conn, settings.seed)
    app[POOL] = pool
    simulator: asyncio.Task[None] | None = None
    if settings.simulate_every > 0:
        simulator = asyncio.create_task(OrderSimulator(pool, settings.simulate_every).run())
    try:
        yield
    finally:
        if simulator is not None:
            simulator.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await simulator
        await pool.close()


def create_app(settings: DemoSettings) -> web.Application:
    app = web.Application()
    app[SETTINGS] = settings
    app.cleanup_ctx.append(_database)
    app.add_routes(
        [
            page("index.html"),
            page("orders.html"),
            web.get("/api/config", config),
            web.post("/api/token", token),
            web.get("/api/search", search),
            web.get("/api/orders/counts", order_counts),
            web.get("/vendor/pgcast-client.js", client_js),
            web.get("/healthz", healthz),
            web.static("/static", STATIC),
        ]
    )
    return app
