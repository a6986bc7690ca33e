"""The stack runner's settings: command-line flags plus the contract's environment.

``DATABASE_URL``/``REDIS_URL`` when given, else the local servers, else (nothing
answering on the default port, or ``--private-servers``) a Postgres and a Redis the
stack runs itself (:mod:`deploy.private_servers`); with ``--redis sentinel`` the stack
runs its own Redis primary, replica and Sentinels and hands every process their
``redis+sentinel://`` URL, with ``--redis cluster`` its own 6-node Redis Cluster and
its ``redis+cluster://`` URL. A dev ``PGCAST_JWT_SECRET`` is generated once and
kept in the run dir when no key is configured. Everything
lands in one frozen :class:`StackConfig`.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from deploy import cluster, private_servers, sentinel
from deploy.private_servers import Choice
from deploy.redis_conf import Server
from pgcast.settings import DEFAULT_DATABASE_URL, DEFAULT_REDIS_URL

REPO = Path(__file__).resolve().parents[1]
KEY_VARS = ("PGCAST_JWT_SECRET", "PGCAST_JWT_PUBLIC_KEY", "PGCAST_JWT_JWKS_URL")
REDIS_MODES = ("single", "sentinel", "cluster")
SENTINELS = 3
REDIS_SERVERS = 2  # a primary and one replica


class FlagConflict(ValueError):
    """A flag contradicts the environment; the message says which and what to do."""


@dataclass(frozen=True)
class StackConfig:
    """Everything the runner needs, decided before anything starts."""

    run_dir: Path
    database_url: str
    redis_url: str
    https_port: int = 8443
    bind: str = "127.0.0.1"
    gateway_ports: tuple[int, ...] = (8181, 8182, 8183, 8184)
    listener_ports: tuple[int, ...] = (8191, 8192)
    server: str = "pgcast"
    demo: bool = False
    restart: bool = True
    nginx_binary: str = "nginx"
    # --redis sentinel: the stack's own Redis (primary first, then its replica) and
    # Sentinels; --redis cluster: its cluster nodes (no Sentinels); both empty when
    # Redis is REDIS_URL's (or the local one).
    redis_mode: str = "single"
    redis_ports: tuple[int, ...] = ()
    sentinel_ports: tuple[int, ...] = ()
    redis_binary: str = "redis-server"
    redis_cli: str = "redis-cli"  # --redis cluster: redis-cli --cluster create
    # The stack's own Postgres and Redis (deploy.private_servers): their ports, None when
    # the server is DATABASE_URL's / REDIS_URL's (or the local one).
    private_pg_port: int | None = None
    private_redis_port: int | None = None
    pg_bin_dir: Path | None = None  # initdb and postgres, for the stack's own Postgres
    gateway_stop_timeout: float = 40.0
    jwt_secret: str | None = field(default=None, repr=False)
    extra_env: Mapping[str, str] = field(default_factory=dict, repr=False)
    repo: Path = REPO

    @property
    def nginx_dir(self) -> Path:
        return self.run_dir / "nginx"

    @property
    def tls_dir(self) -> Path:
        return self.run_dir / "tls"

    @property
    def log_dir(self) -> Path:
        return self.run_dir / "logs"

    @property
    def redis_dir(self) -> Path:
        return self.run_dir / "redis"

    @property
    def pg_data_dir(self) -> Path:
        return self.run_dir / private_servers.PG_HOME / "data"

    @property
    def private_redis_dir(self) -> Path:
        # Not redis_dir: --redis sentinel empties that at every start.
        return self.run_dir / private_servers.REDIS_HOME

    @property
    def runs_postgres(self) -> bool:
        """Whether the stack runs its own Postgres."""
        return self.private_pg_port is not None

    @property
    def runs_private_redis(self) -> bool:
        """Whether the stack runs its own single Redis (not ``--redis sentinel``'s)."""
        return self.private_redis_port is not None

    @property
    def runs_redis(self) -> bool:
        """Whether the stack runs its own Redis (``--redis sentinel`` or ``cluster``)."""
        return bool(self.redis_ports)

    @property
    def runs_cluster(self) -> bool:
        """Whether the stack runs its own Redis Cluster (``--redis cluster``)."""
        return self.runs_redis and self.redis_mode == "cluster"

    def redis_servers(self) -> list[Server]:
        """The stack's own Redis servers and Sentinels, or cluster nodes (none unless
        ``--redis sentinel|cluster``)."""
        if self.runs_cluster:
            return cluster.servers(self.redis_dir, self.redis_ports)
        if not self.runs_redis:
            return []
        return sentinel.servers(self.redis_dir, self.redis_ports, self.sentinel_ports)

    @property
    def state_file(self) -> Path:
        return self.run_dir / "stack.json"

    @property
    def public_url(self) -> str:
        return f"https://localhost:{self.https_port}"

    def child_env(self, base: Mapping[str, str], spec_env: Mapping[str, str]) -> dict[str, str]:
        """The environment of one child: the runner's, the stack's settings, the spec's."""
        return {**base, **self.extra_env, **spec_env}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m deploy.stack",
        description="Run pgcast like production: 2 listeners, 4 gateways, nginx with TLS.",
    )
    p.add_argument("--run-dir", type=Path, default=REPO / ".run", help="state, logs, TLS, config")
    p.add_argument("--port", type=int, default=8443, help="HTTPS port of nginx")
    p.add_argument("--bind", default="127.0.0.1", help="address nginx listens on")
    p.add_argument("--gateways", type=int, default=4)
    p.add_argument("--listeners", type=int, default=2)
    p.add_argument("--gateway-base-port", type=int, default=8181)
    p.add_argument("--listener-base-port", type=int, default=8191)
    p.add_argument(
        "--server",
        choices=("pgcast", "gunicorn"),
        default="pgcast",
        help="run each gateway as pgcast-gateway or as gunicorn with the uvloop aiohttp worker",
    )
    p.add_argument(
        "--redis",
        choices=REDIS_MODES,
        default="single",
        help="single: the Redis of REDIS_URL (default redis://localhost:6379/0); sentinel: run"
        " a primary, a replica and 3 Sentinels from the local redis-server (in the run dir)"
        " and give every process their redis+sentinel:// URL; cluster: run a Redis Cluster"
        " of 3 masters and 3 replicas from it and give every process its redis+cluster:// URL",
    )
    p.add_argument(
        "--redis-base-port",
        type=int,
        default=6380,
        help="--redis sentinel: the primary's port, the replica's is the next; --redis"
        " cluster: the first of the 6 nodes' ports (each node's bus: port + 10000)",
    )
    p.add_argument(
        "--sentinel-base-port",
        type=int,
        default=26380,
        help="--redis sentinel: the first of the 3 Sentinels' ports",
    )
    p.add_argument(
        "--private-servers",
        action="store_true",
        help="run the stack's own Postgres and Redis (data kept in the run dir) even when"
        " servers answer on 5432/6379; the default does so only when none answers there"
        " and DATABASE_URL/REDIS_URL are unset",
    )
    p.add_argument(
        "--private-pg-port",
        type=int,
        default=private_servers.PG_PORT,
        help="the port of the stack's own Postgres",
    )
    p.add_argument(
        "--private-redis-port",
        type=int,
        default=private_servers.REDIS_PORT,
        help="the port of the stack's own Redis",
    )
    p.add_argument(
        "--capture",
        choices=("outbox", "wal"),
        default="outbox",
        help="PGCAST_CAPTURE of the listeners: wal decodes the WAL (needs wal_level=logical,"
        " which the stack's own Postgres has)",
    )
    p.add_argument("--demo", action="store_true", help="also run the demo web app")
    p.add_argument("--no-restart", action="store_true", help="leave dead processes dead")
    p.add_argument("--stop", action="store_true", help="stop the stack running from --run-dir")
    args = p.parse_args(argv)
    if args.redis == "cluster" and args.redis_base_port + cluster.NODES - 1 > cluster.MAX_PORT:
        p.error(
            f"--redis cluster: --redis-base-port must leave the 6 nodes at or below"
            f" {cluster.MAX_PORT} (each node's cluster bus listens on port + 10000)"
        )
    return args


