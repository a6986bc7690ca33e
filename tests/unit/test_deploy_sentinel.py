"""``make up ARGS="--redis sentinel"`` without processes: flags, plan, configs, URL, health."""

from __future__ import annotations

import argparse
import dataclasses
import socket
from pathlib import Path

import pytest

from deploy import sentinel
from deploy.config import FlagConflict, StackConfig, build, parse_args
from deploy.preflight import StackError, check_installed, check_redis
from deploy.procs import START_PGCAST, START_SERVERS, plan
from deploy.stack import banner, main, stop_line
from deploy.status import replication_health, sentinel_health
from pgcast.redis_url import parse_redis_url

SENTINEL_URL = "redis+sentinel://127.0.0.1:26380,127.0.0.1:26381,127.0.0.1:26382/pgcast/0"


def config_for(tmp_path: Path, *argv: str, **env: str) -> StackConfig:
    args: argparse.Namespace = parse_args(["--run-dir", str(tmp_path), *argv])
    return build(args, env)


def test_default_and_single_run_no_redis_of_their_own(tmp_path: Path) -> None:
    """Without the flag, or with ``--redis single``, the plan and REDIS_URL are as before."""
    for argv in ((), ("--redis", "single")):
        cfg = config_for(tmp_path, *argv)
        specs = plan(cfg)
        assert [s.kind for s in specs] == ["listener"] * 2 + ["gateway"] * 4 + ["nginx"]
        assert {s.start_order for s in specs} == {START_PGCAST}
        assert not cfg.runs_redis
        assert cfg.redis_servers() == []
        assert cfg.redis_url == cfg.extra_env["REDIS_URL"] == "redis://localhost:6379/0"


def test_sentinel_plan_starts_the_servers_first_and_stops_them_last(tmp_path: Path) -> None:
    """A primary, a replica and 3 Sentinels from redis-server: started before every
    pgcast process, stopped after them (Sentinels before the servers), probed over RESP."""
    cfg = config_for(tmp_path, "--redis", "sentinel")
    specs = plan(cfg)
    assert [s.name for s in specs[:5]] == [
        "redis-1",
        "redis-2",
        "sentinel-1",
        "sentinel-2",
        "sentinel-3",
    ]
    assert [s.kind for s in specs[5:]] == ["listener"] * 2 + ["gateway"] * 4 + ["nginx"]
    assert [s.port for s in specs[:5]] == [6380, 6381, 26380, 26381, 26382]
    assert [s.start_order for s in specs] == [START_SERVERS] * 5 + [START_PGCAST] * 7
    orders = [s.stop_order for s in specs]
    assert orders[:5] == [4, 4, 3, 3, 3]
    assert min(orders[:5]) > max(orders[5:])
    ports = [s.port for s in specs]
    assert len(set(ports)) == len(ports)
    redis_1, redis_2, sentinel_1 = specs[:3]
    assert redis_1.argv == (cfg.redis_binary, str(tmp_path / "redis" / "redis-1" / "redis.conf"))
    assert redis_2.argv[1].endswith("redis-2/redis.conf")
    conf = str(tmp_path / "redis" / "sentinel-1" / "sentinel.conf")
    assert sentinel_1.argv == (cfg.redis_binary, conf, "--sentinel")
    assert sentinel_1.health_url == "redis://127.0.0.1:26380"
    assert Path(cfg.redis_binary).name == "redis-server"


def test_the_ports_follow_the_flags(tmp_path: Path) -> None:
    """--redis-base-port and --sentinel-base-port place the servers and the URL."""
    cfg = config_for(
        tmp_path,
        "--redis",
        "sentinel",
        "--redis-base-port",
        "7000",
        "--sentinel-base-port",
        "27000",
    )
    assert cfg.redis_ports == (7000, 7001)
    assert cfg.sentinel_ports == (27000, 27001, 27002)
    assert cfg.redis_url.startswith("redis+sentinel://127.0.0.1:27000,127.0.0.1:27001,")


