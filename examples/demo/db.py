"""The demo's SQL: schema, sample rows, the full-text search and the order counts.

Search uses ``plainto_tsquery('english', q)`` against the GIN-indexed ``search``
column; ``ids`` restricts it to a few rows, which is how the live page asks
"do these changed articles match my query now?" with the same predicate.
"""

from __future__ import annotations

import random
from importlib import resources
from typing import Any

import asyncpg

STATUSES = ("pending", "paid", "shipped", "delivered", "cancelled")
SCHEMA_LOCK = 0x70676361_73746D6F  # any constant: serializes concurrent demo start-ups

SAMPLE_ARTICLES = [
    ("Postgres LISTEN/NOTIFY in practice", "Notifications are cheap wake-ups, not a queue."),
    ("The transactional outbox pattern", "Write the event in the same transaction as the row."),
    ("Redis streams for history", "Streams keep the last messages so clients can resume."),
    ("WebSockets behind a load balancer", "Sticky sessions are not needed when state is in Redis."),
    ("Full-text search with tsvector", "A GIN index makes Postgres full-text search fast."),
    ("Backoff with full jitter", "Spread reconnects so that a restart is not a stampede."),
    (
        "Server-sent events as a fallback",
        "EventSource reconnects by itself and sends Last-Event-ID.",
    ),
    ("Leader election with advisory locks", "One connection holds the lock and does the work."),
]


async def apply_schema(conn: asyncpg.Connection, seed: bool) -> None:
    sql = resources.files("examples.demo").joinpath("schema.sql").read_text()
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK)
        await conn.execute(sql)
        if seed and not await conn.fetchval('SELECT EXISTS (SELECT 1 FROM "Article")'):
            await conn.executemany(
                'INSERT INTO "Article" (title, body) VALUES ($1, $2)', SAMPLE_ARTICLES
            )
            await conn.executemany(
                "INSERT INTO orders (status, amount) VALUES ($1, $2)",
                [(random.choice(STATUSES), random.randint(5, 500)) for _ in range(20)],
            )


_SEARCH = """
SELECT id, title,
       ts_headline('english', body, query, 'MaxWords=18, MinWords=6') AS snippet,
       ts_rank(search, query) AS rank
FROM "Article", plainto_tsquery('english', $1) AS query
WHERE search @@ query AND ($2::bigint[] IS NULL OR id = ANY($2))
ORDER BY rank DESC, id DESC
LIMIT $3
"""

_LATEST = """
SELECT id, title, left(body, 140) AS snippet, 0.0::real AS rank
FROM "Article"
WHERE $1::bigint[] IS NULL OR id = ANY($1)
ORDER BY id DESC
LIMIT $2
"""


async def search(
    pool: asyncpg.Pool, query: str, ids: list[int] | None, limit: int
) -> list[dict[str, Any]]:
    """Articles matching ``query`` (all of them, newest first, for a blank query)."""
    if query.strip():
        rows = await pool.fetch(_SEARCH, query, ids, limit)
    else:
        rows = await pool.fetch(_LATEST, ids, limit)
    return [
        {"id": r["id"], "title": r["title"], "snippet": r["snippet"], "rank": float(r["rank"])}
        for r in rows
    ]


async def order_counts(pool: asyncpg.Pool) -> dict[str, int]:
    rows = await pool.fetch("SELECT status, count(*) AS n FROM orders GROUP BY status")
    counts = dict.fromkeys(STATUSES, 0)
    counts.update({r["status"]: r["n"] for r in rows})
    return counts


async def simulate_order_change(pool: asyncpg.Pool) -> None:
    """One plausible change: a new order, or an order moving to its next status."""
    nxt = {"pending": "paid", "paid": "shipped", "shipped": "delivered"}
    if random.random() < 0.4:
        await pool.execute("INSERT INTO orders (amount) VALUES ($1)", random.randint(5, 500))
        return
    row = await pool.fetchrow(
        "SELECT id, status FROM orders WHERE status = ANY($1) ORDER BY random() LIMIT 1",
        list(nxt),
    )
    if row is not None:
        status = "cancelled" if random.random() < 0.1 else nxt[row["status"]]
        await pool.execute("UPDATE orders SET status = $1 WHERE id = $2", status, row["id"])
