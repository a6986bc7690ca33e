"""pgcast-listener refuses bad configuration with one line on stderr and exit code 2."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import asyncpg
import pytest

from tests.conftest import with_database
from tests.servers import free_port


def run_listener(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("PGCAST_")}
    full.update({"PGCAST_LOG_FORMAT": "text", "PGCAST_STARTUP_TIMEOUT": "1", **env})
    return subprocess.run(
        [sys.executable, "-c", "import sys; from listener.cli import main; sys.exit(main())"],
        env=full,
        capture_output=True,
        text=True,
        timeout=60,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "configuration error" in line]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0]


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"DATABASE_URL": "mysql://localhost/db"}, "DATABASE_URL"),
        ({"REDIS_URL": "http://localhost"}, "REDIS_URL"),
        ({"PGCAST_BATCH_SIZE": "lots"}, "PGCAST_BATCH_SIZE"),
        ({"PGCAST_BATCH_SIZE": "0"}, "PGCAST_BATCH_SIZE"),
        ({"PGCAST_NOTIFY_MODE": "sometimes"}, "PGCAST_NOTIFY_MODE"),
        ({"PGCAST_POLL_INTERVAL": "-1"}, "PGCAST_POLL_INTERVAL"),
        ({"PGCAST_LISTENER_PORT": "70000"}, "PGCAST_LISTENER_PORT"),
        ({"PGCAST_RELAY_CHANNELS": "ok,bad*"}, "PGCAST_RELAY_CHANNELS"),
        ({"PGCAST_LOCK_KEY": str(2**63)}, "PGCAST_LOCK_KEY"),
    ],
)
def test_bad_setting_value(env: dict[str, str], needle: str) -> None:
    """A malformed or out-of-range value names its variable."""
    assert_one_line_error(run_listener(env), needle)


def test_unreachable_postgres(redis_url: str) -> None:
    """No Postgres within PGCAST_STARTUP_TIMEOUT: one line, and no password in it."""
    result = run_listener(
        {
            "DATABASE_URL": f"postgresql://u:hunter2@127.0.0.1:{free_port()}/db",
            "REDIS_URL": redis_url,
        }
    )
    assert_one_line_error(result, "cannot reach Postgres")
    assert "hunter2" not in result.stderr


def test_unreachable_redis(database_url: str) -> None:
    """No Redis within PGCAST_STARTUP_TIMEOUT: one line."""
    result = run_listener(
        {"DATABASE_URL": database_url, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    )
    assert_one_line_error(result, "cannot reach Redis")


def test_missing_database_is_refused_at_once(database_url: str, redis_url: str) -> None:
    """A database the server does not have is not retried: it is a configuration error."""
    result = run_listener(
        {
            "DATABASE_URL": with_database(database_url, "no_such_db"),
            "REDIS_URL": redis_url,
            "PGCAST_STARTUP_TIMEOUT": "30",
        }
    )
    assert_one_line_error(result, "refused", "no_such_db")


async def test_unmigrated_database(database_url: str, redis_url: str) -> None:
    """A database without the pgcast schema says to run pgcast-migrate."""
    admin = await asyncpg.connect(database_url)
    try:
        await admin.execute("CREATE DATABASE pgcast_unmigrated")
    finally:
        await admin.close()
    try:
        env = {"DATABASE_URL": with_database(database_url, "pgcast_unmigrated")}
        result = run_listener({**env, "REDIS_URL": redis_url})
        assert_one_line_error(result, "pgcast-migrate")
    finally:
        admin = await asyncpg.connect(database_url)
        try:
            await admin.execute("DROP DATABASE pgcast_unmigrated WITH (FORCE)")
        finally:
            await admin.close()


def test_busy_probe_port(database_url: str, redis_url: str) -> None:
    """A probe port already in use is a configuration error, not a crash."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_listener(
            {
                "DATABASE_URL": database_url,
                "REDIS_URL": redis_url,
                "PGCAST_LISTENER_HOST": "127.0.0.1",
                "PGCAST_LISTENER_PORT": str(port),
            }
        )
    assert_one_line_error(result, "PGCAST_LISTENER_PORT")
