"""Session servers and per-test resources: a fresh migrated database and a clean Redis.

Shared servers come from tests/servers.py (env vars, else testcontainers, else
private local instances). Tests that kill or freeze a server use ``private_pg`` /
``private_redis`` instead, which are never shared; Redis topology tests use
``redis_node`` / ``sentinel_group`` (tests/redis_topology.py) and ``redis_cluster``
(tests/redis_cluster.py). The logs of the processes tests start (tests/processes.py)
live in one directory per session, removed when it ends.

Two kinds of Redis behind ``redis_url``. Tests of the modules in :data:`CLUSTER_TOO` run
twice, ``[single]`` on the shared Redis and ``[cluster]`` on a shared 6-node Redis Cluster
(3 masters, a replica each, on loopback; started by the first test that needs it, every
master flushed before each test): ``redis_url`` is then its ``redis+cluster://`` URL and
``redis_client`` a cluster client, so whatever goes through pgcast's own APIs (the gateway
app and processes, the listener, Events/Publisher: tests.gateway_support picks the
Layout from the client) runs on both. Every other test runs on the shared Redis only.

The cluster variants (36 tests, about 40 s on a 2-CPU machine, cluster start included):
the gateway end to end with the real listener, the smoke test, resume (gapless under a
writer, recovered:false for a foreign epoch or trimmed history, SSE with Last-Event-ID),
resume on another gateway after a SIGTERM drain, session rules, compression, probes,
gunicorn, SSE's close events, fan-out to 200 subscribers with a stalled one closed 4008,
presence and client messages across gateways (a SIGKILLed gateway's members included),
server-side control through the listener, auth. Single-only, and why:

- tests that kill, restart or cut one Redis (test_gateway_redis,
  test_hardening_gateway_redis) or put a TCP proxy in front of its one port (the presence
  test of a replaced link, the control test of a link that was down: a cluster client
  reaches every node at its own address, past any proxy);
- tests that read or wipe Redis through a plain client with single-Redis key names, INFO
  or FLUSHALL (test_hardening_resume_herd, test_client_python);
- Sentinel, rollback and topology tests, which run their own servers; the cluster's own
  failure tests (test_redis_cluster, test_listener_cluster, test_gateway_cluster) use the
  ``redis_cluster`` factory, a private cluster each to kill and reshard, never this one;
- the listener's other modules: its cluster publishing is test_listener_cluster's.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import redis.asyncio as aioredis
from hypothesis import settings

from pgcast import redis_connect
from pgcast.redis_url import parse_redis_url
from tests.processes import log_directory
from tests.redis_cluster import RedisCluster
from tests.redis_topology import RedisNode, SentinelGroup
from tests.servers import PgInstance, RedisInstance, SharedServers, start_shared_servers

TEMPLATE_DB = "pgcast_test_template"

_PROXY = "a TCP proxy in front of one Redis port (a cluster client reaches every node directly)"
# Test modules (file stems) whose tests run on the shared Redis Cluster too, each with the
# tests that stay single-only and why (see the module docstring).
CLUSTER_TOO: dict[str, dict[str, str]] = {
    "test_gateway_e2e": {},
    "test_gateway_smoke": {},
    "test_gateway_resume": {},
    "test_gateway_session": {},
    "test_gateway_http": {},
    "test_gateway_backpressure": {},
    "test_gateway_presence": {
        "test_watchers_get_a_fresh_snapshot_after_the_link_was_replaced": _PROXY,
    },
    "test_gateway_failover": {},
    "test_gateway_control": {
        "test_a_control_sent_while_the_link_was_down_is_applied_after_it_returns": _PROXY,
    },
    "test_gateway_auth": {},
}

# No per-example deadline: a loaded CI machine's stall is not a failure. Tests that bound
# a cost measure it themselves, in CPU time.
settings.register_profile("pgcast", deadline=None)
settings.load_profile("pgcast")


async def drop_slots(admin: asyncpg.Connection, dbname: str) -> None:
    """Drop the database's logical replication slots (PGCAST_CAPTURE=wal): a slot keeps its
    database from being dropped. An active one's walsender is terminated first."""
    for _ in range(100):
        slots = await admin.fetch(
            "SELECT slot_name, active_pid FROM pg_replication_slots WHERE database = $1", dbname
        )
        if not slots:
            return
        for slot in slots:
            if slot["active_pid"] is not None:
                await admin.execute("SELECT pg_terminate_backend($1)", slot["active_pid"])
            else:
                with contextlib.suppress(asyncpg.PostgresError):
                    await admin.execute("SELECT pg_drop_replication_slot($1)", slot["slot_name"])
        await asyncio.sleep(0.05)


def with_database(dsn: str, dbname: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + dbname))


async def _migrate(dsn: str) -> None:
    from listener.migrate import migrate

    await migrate(dsn)


async def _make_template(admin_dsn: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE_DB}"')
        await conn.execute(f'CREATE DATABASE "{TEMPLATE_DB}"')
    finally:
        await conn.close()
    await _migrate(with_database(admin_dsn, TEMPLATE_DB))


def migrate_sync(dsn: str) -> None:
    """Run pgcast-migrate in a child process (usable from sync and async tests alike)."""
    env = {**os.environ, "DATABASE_URL": dsn}
    subprocess.run(
        [sys.executable, "-c", "from listener.migrate import main; main()"],
        env=env,
        check=True,
        timeout=60,
    )


@pytest.fixture(scope="session", autouse=True)
def service_logs() -> Iterator[Path]:
    """The logs of the processes tests start, in one directory removed after the session."""
    with log_directory() as directory:
        yield directory


