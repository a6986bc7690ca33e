"""The browser client (served by the gateway at /client.js) in Chromium against real gateways:
resume across a restart, token refresh, 1012 drain, lost history, SSE fallback, expiry.

The page is opened on the gateway's own origin and imports ``/client.js`` from it, as a
site would; its token callback calls back into the test (``window.mintToken``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import orjson
import pytest
import redis.asyncio as aioredis
from playwright.async_api import Page

from tests.browser.balancer import Balancer
from tests.browser.stack import Stack, mint, start_stack

WAIT_MS = 20_000
ANY_ORIGIN = ("*",)  # the page lives on the gateway's (or balancer's) own origin
NO_LEEWAY = {"PGCAST_JWT_LEEWAY": "0"}

START = """
async ({ options, blocked }) => {
  const { PgcastClient } = await import('/client.js');
  Object.assign(window, { got: [], states: [], recoveries: [], mints: 0 });
  const extra = {};
  if (blocked) {
    // A WebSocket that cannot get through (as behind a proxy that refuses upgrades).
    extra.WebSocket = class extends WebSocket {
      constructor(url, protocols) { super('ws://127.0.0.1:9/ws', protocols); }
    };
  }
  window.client = new PgcastClient({
    token: async () => { window.mints += 1; return await window.mintToken(); },
    backoffBase: 100, backoffCap: 400, restartJitter: 200, ...extra, ...options,
  });
  client.on('state', (s) => states.push(s.code ? `${s.state}:${s.code}` : s.state));
  client.subscribe('jobs', {
    onMessage: (data, info) => got.push([data.n, info.offset]),
    onRecoveryFailed: (info) => recoveries.push(info.epoch),
  });
}
"""


@pytest.fixture
def stack(database_url: str, redis_url: str) -> Iterator[Stack]:
    running = start_stack(database_url, redis_url, 1, ANY_ORIGIN, NO_LEEWAY)
    yield running
    running.stop()


@pytest.fixture
def balanced(database_url: str, redis_url: str) -> Iterator[tuple[Stack, Balancer]]:
    running = start_stack(database_url, redis_url, 2, ANY_ORIGIN, NO_LEEWAY)
    balancer = Balancer(running.ports).start()
    yield running, balancer
    balancer.stop()
    running.stop()


@pytest.fixture
async def publisher(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_url)
    yield conn
    await conn.close()


async def publish(conn: asyncpg.Connection, numbers: range) -> None:
    for n in numbers:
        await conn.execute(
            "SELECT pgcast.publish('jobs', $1::jsonb)", orjson.dumps({"n": n}).decode()
        )


async def open_client(
    page: Page,
    origin: str,
    ttl: float = 120.0,
    blocked: bool = False,
    **options: Any,
) -> None:
    await page.expose_function("mintToken", lambda: mint(channels=("jobs",), ttl=ttl))
    await page.goto(origin + "/healthz")
    await page.evaluate(START, {"options": options, "blocked": blocked})
    await page.wait_for_function("window.states.includes('connected')", timeout=WAIT_MS)


async def received(page: Page, count: int) -> list[list[Any]]:
    await page.wait_for_function(f"window.got.length >= {count}", timeout=WAIT_MS)
    got: list[list[Any]] = await page.evaluate("window.got")
    return got


def assert_once_in_order(got: list[list[Any]], numbers: range) -> None:
    assert [n for n, _ in got] == list(numbers)
    offsets = [int(offset) for _, offset in got]
    assert offsets == sorted(set(offsets))


async def test_resumes_across_a_gateway_restart_without_loss_or_duplicate(
    page: Page, stack: Stack, publisher: asyncpg.Connection
) -> None:
    """Killed gateway, events published while it is down, restarted: all arrive, once."""
    await open_client(page, stack.http_url())
    await publish(publisher, range(1, 4))
    await received(page, 3)
    stack.kill_gateway(0)
    await page.wait_for_function("window.states.at(-1).startsWith('disconnected')")
    await publish(publisher, range(4, 8))
    await asyncio.to_thread(stack.restart_gateway, 0)
    await publish(publisher, range(8, 9))
    got = await received(page, 8)
    await publish(publisher, range(9, 10))  # a late duplicate would land before 9
    got = await received(page, 9)
    assert_once_in_order(got, range(1, 10))
    assert await page.evaluate("window.recoveries") == []


async def test_token_callback_refreshes_in_place_before_expiry(
    page: Page, stack: Stack, publisher: asyncpg.Connection
) -> None:
    """3-second tokens, refreshed as `refresh` frames: the connection outlives several."""
    await open_client(page, stack.http_url(), ttl=3.0)
    await page.wait_for_function("window.mints >= 4", timeout=WAIT_MS)
    await publish(publisher, range(1, 3))
    assert_once_in_order(await received(page, 2), range(1, 3))
    assert await page.evaluate("window.states") == ["connecting", "connected"]
    assert await page.evaluate("window.client.transport") == "websocket"


async def test_fixed_token_expiry_closes_for_good(page: Page, stack: Stack) -> None:
    """A fixed token cannot be refreshed: 4001 at expiry, then the client stops."""
    token = mint(channels=("jobs",), ttl=2.0)
    await open_client(page, stack.http_url(), token=token)
    await page.wait_for_function("window.states.at(-1) === 'closed:4001'", timeout=WAIT_MS)
    assert await page.evaluate("window.mints") == 0


async def test_drain_1012_reconnects_promptly_elsewhere(
    page: Page, balanced: tuple[Stack, Balancer], publisher: asyncpg.Connection
) -> None:
    """SIGTERM: the gateway closes with 1012; the page resumes on the other one at once."""
    stack, balancer = balanced
    # The page comes from gateway 0; only its WebSocket goes through the balancer.
    await open_client(page, stack.http_url(0), url=balancer.url, backoffBase=5000, backoffCap=5000)
    await publish(publisher, range(1, 3))
    await received(page, 2)
    (serving,) = balancer.by_backend()
    loop = asyncio.get_running_loop()
    drained = loop.run_in_executor(None, stack.drain_gateway, stack.ports.index(serving))
    await page.wait_for_function("window.states.includes('disconnected:1012')", timeout=WAIT_MS)
    await publish(publisher, range(3, 5))
    # backoffBase is 5 s: arriving sooner proves 1012 skipped the backoff.
    await page.wait_for_function("window.got.length >= 4", timeout=4_000)
    assert_once_in_order(await received(page, 4), range(1, 5))
    assert await drained == 0


async def test_lost_history_calls_on_recovery_failed(
    page: Page, stack: Stack, publisher: asyncpg.Connection, redis_url: str
) -> None:
    """History gone while away (Redis wiped): recovered:false reaches onRecoveryFailed."""
    await open_client(page, stack.http_url())
    await publish(publisher, range(1, 3))
    await received(page, 2)
    stack.kill_gateway(0)
    wipe = aioredis.Redis.from_url(redis_url)
    await wipe.flushall()
    await wipe.aclose()
    await asyncio.to_thread(stack.restart_gateway, 0)
    await page.wait_for_function("window.recoveries.length === 1", timeout=WAIT_MS)
    await publish(publisher, range(3, 4))
    got = await received(page, 3)
    assert [n for n, _ in got] == [1, 2, 3]


async def test_sse_fallback_when_websocket_is_blocked_and_resume_over_sse(
    page: Page, stack: Stack, publisher: asyncpg.Connection
) -> None:
    """WebSocket never gets through: SSE (token in ?token=), resumed after a restart."""
    await open_client(page, stack.http_url(), blocked=True, wsFailuresBeforeSse=2)
    assert await page.evaluate("window.client.transport") == "sse"
    await publish(publisher, range(1, 3))
    await received(page, 2)
    stack.kill_gateway(0)
    await publish(publisher, range(3, 5))
    await asyncio.to_thread(stack.restart_gateway, 0)
    await publish(publisher, range(5, 6))
    got = await received(page, 5)
    assert_once_in_order(got, range(1, 6))
    assert await page.evaluate("window.client.transport") == "sse"
    assert "token=" not in stack.gateways[0].log()
