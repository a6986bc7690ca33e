"""examples/worker.py against the real pipeline: jobs run on INSERT, without polling,
each exactly once across two workers, including the backlog from before they started."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest

from examples.worker import SCHEMA, Worker
from pgcast_client import Client
from tests.browser.stack import Stack, mint, start_stack, until


@pytest.fixture
def stack(database_url: str, redis_url: str) -> Iterator[Stack]:
    running = start_stack(database_url, redis_url, gateways=1)
    yield running
    running.stop()


async def test_two_workers_wake_on_insert_and_run_each_job_once(
    stack: Stack, database_url: str
) -> None:
    """Backlog first, then wake-ups: 1 + 30 jobs, each run by exactly one worker."""
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=6)
    ran: list[tuple[str, int]] = []
    try:
        await pool.execute(SCHEMA)
        await pool.execute("INSERT INTO jobs (payload) VALUES ('{\"n\": 0}')")  # backlog

        def handler(name: str) -> Any:
            async def run(job_id: int, payload: Any) -> None:
                ran.append((name, job_id))

            return run

        async with contextlib.AsyncExitStack() as stack_ctx:
            workers = []
            for name in ("w1", "w2"):
                client = await stack_ctx.enter_async_context(
                    Client(stack.ws_url(), token=mint(channels=("jobs",)), backoff_base=0.05)
                )
                workers.append(Worker(pool, client, handler(name), name))
            tasks = [asyncio.ensure_future(w.run()) for w in workers]
            try:
                await until(lambda: len(ran) == 1, "the backlog job", limit=60)
                for batch in range(10):  # three jobs per transaction, ten transactions
                    await pool.execute(
                        "INSERT INTO jobs (payload) SELECT jsonb_build_object('n', g) "
                        "FROM generate_series($1::int, $1::int + 2) AS g",
                        batch * 3 + 1,
                    )
                try:
                    # Worker.done counts jobs whose transaction committed; ``ran`` fills
                    # before the commit, and cancelling then would roll the last ones back.
                    await until(lambda: sum(w.done for w in workers) >= 31, "31 done", limit=60)
                except TimeoutError:
                    states = await pool.fetch("SELECT id, status, done_by FROM jobs ORDER BY id")
                    raise AssertionError(f"ran {ran}; table {[tuple(r) for r in states]}") from None
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        ids = [job_id for _, job_id in ran]
        assert len(ids) == len(set(ids)) == 31, ran
        done = await pool.fetchval("SELECT count(*) FROM jobs WHERE status = 'done'")
        assert done == 31
    finally:
        await pool.close()