def test_every_pgcast_process_gets_the_sentinel_url(tmp_path: Path) -> None:
    """Listeners and gateways get REDIS_URL naming master 'pgcast' through all 3
    Sentinels, db 0, in the grammar the listener and gateway parse."""
    cfg = config_for(tmp_path, "--redis", "sentinel")
    assert cfg.redis_url == SENTINEL_URL
    for spec in plan(cfg):
        if spec.kind in ("listener", "gateway"):
            assert cfg.child_env({"REDIS_URL": "redis://elsewhere"}, spec.env)["REDIS_URL"] == (
                SENTINEL_URL
            )
    target = parse_redis_url(cfg.redis_url)
    assert target.kind == "sentinel"
    assert target.sentinels == (("127.0.0.1", 26380), ("127.0.0.1", 26381), ("127.0.0.1", 26382))
    assert (target.master, target.db, target.password) == ("pgcast", 0, None)


def test_sentinel_flag_and_redis_url_conflict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """REDIS_URL and --redis sentinel name two different Redis: refused, with what to do,
    before anything is written; the runner exits 2."""
    with pytest.raises(FlagConflict, match="unset it"):
        config_for(tmp_path, "--redis", "sentinel", REDIS_URL="redis://cache:6379/0")
    assert not (tmp_path / "jwt-secret").exists()
    monkeypatch.setenv("REDIS_URL", "redis://cache:6379/0")
    assert main(["--run-dir", str(tmp_path), "--redis", "sentinel"]) == 2
    assert "--redis sentinel runs its own Redis" in capsys.readouterr().err


def test_an_external_sentinel_url_is_used_as_given(tmp_path: Path) -> None:
    """Your own Sentinels: REDIS_URL=redis+sentinel://... without the flag, nothing started."""
    url = "redis+sentinel://:pw@s1.example:26379,s2.example:26379/mymaster/2"
    cfg = config_for(tmp_path, REDIS_URL=url)
    assert cfg.redis_url == cfg.extra_env["REDIS_URL"] == url
    assert not cfg.runs_redis
    assert all(s.kind not in ("redis", "sentinel") for s in plan(cfg))


def test_generated_configs(tmp_path: Path) -> None:
    """The primary persists to an AOF; the replica follows it; each Sentinel monitors
    it with quorum 2, 1 s down-after and a short failover timeout; all local."""
    servers = sentinel.servers(tmp_path, (6380, 6381), (26380, 26381, 26382))
    by_name = {s.name: s for s in servers}
    primary = by_name["redis-1"].conf.splitlines()
    replica = by_name["redis-2"].conf.splitlines()
    watcher = by_name["sentinel-2"].conf.splitlines()
    for lines in (primary, replica, watcher):
        assert "bind 127.0.0.1" in lines
        assert "daemonize no" in lines
    assert {"port 6380", "appendonly yes", f'dir "{tmp_path}/redis-1"'} <= set(primary)
    assert not any(line.startswith("replicaof") for line in primary)
    assert "replicaof 127.0.0.1 6380" in replica
    assert {"port 26381", "sentinel monitor pgcast 127.0.0.1 6380 2"} <= set(watcher)
    assert "sentinel down-after-milliseconds pgcast 1000" in watcher
    timeout = next(line for line in watcher if line.startswith("sentinel failover-timeout"))
    assert int(timeout.split()[-1]) <= 10_000


def test_configs_quote_paths(tmp_path: Path) -> None:
    """A run dir with spaces or quotes stays one config argument."""
    conf = sentinel.redis_conf(6380, Path('/tmp/a dir/with "quote"'))
    assert 'dir "/tmp/a dir/with \\"quote\\""' in conf.splitlines()


