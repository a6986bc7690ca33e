"""The Python client against real processes: listener, gateways, Redis, Postgres.

Every event is published in Postgres (pgcast.publish) and travels the whole
pipeline. Gateways are SIGKILLed, drained (1012) and restarted; the client must
deliver every event exactly once, in order, or say it could not (Gap).
"""

from __future__ import annotations

import asyncio
import contextlib
import urllib.request
from collections.abc import AsyncIterator, Iterator

import asyncpg
import orjson
import pytest
import redis.asyncio as aioredis

from pgcast.keys import Layout
from pgcast_client import Client, Gap, Message, Subscription, SubscriptionError, Unauthorized
from tests.browser.balancer import Balancer
from tests.browser.stack import Stack, mint, start_stack, until

SINGLE = Layout()  # the key names of one Redis (and Sentinel)

FAST = {"backoff_base": 0.05, "backoff_cap": 0.5, "restart_jitter": 0.2}
WAIT = 30.0
NO_LEEWAY = {"PGCAST_JWT_LEEWAY": "0"}  # tokens expire when they say (short-token tests)


@pytest.fixture
def stack(database_url: str, redis_url: str) -> Iterator[Stack]:
    running = start_stack(database_url, redis_url, gateways=1, gateway_env=NO_LEEWAY)
    yield running
    running.stop()


@pytest.fixture
def stack2(database_url: str, redis_url: str) -> Iterator[tuple[Stack, Balancer]]:
    """Two gateways behind a round-robin balancer."""
    running = start_stack(database_url, redis_url, gateways=2)
    balancer = Balancer(running.ports).start()
    yield running, balancer
    balancer.stop()
    running.stop()


@pytest.fixture
async def publisher(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_url)
    yield conn
    await conn.close()


async def publish(conn: asyncpg.Connection, channel: str, numbers: range) -> None:
    """One transaction per event, as independent writers would commit them."""
    for n in numbers:
        await conn.execute(
            "SELECT pgcast.publish($1, $2::jsonb)", channel, orjson.dumps({"n": n}).decode()
        )


async def take(sub: Subscription, count: int) -> list[Message]:
    async with asyncio.timeout(WAIT):
        return [await anext(sub) for _ in range(count)]


def numbers(messages: list[Message]) -> list[int]:
    return [m.data["n"] for m in messages]


async def ready(sub: Subscription) -> None:
    async with asyncio.timeout(WAIT):
        await sub.ready()


async def test_resume_across_a_gateway_restart_delivers_each_event_once(
    stack: Stack, publisher: asyncpg.Connection
) -> None:
    """Events published while the only gateway is dead arrive after it restarts, once each."""
    async with Client(stack.ws_url(), token=mint(channels=("jobs",)), **FAST) as client:
        jobs = client.channel("jobs")
        await ready(jobs)
        await publish(publisher, "jobs", range(1, 6))
        first = await take(jobs, 5)
        stack.kill_gateway(0)
        await publish(publisher, "jobs", range(6, 11))  # nobody is connected now
        await asyncio.to_thread(stack.restart_gateway, 0)
        second = await take(jobs, 5)
        await publish(publisher, "jobs", range(11, 13))
        third = await take(jobs, 2)  # a duplicate of 6..10 would show up before 11
    got = first + second + third
    assert numbers(got) == list(range(1, 13))
    offsets = [int(m.offset) for m in got]
    assert offsets == sorted(set(offsets))
    assert client.connections == 2


async def test_exactly_once_while_events_flow_during_a_gateway_kill(
    stack2: tuple[Stack, Balancer], publisher: asyncpg.Connection
) -> None:
    """A steady stream, the serving gateway SIGKILLed mid-way: 1..N, no gap, no duplicate."""
    stack, balancer = stack2
    total = 300
    async with Client(balancer.url + "/ws", token=mint(channels=("jobs",)), **FAST) as client:
        jobs = client.channel("jobs")
        await ready(jobs)
        writer = asyncio.ensure_future(publish(publisher, "jobs", range(1, total + 1)))
        try:
            got = await take(jobs, 50)
            (serving,) = balancer.by_backend()
            stack.kill_gateway(stack.ports.index(serving))
            got += await take(jobs, total - 50)
            await writer
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
        await publish(publisher, "jobs", range(total + 1, total + 2))
        got += await take(jobs, 1)
    assert numbers(got) == list(range(1, total + 2))
    assert client.connections == 2


async def test_drain_1012_reconnects_promptly_to_another_gateway(
    stack2: tuple[Stack, Balancer], publisher: asyncpg.Connection
) -> None:
    """SIGTERM drains with 1012; the client resumes elsewhere at once, losing nothing."""
    stack, balancer = stack2
    async with Client(
        balancer.url + "/ws", token=mint(channels=("jobs",)), backoff_base=5.0, backoff_cap=5.0
    ) as client:
        jobs = client.channel("jobs")
        await ready(jobs)
        await publish(publisher, "jobs", range(1, 4))
        got = await take(jobs, 3)
        (serving,) = balancer.by_backend()
        loop = asyncio.get_running_loop()
        drained = loop.run_in_executor(None, stack.drain_gateway, stack.ports.index(serving))
        await publish(publisher, "jobs", range(4, 7))
        # backoff_base is 5 s: arriving well before that proves 1012 skipped the backoff.
        async with asyncio.timeout(4.0):
            got += await take(jobs, 3)
        assert await drained == 0
    assert numbers(got) == [1, 2, 3, 4, 5, 6]
    assert client.connections == 2


