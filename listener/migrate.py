"""``pgcast-migrate``: apply the shipped ``sql/NNN_*.sql`` files in order, once each.

Safe when every replica runs it at the same moment: one transaction holds a
transaction-scoped advisory lock, so runners queue and the later ones find
everything applied. Applied files are recorded in ``pgcast.migrations`` with a
checksum; a file whose text changed is applied again (every file is idempotent).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import asyncpg

from pgcast.settings import DEFAULT_DATABASE_URL, ConfigError, EnvReader, redact_url

log = logging.getLogger(__name__)

# Any constant distinct from the leader lock key (PGCAST_LOCK_KEY's default).
MIGRATION_LOCK_KEY = 0x7067636173_6D67  # "pgcas" "mg"
CONNECT_TIMEOUT = 10.0

_BOOKKEEPING = """
CREATE SCHEMA IF NOT EXISTS pgcast;
CREATE TABLE IF NOT EXISTS pgcast.migrations (
    name       text PRIMARY KEY,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
"""


@dataclass(frozen=True, slots=True)
class Migration:
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def migrations() -> list[Migration]:
    """The shipped migrations, sorted by name (``NNN_`` prefixes give the order)."""
    try:
        root = resources.files("pgcast.sql")
        files = [(i.name, i.read_text()) for i in root.iterdir() if i.name.endswith(".sql")]
    except (ModuleNotFoundError, FileNotFoundError):
        # Running from a checkout without an install: the repository's sql/ directory.
        directory = Path(__file__).resolve().parent.parent / "sql"
        files = [(p.name, p.read_text()) for p in directory.iterdir() if p.name.endswith(".sql")]
    return sorted(
        (Migration(name, text) for name, text in files),
        key=lambda m: m.name,
    )


async def migrate(dsn: str) -> list[str]:
    """Apply pending (or changed) migrations to ``dsn``; return the names applied."""
    conn = await asyncpg.connect(dsn, timeout=CONNECT_TIMEOUT)
    try:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK_KEY)
            await conn.execute(_BOOKKEEPING)
            rows = await conn.fetch("SELECT name, checksum FROM pgcast.migrations")
            done = {row["name"]: row["checksum"] for row in rows}
            applied = []
            for migration in migrations():
                if done.get(migration.name) == migration.checksum:
                    continue
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO pgcast.migrations (name, checksum) VALUES ($1, $2)"
                    " ON CONFLICT (name) DO UPDATE"
                    " SET checksum = excluded.checksum, applied_at = now()",
                    migration.name,
                    migration.checksum,
                )
                applied.append(migration.name)
            return applied
    finally:
        await conn.close()


def database_url(env: dict[str, str] | os._Environ[str]) -> str:
    """DATABASE_URL from ``env``, validated (ConfigError on a bad value)."""
    return EnvReader(env).url("DATABASE_URL", DEFAULT_DATABASE_URL, ("postgresql", "postgres"))


def main() -> int:
    """The ``pgcast-migrate`` console script: exit 0 when the schema is current."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        dsn = database_url(os.environ)
    except ConfigError as exc:
        print(f"pgcast-migrate: configuration error: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    try:
        applied = asyncio.run(migrate(dsn))
    except (
        OSError,
        TimeoutError,
        ValueError,
        asyncpg.PostgresError,
        asyncpg.InterfaceError,
    ) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        print(  # noqa: T201
            f"pgcast-migrate: cannot migrate {redact_url(dsn)}: {reason}", file=sys.stderr
        )
        return 1
    log.info("pgcast-migrate: %s", ", ".join(applied) if applied else "already up to date")
    return 0
