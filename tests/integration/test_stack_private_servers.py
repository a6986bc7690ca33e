"""``make up`` with its own Postgres and Redis (``--private-servers``), as on a fresh machine.

The runner ``make up`` starts, with no DATABASE_URL/REDIS_URL, in a temp run dir:
it initialises Postgres once, runs both servers before every pgcast process, an
event reaches ``deploy.tail`` over wss, and Ctrl-C (SIGTERM) stops everything by
PID; a second start finds the first one's data in both servers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis

from deploy import private_servers
from deploy.config import build, parse_args
from deploy.preflight import StackError
from deploy.procs import START_PGCAST, START_SERVERS
from deploy.supervisor import Supervisor
from tests.integration.test_stack_harness import ROOT, RunningStack, free_block, pid_alive
from tests.integration.test_stack_runner import base_env, publish_until_exit
from tests.integration.test_stack_sentinel import http_spec

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

KEY = "pgcast-test:kept"


@pytest.fixture
def run_root() -> Iterator[Path]:
    """A temp dir the postgres user can enter (pytest's tmp_path is 0700 root's)."""
    root = Path(tempfile.mkdtemp(prefix="pgcast-stack-"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def urls(run_dir: Path, pg_port: int, redis_port: int) -> tuple[str, str]:
    """The URLs the stack gave its processes (from the passwords it keeps)."""
    pg = (run_dir / "pg" / "password").read_text().strip()
    redis = (run_dir / "redis-data" / "password").read_text().strip()
    return (
        private_servers.database_url(pg_port, pg),
        private_servers.redis_url(redis_port, redis),
    )


def tail_one_event(stack: RunningStack, dsn: str) -> bytes:
    argv = [sys.executable, "-m", "deploy.tail", "news", "--count", "1"]
    argv += ["--url", f"wss://localhost:{stack.https_port}/ws", "--run-dir", str(stack.run_dir)]
    tail = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert tail.stdout is not None
        assert b"listening on news" in tail.stdout.readline()
        asyncio.run(publish_until_exit(tail, dsn, 20))
        out, _ = tail.communicate(timeout=10)
    finally:
        if tail.poll() is None:
            tail.kill()
            tail.wait(10)
    assert tail.returncode == 0, out
    return out


async def write_data(dsn: str, redis_url: str) -> int:
    """A row and a key to find after a restart; returns the leader epoch now."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("create table kept (note text); insert into kept values ('run 1')")
        epoch: int = await conn.fetchval("select epoch from pgcast.leader")
    finally:
        await conn.close()
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        await client.set(KEY, "run 1")
    finally:
        await client.aclose()
    return epoch


async def read_data(dsn: str, redis_url: str) -> tuple[list[str], int, str | None]:
    conn = await asyncpg.connect(dsn)
    try:
        notes = [r["note"] for r in await conn.fetch("select note from kept")]
        epoch: int = await conn.fetchval("select epoch from pgcast.leader")
    finally:
        await conn.close()
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        value: str | None = await client.get(KEY)
    finally:
        await client.aclose()
    return notes, epoch, value


def stop_and_check(stack: RunningStack) -> None:
    """SIGTERM (Ctrl-C), exit 0, the servers stopped after the pgcast processes, no PID left."""
    procs = stack.state()["procs"]
    pids = [p["pid"] for p in procs if p["pid"]]
    assert [p["kind"] for p in procs][:2] == ["postgres", "redis"]
    assert stack.stop() == 0, stack.output()[-3000:]
    assert [pid for pid in pids if pid_alive(pid)] == []
    assert not (stack.run_dir / "stack.json").exists()


def test_own_servers_deliver_and_keep_their_data_across_runs(run_root: Path) -> None:
    """No DATABASE_URL/REDIS_URL and --private-servers: the stack initialises its own
    Postgres once, runs it (as the postgres user when root) and its own Redis first,
    delivers an event, stops them last, and a second start finds the row, the Redis key
    and the leader epoch the first run left (one epoch more)."""
    pg_port = free_block(2)
    redis_port = pg_port + 1
    run_dir = run_root / "run"
    env = base_env("", "")  # nothing configured: the stack's own servers
    flags = ("--private-servers", "--private-pg-port", str(pg_port))
    flags += ("--private-redis-port", str(redis_port))

    first = RunningStack(run_dir, env, gateways=1, listeners=1, extra_args=flags).start()
    try:
        first.wait_up()
        dsn, redis_url = urls(run_dir, pg_port, redis_port)
        postgres = first.procs("postgres")[0]
        if os.geteuid() == 0:
            assert Path(f"/proc/{postgres['pid']}").stat().st_uid != 0
        assert b'{"hello":"world"}' in tail_one_event(first, dsn)
        epoch = asyncio.run(write_data(dsn, redis_url))
    finally:
        stop_and_check(first)
    out = first.output()
    first.out_path.rename(run_root / "runner-1.out")  # the second run's wait_up reads its own
    assert "then listeners, then Redis, then Postgres" in out
    assert out.index("redis: stopped") < out.index("postgres: stopped")
    assert out.index("listener-1: stopped") < out.index("redis: stopping")

    second = RunningStack(run_dir, env, gateways=1, listeners=1, extra_args=flags).start()
    try:
        second.wait_up()
        notes, epoch_now, value = asyncio.run(read_data(dsn, redis_url))
    finally:
        stop_and_check(second)
    assert (notes, value) == (["run 1"], "run 1")
    assert epoch_now == epoch + 1
    assert "initialising Postgres" in out
    assert "initialising Postgres" not in second.output()  # initdb once


async def test_a_failed_migration_stops_the_start_before_the_pgcast_processes(
    tmp_path: Path,
) -> None:
    """What runs between the servers and the pgcast processes (the migration) failing
    fails wait_ready with its message; the later group never starts, stop() ends the rest."""
    config = build(
        parse_args(["--run-dir", str(tmp_path / "run")]), {"PGCAST_JWT_SECRET": "x" * 40}
    )
    base = free_block(2)
    server = dataclasses.replace(
        http_spec(base, tmp_path), name="server", start_order=START_SERVERS
    )
    later = http_spec(base + 1, tmp_path)
    asked: list[int] = []

    async def before_group(order: int) -> None:
        asked.append(order)
        raise StackError("pgcast-migrate failed: no")

    supervisor = Supervisor(config, [server, later], out=io.StringIO(), before_group=before_group)
    await supervisor.start()
    try:
        with pytest.raises(StackError, match="pgcast-migrate failed: no"):
            await supervisor.wait_ready(20)
    finally:
        pid = supervisor.procs[0].pid
        await supervisor.stop()
    assert asked == [START_PGCAST]
    assert supervisor.procs[1].pid is None
    assert pid is not None
    assert not pid_alive(pid)
