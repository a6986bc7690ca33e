"""Security review, transport: Redis over TLS with AUTH (rediss://), Postgres over TLS
(sslmode=verify-full and require), end to end through real listener and gateway processes.

A throwaway CA signs the servers' certificates; clients trust it through
``SSL_CERT_FILE`` (Redis) and ``sslrootcert`` (Postgres). Misconfigurations fail
at start with one line that never shows the password.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import asyncpg
import orjson
import pytest

from tests.gateway_support import GUNICORN_APP, gateway_env, start_gunicorn
from tests.servers import PgInstance, RedisInstance, free_port
from tests.soak.certs import TlsFiles, make_tls_files
from tests.soak.harness import Gateway, Listener, mint

REDIS_PASSWORD = "redis-pw-Zx81"


@pytest.fixture
def tls() -> Iterator[TlsFiles]:
    files = make_tls_files(owner="postgres")
    yield files
    files.remove()


def tls_redis(make: Callable[..., RedisInstance], tls: TlsFiles, port: int) -> RedisInstance:
    """A redis-server with AUTH on both ports and TLS on ``port``."""
    return make(
        "--requirepass",
        REDIS_PASSWORD,
        "--tls-port",
        str(port),
        "--tls-cert-file",
        str(tls.cert),
        "--tls-key-file",
        str(tls.key),
        "--tls-ca-cert-file",
        str(tls.ca),
        "--tls-auth-clients",
        "no",
    )


@pytest.mark.slow
async def test_rediss_with_auth_and_postgres_tls_end_to_end(
    private_pg: Callable[..., PgInstance],
    private_redis: Callable[..., RedisInstance],
    tls: TlsFiles,
) -> None:
    """A row committed over TLS reaches a WebSocket client through rediss:// with AUTH."""
    pg = private_pg(ssl="on", ssl_cert_file=f"'{tls.cert}'", ssl_key_file=f"'{tls.key}'")
    tls_port = free_port()
    tls_redis(private_redis, tls, tls_port)
    redis_url = f"rediss://:{REDIS_PASSWORD}@127.0.0.1:{tls_port}/0"
    dsn = f"{pg.dsn}?sslmode=verify-full&sslrootcert={tls.ca}"
    trust = {"SSL_CERT_FILE": str(tls.ca)}
    listener = Listener(dsn, redis_url, **trust).start()
    gateway = Gateway(redis_url, **trust)
    try:
        gateway.start()
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(
                gateway.url + "/ws", headers={"Authorization": f"Bearer {mint('7')}"}
            )
            await ws.send_str('{"type":"subscribe","channel":"user:7"}')
            assert orjson.loads((await ws.receive(timeout=10)).data)["type"] == "subscribed"
            conn = await asyncpg.connect(f"{pg.dsn}?sslmode=require")
            try:
                await conn.execute("SELECT pgcast.publish('user:7', '{\"over\": \"tls\"}')")
                listener_ssl = await conn.fetchval(
                    "SELECT bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a"
                    " USING (pid) WHERE a.application_name = 'pgcast-listener'"
                )
            finally:
                await conn.close()
            frame = orjson.loads((await ws.receive(timeout=10)).data)
            assert frame["data"] == {"over": "tls"}
            assert listener_ssl is True
            await ws.close()
        for log in (listener.log(), gateway.log()):
            assert REDIS_PASSWORD not in log
            assert "Traceback" not in log
    finally:
        gateway.stop()
        listener.stop()


def run_listener(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "import sys; from listener.cli import main; sys.exit(main())"],
        env={
            "PATH": "/usr/bin:/bin",
            "PGCAST_STARTUP_TIMEOUT": "2",
            "PGCAST_LISTENER_PORT": str(free_port()),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def assert_one_line_config_error(result: subprocess.CompletedProcess[str], server: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "configuration error" in line]
    assert len(errors) == 1, result.stderr
    assert server in errors[0]


@pytest.mark.slow
def test_wrong_redis_password_and_missing_postgres_tls_fail_at_start(
    private_pg: Callable[..., PgInstance], private_redis: Callable[..., RedisInstance]
) -> None:
    """Wrong AUTH: exit 2, one line, no password; sslmode=require on a plain server: exit 2."""
    pg = private_pg()
    redis = private_redis("--requirepass", REDIS_PASSWORD)
    wrong = "not-the-password-Qq7"
    bad_auth = run_listener(
        {"DATABASE_URL": pg.dsn, "REDIS_URL": f"redis://:{wrong}@127.0.0.1:{redis.port}/0"}
    )
    assert_one_line_config_error(bad_auth, "Redis")
    assert wrong not in bad_auth.stderr + bad_auth.stdout
    no_tls = run_listener(
        {
            "DATABASE_URL": f"{pg.dsn}?sslmode=require",
            "REDIS_URL": f"redis://:{REDIS_PASSWORD}@127.0.0.1:{redis.port}/0",
        }
    )
    assert_one_line_config_error(no_tls, "Postgres")
    assert REDIS_PASSWORD not in no_tls.stderr + no_tls.stdout


@pytest.mark.slow
async def test_gateway_with_a_wrong_redis_password_exits_2(
    private_redis: Callable[..., RedisInstance],
) -> None:
    """A refused AUTH at start is a configuration error, as in the listener: one line, exit
    2 (it used to retry forever, unready); neither password appears in its log."""
    redis = private_redis("--requirepass", REDIS_PASSWORD)
    wrong = "not-the-password-Ww3"
    gateway = Gateway(f"redis://:{wrong}@127.0.0.1:{redis.port}/0")
    try:
        proc = gateway.service.start().proc
        assert proc is not None
        assert await asyncio.to_thread(proc.wait, 30) == 2
        assert "invalid username-password pair" in gateway.log()
        assert "configuration error" in gateway.log()
    finally:
        gateway.stop()
    assert wrong not in gateway.log()
    assert REDIS_PASSWORD not in gateway.log()


async def test_gunicorn_with_a_wrong_redis_password_halts_instead_of_respawning(
    private_redis: Callable[..., RedisInstance], tmp_path: Path
) -> None:
    """Under gunicorn the refused AUTH stops the worker with gunicorn's boot-error code, so
    the arbiter halts ("Worker failed to boot") with the one-line reason logged, instead of
    respawning workers that can never start. (Its exit status is 3, or 1 when a second
    worker's boot error interrupts gunicorn's own halt: gunicorn's traceback, not ours.)"""
    redis = private_redis("--requirepass", REDIS_PASSWORD)
    wrong = "not-the-password-Gq7"
    port = free_port()
    env = gateway_env(f"redis://:{wrong}@127.0.0.1:{redis.port}/0", port)
    log = tmp_path / "gunicorn.log"
    with log.open("wb") as out:
        proc = await start_gunicorn(
            *GUNICORN_APP, "-w", "2", "-b", f"127.0.0.1:{port}", env=env, out=out
        )
        try:
            code = await asyncio.wait_for(proc.wait(), 30)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    text = log.read_text()
    assert code in (1, 3), text[-3000:]
    assert "Worker failed to boot" in text
    assert "configuration error" in text
    assert "invalid username-password pair" in text
    assert wrong not in text