async def test_token_factory_refreshes_before_expiry_on_the_same_connection(
    stack: Stack, publisher: asyncpg.Connection
) -> None:
    """Short tokens are refreshed in place (refresh frames): no 4001, no reconnect."""
    minted = 0

    async def factory() -> str:
        nonlocal minted
        minted += 1
        return mint(channels=("jobs",), ttl=3.0)

    async with Client(stack.ws_url(), token_factory=factory, **FAST) as client:
        jobs = client.channel("jobs")
        await ready(jobs)
        # Three refreshes outlive the first token's expiry by about two lifetimes.
        await until(lambda: client.refreshes >= 3, "three token refreshes")
        await publish(publisher, "jobs", range(1, 3))
        got = await take(jobs, 2)
    assert numbers(got) == [1, 2]
    assert client.connections == 1
    assert minted >= 4


async def test_expired_fixed_token_ends_the_iteration_with_unauthorized(stack: Stack) -> None:
    """Without a factory, 4001 at expiry cannot be fixed: the client stops and says why."""
    async with Client(stack.ws_url(), token=mint(channels=("jobs",), ttl=2.0), **FAST) as client:
        jobs = client.channel("jobs")
        await ready(jobs)
        with pytest.raises(Unauthorized):
            async with asyncio.timeout(WAIT):
                await anext(jobs)
    async with Client(stack.ws_url(), token="not-a-jwt", **FAST) as client:
        jobs = client.channel("jobs")
        with pytest.raises(Unauthorized, match="token rejected"):
            async with asyncio.timeout(WAIT):
                await anext(jobs)
    assert client.connections == 0


async def test_forbidden_channel_ends_that_subscription_only(
    stack: Stack, publisher: asyncpg.Connection
) -> None:
    """A channel outside the token's grants fails with SubscriptionError; others go on."""
    async with Client(stack.ws_url(), token=mint(channels=("jobs",)), **FAST) as client:
        secret = client.channel("payroll")
        jobs = client.channel("jobs")
        with pytest.raises(SubscriptionError) as failure:
            async with asyncio.timeout(WAIT):
                await anext(secret)
        assert failure.value.code == "forbidden"
        await ready(jobs)
        await publish(publisher, "jobs", range(1, 2))
        assert numbers(await take(jobs, 1)) == [1]


async def test_lost_history_reaches_the_application_as_a_gap(
    stack: Stack, publisher: asyncpg.Connection, redis_url: str
) -> None:
    """Redis lost the channel's history while the client was away: on_gap, then live again."""
    gaps: list[Gap] = []
    async with Client(stack.ws_url(), token=mint(channels=("jobs",)), **FAST) as client:
        jobs = client.channel("jobs", on_gap=gaps.append)
        await ready(jobs)
        await publish(publisher, "jobs", range(1, 3))
        got = await take(jobs, 2)
        stack.kill_gateway(0)
        wipe = aioredis.Redis.from_url(redis_url)
        await wipe.flushall()  # history and epoch gone, as after a Redis restart
        await wipe.aclose()
        await asyncio.to_thread(stack.restart_gateway, 0)
        await until(
            lambda: client.connections == 2 and jobs.state == "active", "the resubscription"
        )
        await publish(publisher, "jobs", range(3, 5))
        got += await take(jobs, 2)  # the gap is handed over first, in stream order
    assert numbers(got) == [1, 2, 3, 4]
    assert len(gaps) == 1
    assert gaps[0].channel == "jobs"
    assert gaps[0].epoch != ""


async def test_a_consumer_that_falls_behind_is_resumed_not_dropped(
    database_url: str, redis_url: str, publisher: asyncpg.Connection, redis_client: aioredis.Redis
) -> None:
    """Bounded memory end to end: a stalled consumer gets 4008, resumes, loses nothing."""
    running = start_stack(
        database_url, redis_url, 1, gateway_env={"PGCAST_SEND_QUEUE_BYTES": "4096"}
    )
    total = 300
    metrics_url = running.http_url() + "/metrics"
    try:
        async with Client(
            running.ws_url(), token=mint(channels=("jobs",)), queue_size=1, **FAST
        ) as client:
            jobs = client.channel("jobs")
            await ready(jobs)
            # 18 MB while nobody reads: more than the kernel's socket buffers and aiohttp's
            # reader can hold, so the gateway's send queue must overflow.
            padding = "x" * 60_000
            for n in range(1, total + 1):
                await publisher.execute(
                    "SELECT pgcast.publish('jobs', $1::jsonb)",
                    orjson.dumps({"n": n, "pad": padding}).decode(),
                )
            meta = SINGLE.channel_keys("jobs").meta
            await until(lambda: _published(redis_client, meta, total), "all published")
            await until(lambda: _slow_closes(metrics_url) >= 1, "a 4008 close")
            # The client's reader is still parked on the full queue: it sees the close and
            # resumes only now, once consumption starts, with all traffic already over.
            got = await take(jobs, total)
    finally:
        running.stop()
    assert numbers(got) == list(range(1, total + 1))
    assert client.connections >= 2


SLOW_METRIC = "pgcast_gateway_slow_consumer_closes_total"


async def _published(redis_client: aioredis.Redis, meta: str, total: int) -> bool:
    top = await redis_client.hget(meta, "s")
    return top is not None and int(top) >= total


def _slow_closes(url: str) -> float:
    with urllib.request.urlopen(url, timeout=5) as response:
        body: bytes = response.read()
    lines = [line for line in body.decode().splitlines() if line.startswith(SLOW_METRIC)]
    return float(lines[0].split()[-1]) if lines else 0.0
