"""Real gateway processes: SIGTERM drains to the other gateway with no loss."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import aiohttp
import redis.asyncio as aioredis

from tests.gateway_support import Events, Follower, contiguous, gateway_env, token, wait_until
from tests.processes import Service
from tests.servers import free_port


def status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


async def test_sigterm_drains_with_1012_and_clients_resume_on_the_other_gateway(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    """Clients of the stopped gateway get 1012, reconnect to the other, miss nothing."""
    ports = [free_port(), free_port()]
    gateways = [Service("gateway", gateway_env(redis_url, p)).start() for p in ports]
    try:
        for gw, port in zip(gateways, ports, strict=True):
            gw.wait_http(f"http://127.0.0.1:{port}/readyz")
        urls = [f"ws://127.0.0.1:{p}/ws" for p in ports]
        events = Events(redis_client)
        published: list[int] = []
        stop = asyncio.Event()

        async def publish() -> None:
            n = 1
            while not stop.is_set():
                published.extend(await events.numbered("news", n, 1))
                n += 1
                await asyncio.sleep(0.005)

        async with aiohttp.ClientSession() as session:
            followers = [
                Follower(session, urls, "news", token(str(i), channels=["news"])) for i in range(20)
            ]
            tasks = [asyncio.create_task(f.run()) for f in followers]
            await wait_until(lambda: all(f.subscribed for f in followers), what="all subscribed")
            writer = asyncio.create_task(publish())
            await wait_until(lambda: len(published) > 50, what="publishing")
            gateways[0].signal(signal.SIGTERM)
            started = time.monotonic()
            saw_unready = False
            while gateways[0].proc is not None and gateways[0].proc.poll() is None:
                saw_unready = saw_unready or status(f"http://127.0.0.1:{ports[0]}/readyz") == 503
                await asyncio.sleep(0.02)
            took = time.monotonic() - started
            await wait_until(lambda: len(published) > 400, wait=30, what="more published")
            stop.set()
            await writer
            last = published[-1]
            await wait_until(
                lambda: all(f.offsets()[-1:] == [last] for f in followers), what="caught up"
            )
            for f in followers:
                f.stop.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        assert gateways[0].proc is not None
        assert gateways[0].proc.returncode == 0
        assert saw_unready, "/readyz never answered 503 during the drain"
        assert took < 8, f"drain took {took:.1f}s"
        logs = gateways[0].log() + gateways[1].log()
        for f in followers:
            assert contiguous(f.offsets(), 1, last), f.offsets()[:20]
            assert len(f.subscribed) == 2
            assert f.subscribed[1]["recovered"] is True
            assert f.closes[0] == 1012  # every client started on the drained gateway
            assert f.token not in logs
    finally:
        for gw in gateways:
            gw.stop()


def test_gateway_without_a_token_key_refuses_to_start() -> None:
    """No PGCAST_JWT_SECRET / _PUBLIC_KEY / _JWKS_URL: exit 2 with one line saying so."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGCAST_JWT_")}
    done = subprocess.run(
        [sys.executable, "-c", "import sys; from gateway.cli import main; sys.exit(main())"],
        env={**env, "PGCAST_PORT": str(free_port())},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "PGCAST_JWT_SECRET" in lines[0]
