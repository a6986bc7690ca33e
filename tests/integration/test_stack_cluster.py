"""``--redis cluster``'s own Redis Cluster, run by the stack's supervisor from the local
redis-server and joined by redis-cli.

The first test takes the code path of ``make up ARGS="--redis cluster"`` up to the
pgcast processes: config, plan, configs in the run dir, the supervisor starting the six
nodes before anything else, the runner's ``redis-cli --cluster create`` between the two
groups, its RESP probes, and the ordered stop by PID; its checks ask the nodes
themselves. The second runs the whole stack that way (the runner ``make up`` starts)
and sends an event through it.
"""

from __future__ import annotations

import asyncio
import io
import subprocess
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from deploy import cluster, preflight, redis_conf
from deploy.config import StackConfig, build, parse_args
from deploy.preflight import pid_alive
from deploy.procs import START_PGCAST, START_SERVERS, plan
from deploy.stack import create_cluster
from deploy.supervisor import Supervisor
from tests.integration.test_stack_harness import RunningStack, free_block
from tests.integration.test_stack_runner import base_env, publish_until_exit
from tests.integration.test_stack_sentinel import events, http_spec
from tests.waiting import eventually

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def free_cluster_block(count: int) -> int:
    """A base port with base .. base+count-1 free, and their bus ports (+10000) too."""
    for _ in range(50):
        base = free_block(count)
        if all(
            not preflight.port_in_use("127.0.0.1", base + cluster.BUS_PORT_OFFSET + i)
            for i in range(count)
        ):
            return base
    raise RuntimeError(f"no block of {count} free ports with free bus ports")


def cluster_config(run_dir: Path) -> tuple[StackConfig, int]:
    """The --redis cluster config on free ports (bus ports free too), and one more port."""
    base = free_cluster_block(cluster.NODES + 1)  # 6 nodes, 1 for the process after them
    argv = ["--run-dir", str(run_dir), "--redis", "cluster", "--redis-base-port", str(base)]
    return build(parse_args(argv), {"PGCAST_JWT_SECRET": "x" * 40}), base + cluster.NODES


async def node_text(port: int, *command: str) -> str:
    client = aioredis.Redis(host="127.0.0.1", port=port, decode_responses=True, socket_timeout=5)
    try:
        return str(await client.execute_command(*command))
    finally:
        await client.aclose()


async def test_six_nodes_start_first_join_one_cluster_and_stop(tmp_path: Path) -> None:
    """The supervisor starts the six nodes, the runner's hook joins them with redis-cli
    (3 masters, 3 replicas, every slot served, cluster_state:ok on every node) before
    the later process starts; the table gives each node's role; a CLUSTER FAILOVER
    shows in it; stop() ends every process by PID."""
    config, later_port = cluster_config(tmp_path / "run")
    specs = [s for s in plan(config) if s.start_order == START_SERVERS]
    assert [s.kind for s in specs] == ["cluster"] * cluster.NODES
    specs.append(http_spec(later_port, tmp_path))
    preflight.check_ports(config, specs)
    redis_conf.write(config.redis_dir, config.redis_servers())
    out = io.StringIO()
    created: list[int] = []

    async def before_group(order: int) -> None:
        assert order == START_PGCAST
        await create_cluster(config)
        created.append(order)

    supervisor = Supervisor(config, specs, out=out, before_group=before_group)
    await supervisor.start()
    try:
        await supervisor.wait_ready(60)
        assert created == [START_PGCAST]
        supervisor.show()
        seen = events(out)
        started_later = seen.index(next(e for e in seen if e.startswith("after: starting")))
        for i in range(1, cluster.NODES + 1):
            assert seen.index(f"redis-{i}: ready") < started_later, seen

        for port in config.redis_ports:
            info = cluster.parse_info(await node_text(port, "CLUSTER", "INFO"))
            assert cluster.not_ok(info) is None, (port, info)
        nodes = (await node_text(config.redis_ports[0], "CLUSTER", "NODES")).splitlines()
        masters = [line for line in nodes if "master" in line.split()[2]]
        replicas = [line for line in nodes if "slave" in line.split()[2]]
        assert (len(masters), len(replicas)) == (3, 3)
        assert {line.split()[1].split("@")[0] for line in nodes} == {
            f"127.0.0.1:{port}" for port in config.redis_ports
        }
        # Each node's bus is its port + 10000, as the preflight checked.
        assert {line.split()[1].split("@")[1] for line in nodes} == {
            str(port + cluster.BUS_PORT_OFFSET) for port in config.redis_ports
        }

        def cells() -> list[str]:
            return [row.info for row in supervisor.rows()[: cluster.NODES]]

        def masters_in_table() -> int:
            return [c.split(",")[0] for c in cells()].count("master")

        await eventually(lambda: masters_in_table() == 3, 10, "the table shows 3 masters")
        assert all(c.endswith("cluster ok") for c in cells()), cells()
        assert sum(c.startswith("replica of 127.0.0.1:") for c in cells()) == 3, cells()
        assert sum("slots, 1 replica" in c for c in cells()) == 3, cells()

        # A coordinated failover: a replica's row becomes a master's.
        replica = next(
            p for p, c in zip(config.redis_ports, cells(), strict=False) if c.startswith("replica")
        )
        assert await node_text(replica, "CLUSTER", "FAILOVER") == "OK"
        index = config.redis_ports.index(replica)

        await eventually(
            lambda: cells()[index].startswith("master"), 15, "the table shows the promotion"
        )
        assert [row.restarts for row in supervisor.rows()] == [0] * len(specs)
    finally:
        pids = [p.pid for p in supervisor.procs if p.pid is not None]
        await supervisor.stop()
    assert all(p.state == "stopped" for p in supervisor.procs)
    assert len(pids) == len(specs)
    assert [pid for pid in pids if pid_alive(pid)] == []
    assert not config.state_file.exists()


def test_make_up_with_a_cluster_delivers_and_make_down_stops_all(
    tmp_path: Path, database_url: str
) -> None:
    """`--redis cluster`: the runner starts the six nodes first, creates the cluster,
    gives the listener and gateways their redis+cluster:// URL, an event reaches
    `deploy.tail` over wss through them, and `--stop` (make down) ends every process."""
    base = free_cluster_block(cluster.NODES)
    env = base_env(database_url, "")  # no REDIS_URL: the stack runs its own cluster
    stack = RunningStack(
        tmp_path / "run",
        env,
        gateways=2,
        listeners=1,
        extra_args=("--redis", "cluster", "--redis-base-port", str(base)),
    ).start()
    tail: subprocess.Popen[bytes] | None = None
    try:
        stack.wait_up(90)
        kinds = [p["kind"] for p in stack.state()["procs"]]
        assert kinds[: cluster.NODES] == ["cluster"] * cluster.NODES
        url = "redis+cluster://" + ",".join(f"127.0.0.1:{base + i}" for i in range(cluster.NODES))
        output = stack.output()
        assert "creating the Redis Cluster (3 masters + 3 replicas)" in output
        assert f"REDIS_URL  {url}" in output
        for proc in stack.procs("listener") + stack.procs("gateway"):
            environ = Path(f"/proc/{proc['pid']}/environ").read_bytes().split(b"\0")
            assert f"REDIS_URL={url}".encode() in environ, proc["name"]
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
    assert "then listeners, then Redis ..." in stack.output()
    assert [pid for pid in pids if pid_alive(pid)] == []