def dev_secret(run_dir: Path) -> str:
    """The development HS256 secret, generated once and kept (mode 0600) in ``run_dir``."""
    path = run_dir / "jwt-secret"
    if path.exists():
        return path.read_text().strip()
    run_dir.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    return value


def find_nginx() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )


def find_redis_tool(name: str) -> str | None:
    """``redis-server`` or ``redis-cli``: on PATH, else where Debian or a build puts it."""
    candidates = (f"/usr/bin/{name}", f"/usr/local/bin/{name}")
    found = shutil.which(name)
    return found or next((p for p in candidates if os.access(p, os.X_OK)), None)


def find_redis_server() -> str | None:
    return find_redis_tool("redis-server")


def redis_ports(args: argparse.Namespace) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The ports of the stack's own Redis servers (or cluster nodes) and Sentinels
    (none for ``single``)."""
    if args.redis == "cluster":
        return tuple(args.redis_base_port + i for i in range(cluster.NODES)), ()
    if args.redis != "sentinel":
        return (), ()
    servers = tuple(args.redis_base_port + i for i in range(REDIS_SERVERS))
    sentinels = tuple(args.sentinel_base_port + i for i in range(SENTINELS))
    return servers, sentinels


def redis_url(
    env: Mapping[str, str], mode: str, servers: tuple[int, ...], sentinels: tuple[int, ...]
) -> str:
    """What every process gets as ``REDIS_URL``: the stack's own Sentinels' or cluster
    nodes' when it runs them, else the environment's; FlagConflict when both name a Redis."""
    given = env.get("REDIS_URL")
    if not servers:
        return given or DEFAULT_REDIS_URL
    if given:
        raise FlagConflict(
            f"--redis {mode} runs its own Redis, but REDIS_URL is set: unset it, or drop"
            f" --redis {mode} to use that Redis (redis+sentinel:// and redis+cluster://"
            " URLs work as given)"
        )
    return cluster.url(servers) if mode == "cluster" else sentinel.url(sentinels)


def private_choice(
    args: argparse.Namespace, env: Mapping[str, str], answering: Choice, own_redis: bool
) -> Choice:
    """Which servers the stack runs itself; FlagConflict when ``--private-servers``
    meets a URL that names a server."""
    given = [name for name in ("DATABASE_URL", "REDIS_URL") if env.get(name)]
    if args.private_servers and given:
        raise FlagConflict(
            f"--private-servers runs the stack's own Postgres and Redis, but {given[0]} is"
            f" set: unset it, or drop --private-servers to use that server"
        )
    database, redis = env.get("DATABASE_URL", ""), env.get("REDIS_URL", "")
    return private_servers.decide(args.private_servers, database, redis, answering, own_redis)


def private_urls(run_dir: Path, args: argparse.Namespace, choice: Choice) -> dict[str, str]:
    """DATABASE_URL/REDIS_URL of the stack's own servers (their passwords made once)."""
    urls = {}
    if choice.postgres:
        secret = private_servers.password(run_dir / private_servers.PG_HOME / "password")
        urls["DATABASE_URL"] = private_servers.database_url(args.private_pg_port, secret)
    if choice.redis:
        secret = private_servers.password(run_dir / private_servers.REDIS_HOME / "password")
        urls["REDIS_URL"] = private_servers.redis_url(args.private_redis_port, secret)
    return urls


