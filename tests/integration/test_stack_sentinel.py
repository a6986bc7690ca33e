"""``--redis sentinel``'s own Redis, run by the stack's supervisor from the local redis-server.

The first test takes the code path of ``make up ARGS="--redis sentinel"`` up to the
pgcast processes: config, plan, configs in the run dir, the supervisor starting the
primary, the replica and three Sentinels before anything else, its RESP probes, and
the ordered stop by PID; its checks ask the servers themselves. The second runs the
whole stack that way (the runner ``make up`` starts) and sends an event through it.
"""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from deploy import preflight, sentinel
from deploy.config import StackConfig, build, parse_args
from deploy.preflight import pid_alive
from deploy.procs import START_PGCAST, START_SERVERS, ProcSpec, plan
from deploy.supervisor import Supervisor
from tests.integration.test_stack_harness import RunningStack, free_block
from tests.integration.test_stack_runner import base_env, publish_until_exit
from tests.waiting import eventually

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]


def sentinel_config(run_dir: Path) -> tuple[StackConfig, int]:
    """The --redis sentinel config on free ports, and one more free port."""
    base = free_block(6)  # 2 servers, 3 Sentinels, 1 for the process started after them
    argv = ["--run-dir", str(run_dir), "--redis", "sentinel"]
    argv += ["--redis-base-port", str(base), "--sentinel-base-port", str(base + 2)]
    return build(parse_args(argv), {"PGCAST_JWT_SECRET": "x" * 40}), base + 5


