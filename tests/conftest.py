"""Session servers and per-test resources: a fresh migrated database and a clean Redis.

Shared servers come from tests/servers.py (env vars, else testcontainers, else
private local instances). Tests that kill or freeze a server use ``private_pg`` /
``private_redis`` instead, which are never shared; Redis topology tests use
``redis_node`` / ``sentinel_group`` (tests/redis_topology.py) and ``redis_cluster``
(tests/redis_cluster.py). The logs of the processes tests start (tests/processes.py)
live in one directory per session, removed when it ends.
"""

from __future__ import annotations

import asyncio
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

from tests.processes import log_directory
from tests.redis_cluster import RedisCluster
from tests.redis_topology import RedisNode, SentinelGroup
from tests.servers import PgInstance, RedisInstance, SharedServers, start_shared_servers

TEMPLATE_DB = "pgcast_test_template"

# No per-example deadline: a loaded CI machine's stall is not a failure. Tests that bound
# a cost measure it themselves, in CPU time.
settings.register_profile("pgcast", deadline=None)
settings.load_profile("pgcast")


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
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def redis_url(servers: SharedServers) -> str:
    """The shared Redis, flushed before the test (tests run one at a time)."""
    client = aioredis.Redis.from_url(servers.redis_url)
    await client.flushall()
    await client.aclose()
    return servers.redis_url


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
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
