"""``make up ARGS="--redis cluster"`` without processes: flags, plan, configs, URL, health."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest

from deploy import cluster, redis_conf
from deploy.config import FlagConflict, StackConfig, build, parse_args
from deploy.preflight import StackError, check_installed, check_ports
from deploy.procs import START_PGCAST, START_SERVERS, STOP_REDIS, plan
from deploy.stack import banner, main, stop_line
from deploy.status import cluster_health
from pgcast.redis_url import parse_redis_url

PORTS = tuple(range(6380, 6386))
CLUSTER_URL = "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in PORTS)


def config_for(tmp_path: Path, *argv: str, **env: str) -> StackConfig:
    args: argparse.Namespace = parse_args(["--run-dir", str(tmp_path), *argv])
    return build(args, env)


def test_cluster_plan_starts_six_nodes_first_and_stops_them_last(tmp_path: Path) -> None:
    """Six redis-server nodes from their own configs: started before every pgcast
    process, stopped after them, probed over RESP; each also binds its bus port."""
    cfg = config_for(tmp_path, "--redis", "cluster")
    assert cfg.runs_redis
    assert cfg.runs_cluster
    assert cfg.sentinel_ports == ()
    specs = plan(cfg)
    assert [s.name for s in specs[:6]] == [f"redis-{i}" for i in range(1, 7)]
    assert [s.kind for s in specs[:6]] == ["cluster"] * 6
    assert [s.kind for s in specs[6:]] == ["listener"] * 2 + ["gateway"] * 4 + ["nginx"]
    assert tuple(s.port for s in specs[:6]) == PORTS
    assert [s.also_binds for s in specs[:6]] == [(port + 10000,) for port in PORTS]
    assert [s.start_order for s in specs] == [START_SERVERS] * 6 + [START_PGCAST] * 7
    orders = [s.stop_order for s in specs]
    assert orders[:6] == [STOP_REDIS] * 6
    assert min(orders[:6]) > max(orders[6:])
    first = specs[0]
    conf = str(tmp_path / "redis" / "redis-1" / "cluster.conf")
    assert first.argv == (cfg.redis_binary, conf)
    assert first.health_url == "redis://127.0.0.1:6380"
    assert Path(cfg.redis_cli).name == "redis-cli"


def test_every_pgcast_process_gets_the_cluster_url(tmp_path: Path) -> None:
    """Listeners and gateways get REDIS_URL naming all six nodes, in the grammar the
    listener and gateway parse."""
    cfg = config_for(tmp_path, "--redis", "cluster")
    assert cfg.redis_url == CLUSTER_URL
    for spec in plan(cfg):
        if spec.kind in ("listener", "gateway"):
            child = cfg.child_env({"REDIS_URL": "redis://elsewhere"}, spec.env)
            assert child["REDIS_URL"] == CLUSTER_URL
    target = parse_redis_url(cfg.redis_url)
    assert target.kind == "cluster"
    assert target.password is None


def test_the_ports_follow_the_flag_and_leave_room_for_the_bus(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--redis-base-port places the nodes and the URL; a base whose bus ports (+10000)
    would pass 65535 is refused by the flag parser (exit 2, saying why)."""
    cfg = config_for(tmp_path, "--redis", "cluster", "--redis-base-port", "7000")
    assert cfg.redis_ports == tuple(range(7000, 7006))
    assert cfg.redis_url.startswith("redis+cluster://127.0.0.1:7000,127.0.0.1:7001,")
    assert cfg.redis_url.endswith(",127.0.0.1:7005")
    assert config_for(tmp_path, "--redis", "cluster", "--redis-base-port", "55530").redis_ports
    with pytest.raises(SystemExit) as exit_:
        parse_args(["--redis", "cluster", "--redis-base-port", "55531"])
    assert exit_.value.code == 2
    assert "port + 10000" in capsys.readouterr().err


def test_cluster_flag_and_redis_url_conflict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """REDIS_URL and --redis cluster name two different Redis: refused (exit 2)."""
    with pytest.raises(FlagConflict, match="--redis cluster runs its own Redis"):
        config_for(tmp_path, "--redis", "cluster", REDIS_URL="redis://cache:6379/0")
    monkeypatch.setenv("REDIS_URL", "redis://cache:6379/0")
    assert main(["--run-dir", str(tmp_path), "--redis", "cluster"]) == 2
    assert "drop --redis cluster" in capsys.readouterr().err


def test_an_external_cluster_url_is_used_as_given(tmp_path: Path) -> None:
    """Your own cluster: REDIS_URL=redis+cluster://... without the flag, nothing started."""
    url = "redis+cluster://:pw@node-a.example:7000,node-b.example:7001"
    cfg = config_for(tmp_path, REDIS_URL=url)
    assert cfg.redis_url == cfg.extra_env["REDIS_URL"] == url
    assert not cfg.runs_redis
    assert not cfg.runs_cluster
    assert all(s.kind not in ("redis", "sentinel", "cluster") for s in plan(cfg))


def test_generated_node_configs(tmp_path: Path) -> None:
    """Each node: cluster mode with its own nodes.conf, a short node timeout, an AOF,
    loopback only, its own dir; write() lays them out fresh."""
    nodes = cluster.servers(tmp_path, PORTS)
    assert [n.bus_port for n in nodes] == [p + 10000 for p in PORTS]
    lines = nodes[2].conf.splitlines()
    assert {
        "port 6382",
        "bind 127.0.0.1",
        "daemonize no",
        "cluster-enabled yes",
        "cluster-config-file nodes.conf",
        "appendonly yes",
        f'dir "{tmp_path}/redis-3"',
    } <= set(lines)
    timeout = next(line for line in lines if line.startswith("cluster-node-timeout "))
    assert int(timeout.split()[1]) <= 5000
    (tmp_path / "redis-1").mkdir()
    (tmp_path / "redis-1" / "nodes.conf").write_text("stale cluster\n")
    redis_conf.write(tmp_path, nodes)
    assert not (tmp_path / "redis-1" / "nodes.conf").exists()
    assert all(n.conf_path.read_text() == n.conf for n in nodes)


