"""The main-job topology under failure: 4 gateways behind nginx (wss), 2 listeners, 400 clients.

Started by the real stack runner (``make up``'s ``python -m deploy.stack``) on
free ports against the test's Postgres and Redis. Events are published from SQL
while one gateway and then the leader listener are SIGKILLed; every client must
see every event exactly once, in order, resuming through nginx without a gap.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from deploy.status import metrics_info
from tests.integration.test_stack_harness import RawClient, RunningStack, pid_alive
from tests.waiting import eventually

CLIENTS = 400
CHANNEL = "stack:news"
TOTAL = 150  # events; a gateway dies after a third, the leader listener after two thirds
RATE = 40.0  # events per second

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]


@pytest.fixture
def stack(tmp_path: Path, database_url: str, redis_url: str) -> Iterator[RunningStack]:
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "PGCAST_LOG_FORMAT": "text",
        # Quick failover and drain keep the test short; production keeps the defaults.
        "PGCAST_STANDBY_RETRY": "0.3",
        "PGCAST_DRAIN_SECONDS": "1",
    }
    for name in ("PGCAST_JWT_SECRET", "PGCAST_JWT_PUBLIC_KEY", "PGCAST_JWT_JWKS_URL"):
        env[name] = ""
    running = RunningStack(tmp_path / "run", env).start()
    try:
        running.wait_up()
        yield running
    finally:
        pids = [p["pid"] for p in running.state()["procs"] if p["pid"]]
        code = running.stop()
        assert code == 0, running.output()[-3000:]
        left = [pid for pid in pids if pid_alive(pid)]
        assert left == [], f"processes left running: {left}"


async def gateway_connections(session: aiohttp.ClientSession, stack: RunningStack) -> list[int]:
    counts = []
    for proc in stack.procs("gateway"):
        async with session.get(f"http://127.0.0.1:{proc['port']}/metrics") as resp:
            info = metrics_info("gateway", await resp.text())
        counts.append(int(info.split()[0]) if info else -1)
    return counts


async def leader(session: aiohttp.ClientSession, stack: RunningStack) -> dict[str, object]:
    for proc in stack.procs("listener"):
        try:
            async with session.get(f"http://127.0.0.1:{proc['port']}/metrics") as resp:
                role = metrics_info("listener", await resp.text())
        except aiohttp.ClientError:
            continue  # a listener the runner is still restarting has no probe yet
        if role == "leader":
            return proc
    raise AssertionError(f"no leader among {stack.procs('listener')}")


async def another_leader(
    session: aiohttp.ClientSession, stack: RunningStack, old: dict[str, object]
) -> bool:
    """Whether a listener other than ``old`` leads now (none may lead mid-takeover)."""
    try:
        return (await leader(session, stack))["name"] != old["name"]
    except AssertionError:
        return False


async def wait_for(what: str, check: Callable[[], bool], limit: float) -> None:
    """Poll ``check`` every 0.1 s; fail by name after ``limit`` seconds."""
    await eventually(check, limit, what, 0.1)


class Publisher:
    """Publishes ``seq`` 0..total-1 from SQL at a steady rate, one transaction each."""

    def __init__(self, dsn: str, total: int) -> None:
        self.dsn = dsn
        self.total = total
        self.published = 0

    async def run(self) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:
            for seq in range(self.total):
                await conn.execute(
                    "select pgcast.publish($1, jsonb_build_object('seq', $2::int))", CHANNEL, seq
                )
                self.published = seq + 1
                await asyncio.sleep(1 / RATE)
        finally:
            await conn.close()


async def test_four_gateways_two_listeners_400_clients_survive_kills(
    stack: RunningStack, database_url: str
) -> None:
    """400 wss clients through nginx, spread over 4 gateways; SIGKILL a gateway, then the
    leader listener, while events are being published: every client gets every event
    exactly once, in order, and the killed gateway's clients resume through nginx."""
    url = f"wss://localhost:{stack.https_port}/ws"
    connector = aiohttp.TCPConnector(limit=0, ssl=stack.ca_context())
    timeout = aiohttp.ClientTimeout(total=None, connect=10, sock_connect=10)
    probe_timeout = aiohttp.ClientTimeout(total=5)
    async with (
        aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
        aiohttp.ClientSession(timeout=probe_timeout) as probe,
    ):
        # One user per client: 400 connections of one user would pass a process's
        # PGCAST_MAX_USER_CONNECTIONS (100 by default) where the balancer is uneven.
        clients = [
            RawClient(url, stack.token(f"client-{i}"), CHANNEL, session) for i in range(CLIENTS)
        ]
        tasks = [asyncio.create_task(c.run()) for c in clients]
        publisher = Publisher(database_url, TOTAL)
        try:
            await wait_for(
                "400 subscriptions", lambda: all(c.subscribed.is_set() for c in clients), 45
            )
            counts = await gateway_connections(probe, stack)
            assert sum(counts) == CLIENTS, counts
            assert min(counts) >= CLIENTS // 8, f"not spread over all 4 gateways: {counts}"

            publishing = asyncio.create_task(publisher.run())
            await wait_for("a third of the events", lambda: publisher.published >= TOTAL // 3, 30)
            victim = stack.procs("gateway")[1]
            os.kill(victim["pid"], signal.SIGKILL)
            await wait_for(
                "the killed gateway's clients to reconnect",
                lambda: sum(c.connects > 1 for c in clients) >= counts[1],
                30,
            )
            await wait_for("two thirds", lambda: publisher.published >= 2 * TOTAL // 3, 30)
            old_leader = await leader(probe, stack)
            os.kill(int(str(old_leader["pid"])), signal.SIGKILL)
            async with asyncio.timeout(60):
                await publishing
            await wait_for(
                f"{TOTAL} events at every client",
                lambda: all(len(c.seqs) >= TOTAL for c in clients),
                45,
            )
            await eventually(
                lambda: another_leader(probe, stack, old_leader), 30, "a new leader", 0.1
            )
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    expected = list(range(TOTAL))
    wrong = [c.seqs for c in clients if c.seqs != expected]
    assert wrong == [], f"{len(wrong)} clients saw other than 0..{TOTAL - 1}, e.g. {wrong[0]}"
    assert sum(c.not_recovered for c in clients) == 0
    assert [c.errors for c in clients if c.errors] == []
    assert sum(c.connects > 1 for c in clients) >= counts[1]
    # The runner said what happened and brought the dead back, out loud.
    out = stack.output()
    assert f"{victim['name']}: restarting (killed by SIGKILL" in out
    assert f"{old_leader['name']}: restarting (killed by SIGKILL" in out
