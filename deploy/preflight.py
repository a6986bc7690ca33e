"""Checks before anything starts, each failing with exactly what to do about it.

Postgres and Redis reachable (else what to install or which URL to set; a
``redis+sentinel://`` URL through its Sentinels) unless the stack runs them itself,
nginx, the console scripts and, for the stack's own servers, their binaries
installed (and ``redis-cli`` for ``--redis cluster``), the ports free (a cluster
node's bus port too), no other stack running from the same run dir. Raises
:class:`StackError`; its message is printed as is.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import socket
from pathlib import Path

import asyncpg
import redis.asyncio as aioredis

from deploy import private_servers
from deploy.config import StackConfig
from deploy.procs import ProcSpec
from pgcast import redis_connect
from pgcast.redis_url import parse_redis_url
from pgcast.settings import ConfigError, redact_url

__all__ = ["StackError", "redact_url", "run_all"]

PG_HELP = (
    "  Debian/Ubuntu: apt-get install -y postgresql && service postgresql start\n"
    "  or point DATABASE_URL at a server: DATABASE_URL=postgresql://USER:PASSWORD@HOST:5432/DB"
    " make up"
)
REDIS_HELP = (
    "  Debian/Ubuntu: apt-get install -y redis-server && service redis-server start\n"
    "  or point REDIS_URL at a server: REDIS_URL=redis://HOST:6379/0 make up\n"
    "  (Sentinels: REDIS_URL=redis+sentinel://HOST:26379/MASTER/0), or let the stack run"
    ' a primary, a replica and 3 Sentinels: make up ARGS="--redis sentinel"'
    ' (or a Redis Cluster: ARGS="--redis cluster")'
)
REDIS_SERVER_HELP = (
    "redis-server is not installed (--redis sentinel and --redis cluster run it):"
    " apt-get install -y redis-server, or use your Redis: REDIS_URL=... make up"
)
REDIS_CLI_HELP = (
    "redis-cli is not installed (--redis cluster creates the cluster with it):"
    " apt-get install -y redis-tools, or use your Redis: REDIS_URL=... make up"
)


class StackError(RuntimeError):
    """The stack cannot start (or stopped); the message says why and what to do."""


SOCKET_URL = "postgresql:///postgres?host=/var/run/postgresql"


def _pg_hint(exc: BaseException) -> str:
    """What to do about a refused Postgres login (a fresh Debian server knows only 'postgres')."""
    text = str(exc)
    if ("role" in text and "does not exist" in text) or "authentication failed" in text:
        user = getpass.getuser()
        return (
            f"  create your role: su postgres -c 'createuser --superuser {user}'\n"
            f"  then use the local socket (peer auth): DATABASE_URL='{SOCKET_URL}' make up\n"
            "  or give a user and password: DATABASE_URL=postgresql://USER:PASSWORD@HOST:5432/DB"
        )
    return PG_HELP


async def check_postgres(url: str) -> None:
    try:
        conn = await asyncpg.connect(url, timeout=5)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        raise StackError(
            f"Postgres is not reachable at {redact_url(url)}: {exc or type(exc).__name__}\n"
            + _pg_hint(exc)
        ) from None
    await conn.close()


async def check_redis(url: str) -> None:
    """PING the Redis ``url`` names (its primary, for a ``redis+sentinel://`` URL)."""
    try:
        target = parse_redis_url(url)
    except ConfigError as exc:
        raise StackError(str(exc)) from None
    client = redis_connect.client(target, timeout=5)
    try:
        await client.ping()
    except (OSError, TimeoutError, aioredis.RedisError) as exc:
        raise StackError(
            f"Redis is not reachable at {target.describe()}: {exc or type(exc).__name__}\n"
            + REDIS_HELP
        ) from None
    finally:
        await client.aclose()  # type: ignore[attr-defined, unused-ignore]


def check_installed(config: StackConfig, specs: list[ProcSpec]) -> None:
    if not os.access(config.nginx_binary, os.X_OK):
        raise StackError(
            "nginx is not installed: run `make install-system` (as root) or"
            " `sudo apt-get install -y nginx-light`"
        )
    if config.runs_redis and not os.access(config.redis_binary, os.X_OK):
        raise StackError(REDIS_SERVER_HELP)
    if config.runs_cluster and not os.access(config.redis_cli, os.X_OK):
        raise StackError(REDIS_CLI_HELP)
    if config.runs_private_redis and not os.access(config.redis_binary, os.X_OK):
        raise StackError(private_servers.missing("redis-server"))
    if config.runs_postgres and (
        config.pg_bin_dir is None or not os.access(config.pg_bin_dir / "initdb", os.X_OK)
    ):
        raise StackError(private_servers.missing("postgresql"))
    servers = ("nginx", "redis", "sentinel", "cluster", "postgres")
    for spec in specs:
        if spec.kind not in servers and not Path(spec.argv[0]).is_file():
            raise StackError(f"{spec.argv[0]} is missing: run `make install` first")


def port_in_use(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def check_ports(config: StackConfig, specs: list[ProcSpec]) -> None:
    for spec in specs:
        host = config.bind if spec.kind == "nginx" else "127.0.0.1"
        for port in (spec.port, *spec.also_binds):
            if port is not None and port_in_use(host, port):
                raise StackError(
                    f"port {port} ({spec.name}) is in use: stop what holds it"
                    " (another stack? `make down`) or pick other ports (see --help)"
                )


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie (exited, not yet reaped by its parent) does not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc here: kill(0) is all we know
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def running_pid(state_file: Path) -> int | None:
    """PID of a live runner recorded in ``state_file``, if any."""
    try:
        pid = int(json.loads(state_file.read_text())["runner_pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return pid if pid != os.getpid() and pid_alive(pid) else None


async def run_all(config: StackConfig, specs: list[ProcSpec]) -> None:
    """Every check; the cheap local ones first, then the servers in parallel."""
    pid = running_pid(config.state_file)
    if pid is not None:
        raise StackError(
            f"a stack is already running from {config.run_dir} (pid {pid}): `make down` stops it"
        )
    check_installed(config, specs)
    check_ports(config, specs)
    checks = []  # the stack's own servers start after these checks
    if not config.runs_postgres:
        checks.append(check_postgres(config.database_url))
    if not config.runs_redis and not config.runs_private_redis:
        checks.append(check_redis(config.redis_url))
    await asyncio.gather(*checks)
