"""``make up``'s own Postgres and Redis without processes: when, the plan, ports, URLs, configs."""

from __future__ import annotations

import argparse
import dataclasses
import signal
import socket
import stat
from pathlib import Path

import pytest

from deploy import private_servers
from deploy.config import FlagConflict, StackConfig, build, parse_args
from deploy.preflight import StackError, check_installed
from deploy.private_servers import Choice, PrepareError, decide
from deploy.procs import START_PGCAST, START_SERVERS, plan
from deploy.stack import banner, stop_line

NOTHING = Choice(postgres=False, redis=False)
BOTH = Choice(postgres=True, redis=True)


def config_for(tmp_path: Path, *argv: str, answering: Choice = NOTHING, **env: str) -> StackConfig:
    args: argparse.Namespace = parse_args(["--run-dir", str(tmp_path), *argv])
    return build(args, env, answering)


@pytest.mark.parametrize(
    ("force", "database_url", "redis_url", "answering", "own_redis", "expected"),
    [
        # A fresh machine: nothing set, nothing answering -> both of our own.
        (False, "", "", NOTHING, False, Choice(True, True)),
        # Servers answer on 5432/6379 -> the stack as before.
        (False, "", "", BOTH, False, Choice(False, False)),
        # URLs name servers -> those, whatever answers locally.
        (False, "postgresql://db/x", "redis://r/0", NOTHING, False, Choice(False, False)),
        # Each server is decided on its own.
        (False, "postgresql://db/x", "", NOTHING, False, Choice(False, True)),
        (False, "", "", Choice(postgres=False, redis=True), False, Choice(True, False)),
        # --redis sentinel runs its own Redis already.
        (False, "", "", NOTHING, True, Choice(True, False)),
        # --private-servers: both, even with the shared servers answering.
        (True, "", "", BOTH, False, Choice(True, True)),
        (True, "", "", BOTH, True, Choice(True, False)),
    ],
)
def test_when_the_stack_runs_its_own_servers(
    force: bool,
    database_url: str,
    redis_url: str,
    answering: Choice,
    own_redis: bool,
    expected: Choice,
) -> None:
    """Forced, or no URL set and nothing answering on the default port: per server."""
    assert decide(force, database_url, redis_url, answering, own_redis) == expected