def http_spec(port: int, directory: Path) -> ProcSpec:
    """A stand-in for a pgcast process: any process with a health URL, started later."""
    argv = (sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1")
    return ProcSpec(
        name="after",
        kind="http",
        argv=(*argv, "--directory", str(directory)),
        port=port,
        health_url=f"http://127.0.0.1:{port}/",
        start_order=START_PGCAST,
    )


@asynccontextmanager
async def client(port: int) -> AsyncIterator[Any]:
    redis = aioredis.Redis(host="127.0.0.1", port=port, decode_responses=True, socket_timeout=5)
    try:
        yield redis
    finally:
        await redis.aclose()


async def masters(config: StackConfig) -> set[tuple[str, int]]:
    """The master address each Sentinel names."""
    found = set()
    for port in config.sentinel_ports:
        async with client(port) as s:
            found.add(tuple(await s.execute_command("SENTINEL GET-MASTER-ADDR-BY-NAME", "pgcast")))
    return found


async def replication(port: int) -> dict[str, Any]:
    async with client(port) as r:
        info: dict[str, Any] = await r.info("replication")
    return info


def events(out: io.StringIO) -> list[str]:
    return [line.split("] ", 1)[1] for line in out.getvalue().splitlines() if line.startswith("[")]


async def test_primary_replica_and_sentinels_start_first_fail_over_and_stop(
    tmp_path: Path,
) -> None:
    """The supervisor starts the Redis primary, its replica and 3 Sentinels, and the
    later process only once they are ready; every Sentinel names the primary and
    knows the replica and the other two; a failover moves the data and the roles
    (the old primary is turned into a replica by the Sentinels through its writable
    config); stop() ends every process by PID."""
    config, later_port = sentinel_config(tmp_path / "run")
    primary, replica = config.redis_ports
    specs = [s for s in plan(config) if s.start_order == START_SERVERS]
    specs.append(http_spec(later_port, tmp_path))
    preflight.check_ports(config, specs)
    sentinel.write(config.redis_dir, config.redis_servers())
    out = io.StringIO()
    supervisor = Supervisor(config, specs, out=out)
    await supervisor.start()
    try:
        await supervisor.wait_ready(30)
        supervisor.show()  # flushes the event lines into ``out``
        seen = events(out)
        started_later = seen.index(next(e for e in seen if e.startswith("after: starting")))
        for server in ("redis-1", "redis-2", "sentinel-1", "sentinel-2", "sentinel-3"):
            assert seen.index(f"{server}: ready") < started_later, seen

        assert await masters(config) == {("127.0.0.1", primary)}
        assert (await replication(replica))["master_link_status"] == "up"
        assert (await replication(primary))["connected_slaves"] == 1

        async def sentinels_know_everyone() -> bool:
            for port in config.sentinel_ports:
                async with client(port) as s:
                    state = await s.execute_command("SENTINEL MASTER", "pgcast")
                if state["num-slaves"] != 1 or state["num-other-sentinels"] != 2:
                    return False
            return True

        await eventually(sentinels_know_everyone, 15, "each Sentinel knows the replica and 2 more")
        async with client(primary) as r:
            await r.set("before-failover", "kept")
            assert await r.execute_command("WAIT", 1, 5000) == 1  # the replica has it

        async def failover_accepted() -> bool:
            """True once asked; NOGOODSLAVE until the Sentinel has the replica's own INFO."""
            async with client(config.sentinel_ports[0]) as s:
                try:
                    return bool(await s.execute_command("SENTINEL FAILOVER", "pgcast"))
                except ResponseError as exc:
                    if "NOGOODSLAVE" not in str(exc):
                        raise
                    return False

        await eventually(failover_accepted, 15, "a Sentinel accepts SENTINEL FAILOVER", 0.2)

        async def every_sentinel_names_the_replica() -> bool:
            return await masters(config) == {("127.0.0.1", replica)}

        await eventually(every_sentinel_names_the_replica, 15, "every Sentinel names the replica")
        async with client(replica) as r:
            assert await r.get("before-failover") == "kept"

        # Sentinel re-checks a replica's role with its INFO, every 10 s: up to ~20 s here.
        async def old_primary_follows() -> bool:
            info = await replication(primary)
            return info["role"] == "slave" and info["master_port"] == replica

        await eventually(old_primary_follows, 45, "the old primary became the new one's replica")
        conf = (config.redis_dir / "redis-1" / "redis.conf").read_text()
        assert f"replicaof 127.0.0.1 {replica}" in conf
        await eventually(
            lambda: supervisor.rows()[1].info.startswith("primary"), 5, "the table shows redis-2"
        )
        assert [row.restarts for row in supervisor.rows()] == [0] * len(specs)
    finally:
        pids = [p.pid for p in supervisor.procs if p.pid is not None]
        await supervisor.stop()
    assert all(p.state == "stopped" for p in supervisor.procs)
    assert len(pids) == len(specs)
    assert [pid for pid in pids if pid_alive(pid)] == []
    assert not config.state_file.exists()


def test_make_up_with_sentinels_delivers_and_make_down_stops_all(
    tmp_path: Path, database_url: str
) -> None:
    """`--redis sentinel`: the runner starts the Redis servers and Sentinels first, gives
    the listener and gateways their redis+sentinel:// URL, an event reaches `deploy.tail`
    over wss through them, and `--stop` (make down) ends every process."""
    base = free_block(5)
    env = base_env(database_url, "")  # no REDIS_URL: the stack runs its own Redis
    argv = ("--redis", "sentinel", "--redis-base-port", str(base))
    stack = RunningStack(
        tmp_path / "run",
        env,
        gateways=2,
        listeners=1,
        extra_args=(*argv, "--sentinel-base-port", str(base + 2)),
    ).start()
    tail: subprocess.Popen[bytes] | None = None
    try:
        stack.wait_up()
        assert [p["kind"] for p in stack.state()["procs"]][:5] == ["redis"] * 2 + ["sentinel"] * 3
        url = f"redis+sentinel://127.0.0.1:{base + 2},127.0.0.1:{base + 3},127.0.0.1:{base + 4}"
        assert f"{url}/pgcast/0" in stack.output()
        for proc in stack.procs("listener") + stack.procs("gateway"):
            environ = Path(f"/proc/{proc['pid']}/environ").read_bytes().split(b"\0")
            assert f"REDIS_URL={url}/pgcast/0".encode() in environ, proc["name"]
        tail = stack.tail_one()
        assert tail.stdout is not None
        assert b"listening on news" in tail.stdout.readline()
        asyncio.run(publish_until_exit(tail, database_url, 20))
        out, _ = tail.communicate(timeout=10)
        assert tail.returncode == 0, out
        assert b'{"hello":"world"}' in out
    finally:
        if tail is not None and tail.poll() is None:
            tail.kill()
            tail.wait(10)
        pids = [p["pid"] for p in stack.state()["procs"] if p["pid"]]
        down = stack.stop_with_cli()
        assert down.returncode == 0, down.stdout + down.stderr
        assert stack.stop() == 0
    assert "then listeners, then Sentinels, then Redis" in stack.output()
    assert [pid for pid in pids if pid_alive(pid)] == []
