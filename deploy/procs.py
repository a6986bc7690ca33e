"""The stack's topology as data: one :class:`ProcSpec` per process the runner starts.

``plan(config)`` returns the list (the stack's own Postgres and Redis, or
``--redis sentinel``'s Redis servers and Sentinels, or ``--redis cluster``'s nodes,
listeners, gateways, nginx, then ``--demo`` extras); adding a process is
one line there. The runner knows nothing about what a process is beyond its spec:
argv, environment, port, probe URLs, start and stop order.
"""

from __future__ import annotations

import signal
import sys
import sysconfig
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from deploy import private_servers
from deploy.config import StackConfig

# Stop order: gateways drain first (clients reconnect elsewhere), then the load
# balancer, then the listeners (the outbox keeps whatever is committed meanwhile).
STOP_FIRST, STOP_SECOND, STOP_LAST = 0, 1, 2
# The stack's own Redis (--redis sentinel|cluster) outlives every pgcast process: the
# Sentinels go first (no failover while the servers stop), then the servers.
STOP_SENTINELS, STOP_REDIS = 3, 4
# The stack's own Postgres goes last: the listeners hold connections to it.
STOP_POSTGRES = 5
# Start order: a group starts once every process of the one before is ready, so
# listeners and gateways find the stack's own Redis and its Sentinels answering
# (and its cluster created: the runner does that between the two groups).
START_SERVERS, START_PGCAST = 0, 1


@dataclass(frozen=True, slots=True)
class ProcSpec:
    """How to run, probe and stop one process of the stack."""

    name: str
    kind: str
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    port: int | None = None
    also_binds: tuple[int, ...] = ()  # other ports it listens on (a cluster node's bus)
    health_url: str | None = None
    metrics_url: str | None = None
    public_url: str | None = None  # printed in the banner (e.g. the demo app's page)
    route: str | None = None  # a path prefix nginx proxies to ``port`` (prefix stripped)
    stop_signal: signal.Signals = signal.SIGTERM
    stop_timeout: float = 15.0
    stop_order: int = STOP_FIRST
    start_order: int = START_PGCAST
    user: str | None = None  # run as this user (and its group); None: as the runner


def script(name: str) -> str:
    """Path of an installed console script of this environment (``pgcast-gateway``...)."""
    candidates = [Path(sys.executable).parent / name, Path(sysconfig.get_path("scripts")) / name]
    for candidate in candidates:
        if candidate.is_file():
            return str(candidate)
    return str(candidates[0])  # missing: the runner's preflight reports it by name


def redis_procs(config: StackConfig) -> list[ProcSpec]:
    """``--redis sentinel``: the primary, its replica and the Sentinels; ``--redis
    cluster``: the cluster nodes; probed over RESP."""
    return [
        ProcSpec(
            name=server.name,
            kind=server.kind,
            argv=server.argv(config.redis_binary),
            port=server.port,
            also_binds=() if server.bus_port is None else (server.bus_port,),
            health_url=f"redis://127.0.0.1:{server.port}",
            stop_timeout=10.0,
            stop_order=STOP_SENTINELS if server.kind == "sentinel" else STOP_REDIS,
            start_order=START_SERVERS,
        )
        for server in config.redis_servers()
    ]


def private_procs(config: StackConfig) -> list[ProcSpec]:
    """The stack's own Postgres and Redis (deploy.private_servers), probed by logging in."""
    specs = []
    if config.private_pg_port is not None:
        port = config.private_pg_port
        # No binaries found: preflight says what to install before this argv is used.
        bin_dir = config.pg_bin_dir or Path(private_servers.PG_BIN_GLOB)
        specs.append(
            ProcSpec(
                name="postgres",
                kind="postgres",
                argv=private_servers.postgres_argv(bin_dir, config.pg_data_dir, port),
                port=port,
                health_url=config.database_url,
                stop_signal=signal.SIGINT,  # fast shutdown: disconnect, checkpoint, exit
                stop_timeout=30.0,
                stop_order=STOP_POSTGRES,
                start_order=START_SERVERS,
                user=private_servers.pg_user(),
            )
        )
    if config.private_redis_port is not None:
        specs.append(
            ProcSpec(
                name="redis",
                kind="redis",
                argv=(config.redis_binary, str(config.private_redis_dir / "redis.conf")),
                port=config.private_redis_port,
                health_url=config.redis_url,
                stop_timeout=15.0,  # SIGTERM: redis-server flushes its append-only file
                stop_order=STOP_REDIS,
                start_order=START_SERVERS,
            )
        )
    return specs