BOTH = Choice(postgres=True, redis=True)


def build(
    args: argparse.Namespace, env: Mapping[str, str], answering: Choice = BOTH
) -> StackConfig:
    """The stack's config from flags and the environment (generates the dev secret);
    FlagConflict when they disagree. ``answering``: which default ports (5432, 6379)
    answer; the runner asks (:func:`deploy.private_servers.answering_defaults`), and
    without it both are taken to, so only ``--private-servers`` runs servers of our own."""
    run_dir: Path = args.run_dir.resolve()
    servers, sentinels = redis_ports(args)
    choice = private_choice(args, env, answering, own_redis=bool(servers))
    extra: dict[str, str] = {
        "DATABASE_URL": env.get("DATABASE_URL") or DEFAULT_DATABASE_URL,
        "REDIS_URL": redis_url(env, args.redis, servers, sentinels),
        **private_urls(run_dir, args, choice),
    }
    secret = env.get("PGCAST_JWT_SECRET")
    if not any(env.get(name) for name in KEY_VARS):
        secret = dev_secret(run_dir)
        extra["PGCAST_JWT_SECRET"] = secret
    if not env.get("PGCAST_ALLOWED_ORIGINS"):
        # The browser demo is served through nginx, so these are its origins.
        extra["PGCAST_ALLOWED_ORIGINS"] = (
            f"https://localhost:{args.port},https://127.0.0.1:{args.port}"
        )
    if args.capture == "wal":
        extra["PGCAST_CAPTURE"] = "wal"
    pg_data = run_dir / private_servers.PG_HOME / "data"
    pg_bin_dir = private_servers.pg_bin_dir(pg_data) if choice.postgres else None
    return StackConfig(
        run_dir=run_dir,
        database_url=extra["DATABASE_URL"],
        redis_url=extra["REDIS_URL"],
        https_port=args.port,
        bind=args.bind,
        gateway_ports=tuple(args.gateway_base_port + i for i in range(args.gateways)),
        listener_ports=tuple(args.listener_base_port + i for i in range(args.listeners)),
        server=args.server,
        demo=args.demo,
        restart=not args.no_restart,
        nginx_binary=find_nginx() or "nginx",
        redis_mode=args.redis,
        redis_ports=servers,
        sentinel_ports=sentinels,
        redis_binary=find_redis_server() or "redis-server",
        redis_cli=find_redis_tool("redis-cli") or "redis-cli",
        private_pg_port=args.private_pg_port if choice.postgres else None,
        private_redis_port=args.private_redis_port if choice.redis else None,
        pg_bin_dir=pg_bin_dir,
        jwt_secret=secret or None,
        extra_env=extra,
    )
