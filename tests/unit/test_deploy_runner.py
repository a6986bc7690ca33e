"""The stack runner's parts without a stack: plan, config, status table, TLS files, preflight."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

from deploy import certs
from deploy.config import StackConfig, build, parse_args
from deploy.preflight import (
    StackError,
    _pg_hint,
    check_postgres,
    check_redis,
    port_in_use,
    running_pid,
)
from deploy.procs import plan
from deploy.stack import banner
from deploy.status import Row, metrics_info, table
from tests.unit.test_deploy_facts import console_scripts


def config_for(tmp_path: Path, *argv: str, **env: str) -> StackConfig:
    args: argparse.Namespace = parse_args(["--run-dir", str(tmp_path), *argv])
    return build(args, env)


def test_plan_is_two_listeners_four_gateways_and_nginx(tmp_path: Path) -> None:
    """The default topology, with unique names and ports, in start order."""
    specs = plan(config_for(tmp_path))
    assert [s.kind for s in specs] == ["listener"] * 2 + ["gateway"] * 4 + ["nginx"]
    assert len({s.name for s in specs}) == len(specs)
    ports = [s.port for s in specs]
    assert len(set(ports)) == len(ports)
    assert specs[-1].port == 8443
    for spec in specs[:-1]:
        assert Path(spec.argv[0]).name in console_scripts()
    assert [s.stop_order for s in specs] == [2, 2, 0, 0, 0, 0, 1]


def test_plan_follows_the_flags(tmp_path: Path) -> None:
    """Counts, ports and the gunicorn server come from the command line."""
    cfg = config_for(
        tmp_path, "--gateways", "2", "--gateway-base-port", "9000", "--server", "gunicorn"
    )
    gateways = [s for s in plan(cfg) if s.kind == "gateway"]
    assert [s.port for s in gateways] == [9000, 9001]
    assert Path(gateways[0].argv[0]).name == "gunicorn"
    assert gateways[0].argv[-1] == "gateway.app:gunicorn_app"
    assert gateways[0].env == {"PGCAST_HOST": "127.0.0.1", "PGCAST_PORT": "9000"}


def test_dev_secret_is_generated_once_and_kept_private(tmp_path: Path) -> None:
    """Without a configured key, a 0600 secret is made once and reused."""
    first = config_for(tmp_path)
    second = config_for(tmp_path)
    assert first.jwt_secret is not None
    assert len(first.jwt_secret) >= 32
    assert first.jwt_secret == second.jwt_secret
    assert (tmp_path / "jwt-secret").stat().st_mode & 0o777 == 0o600
    assert first.extra_env["PGCAST_JWT_SECRET"] == first.jwt_secret
    assert "jwt_secret" not in repr(first)


def test_given_settings_win(tmp_path: Path) -> None:
    """DATABASE_URL, REDIS_URL and a configured key are used as given; none is generated."""
    cfg = config_for(
        tmp_path,
        DATABASE_URL="postgresql://db.example:5432/app",
        REDIS_URL="redis://cache.example:6379/1",
        PGCAST_JWT_PUBLIC_KEY="/keys/pub.pem",
    )
    assert cfg.database_url == "postgresql://db.example:5432/app"
    assert cfg.redis_url == "redis://cache.example:6379/1"
    assert cfg.jwt_secret is None
    assert not (tmp_path / "jwt-secret").exists()
    assert "https://localhost:8443" in cfg.extra_env["PGCAST_ALLOWED_ORIGINS"]


def test_defaults_are_the_local_servers(tmp_path: Path) -> None:
    """No URLs given: the contract's defaults, the local Postgres and Redis."""
    cfg = config_for(tmp_path)
    assert cfg.database_url == "postgresql://localhost:5432/postgres"
    assert cfg.redis_url == "redis://localhost:6379/0"


