"""Server-side control (``pgcast.disconnect``) on a real Redis Cluster while the master that
owns the control stream's slot (``pgcast:{control}:…``) is SIGKILLed and, later, switched
with CLUSTER FAILOVER: the real listener and two real gateway processes, WebSocket clients.

Every disconnect committed in Postgres closes the user's connections on both gateways
with 4003 and its reason: before the failure, one committed while the master is down (no
replica promoted yet: applied once the gateways follow the new master, delay measured),
after the SIGKILL and after the CLUSTER FAILOVER. Each exactly once: a connection the
user opens after a close is not closed again by a replay, and each gateway counts
exactly as many controls as were committed. Likewise when that master hands all its slots
to the others (redis-cli --cluster rebalance) and leaves the cluster.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import Callable

import aiohttp
import asyncpg
import pytest

from tests.gateway_support import Client, token
from tests.integration.cluster_support import LAYOUT, stack_on
from tests.integration.test_gateway_control import alive, closed_with
from tests.redis_cluster import RedisCluster

pytestmark = [pytest.mark.slow]

CONTROL_LIVE = LAYOUT.control_keys()[2]  # pgcast:{control}:live: the stream's slot too
CLOSE_BOUND = 20.0  # seconds: a disconnect committed while the master was down (asserted)


async def connect(http: aiohttp.ClientSession, urls: list[str], sub: str) -> list[Client]:
    """One connection of ``sub`` on each gateway, subscribed to ``user:<sub>``."""
    clients = []
    for url in urls:
        client = Client(await http.ws_connect(url, params={"token": token(sub, [f"user:{sub}"])}))
        assert (await client.subscribe(f"user:{sub}"))["type"] == "subscribed"
        clients.append(client)
    return clients


async def closed_all(clients: list[Client], reason: str, wait: float = 10.0) -> list[float]:
    """Each client is closed 4003 with ``reason``; returns when each close came (monotonic)."""

    async def one(client: Client) -> float:
        code, got, _ = await closed_with(client, wait)
        assert (code, got) == (4003, reason)
        return time.monotonic()

    return list(await asyncio.gather(*(one(c) for c in clients)))


def controls_applied(url: str) -> float:
    """pgcast_gateway_controls_total{op="disconnect"} of the gateway serving ``url``."""
    metrics = url.replace("ws://", "http://").removesuffix("/ws") + "/metrics"
    with urllib.request.urlopen(metrics, timeout=5) as resp:
        body = resp.read().decode()
    wanted = 'pgcast_gateway_controls_total{op="disconnect"} '
    lines = [line for line in body.splitlines() if line.startswith(wanted)]
    return float(lines[0].split()[-1]) if lines else 0.0


async def test_disconnect_across_sigkill_and_failover_of_the_control_master(
    redis_cluster: Callable[..., RedisCluster], database_url: str, pg: asyncpg.Connection
) -> None:
    """Before: pgcast.disconnect closes user 42 on both gateways. SIGKILL of the control
    slot's master; a disconnect committed before any replica took over is applied on both
    gateways once they follow the promoted replica (delay printed, < CLOSE_BOUND). After
    it, and after a CLUSTER FAILOVER back to the restarted node, a disconnect closes user
    42's connections exactly once: new connections of 42, opened after each close, survive
    a later control (user 44's, which proves the stream was read past the close); every
    gateway applied as many controls as were committed; user 43 is never closed."""
    cluster = redis_cluster()
    slot = cluster.key_slot(CONTROL_LIVE)
    issued = 0

    async def disconnect(sub: str, reason: str) -> float:
        nonlocal issued
        await pg.execute("SELECT pgcast.disconnect($1, $2)", sub, reason)
        issued += 1
        return time.monotonic()

    async def exactly_once(urls: list[str], http: aiohttp.ClientSession, reason: str) -> float:
        """42's connections closed with ``reason``, once: new ones, opened after the close,
        survive a later control. Returns the commit -> last close delay."""
        users = await connect(http, urls, "42")
        committed = await disconnect("42", reason)
        took = max(await closed_all(users, reason)) - committed
        fresh = await connect(http, urls, "42")
        marker = await connect(http, urls, "44")
        await disconnect("44", f"marker after {reason}")
        await closed_all(marker, f"marker after {reason}")
        for client in fresh:
            await alive(client)
            await client.ws.close()
        return took

    async with stack_on(cluster, database_url) as stack, aiohttp.ClientSession() as http:
        urls = stack.urls
        bystanders = await connect(http, urls, "43")
        # Before any failure.
        before = await exactly_once(urls, http, "before")

        # SIGKILL of the master serving the control stream's slot; a disconnect committed
        # while it is down and no replica has taken over yet.
        users = await connect(http, urls, "42")
        victim = cluster.master_of_slot(slot)
        killed = time.monotonic()
        await asyncio.to_thread(cluster.kill_master, victim)
        committed = await disconnect("42", "during")
        still_down = cluster.master_of_slot(slot).port == victim.port
        assert still_down, "a replica took over before the disconnect committed"
        closes = asyncio.ensure_future(closed_all(users, "during", wait=CLOSE_BOUND + 5))
        promoted_node = await asyncio.to_thread(cluster.wait_failover, victim.port)
        promoted = time.monotonic()
        closed = await closes
        assert max(closed) - committed < CLOSE_BOUND, closed
        after = await exactly_once(urls, http, "after")

        # The killed node rejoins as the promoted one's replica; CLUSTER FAILOVER back to it.
        await asyncio.to_thread(cluster.restart, victim)
        switch = time.monotonic()
        await asyncio.to_thread(cluster.failover, victim)
        switched = time.monotonic()
        assert cluster.master_of_slot(slot).port == victim.port
        after_switch = await exactly_once(urls, http, "after failover")
        for client in bystanders:
            await alive(client)

        applied = [await asyncio.to_thread(controls_applied, url) for url in urls]
        assert applied == [issued] * len(urls), (applied, issued)
        print(
            f"\ncontrol slot {slot}: master {victim.port} SIGKILLed; replica {promoted_node.port}"
            f" promoted {promoted - killed:.2f}s later; the disconnect committed"
            f" {committed - killed:.2f}s after the kill (no replica promoted yet) closed user"
            f" 42 on both gateways {max(closed) - committed:.2f}s after its commit"
            f" ({max(closed) - promoted:.2f}s after the promotion);"
            f" commit -> close before the kill {before * 1000:.0f} ms, after the promotion"
            f" {after * 1000:.0f} ms; CLUSTER FAILOVER back to {victim.port} in"
            f" {switched - switch:.2f}s, then {after_switch * 1000:.0f} ms;"
            f" {issued} disconnects committed, each gateway applied {applied}, none replayed"
        )


async def test_disconnect_after_the_control_master_is_emptied_and_removed(
    redis_cluster: Callable[..., RedisCluster], database_url: str, pg: asyncpg.Connection
) -> None:
    """The master serving the control stream's slot hands all its slots (the stream with
    them) to the other masters (redis-cli --cluster rebalance, weight 0), is forgotten by
    the cluster and stopped: a disconnect committed during the move and one after the
    removal each close user 42 on both gateways, once; each gateway applied every control
    committed, none twice."""
    cluster = redis_cluster()
    slot = cluster.key_slot(CONTROL_LIVE)
    removed = cluster.master_of_slot(slot)
    async with stack_on(cluster, database_url) as stack, aiohttp.ClientSession() as http:
        urls = stack.urls
        users = await connect(http, urls, "42")
        await pg.execute("SELECT pgcast.disconnect('42', 'before')")
        await closed_all(users, "before")
        users = await connect(http, urls, "42")
        moving = asyncio.ensure_future(asyncio.to_thread(cluster.empty_master, removed))
        await asyncio.sleep(0.5)  # the move has begun (it takes seconds)
        assert not moving.done()
        await pg.execute("SELECT pgcast.disconnect('42', 'during the move')")
        await closed_all(users, "during the move", wait=CLOSE_BOUND)
        await moving
        owner = cluster.master_of_slot(slot)
        await asyncio.to_thread(cluster.remove_node, removed)
        users = await connect(http, urls, "42")
        committed = time.monotonic()
        await pg.execute("SELECT pgcast.disconnect('42', 'after')")
        took = max(await closed_all(users, "after")) - committed
        fresh = await connect(http, urls, "42")
        marker = await connect(http, urls, "44")
        await pg.execute("SELECT pgcast.disconnect('44', 'marker')")
        await closed_all(marker, "marker")
        for client in fresh:
            await alive(client)
        applied = [await asyncio.to_thread(controls_applied, url) for url in urls]
        assert applied == [4, 4], applied
        print(
            f"\ncontrol slot {slot} moved from {removed.port} to {owner.port}, {removed.port}"
            f" removed: a disconnect committed during the move and one after the removal"
            f" ({took * 1000:.0f} ms commit -> close) each closed both gateways' connections"
            f" once; each gateway applied {applied}"
        )
