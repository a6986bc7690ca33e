"""The demo in headless Chromium, on the real pipeline: live search and the orders dashboard.

Topology, as in production: the page comes from the demo app; its WebSocket goes to
"the gateway URL", a round-robin TCP balancer in front of two real gateway processes.
Killing the gateway that holds the page's connection cuts it; the page's client
reconnects through the balancer to the surviving gateway and resumes from its offset.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
from aiohttp import web
from playwright.async_api import Locator, Page, expect

from examples.demo.app import create_app
from examples.demo.config import DemoSettings
from tests.browser.balancer import Balancer
from tests.browser.stack import SECRET, Stack, start_stack
from tests.servers import free_port

expect.set_options(timeout=20_000)


@dataclass
class Demo:
    url: str
    stack: Stack
    balancer: Balancer


@pytest.fixture
async def demo(database_url: str, redis_url: str) -> AsyncIterator[Demo]:
    port = free_port()
    origin = f"http://127.0.0.1:{port}"
    stack = await asyncio.to_thread(start_stack, database_url, redis_url, 2, (origin,))
    balancer = Balancer(stack.ports).start()
    settings = DemoSettings(
        database_url=database_url,
        jwt_secret=SECRET,
        gateway_url=balancer.url,
        host="127.0.0.1",
        port=port,
        token_ttl=60,
    )
    runner = web.AppRunner(create_app(settings))
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        yield Demo(origin, stack, balancer)
    finally:
        await runner.cleanup()
        balancer.stop()
        stack.stop()


async def insert_article(conn: asyncpg.Connection, title: str, body: str = "") -> int:
    article_id: int = await conn.fetchval(
        'INSERT INTO "Article" (title, body) VALUES ($1, $2) RETURNING id', title, body
    )
    return article_id


def result(page: Page, title: str) -> Locator:
    return page.locator("#results li h3", has_text=title)


async def test_live_search_follows_inserts_and_survives_a_gateway_kill(
    page: Page, demo: Demo, pg: asyncpg.Connection, artifacts: Path
) -> None:
    """Search, insert a match ⇒ it appears; kill the page's gateway, insert two ⇒ both, once."""
    await page.goto(demo.url + "/")
    status = page.locator("#status")
    await expect(status).to_have_attribute("data-state", "connected")
    await page.fill("#q", "zeppelin")
    await expect(page.locator("#meta")).to_have_text("0 results matching “zeppelin” — live")

    await insert_article(pg, "Zeppelin over the harbour", "An airship returns to the bay.")
    await insert_article(pg, "Gardening in May", "Nothing about airships here.")
    await expect(result(page, "Zeppelin over the harbour")).to_have_count(1)

    (serving,) = demo.balancer.by_backend()
    demo.stack.kill_gateway(demo.stack.ports.index(serving))
    await insert_article(pg, "Second zeppelin sighted", "Zeppelins everywhere.")
    await insert_article(pg, "Why the zeppelin came back", "Helium is cheaper now.")

    await expect(result(page, "Second zeppelin sighted")).to_have_count(1)
    await expect(result(page, "Why the zeppelin came back")).to_have_count(1)
    await expect(page.locator("#results li")).to_have_count(3)
    await expect(result(page, "Gardening")).to_have_count(0)
    await expect(status).to_have_attribute("data-state", "connected")

    states = await page.evaluate("window.pgcastStates")
    assert "disconnected" in states[states.index("connected") :], states
    survivor = next(p for p in demo.stack.ports if p != serving)
    assert demo.balancer.by_backend() == {survivor: 1}
    offsets = await page.eval_on_selector_all(
        "#activity li", "items => items.map(item => item.dataset.offset)"
    )
    assert len(offsets) == len(set(offsets)) == 4, offsets  # every event once, none twice
    await page.screenshot(path=str(artifacts / "demo-live-search.png"), full_page=True)


async def test_live_search_drops_articles_that_stop_matching(
    page: Page, demo: Demo, pg: asyncpg.Connection
) -> None:
    """UPDATE out of the query removes a row, UPDATE into it adds one, DELETE removes."""
    keep = await insert_article(pg, "Helium markets", "balloon supply")
    leave = await insert_article(pg, "Balloon festival", "hot air")
    await page.goto(demo.url + "/?q=balloon")
    await expect(page.locator("#results li")).to_have_count(2)
    await pg.execute('UPDATE "Article" SET body = $1 WHERE id = $2', "gas prices", keep)
    await expect(result(page, "Helium markets")).to_have_count(0)
    await pg.execute('UPDATE "Article" SET title = $1 WHERE id = $2', "Balloon gala", leave)
    await expect(result(page, "Balloon gala")).to_have_count(1)
    other = await insert_article(pg, "Weather", "no match")
    await pg.execute('UPDATE "Article" SET title = $1 WHERE id = $2', "Weather balloon", other)
    await expect(result(page, "Weather balloon")).to_have_count(1)
    await pg.execute('DELETE FROM "Article" WHERE id = $1', leave)
    await expect(page.locator("#results li")).to_have_count(1)
    await expect(result(page, "Weather balloon")).to_have_count(1)


async def test_orders_dashboard_counts_follow_the_table(
    page: Page, demo: Demo, pg: asyncpg.Connection, artifacts: Path
) -> None:
    """Order counts per status update live on INSERT and UPDATE."""
    await pg.execute("DELETE FROM orders")
    await page.goto(demo.url + "/orders")
    shipped = page.locator('.card[data-status="shipped"] .n')
    paid = page.locator('.card[data-status="paid"] .n')
    await expect(page.locator("#status")).to_have_attribute("data-state", "connected")
    await expect(shipped).to_have_text("0")
    order = await pg.fetchval("INSERT INTO orders (status) VALUES ('paid') RETURNING id")
    await pg.execute("INSERT INTO orders (status) VALUES ('paid'), ('paid')")
    await expect(paid).to_have_text("3")
    await pg.execute("UPDATE orders SET status = 'shipped' WHERE id = $1", order)
    await expect(shipped).to_have_text("1")
    await expect(paid).to_have_text("2")
    await expect(page.locator("#meta")).to_have_text("3 orders — live")
    await page.screenshot(path=str(artifacts / "demo-orders.png"), full_page=True)