def test_create_argv_gives_each_master_one_replica() -> None:
    """redis-cli --cluster create with every node, one replica per master, no prompt."""
    argv = cluster.create_argv("/usr/bin/redis-cli", PORTS[:6])
    assert argv[:3] == ["/usr/bin/redis-cli", "--cluster", "create"]
    assert argv[3:9] == [f"127.0.0.1:{p}" for p in PORTS]
    assert argv[9:] == ["--cluster-replicas", "1", "--cluster-yes"]


def test_not_ok_names_what_is_missing() -> None:
    """A node is done when its state is ok, all slots are ok, it knows 6 nodes and 3
    masters serve slots; otherwise the first thing still wrong."""
    info = cluster.parse_info(
        "cluster_state:ok\r\ncluster_slots_assigned:16384\r\ncluster_slots_ok:16384\r\n"
        "cluster_known_nodes:6\r\ncluster_size:3\r\n"
    )
    assert cluster.not_ok(info) is None
    assert cluster.not_ok({**info, "cluster_state": "fail"}) == "cluster_state fail (want ok)"
    assert cluster.not_ok({**info, "cluster_known_nodes": "4"}) == (
        "cluster_known_nodes 4 (want 6)"
    )


MASTER_ID, REPLICA_ID, OTHER_ID = "a" * 40, "b" * 40, "c" * 40
NODES_TEXT = (
    f"{MASTER_ID} 127.0.0.1:6380@16380 myself,master - 0 0 1 connected 0-5460 7000\n"
    f"{REPLICA_ID} 127.0.0.1:6383@16383 slave {MASTER_ID} 0 1 1 connected\n"
    f"{OTHER_ID} 127.0.0.1:6381@16381 master - 0 1 2 connected 5461-6999 7001-10922\n"
)
OK = {"cluster_state": "ok", "cluster_known_nodes": "6", "cluster_slots_pfail": "0"}


def test_cluster_health_of_a_master_and_a_replica() -> None:
    """A master's cell counts its slots and replicas; a replica's names its master;
    both say the cluster's state; fail with a slot's master down is unhealthy."""
    assert cluster_health(OK, NODES_TEXT) == (True, "master, 5462 slots, 1 replica, cluster ok")
    mine = NODES_TEXT.replace("myself,master", "master").replace(" slave ", " myself,slave ")
    assert cluster_health(OK, mine) == (True, "replica of 127.0.0.1:6380, cluster ok")
    down = {**OK, "cluster_state": "fail", "cluster_slots_pfail": "5462"}
    assert cluster_health(down, mine) == (False, "replica of 127.0.0.1:6380, cluster fail")


def test_cluster_health_while_the_cluster_forms() -> None:
    """A node alone (before redis-cli joins it) is healthy, and so is a member of a
    cluster that is not ok yet while no slot's master is suspected down: `make up` does
    not flag the nodes it is joining."""
    alone = f"{MASTER_ID} :6380@16380 myself,master - 0 0 0 connected\n"
    fail = {"cluster_state": "fail", "cluster_known_nodes": "1"}
    assert cluster_health(fail, alone) == (True, "not in a cluster yet")
    forming = {"cluster_state": "fail", "cluster_known_nodes": "6", "cluster_slots_fail": "0"}
    assert cluster_health(forming, NODES_TEXT) == (
        True,
        "master, 5462 slots, 1 replica, cluster fail",
    )


def test_banner_and_stop_line_name_the_cluster(tmp_path: Path) -> None:
    """The banner gives the processes' REDIS_URL, the node and bus ports and what to try;
    the stop line says Redis goes last, with no Sentinels."""
    cfg = config_for(tmp_path, "--redis", "cluster")
    text = banner(cfg, plan(cfg), "t.o.k")
    assert f"REDIS_URL  {CLUSTER_URL}" in text
    assert "Cluster on :6380-6385 (bus :16380-16385), 3 masters + 3 replicas" in text
    assert "redis-cli -p 6380 cluster nodes" in text
    assert stop_line(cfg).endswith("then listeners, then Redis ...")


def test_missing_redis_cli_says_what_to_install(tmp_path: Path) -> None:
    """--redis cluster without redis-cli: the Debian package, before anything starts."""
    cfg = dataclasses.replace(
        config_for(tmp_path, "--redis", "cluster"),
        redis_binary="/bin/sh",
        redis_cli=str(tmp_path / "no-redis-cli"),
        nginx_binary="/bin/sh",  # nginx is not what this test is about
    )
    with pytest.raises(StackError, match="apt-get install -y redis-tools"):
        check_installed(cfg, plan(cfg))


def test_a_taken_bus_port_is_named(tmp_path: Path) -> None:
    """A node's bus port in use stops the stack before anything starts, naming it."""
    cfg = config_for(tmp_path, "--redis", "cluster")
    taken = {PORTS[1] + 10000}

    def busy(host: str, port: int) -> bool:
        return port in taken

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("deploy.preflight.port_in_use", busy)
        with pytest.raises(StackError, match=r"port 16381 \(redis-2\) is in use"):
            check_ports(cfg, plan(cfg))
