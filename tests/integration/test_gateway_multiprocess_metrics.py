"""Gateway metrics under gunicorn with PROMETHEUS_MULTIPROC_DIR: any worker's /metrics sums all."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from tests.gateway_support import GUNICORN_APP, gateway_env, start_gunicorn, token, wait_until
from tests.integration.test_gateway_failover import status
from tests.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def per_worker_connections(directory: Path) -> dict[int, float]:
    """Each live worker's own connections gauge, read from its file in the directory."""
    found = {}
    for path in directory.glob("gauge_livesum_*.db"):
        pid = int(path.stem.rsplit("_", 1)[1])
        for metric in MultiProcessCollector.merge([str(path)]):  # type: ignore[no-untyped-call]
            for sample in metric.samples:
                if sample.name == "pgcast_gateway_connections":
                    found[pid] = sample.value
    return found


async def scrape(session: aiohttp.ClientSession, port: int) -> Samples:
    async with session.get(f"http://127.0.0.1:{port}/metrics") as resp:
        assert resp.status == 200
        return parse(await resp.text())


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
async def gunicorn(redis_url: str, tmp_path: Path) -> AsyncIterator[tuple[int, Path, Path]]:
    """The image's command (README: gunicorn --config deploy/gunicorn_conf.py ...), 2 workers."""
    port = free_port()
    metrics_dir = tmp_path / "metrics"  # created (and emptied) by the config's on_starting
    log = tmp_path / "gunicorn.log"
    env = {
        **gateway_env(redis_url, port),
        "WEB_CONCURRENCY": "2",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
    }
    with log.open("wb") as out:
        proc = await start_gunicorn(
            "--config", str(ROOT / "deploy" / "gunicorn_conf.py"), GUNICORN_APP[0], env=env, out=out
        )
        try:
            await wait_until(
                lambda: log.read_text().count("redis pub/sub connected") == 2, what="workers up"
            )
            await wait_until(lambda: status(f"http://127.0.0.1:{port}/readyz") == 200, what="ready")
            yield port, metrics_dir, log
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 20) == 0, log.read_text()
        finally:
            if proc.returncode is None:
                proc.kill()
                await asyncio.wait_for(proc.wait(), 10)


async def test_metrics_sum_every_gunicorn_worker(gunicorn: tuple[int, Path, Path]) -> None:
    """Connections and counters on both workers add up in every scrape; a dead worker's
    connections leave the sum (child_exit), its counters stay."""
    port, metrics_dir, log = gunicorn
    async with aiohttp.ClientSession() as session:
        sockets = []
        # Open connections until both workers hold some (the kernel picks the acceptor).
        while len(sockets) < 64:
            for _ in range(4):
                ws = await session.ws_connect(
                    f"ws://127.0.0.1:{port}/ws", params={"token": token()}
                )
                sockets.append(ws)
            await wait_until(
                lambda: sum(per_worker_connections(metrics_dir).values()) == len(sockets),
                what="workers synced their connection gauges",
            )
            if all(per_worker_connections(metrics_dir).values()):
                break
        workers = per_worker_connections(metrics_dir)
        assert len(workers) == 2, workers
        assert all(workers.values()), workers
        refused = 6
        for _ in range(refused):
            async with session.get(f"http://127.0.0.1:{port}/ws", params={"token": "x.y.z"}) as bad:
                assert bad.status == 401
        opened = len(sockets)
        for _ in range(8):  # each scrape is answered by one worker, either of them
            samples = await scrape(session, port)
            assert value(samples, "pgcast_gateway_connections") == opened
            assert value(samples, "pgcast_gateway_connections_opened_total", transport="ws") == (
                opened
            )
            auth = sum(
                v for (n, _), v in samples.items() if n == "pgcast_gateway_auth_failures_total"
            )
            assert auth == refused
            assert value(samples, "pgcast_gateway_ready") == 1

        victim = next(iter(workers))
        survivor_held = sum(held for pid, held in workers.items() if pid != victim)
        os.kill(victim, signal.SIGKILL)

        async def only_survivor_counted() -> bool:
            if (metrics_dir / f"gauge_livesum_{victim}.db").exists():
                return False
            samples = await scrape(session, port)
            return value(samples, "pgcast_gateway_connections") == survivor_held

        await wait_until(only_survivor_counted, what="the dead worker's gauges dropped")
        samples = await scrape(session, port)
        assert value(samples, "pgcast_gateway_connections_opened_total", transport="ws") == opened
        await wait_until(
            lambda: log.read_text().count("redis pub/sub connected") == 3, what="worker replaced"
        )
        for ws in sockets:
            await ws.close()