def test_write_lays_out_fresh_configs(tmp_path: Path) -> None:
    """Each start writes every config into its own directory; old state is gone."""
    root = tmp_path / "redis"
    (root / "sentinel-1").mkdir(parents=True)
    (root / "sentinel-1" / "sentinel.conf").write_text("sentinel myid stale\n")
    (root / "redis-1").mkdir()
    (root / "redis-1" / "appendonlydir").mkdir()
    servers = sentinel.servers(root, (6380, 6381), (26380, 26381, 26382))
    sentinel.write(root, servers)
    for server in servers:
        assert server.conf_path.read_text() == server.conf
    assert not (root / "redis-1" / "appendonlydir").exists()
    assert sorted(p.name for p in root.iterdir()) == sorted(s.name for s in servers)


def test_replication_health() -> None:
    """A primary is healthy; a replica while its link is up; the cell says which."""
    assert replication_health({"role": "master", "connected_slaves": 1}) == (
        True,
        "primary, 1 replica",
    )
    up = {"role": "slave", "master_host": "127.0.0.1", "master_port": 6380}
    assert replication_health({**up, "master_link_status": "up"}) == (
        True,
        "replica of 127.0.0.1:6380 (link up)",
    )
    assert replication_health({**up, "master_link_status": "down"})[0] is False


def test_sentinel_health() -> None:
    """A Sentinel naming the master is healthy; the cell says what it knows and sees."""
    state = {
        "ip": "127.0.0.1",
        "port": 6381,
        "num-slaves": 1,
        "num-other-sentinels": 2,
        "flags": "master",
        "is_odown": False,
        "is_sdown": False,
    }
    assert sentinel_health(state) == (
        True,
        "master 127.0.0.1:6381, 1 replica, 2 other sentinels",
    )
    failing = {**state, "flags": "master,s_down,o_down,failover_in_progress", "is_odown": True}
    assert sentinel_health(failing)[1].endswith("failing over")
    assert sentinel_health({**state, "is_odown": True})[1].endswith("master down")
    assert sentinel_health({}) == (False, "")


def test_banner_and_stop_line_name_the_sentinels(tmp_path: Path) -> None:
    """The banner gives the processes' REDIS_URL and a failover to try; the stop line
    says the Redis servers go last. Neither changes without the flag."""
    cfg = config_for(tmp_path, "--redis", "sentinel")
    text = banner(cfg, plan(cfg), "t.o.k")
    assert SENTINEL_URL in text
    assert "redis-cli -p 26380 sentinel failover pgcast" in text
    assert stop_line(cfg).endswith("then listeners, then Sentinels, then Redis ...")
    plain = config_for(tmp_path)
    assert "Redis" not in banner(plain, plan(plain), "t.o.k")
    assert stop_line(plain) == "stopping: gateways drain, then nginx, then listeners ..."


def test_missing_redis_server_says_what_to_install(tmp_path: Path) -> None:
    """--redis sentinel without redis-server: the Debian package, before anything starts."""
    cfg = dataclasses.replace(
        config_for(tmp_path, "--redis", "sentinel"),
        redis_binary=str(tmp_path / "no-redis-server"),
        nginx_binary="/bin/sh",  # nginx is not what this test is about
    )
    with pytest.raises(StackError, match="apt-get install -y redis-server"):
        check_installed(cfg, plan(cfg))


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_preflight_reads_sentinel_urls() -> None:
    """The preflight check asks Sentinels for a redis+sentinel:// URL (and says so),
    and a malformed URL is one line naming REDIS_URL, not a traceback."""
    url = f"redis+sentinel://:secret@127.0.0.1:{_closed_port()}/pgcast/0"
    with pytest.raises(StackError) as err:
        await check_redis(url)
    text = str(err.value)
    assert "Sentinel master 'pgcast'" in text
    assert "secret" not in text
    with pytest.raises(StackError, match="REDIS_URL names no master"):
        await check_redis("redis+sentinel://127.0.0.1:26379")
