"""The supervisor's probe of the stack's own Postgres (deploy.private_servers).

One short login per probe, as a client would: healthy once the server accepts it
(not while it starts up or recovers); the INFO cell names the version and how many
clients are connected. No answer is unhealthy.
"""

from __future__ import annotations

import asyncpg

TIMEOUT = 2.0
QUERY = """
select current_setting('server_version'),
       count(*) filter (where backend_type = 'client backend' and pid <> pg_backend_pid())
from pg_stat_activity
"""


async def probe(url: str) -> tuple[bool, str]:
    """(healthy, INFO cell) of the Postgres at ``url``."""
    try:
        conn = await asyncpg.connect(url, timeout=TIMEOUT)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return False, ""
    try:
        version, clients = await conn.fetchrow(QUERY, timeout=TIMEOUT)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return False, ""
    finally:
        await conn.close(timeout=TIMEOUT)
    noun = "client" if clients == 1 else "clients"
    return True, f"PostgreSQL {str(version).split()[0]}, {clients} {noun}"
