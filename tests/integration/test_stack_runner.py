"""The stack runner as a user meets it: a first message, make down, and the failures it explains."""

from __future__ import annotations

import asyncio
import socket
import subprocess
from pathlib import Path

import asyncpg
import pytest

from tests.integration.test_stack_harness import RunningStack, pid_alive

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def base_env(database_url: str, redis_url: str) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "PGCAST_LOG_FORMAT": "text",
        "PGCAST_DRAIN_SECONDS": "1",
        "PGCAST_JWT_SECRET": "",
        "PGCAST_JWT_PUBLIC_KEY": "",
        "PGCAST_JWT_JWKS_URL": "",
    }


async def publish_until_exit(tail: subprocess.Popen[bytes], dsn: str, limit: float) -> None:
    """Publish to 'news' every 0.3 s until ``tail`` exits (it subscribes after its banner)."""
    conn = await asyncpg.connect(dsn)
    try:
        async with asyncio.timeout(limit):
            while tail.poll() is None:
                await conn.execute("select pgcast.publish('news', '{\"hello\": \"world\"}')")
                await asyncio.sleep(0.3)
    finally:
        await conn.close()


def test_gunicorn_gateway_tail_and_make_down(
    tmp_path: Path, database_url: str, redis_url: str
) -> None:
    """With gunicorn gateways (the image's command), `deploy.tail` gets a published
    event over wss through nginx, and `--stop` (make down) stops every process."""
    env = base_env(database_url, redis_url)
    stack = RunningStack(
        tmp_path / "run", env, gateways=2, listeners=1, extra_args=("--server", "gunicorn")
    ).start()
    try:
        stack.wait_up()
        tail = stack.tail_one()
        assert tail.stdout is not None
        first = tail.stdout.readline()
        assert b"listening on news" in first, first
        asyncio.run(publish_until_exit(tail, database_url, 20))
        out, _ = tail.communicate(timeout=10)
        assert tail.returncode == 0, out
        assert b"news @" in out
        assert b'{"hello":"world"}' in out
        for proc in stack.procs("gateway"):
            assert "gunicorn" in Path(f"/proc/{proc['pid']}/cmdline").read_text()
    finally:
        pids = [p["pid"] for p in stack.state()["procs"] if p["pid"]]
        down = stack.stop_with_cli()
        assert down.returncode == 0, down.stdout + down.stderr
        assert stack.stop() == 0
    assert "stopped the stack" in down.stdout
    assert [pid for pid in pids if pid_alive(pid)] == []
    assert not (stack.run_dir / "stack.json").exists()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_unreachable_postgres_stops_before_anything_starts(tmp_path: Path, redis_url: str) -> None:
    """No Postgres: exit 1 with what to install or set, and no process was started."""
    env = base_env(f"postgresql://postgres@127.0.0.1:{_closed_port()}/postgres", redis_url)
    stack = RunningStack(tmp_path / "run", env).start()
    assert stack.wait(30) == 1
    out = stack.output()
    assert "Postgres is not reachable" in out
    assert "apt-get install -y postgresql" in out
    assert not (stack.run_dir / "logs").exists()


def test_a_process_failing_at_start_aborts_with_its_reason(
    tmp_path: Path, database_url: str, redis_url: str
) -> None:
    """A gateway that refuses its configuration stops the start, with its own words,
    and the runner leaves nothing running."""
    env = {**base_env(database_url, redis_url), "PGCAST_JWT_SECRET": "too-short"}
    stack = RunningStack(tmp_path / "run", env, gateways=1, listeners=1).start()
    assert stack.wait(60) == 1
    out = stack.output()
    assert "gateway-1 exit 2 before it was ready" in out
    assert "PGCAST_JWT_SECRET must be at least 32 bytes" in out
    # The runner awaited every child before exiting: none is left.
    for line in out.splitlines():
        if "(pid " in line and ": starting" in line:
            pid = int(line.rsplit("(pid ", 1)[1].rstrip(")"))
            assert not pid_alive(pid), line
