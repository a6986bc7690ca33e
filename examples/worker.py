"""A job worker that wakes up when a job row is inserted: no polling loop at all.

``jobs`` rows carry a trigger (``pgcast.notify_trigger('jobs')``); the worker
subscribes to the channel ``jobs``, waits until the gateway confirmed it, claims
every pending job (``FOR UPDATE SKIP LOCKED``: any number of workers share the
work, each job runs once), then sleeps until the next event and claims again.
Events are only wake-ups, the table is the truth: a lost continuity (``Gap``)
just means "claim again". Run it with::

    DATABASE_URL=postgresql://... PGCAST_URL=ws://127.0.0.1:8080/ws \\
    PGCAST_TOKEN=$(pgcast-token --sub worker --channels jobs) python -m examples.worker
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from pgcast.runtime import run_service
from pgcast.settings import ConfigError
from pgcast_client import Client, Gap

log = logging.getLogger("examples.worker")

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    payload    jsonb       NOT NULL DEFAULT '{}',
    status     text        NOT NULL DEFAULT 'pending',
    done_by    text,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS jobs_pending_idx ON jobs (id) WHERE status = 'pending';
CREATE OR REPLACE TRIGGER jobs_changed AFTER INSERT ON jobs
    FOR EACH ROW EXECUTE FUNCTION pgcast.notify_trigger('jobs');
"""

_CLAIM = """
SELECT id, payload FROM jobs WHERE status = 'pending'
ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED
"""

Handler = Callable[[int, Any], Awaitable[None]]


class Worker:
    """Claims and runs pending jobs whenever the ``jobs`` channel says something changed."""

    def __init__(self, pool: asyncpg.Pool, client: Client, handler: Handler, name: str) -> None:
        self.pool = pool
        self.client = client
        self.handler = handler
        self.name = name
        self.done = 0

    async def claim_all(self, batch: int = 10) -> int:
        """Run pending jobs until none is left (or all are locked by other workers)."""
        ran = 0
        while True:
            async with self.pool.acquire() as conn, conn.transaction():
                rows = await conn.fetch(_CLAIM, batch)
                for row in rows:
                    await self.handler(row["id"], row["payload"])
                    await conn.execute(
                        "UPDATE jobs SET status = 'done', done_by = $2 WHERE id = $1",
                        row["id"],
                        self.name,
                    )
            ran += len(rows)
            if len(rows) < batch:
                self.done += ran
                return ran

    async def on_gap(self, gap: Gap) -> None:
        log.warning("jobs channel lost continuity (epoch %s): claiming again", gap.epoch)
        await self.claim_all()

    async def run(self) -> None:
        """Subscribe first, then claim the backlog, then claim on each wake-up."""
        async with self.client.channel("jobs", on_gap=self.on_gap) as jobs:
            await jobs.ready()
            await self.claim_all()  # rows inserted before the subscription existed
            async for message in jobs:
                if message.data.get("op") == "INSERT":
                    await self.claim_all()


async def print_job(job_id: int, payload: Any) -> None:
    log.info("job %s: %s", job_id, payload)


async def serve() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    dsn = os.environ.get("DATABASE_URL", "postgresql://localhost:5432/postgres")
    url = os.environ.get("PGCAST_URL", "ws://127.0.0.1:8080/ws")
    token = os.environ.get("PGCAST_TOKEN")
    if not token:
        raise ConfigError("PGCAST_TOKEN is required (pgcast-token --sub worker --channels jobs)")
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        await pool.execute(SCHEMA)
        async with Client(url, token=token) as client:
            await Worker(pool, client, print_job, name=f"worker-{os.getpid()}").run()
    finally:
        await pool.close()


if __name__ == "__main__":
    sys.exit(run_service(serve))