def test_status_table_and_metrics_info() -> None:
    """The table aligns its columns; INFO comes from the gauges each kind exports."""
    rows = [
        Row("listener-1", "listener", 101, 8191, "ready", 0, "leader"),
        Row("gateway-1", "gateway", 2002, 8181, "restarting", 3, "exit 1"),
    ]
    text = table(rows, "title")
    lines = text.splitlines()
    assert lines[0].endswith("title")
    assert lines[1].split() == ["NAME", "PID", "PORT", "STATE", "RESTARTS", "INFO"]
    assert lines[2].index("101") == lines[3].index("2002")
    leader = 'pgcast_listener_role{role="leader"} 1.0\npgcast_listener_role{role="standby"} 0.0\n'
    assert metrics_info("listener", leader) == "leader"
    gauge = "pgcast_gateway_connections 7.0\n"
    assert metrics_info("gateway", gauge) == "7 connections"
    assert metrics_info("gateway", "not metrics {") == ""


def test_tls_files_verify_for_localhost(tmp_path: Path) -> None:
    """The generated CA verifies the served chain for localhost; the key is 0600; kept."""
    assert certs.ensure(tmp_path) is True
    assert certs.ensure(tmp_path) is False
    assert (tmp_path / "key.pem").stat().st_mode & 0o777 == 0o600
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    client = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
    # A handshake over memory BIOs: the client verifies the chain and the host name.
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    cli = client.wrap_bio(c_in, c_out, server_hostname="localhost")
    srv = server.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):
        for side in (cli, srv):
            with contextlib.suppress(ssl.SSLWantReadError):
                side.do_handshake()
        s_in.write(c_out.read())
        c_in.write(s_out.read())
    peer = cli.getpeercert()
    assert peer is not None
    assert ("commonName", "localhost") in [rdn[0] for rdn in peer["subject"]]


def test_tls_files_are_regenerated_for_other_names(tmp_path: Path) -> None:
    """A certificate for other names is not 'current': ensure() replaces it."""
    certs.ensure(tmp_path, ("localhost",))
    assert certs.is_current(tmp_path, ("localhost",))
    assert not certs.is_current(tmp_path, ("example.test",))
    assert certs.ensure(tmp_path, ("example.test",)) is True


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_unreachable_postgres_says_what_to_install() -> None:
    """No Postgres: the message names the URL, the Debian package, and DATABASE_URL."""
    with pytest.raises(StackError) as err:
        await check_postgres(f"postgresql://u:secret@127.0.0.1:{_closed_port()}/db")
    text = str(err.value)
    assert "apt-get install -y postgresql" in text
    assert "DATABASE_URL=" in text
    assert "secret" not in text


async def test_unreachable_redis_says_what_to_install() -> None:
    """No Redis: the message names the Debian package and REDIS_URL."""
    with pytest.raises(StackError) as err:
        await check_redis(f"redis://127.0.0.1:{_closed_port()}/0")
    assert "apt-get install -y redis-server" in str(err.value)
    assert "REDIS_URL=" in str(err.value)


def test_port_in_use_and_running_pid(tmp_path: Path) -> None:
    """A bound port is reported; a state file names a live runner only while it lives."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        assert port_in_use("127.0.0.1", sock.getsockname()[1])
    state = tmp_path / "stack.json"
    # A live process for the state file to name (killed below; 30 s only bounds a leak).
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        state.write_text(json.dumps({"runner_pid": child.pid}))
        assert running_pid(state) == child.pid
    finally:
        child.kill()
        child.wait(10)
    assert running_pid(state) is None
    state.write_text(json.dumps({"runner_pid": os.getpid()}))
    assert running_pid(state) is None


def test_banner_prints_urls_and_token(tmp_path: Path) -> None:
    """The banner shows the wss and SSE URLs, the CA to trust, and the token itself."""
    cfg = config_for(tmp_path)
    text = banner(cfg, plan(cfg), "header.payload.signature")
    assert "wss://localhost:8443/ws" in text
    assert "https://localhost:8443/sse" in text
    assert "tls/ca.pem" in text
    assert "\nheader.payload.signature\n" in text
    assert "4 gateways" in text
    assert "2 listeners" in text


@pytest.mark.parametrize(
    "refusal",
    ['role "root" does not exist', 'password authentication failed for user "root"'],
)
def test_refused_login_explains_the_fresh_debian_fix(refusal: str) -> None:
    """A fresh Debian Postgres knows no role for you: say how to create it and connect."""
    hint = _pg_hint(RuntimeError(refusal))
    assert "createuser --superuser" in hint
    assert "postgresql:///postgres?host=/var/run/postgresql" in hint