def listener_spec(config: StackConfig, index: int, port: int) -> ProcSpec:
    base = f"http://127.0.0.1:{port}"
    return ProcSpec(
        name=f"listener-{index}",
        kind="listener",
        argv=(script("pgcast-listener"),),
        env={"PGCAST_LISTENER_HOST": "127.0.0.1", "PGCAST_LISTENER_PORT": str(port)},
        port=port,
        health_url=base + "/healthz",
        metrics_url=base + "/metrics",
        stop_order=STOP_LAST,
    )


def gateway_spec(config: StackConfig, index: int, port: int) -> ProcSpec:
    base = f"http://127.0.0.1:{port}"
    env = {"PGCAST_HOST": "127.0.0.1", "PGCAST_PORT": str(port)}
    if config.server == "gunicorn":
        argv: tuple[str, ...] = (
            script("gunicorn"),
            "--config",
            str(config.repo / "deploy" / "gunicorn_conf.py"),
            "--workers",
            "1",
            "gateway.app:gunicorn_app",
        )
    else:
        argv = (script("pgcast-gateway"),)
    return ProcSpec(
        name=f"gateway-{index}",
        kind="gateway",
        argv=argv,
        env=env,
        port=port,
        health_url=base + "/readyz",
        metrics_url=base + "/metrics",
        stop_timeout=config.gateway_stop_timeout,
        stop_order=STOP_FIRST,
    )


def nginx_spec(config: StackConfig) -> ProcSpec:
    return ProcSpec(
        name="nginx",
        kind="nginx",
        argv=(
            config.nginx_binary,
            "-p",
            str(config.nginx_dir),
            "-e",
            "stderr",
            "-c",
            str(config.nginx_dir / "nginx.conf"),
        ),
        port=config.https_port,
        health_url=f"https://127.0.0.1:{config.https_port}/nginx-health",
        # SIGQUIT: graceful; the gateways behind it are already gone by then.
        stop_signal=signal.SIGQUIT,
        stop_timeout=10.0,
        stop_order=STOP_SECOND,
    )


DEMO_PORT = 8200


def demo_procs(config: StackConfig) -> list[ProcSpec]:
    """Extra processes for ``--demo``: the demo web app (examples/demo), served by nginx
    at ``/demo/`` so the page and the gateway share one origin (no CORS, no extra origin)."""
    base = f"http://127.0.0.1:{DEMO_PORT}"
    env = {
        "DEMO_HOST": "127.0.0.1",
        "DEMO_PORT": str(DEMO_PORT),
        "DEMO_SIMULATE_EVERY": "2",  # an order changes every 2 s: the dashboard moves
        "PYTHONPATH": str(config.repo),  # examples/ is not installed as a package
    }
    return [
        ProcSpec(
            name="demo",
            kind="demo",
            argv=(sys.executable, "-m", "examples.demo"),
            env=env,
            port=DEMO_PORT,
            health_url=base + "/healthz",
            public_url=f"{config.public_url}/demo/",
            route="/demo/",
            stop_order=STOP_FIRST,
        )
    ]


# Each entry yields the specs of one role; order is start order.
Role = Callable[[StackConfig], list[ProcSpec]]
ROLES: tuple[Role, ...] = (
    private_procs,
    redis_procs,
    lambda c: [listener_spec(c, i + 1, p) for i, p in enumerate(c.listener_ports)],
    lambda c: [gateway_spec(c, i + 1, p) for i, p in enumerate(c.gateway_ports)],
    lambda c: [nginx_spec(c)],
    lambda c: demo_procs(c) if c.demo else [],
)


def plan(config: StackConfig) -> list[ProcSpec]:
    """Every process of the stack, in start order."""
    return [spec for role in ROLES for spec in role(config)]
