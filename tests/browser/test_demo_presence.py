"""Presence and client messages in the demo, in Chromium: two pages on two gateways behind nginx.

The topology of ``make up``: nginx (the stack's own config, TLS, ``least_conn``) in
front of two gateway processes and the demo app, page and WebSocket on one origin.
Two visitors (two browser contexts, two demo users) open the orders dashboard: each
sees the other join and leave within 1 s, measured by the test from the moment the
other page connected or closed. On the articles page, typing in one shows "<sub> is
typing…" on the other within 1 s. Each page's connection is on its own gateway,
checked on the gateways' /metrics, so every join, leave and message crossed Redis.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web
from playwright.async_api import Browser, BrowserContext, Page

from deploy.status import metrics_info
from examples.demo.app import create_app
from examples.demo.config import DemoSettings
from tests.browser.nginx_front import NginxFront, nginx_front
from tests.browser.stack import SECRET, Stack, start_stack
from tests.servers import free_port

LIVE = 1.0  # seconds: the bound on a join, a leave or a typing indicator crossing gateways
WAIT_MS = 20_000


@dataclass
class Site:
    stack: Stack
    front: NginxFront

    def url(self, page: str) -> str:
        return f"{self.front.origin}/demo/{page}"

    def connections(self) -> list[int]:
        """Open client connections per gateway, from their /metrics."""
        counts = []
        for port in self.stack.ports:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                info = metrics_info("gateway", r.read().decode())
            counts.append(int(info.split()[0]) if info else -1)
        return counts


@pytest.fixture
async def site(database_url: str, redis_url: str, tmp_path: Path) -> AsyncIterator[Site]:
    demo_port = free_port()
    nginx_port = free_port()
    origin = f"https://127.0.0.1:{nginx_port}"
    stack = await asyncio.to_thread(start_stack, database_url, redis_url, 2, (origin,))
    settings = DemoSettings(
        database_url=database_url,
        jwt_secret=SECRET,
        gateway_url=None,  # the page's own origin: nginx routes /ws to the gateways
        host="127.0.0.1",
        port=demo_port,
        token_ttl=60,
    )
    runner = web.AppRunner(create_app(settings))
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", demo_port).start()
        with nginx_front(tmp_path, stack.ports, demo_port, nginx_port) as front:
            yield Site(stack, front)
    finally:
        await runner.cleanup()
        stack.stop()


@pytest.fixture
async def visitors(browser: Browser) -> AsyncIterator[list[BrowserContext]]:
    """Two visitors: separate contexts, so separate demo cookies, so two users."""
    contexts = [
        await browser.new_context(ignore_https_errors=True, viewport={"width": 1200, "height": 800})
        for _ in range(2)
    ]
    yield contexts
    for context in contexts:
        await context.close()


async def open_page(context: BrowserContext, url: str) -> tuple[Page, str]:
    """Open ``url``; returns the page once connected, and its visitor's sub."""
    page = await context.new_page()
    page.set_default_timeout(WAIT_MS)
    await page.goto(url)
    await page.wait_for_function(
        "document.getElementById('status')?.dataset.state === 'connected' && window.pgcastSub"
    )
    sub: str = await page.evaluate("window.pgcastSub")
    return page, sub


async def within(page: Page, condition: str, arg: object, started: float, what: str) -> float:
    """Wait (polling every 10 ms) for ``condition`` on ``page``; the seconds since ``started``."""
    await page.wait_for_function(condition, arg=arg, polling=10, timeout=WAIT_MS)
    took = time.monotonic() - started
    assert took < LIVE, f"{what} took {took:.3f}s (bound {LIVE}s)"
    return took


SHOWS = "sub => !!document.querySelector(`#viewers li[data-sub='${sub}']`)"
GONE = "sub => !document.querySelector(`#viewers li[data-sub='${sub}']`)"
TYPING = (
    "sub => { const t = document.getElementById('typing');"
    " return !t.hidden && t.textContent === `${sub} is typing…`; }"
)
CONNECTED = "document.getElementById('status').dataset.state === 'connected'"


async def test_two_gateways_behind_nginx_presence_and_typing_cross_within_a_second(
    site: Site, visitors: list[BrowserContext], artifacts: Path
) -> None:
    """Joins and leaves on the orders page, and typing on the articles page, within 1 s."""
    first, second = visitors
    page_a, sub_a = await open_page(first, site.url("orders"))
    await page_a.wait_for_function(SHOWS, arg=sub_a)  # its own presence, from the snapshot
    started = time.monotonic()
    page_b, sub_b = await open_page(second, site.url("orders"))
    joined = time.monotonic()
    assert sub_a != sub_b
    assert sorted(site.connections()) == [1, 1], "the two pages must be on two gateways"
    await within(page_a, SHOWS, sub_b, joined, "A seeing B join")
    await within(page_b, SHOWS, sub_a, joined, "B seeing A (its snapshot)")
    assert await page_a.locator("#viewers li").count() == 2
    assert "(you)" in await page_b.locator(f"#viewers li[data-sub='{sub_b}']").inner_text()
    await page_a.screenshot(path=str(artifacts / "demo-presence.png"), full_page=True)
    assert time.monotonic() - started < 30

    closed = time.monotonic()
    await page_b.close()  # closing a page drops its connection: its member leaves
    await within(page_a, GONE, sub_b, closed, "A seeing B leave (page closed)")

    page_b, _ = await open_page(second, site.url("orders"))
    await within(page_a, SHOWS, sub_b, time.monotonic(), "A seeing B join again")
    left = time.monotonic()
    await page_a.goto(site.url(""))  # A moves to the articles page: it leaves the orders page
    await within(page_b, GONE, sub_a, left, "B seeing A leave (navigated away)")
    await page_a.wait_for_function(CONNECTED)

    await page_b.goto(site.url(""))
    await page_b.wait_for_function(CONNECTED)
    assert sorted(site.connections()) == [1, 1], "the articles pages must be on two gateways"
    # The first keystroke publishes at once (then at most one a second).
    typed = time.monotonic()
    await page_a.locator("#q").press_sequentially("zep")
    await within(page_b, TYPING, sub_a, typed, "B seeing A type")
    assert await page_a.locator("#typing").is_hidden(), "a sender never gets its own message"
    await page_b.screenshot(path=str(artifacts / "demo-typing.png"), full_page=True)
