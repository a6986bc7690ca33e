"""Helpers for the listener's process tests: start listeners, read their probes, read Redis.

Listeners run as real processes (tests/processes.py) with intervals shrunk so
failovers take a fraction of a second; every wait polls a condition with a deadline.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

import asyncpg
import orjson
import pytest
import redis.asyncio as aioredis

from pgcast.keys import Layout, offset_of_stream_id
from tests.processes import Service
from tests.servers import free_port
from tests.waiting import eventually

SINGLE = Layout()  # the key names of one Redis (and Sentinel)

FAST = {
    "PGCAST_STANDBY_RETRY": "0.1",
    "PGCAST_LIVENESS_INTERVAL": "0.2",
    "PGCAST_LIVENESS_TIMEOUT": "1.0",
    "PGCAST_POLL_INTERVAL": "0.5",
    "PGCAST_BACKOFF_MAX": "0.3",
    "PGCAST_CONNECT_TIMEOUT": "2",
    "PGCAST_STARTUP_TIMEOUT": "10",
    "PGCAST_REDIS_TIMEOUT": "1",
    "PGCAST_QUERY_TIMEOUT": "5",
    "PGCAST_LOG_LEVEL": "info",
}

LEADER_LOCK_SQL = """
SELECT pid FROM pg_locks
WHERE locktype = 'advisory' AND granted
  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""


@dataclass
class Listener:
    """A pgcast-listener process and its probe port."""

    service: Service
    port: int

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as resp:
            body: bytes = resp.read()
            return body

    def role(self) -> str | None:
        """``leader``/``standby``, or None when the probe does not answer."""
        try:
            role: str = orjson.loads(self.get("/healthz"))["role"]
        except OSError:
            return None
        return role

    def metric(self, name: str, labels: str = "") -> float:
        """One sample of /metrics (``labels`` as Prometheus prints them, e.g. 'result="fenced"')."""
        wanted = f"{name}{{{labels}}}" if labels else name
        for line in self.get("/metrics").decode().splitlines():
            if line.startswith(wanted + " "):
                return float(line.split()[-1])
        raise KeyError(wanted)


@dataclass
class Listeners:
    """Factory of listener processes for one test; stops them all at the end."""

    database_url: str
    redis_url: str
    started: list[Listener] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)  # for every listener (a capture mode)

    def start(self, wait: bool = True, **env: str) -> Listener:
        port = free_port()
        full_env = {
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_url,
            "PGCAST_LISTENER_PORT": str(port),
            **FAST,
            **self.env,
            **env,
        }
        listener = Listener(Service("listener", full_env).start(), port)
        self.started.append(listener)
        if wait:
            listener.service.wait_http(f"http://127.0.0.1:{port}/healthz")
        return listener

    def stop_all(self) -> None:
        for listener in self.started:
            listener.service.stop()


async def wait_until(
    check: Callable[[], Awaitable[bool]] | Callable[[], bool],
    what: str,
    deadline_s: float = 15.0,
    interval: float = 0.05,
) -> None:
    """Poll ``check`` (sync or async) until it is true; fail by name after ``deadline_s``."""
    await eventually(check, deadline_s, what, interval)


async def leader_of(group: list[Listener], deadline_s: float = 15.0) -> Listener:
    """The one listener of ``group`` that reports itself leader (waits for one)."""
    found: list[Listener] = []

    def one_leader() -> bool:
        found[:] = [item for item in group if item.role() == "leader"]
        return len(found) == 1

    await wait_until(one_leader, "exactly one leader", deadline_s)
    return found[0]


async def leader_backend_pid(pg: asyncpg.Connection) -> int | None:
    pid: int | None = await pg.fetchval(LEADER_LOCK_SQL)
    return pid


async def history(redis: aioredis.Redis, channel: str) -> list[tuple[int, dict[str, object]]]:
    """(offset, data) of every history entry of ``channel``, oldest first."""
    entries = await redis.xrange(SINGLE.channel_keys(channel).history)
    return [(offset_of_stream_id(i), orjson.loads(f[b"f"])["data"]) for i, f in entries]


def capture_env(capture: str, database_url: str) -> dict[str, str]:
    """A capture mode's listener settings; in ``wal`` mode a slot of the test's database
    (slot names are cluster-wide)."""
    if capture == "outbox":
        return {}
    return {"PGCAST_CAPTURE": "wal", "PGCAST_WAL_SLOT": "pgcast_" + database_url.rsplit("/", 1)[1]}


CAPTURING_SQL = """
SELECT (SELECT mode FROM pgcast.capture) = 'wal'
   AND EXISTS (SELECT FROM pg_replication_slots WHERE slot_name = $1 AND active)
"""


async def capturing(pg: asyncpg.Connection, env: dict[str, str]) -> None:
    """In ``wal`` mode: wait until the leader streams from its slot (what is committed from
    now on is decoded from the WAL, not drained from the outbox)."""
    slot = env.get("PGCAST_WAL_SLOT")
    if slot is not None:
        await wait_until(
            lambda: pg.fetchval(CAPTURING_SQL, slot), "the leader streams the WAL", deadline_s=30
        )


@pytest.fixture
def wal_env(database_url: str) -> dict[str, str]:
    """The listener settings of WAL capture with a slot of this test's database."""
    return capture_env("wal", database_url)


@pytest.fixture
def wal_listeners(
    database_url: str, redis_url: str, wal_env: dict[str, str]
) -> Iterator[Listeners]:
    """Factory of WAL-capturing listeners; stops them all at the end."""
    made = Listeners(database_url, redis_url, env=wal_env)
    yield made
    made.stop_all()


async def history_length(redis: aioredis.Redis, channel: str) -> int:
    """How many entries ``channel``'s history holds."""
    length: int = await redis.xlen(SINGLE.channel_keys(channel).history)
    return length