@pytest.fixture(scope="session")
def servers() -> Iterator[SharedServers]:
    shared = start_shared_servers()
    try:
        asyncio.run(_make_template(shared.database_url))
        yield shared
    finally:
        shared.close()


@pytest.fixture
async def database_url(servers: SharedServers) -> AsyncIterator[str]:
    """A fresh database with pgcast migrated, dropped after the test."""
    name = "t_" + uuid.uuid4().hex[:12]
    admin = await asyncpg.connect(servers.database_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE_DB}"')
    finally:
        await admin.close()
    yield with_database(servers.database_url, name)
    admin = await asyncpg.connect(servers.database_url)
    try:
        # A logical replication slot (PGCAST_CAPTURE=wal) keeps its database from dropping.
        await drop_slots(admin, name)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests of the CLUSTER_TOO modules that use ``redis_url`` run on both kinds of Redis."""
    if "redis_url" not in metafunc.fixturenames or metafunc.module is None:
        return
    single_only = CLUSTER_TOO.get(Path(metafunc.module.__file__ or "").stem)
    if single_only is None or metafunc.function.__name__ in single_only:
        return
    metafunc.parametrize("redis_kind", ["single", "cluster"], indirect=True)


@pytest.fixture
def redis_kind(request: pytest.FixtureRequest) -> str:
    """``single`` (the shared Redis) or ``cluster`` (the shared Redis Cluster)."""
    kind: str = getattr(request, "param", "single")
    return kind


@pytest.fixture(scope="session")
def shared_redis_cluster() -> Iterator[RedisCluster]:
    """A 6-node Redis Cluster for the ``[cluster]`` variants, started once, on first use.

    A node timeout of 5 s: nothing here fails a node on purpose, and a loaded CI machine's
    stall must not look like a dead master."""
    cluster = RedisCluster(3, 1, node_timeout_ms=5000)
    try:
        yield cluster.start()
    finally:
        cluster.destroy()


@pytest.fixture
async def redis_url(request: pytest.FixtureRequest, redis_kind: str, servers: SharedServers) -> str:
    """The shared Redis, or the shared Redis Cluster (``redis_kind``), flushed before the
    test (tests run one at a time): FLUSHALL on the one Redis, or on every master.

    ``servers`` is a parameter even for the cluster: it starts with asyncio.run(), which
    cannot run from inside this fixture's loop."""
    if redis_kind == "cluster":
        cluster: RedisCluster = request.getfixturevalue("shared_redis_cluster")
        for master in await asyncio.to_thread(cluster.masters):
            await asyncio.to_thread(master.command, "FLUSHALL")
        return cluster.url
    client = aioredis.Redis.from_url(servers.redis_url)
    await client.flushall()
    await client.aclose()
    return servers.redis_url


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A client of ``redis_url``: on the cluster a ``RedisCluster`` (same commands, keys
    routed to their slots' masters; tests.gateway_support.Events picks the Layout from it)."""
    target = parse_redis_url(redis_url)
    if target.cluster:
        client = redis_connect.client(target, timeout=5.0)
    else:
        client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def pg(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_url)
    yield conn
    await conn.close()


@pytest.fixture
def private_pg() -> Iterator[Callable[..., PgInstance]]:
    """Factory of private, migrated Postgres clusters that a test may kill or restart."""
    made: list[PgInstance] = []

    def make(**extra_conf: str) -> PgInstance:
        instance = PgInstance(extra_conf=dict(extra_conf)).init()
        made.append(instance)
        instance.start()
        migrate_sync(instance.dsn)
        return instance

    yield make
    for instance in made:
        instance.destroy()


@pytest.fixture
def private_redis() -> Iterator[Callable[..., RedisInstance]]:
    """Factory of private redis-servers that a test may kill or restart."""
    made: list[RedisInstance] = []

    def make(*extra_args: str) -> RedisInstance:
        instance = RedisInstance(extra_args=extra_args)
        made.append(instance)
        instance.start()
        return instance

    yield make
    for instance in made:
        instance.destroy()


@pytest.fixture
def redis_node() -> Iterator[Callable[..., RedisNode]]:
    """Factory of started private redis-server nodes that a test may kill, freeze, restart."""
    made: list[RedisNode] = []

    def make(
        persistence: bool = False, replicaof: tuple[str, int] | None = None, *extra_args: str
    ) -> RedisNode:
        node = RedisNode(persistence, replicaof, extra_args)
        made.append(node)  # before start: a node that fails to start is still cleaned up
        return node.start()

    yield make
    for node in reversed(made):
        node.destroy()  # SIGKILL by PID and a bounded reap: never hangs


@pytest.fixture
def sentinel_group() -> Iterator[Callable[..., SentinelGroup]]:
    """Factory of started Sentinel groups (primary, replica, three Sentinels) to fail over."""
    made: list[SentinelGroup] = []

    def make(master_name: str = "pgcast", persistence: bool = False) -> SentinelGroup:
        group = SentinelGroup(master_name, persistence)
        made.append(group)
        return group.start()

    yield make
    for group in reversed(made):
        group.destroy()


@pytest.fixture
def redis_cluster() -> Iterator[Callable[..., RedisCluster]]:
    """Factory of started Redis Clusters (3 masters, a replica each) to kill and reshard."""
    made: list[RedisCluster] = []

    def make(masters: int = 3, replicas_per_master: int = 1) -> RedisCluster:
        cluster = RedisCluster(masters, replicas_per_master)
        made.append(cluster)  # before start: a cluster that fails to form is still cleaned up
        return cluster.start()

    yield make
    for cluster in reversed(made):
        cluster.destroy()