def test_nothing_answering_gives_private_servers_on_their_own_ports(tmp_path: Path) -> None:
    """Both servers of our own on 5532/6479, with passwords made once and kept 0600,
    and every process gets their URLs."""
    cfg = config_for(tmp_path)
    assert (cfg.private_pg_port, cfg.private_redis_port) == (5532, 6479)
    assert cfg.runs_postgres
    assert cfg.runs_private_redis
    assert not cfg.runs_redis
    pg_secret = (tmp_path / "pg" / "password").read_text().strip()
    redis_secret = (tmp_path / "redis-data" / "password").read_text().strip()
    assert len(pg_secret) == len(redis_secret) == 32
    assert pg_secret != redis_secret
    assert cfg.database_url == f"postgresql://postgres:{pg_secret}@127.0.0.1:5532/postgres"
    assert cfg.redis_url == f"redis://:{redis_secret}@127.0.0.1:6479/0"
    assert cfg.extra_env["DATABASE_URL"] == cfg.database_url
    assert cfg.extra_env["REDIS_URL"] == cfg.redis_url
    for path in (tmp_path / "pg" / "password", tmp_path / "redis-data" / "password"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = config_for(tmp_path)
    assert (again.database_url, again.redis_url) == (cfg.database_url, cfg.redis_url)


def test_servers_answering_or_configured_are_used_as_before(tmp_path: Path) -> None:
    """Local servers answering, or URLs set: no server of our own, the URLs as before."""
    cfg = config_for(tmp_path, answering=BOTH)
    assert not cfg.runs_postgres
    assert not cfg.runs_private_redis
    assert cfg.database_url == "postgresql://localhost:5432/postgres"
    assert cfg.redis_url == "redis://localhost:6379/0"
    assert [s.kind for s in plan(cfg)] == ["listener"] * 2 + ["gateway"] * 4 + ["nginx"]
    given = config_for(tmp_path, DATABASE_URL="postgresql://db/app", REDIS_URL="redis://r/1")
    assert (given.database_url, given.redis_url) == ("postgresql://db/app", "redis://r/1")
    assert not given.runs_postgres
    assert not given.runs_private_redis
    assert not (tmp_path / "pg").exists()


def test_the_flag_forces_them_on_the_ports_given(tmp_path: Path) -> None:
    """--private-servers runs both while the shared servers answer, on the ports given."""
    cfg = config_for(
        tmp_path,
        "--private-servers",
        "--private-pg-port",
        "45001",
        "--private-redis-port",
        "45002",
        answering=BOTH,
    )
    assert (cfg.private_pg_port, cfg.private_redis_port) == (45001, 45002)
    assert cfg.database_url.endswith("@127.0.0.1:45001/postgres")
    assert cfg.redis_url.endswith("@127.0.0.1:45002/0")


@pytest.mark.parametrize("name", ["DATABASE_URL", "REDIS_URL"])
def test_the_flag_and_a_url_conflict(tmp_path: Path, name: str) -> None:
    """--private-servers with a URL set says which one to unset."""
    with pytest.raises(FlagConflict, match=f"{name} is set: unset it"):
        config_for(tmp_path, "--private-servers", **{name: "x://y"})


def test_with_sentinels_only_postgres_is_ours(tmp_path: Path) -> None:
    """--redis sentinel keeps its Redis; the stack's own Postgres comes before it."""
    cfg = config_for(tmp_path, "--redis", "sentinel")
    assert cfg.runs_postgres
    assert not cfg.runs_private_redis
    assert cfg.redis_url.startswith("redis+sentinel://")
    assert [s.name for s in plan(cfg)][:6] == [
        "postgres",
        "redis-1",
        "redis-2",
        "sentinel-1",
        "sentinel-2",
        "sentinel-3",
    ]


def test_plan_starts_them_first_and_stops_them_last(tmp_path: Path) -> None:
    """Postgres and Redis start before every pgcast process; the stop order is gateways,
    nginx, listeners, then Redis, then Postgres (SIGINT: its fast shutdown)."""
    cfg = config_for(tmp_path)
    specs = plan(cfg)
    assert [s.name for s in specs[:2]] == ["postgres", "redis"]
    assert [s.start_order for s in specs] == [START_SERVERS] * 2 + [START_PGCAST] * 7
    order = {s.kind: s.stop_order for s in specs}
    assert order["gateway"] < order["nginx"] < order["listener"] < order["redis"]
    assert order["redis"] < order["postgres"]
    postgres, redis = specs[:2]
    assert postgres.port == 5532
    assert redis.port == 6479
    assert postgres.stop_signal == signal.SIGINT
    assert postgres.health_url == cfg.database_url
    assert redis.health_url == cfg.redis_url
    assert postgres.argv[1:5] == ("-D", str(tmp_path / "pg" / "data"), "-p", "5532")
    assert "listen_addresses=127.0.0.1" in postgres.argv
    assert redis.argv == (cfg.redis_binary, str(tmp_path / "redis-data" / "redis.conf"))


def test_postgres_runs_as_the_postgres_user_only_when_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """initdb and postgres refuse root: as root they run as postgres, else as we are."""
    for euid, user in ((0, "postgres"), (1000, None)):
        monkeypatch.setattr(private_servers.os, "geteuid", lambda euid=euid: euid)
        assert plan(config_for(tmp_path))[0].user == user


def test_redis_config_persists_and_locks(tmp_path: Path) -> None:
    """Append-only persistence in its own dir, 127.0.0.1 only, a password; rewritten
    at each start without touching the data beside it."""
    directory = tmp_path / "redis data"
    directory.mkdir()
    (directory / "appendonlydir").mkdir()
    conf_path = private_servers.prepare_redis(directory, 6479, "s3cret")
    conf = conf_path.read_text().splitlines()
    for line in ("port 6479", "bind 127.0.0.1", "appendonly yes", "requirepass s3cret"):
        assert line in conf
    assert f'dir "{directory}"' in conf
    assert stat.S_IMODE(conf_path.stat().st_mode) == 0o600
    assert (directory / "appendonlydir").is_dir()


def test_pg_bin_dir_prefers_the_version_that_made_the_data(tmp_path: Path) -> None:
    """An existing cluster keeps its major version; a new one gets the newest installed."""
    for version in ("9", "15", "16"):
        bin_dir = tmp_path / "lib" / version / "bin"
        bin_dir.mkdir(parents=True)
        (bin_dir / "postgres").touch(mode=0o755)
    pattern = str(tmp_path / "lib" / "*" / "bin")
    data = tmp_path / "data"
    assert private_servers.pg_bin_dir(data, pattern) == tmp_path / "lib" / "16" / "bin"
    data.mkdir()
    (data / "PG_VERSION").write_text("15\n")
    assert private_servers.pg_bin_dir(data, pattern) == tmp_path / "lib" / "15" / "bin"


def test_banner_and_stop_line_name_them(tmp_path: Path) -> None:
    """The banner shows where the data is kept and the URLs (psql's, whole: it is ours);
    the stop line ends with Redis, then Postgres."""
    cfg = config_for(tmp_path, "--private-servers")
    text = banner(cfg, plan(cfg), "TOKEN")
    assert "Postgres   the stack's own, data in" in text
    assert f"psql '{cfg.database_url}'" in text
    assert cfg.redis_url in text
    assert stop_line(cfg).endswith("then listeners, then Redis, then Postgres ...")
    shared = config_for(tmp_path, answering=BOTH)
    assert "the stack's own" not in banner(shared, plan(shared), "TOKEN")
    assert "Postgres" not in stop_line(shared)


def test_missing_binaries_say_what_to_install_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not root (or no apt-get): one line naming the package and the URL to set instead;
    preflight says the same when the binaries are still missing."""
    monkeypatch.setattr(private_servers.os, "geteuid", lambda: 1000)
    script = Path("deploy/ensure-package.sh")
    with pytest.raises(PrepareError) as caught:
        private_servers.install(*private_servers.PG_INSTALL, script)
    assert "\n" not in str(caught.value)
    assert "sudo apt-get install -y postgresql, or set DATABASE_URL" in str(caught.value)
    with pytest.raises(PrepareError, match="apt-get install -y redis-server, or set REDIS_URL"):
        private_servers.install(*private_servers.REDIS_INSTALL, script)
    cfg = dataclasses.replace(config_for(tmp_path), nginx_binary="/bin/sh")  # not about nginx
    no_pg = dataclasses.replace(cfg, pg_bin_dir=None)
    with pytest.raises(StackError, match="apt-get install -y postgresql"):
        check_installed(no_pg, plan(no_pg))
    no_redis = dataclasses.replace(cfg, redis_binary=str(tmp_path / "none"))
    with pytest.raises(StackError, match="apt-get install -y redis-server"):
        check_installed(no_redis, plan(no_redis))


def test_answers_tells_a_listening_port_from_a_closed_one() -> None:
    """The default-port probe: a listener answers; a closed port does not."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert private_servers.answers(port, "127.0.0.1")
    assert not private_servers.answers(port, "127.0.0.1")


def test_as_root_the_package_is_installed_like_nginx(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Root with apt-get: ensure-package.sh gets the program (a glob for Debian's
    versioned Postgres dir) and the package, with RUNLEVEL=1 (no system service starts);
    its failure is one line naming the package."""
    monkeypatch.setattr(private_servers.os, "geteuid", lambda: 0)
    monkeypatch.setattr(private_servers.shutil, "which", lambda name: f"/usr/bin/{name}")
    record = tmp_path / "args"
    script = tmp_path / "ensure.sh"
    script.write_text(f'echo "$RUNLEVEL $*" > {record}\nexit "${{FAIL:-0}}"\n')
    private_servers.install(*private_servers.PG_INSTALL, script)
    assert record.read_text() == "1 /usr/lib/postgresql/*/bin/initdb postgresql make up\n"
    monkeypatch.setenv("FAIL", "1")
    with pytest.raises(PrepareError, match=r"^could not install redis-server: sudo apt-get"):
        private_servers.install(*private_servers.REDIS_INSTALL, script)
