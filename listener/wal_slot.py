"""The WAL capture's Postgres prerequisites and its replication slot (PGCAST_CAPTURE=wal).

``check_prerequisites`` runs at start-up and refuses what retrying cannot fix
(ConfigError: one line, exit 2): ``wal_level`` not ``logical``, a role without
``REPLICATION``, a schema without the capture's objects. ``claim_slot`` runs at each
leadership, on the leader's connection (which holds the advisory lock, so any other
pgcast walsender on the slot belongs to a deposed leader and is ended): it creates a
missing slot, replaces one Postgres invalidated (``max_slot_wal_keep_size``) and says so,
and refuses a slot another application streams from.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import asyncpg

from listener.replication import APPLICATION_NAME
from pgcast.settings import ConfigError

log = logging.getLogger(__name__)

PUBLICATIONS = ("pgcast", "pgcast_outbox")  # sql/006_capture.sql
SLOT_RELEASE_WAIT = 10.0  # seconds a deposed leader's walsender may take to go

_PREREQUISITES_SQL = """
SELECT current_setting('wal_level') AS wal_level,
       (SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user)
           AS replication,
       (SELECT count(*) FROM pg_publication WHERE pubname = ANY($1::text[])) AS publications,
       to_regprocedure('pgcast.set_capture(text)') IS NOT NULL AS capture
"""
_SLOT_SQL = """
SELECT s.database, s.plugin, s.slot_type, s.wal_status, s.active_pid,
       (SELECT a.application_name FROM pg_stat_activity AS a WHERE a.pid = s.active_pid) AS app
FROM pg_replication_slots AS s WHERE s.slot_name = $1
"""


@dataclass(frozen=True, slots=True)
class SlotState:
    created: bool  # made now (nothing to replay)
    invalidated: bool  # the old one had been invalidated: events may be missing


async def check_prerequisites(conn: asyncpg.Connection, query_timeout: float) -> None:
    """ConfigError when Postgres cannot serve PGCAST_CAPTURE=wal as configured."""
    row = await conn.fetchrow(_PREREQUISITES_SQL, list(PUBLICATIONS), timeout=query_timeout)
    if row["wal_level"] != "logical":
        raise ConfigError(
            f"PGCAST_CAPTURE=wal needs wal_level = logical; Postgres has {row['wal_level']!r}"
            " (ALTER SYSTEM SET wal_level = logical, then restart Postgres)"
        )
    if not row["replication"]:
        raise ConfigError(
            "PGCAST_CAPTURE=wal needs a role with the REPLICATION attribute"
            " (ALTER ROLE <listener role> REPLICATION)"
        )
    if row["publications"] != len(PUBLICATIONS) or not row["capture"]:
        raise ConfigError("the pgcast schema has no WAL capture objects: run pgcast-migrate first")


async def claim_slot(conn: asyncpg.Connection, slot: str, query_timeout: float) -> SlotState:
    """Make ``slot`` ready for this leader's stream (see the module docstring)."""
    timeout = query_timeout
    database = await conn.fetchval("SELECT current_database()", timeout=timeout)
    invalidated = False
    deadline = asyncio.get_running_loop().time() + SLOT_RELEASE_WAIT
    while True:
        row = await conn.fetchrow(_SLOT_SQL, slot, timeout=timeout)
        if row is None:
            await conn.execute(
                "SELECT pg_create_logical_replication_slot($1, 'pgoutput')", slot, timeout=timeout
            )
            log.info("created the replication slot %s", slot)
            return SlotState(created=True, invalidated=invalidated)
        kind = (row["slot_type"], row["plugin"], row["database"])
        if kind != ("logical", "pgoutput", database):
            raise ConfigError(
                f"replication slot {slot!r} is not a pgoutput slot of database {database!r}:"
                " choose another PGCAST_WAL_SLOT"
            )
        pid = row["active_pid"]
        if row["wal_status"] == "lost":
            if pid is None:
                log.error(
                    "replication slot %s was invalidated by Postgres (max_slot_wal_keep_size):"
                    " changes committed since its last confirmed position are lost; a new slot"
                    " is created and every channel starts a new epoch (clients are told)",
                    slot,
                )
                await conn.execute("SELECT pg_drop_replication_slot($1)", slot, timeout=timeout)
                invalidated = True
                continue
        elif pid is None:
            return SlotState(created=False, invalidated=invalidated)
        if pid is not None:
            if row["app"] != APPLICATION_NAME:
                raise ConfigError(
                    f"replication slot {slot!r} is in use by PID {pid}"
                    f" (application {row['app'] or 'unknown'!r}): choose another PGCAST_WAL_SLOT"
                )
            # A deposed pgcast leader's walsender (we hold the lock): end it.
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"replication slot {slot} still in use by PID {pid}")
            await conn.execute("SELECT pg_terminate_backend($1)", pid, timeout=timeout)
            await asyncio.sleep(0.05)
