"""The demo app's API against real Postgres: full-text search, the live re-check by ids,
order counts, visitor tokens (the pages' live behaviour is in tests/browser)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import jwt
import pytest
from aiohttp.test_utils import TestClient

from examples.demo.app import create_app
from examples.demo.config import DemoSettings
from pgcast.settings import ConfigError

SECRET = "demo-tests-" + "k" * 40
Client = TestClient[Any, Any]
MakeClient = Callable[..., Awaitable[Client]]


@pytest.fixture
async def demo(database_url: str, aiohttp_client: MakeClient) -> Client:
    settings = DemoSettings(database_url=database_url, jwt_secret=SECRET, token_ttl=60)
    return await aiohttp_client(create_app(settings))


async def search(client: Client, **params: str) -> list[dict[str, Any]]:
    response = await client.get("/api/search", params=params)
    assert response.status == 200
    body = await response.json()
    results: list[dict[str, Any]] = body["results"]
    return results


async def test_search_ranks_full_text_matches(demo: Client, database_url: str) -> None:
    """plainto_tsquery over the GIN-indexed column: stemming, ranking, title first."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            'INSERT INTO "Article" (title, body) VALUES ($1, $2), ($3, $4)',
            "Airships",
            "a quiet zeppelin drifting",
            "Zeppelins return",
            "the sky",
        )
    finally:
        await conn.close()
    results = await search(demo, q="zeppelin")
    assert [r["title"] for r in results] == ["Zeppelins return", "Airships"]
    assert "<b>zeppelin</b>" in results[1]["snippet"]
    assert await search(demo, q="the") == []  # stop words alone match nothing
    latest = await search(demo, q="", limit="3")
    assert [r["title"] for r in latest][:1] == ["Zeppelins return"]


async def test_search_by_ids_answers_does_this_row_match_now(
    demo: Client, database_url: str
) -> None:
    """The live page's check: the same predicate, restricted to the changed rows."""
    conn = await asyncpg.connect(database_url)
    try:
        hit = await conn.fetchval(
            'INSERT INTO "Article" (title) VALUES ($1) RETURNING id', "Redis streams deep dive"
        )
        miss = await conn.fetchval(
            'INSERT INTO "Article" (title) VALUES ($1) RETURNING id', "Gardening"
        )
        assert [r["id"] for r in await search(demo, q="stream", ids=f"{hit},{miss}")] == [hit]
        await conn.execute('UPDATE "Article" SET title = $1 WHERE id = $2', "Gardening 2", hit)
        assert await search(demo, q="stream", ids=str(hit)) == []
    finally:
        await conn.close()
    bad = await demo.get("/api/search", params={"q": "x", "ids": "1,nope"})
    assert bad.status == 400


async def test_order_counts_cover_every_status(demo: Client, database_url: str) -> None:
    """Counts per status straight from Postgres, zero for statuses with no order."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("DELETE FROM orders")
        await conn.execute("INSERT INTO orders (status) VALUES ('paid'), ('paid'), ('pending')")
    finally:
        await conn.close()
    response = await demo.get("/api/orders/counts")
    body = await response.json()
    assert body["counts"] == {
        "pending": 1,
        "paid": 2,
        "shipped": 0,
        "delivered": 0,
        "cancelled": 0,
    }
    assert body["total"] == 3


async def test_token_is_a_short_lived_jwt_for_the_demo_channels(demo: Client) -> None:
    """The visitor's token: HS256, the demo's channels, a stable sub per visitor cookie."""
    first = await (await demo.post("/api/token")).json()
    claims = jwt.decode(first["token"], SECRET, algorithms=["HS256"])
    assert claims["channels"] == ["articles", "orders"]
    assert claims["exp"] - claims["iat"] == 60
    second = await (await demo.post("/api/token")).json()
    assert jwt.decode(second["token"], SECRET, algorithms=["HS256"])["sub"] == claims["sub"]
    page = await demo.get("/")
    assert "live search" in await page.text()
    client_js = await demo.get("/vendor/pgcast-client.js")
    assert "export class PgcastClient" in await client_js.text()


def test_demo_settings_refuse_to_start_without_a_secret() -> None:
    """No PGCAST_JWT_SECRET: a one-line configuration error, not a demo with no auth."""
    with pytest.raises(ConfigError, match="PGCAST_JWT_SECRET"):
        DemoSettings.from_env({})
    settings = DemoSettings.from_env({"PGCAST_JWT_SECRET": SECRET, "DEMO_PORT": "9000"})
    assert settings.port == 9000
    assert settings.gateway_url is None
    assert SECRET not in repr(settings)
    with pytest.raises(ConfigError, match="DEMO_GATEWAY_URL"):
        DemoSettings.from_env({"PGCAST_JWT_SECRET": SECRET, "DEMO_GATEWAY_URL": "ftp://x"})
