"""``python -m deploy.stack`` (``make up``): the whole pgcast stack on one machine.

Preflight (servers, nginx, ports) -> TLS files and nginx config in the run dir
(and the configs and data dirs of the stack's own servers) -> ``pgcast-migrate`` ->
(the stack's own Postgres and Redis, or ``--redis sentinel``'s primary, replica and
3 Sentinels, or ``--redis cluster``'s 6 nodes, then) 2 listeners, 4 gateways, nginx on
https://localhost:8443 -> the URLs and a dev token -> a status table until
Ctrl-C/SIGTERM, which stops everything by PID in order. With its own Postgres, the
migration runs once that Postgres is ready; with its own cluster nodes,
``redis-cli --cluster create`` joins them once they answer, before any pgcast
process. ``--stop`` (``make down``) stops a running stack.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from deploy import certs, cluster, nginx, preflight, private_servers, redis_conf, sentinel
from deploy.config import FlagConflict, StackConfig, build, find_redis_server, parse_args
from deploy.preflight import StackError
from deploy.procs import START_PGCAST, ProcSpec, plan, script
from deploy.supervisor import Supervisor

READY_TIMEOUT = 60.0
DEV_TOKEN_TTL = 24 * 3600
PUBLISH_SQL = "select pgcast.publish('news', jsonb_build_object('hello', 'world'))"


def _run_tool(config: StackConfig, argv: list[str], timeout: float) -> str:
    result = subprocess.run(
        argv,
        env=config.child_env(os.environ, {}),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise StackError(f"{os.path.basename(argv[0])} failed:\n{result.stderr.strip()[-2000:]}")
    return result.stdout.strip()


def dev_token(config: StackConfig) -> str | None:
    """A development token for every channel, or None when no HS256 secret is ours to use."""
    if config.jwt_secret is None:
        return None
    argv = [script("pgcast-token"), "--sub", "dev", "--channels", "*"]
    return _run_tool(config, [*argv, "--ttl", str(DEV_TOKEN_TTL)], 30)


def ensure_installed(config: StackConfig) -> StackConfig:
    """The stack's own servers' binaries, installed from Debian's packages when missing
    and we are root (as nginx is); StackError saying what to install otherwise."""
    script_path = config.repo / "deploy" / "ensure-package.sh"
    try:
        if config.runs_postgres and config.pg_bin_dir is None:
            private_servers.install(*private_servers.PG_INSTALL, script_path)
            found = private_servers.pg_bin_dir(config.pg_data_dir)
            config = dataclasses.replace(config, pg_bin_dir=found)
        if config.runs_private_redis and not os.access(config.redis_binary, os.X_OK):
            private_servers.install(*private_servers.REDIS_INSTALL, script_path)
            config = dataclasses.replace(config, redis_binary=find_redis_server() or "")
    except private_servers.PrepareError as exc:
        raise StackError(str(exc)) from None
    return config


def prepare_private(config: StackConfig) -> None:
    """The stack's own Postgres initialised (once) and its Redis' config written."""
    if config.runs_postgres and config.pg_bin_dir is not None:
        if not (config.pg_data_dir / "PG_VERSION").exists():
            print(f"initialising Postgres in {config.pg_data_dir} (once) ...", flush=True)  # noqa: T201
        secret = private_servers.password(config.pg_data_dir.parent / "password")
        try:
            private_servers.prepare_postgres(config.pg_bin_dir, config.pg_data_dir, secret)
        except private_servers.PrepareError as exc:
            raise StackError(str(exc)) from None
    if config.private_redis_port is not None:
        secret = private_servers.password(config.private_redis_dir / "password")
        private_servers.prepare_redis(config.private_redis_dir, config.private_redis_port, secret)


def prepare(config: StackConfig, specs: Sequence[ProcSpec]) -> None:
    """TLS files and the nginx config in the run dir, checked with ``nginx -t``; fresh
    configs for the stack's own Redis servers and Sentinels (``--redis sentinel``) or
    cluster nodes (``--redis cluster``); the stack's own Postgres and Redis set up
    (their data kept)."""
    if config.runs_redis:
        redis_conf.write(config.redis_dir, config.redis_servers())
    prepare_private(config)
    certs.ensure(config.tls_dir)
    try:
        nginx.check(config, nginx.write(config, specs))
    except nginx.NginxConfigError as exc:
        raise StackError(str(exc)) from None


def banner(config: StackConfig, specs: Sequence[ProcSpec], token: str | None) -> str:
    url, host = config.public_url, config.public_url.removeprefix("https://")
    gateways = sum(s.kind == "gateway" for s in specs)
    listeners = sum(s.kind == "listener" for s in specs)
    inside = config.run_dir.is_relative_to(Path.cwd())
    rel = os.path.relpath(config.run_dir) if inside else str(config.run_dir)
    lines = [
        "",
        f"pgcast is up: {gateways} gateways behind nginx (TLS), {listeners} listeners",
        f"  WebSocket  wss://{host}/ws",
        f"  SSE        {url}/sse?channel=CHANNEL",
        f"  TLS        self-signed; trust {rel}/tls/ca.pem (curl --cacert, or accept it once)",
        f"  logs       {rel}/logs/",
        *(f"  {s.name:<10} {s.public_url}" for s in specs if s.public_url),
        *redis_lines(config),
        *private_lines(config, rel),
    ]
    if token is None:
        lines.append("  token      sign your own: the key is yours (PGCAST_JWT_PUBLIC_KEY/JWKS)")
    else:
        lines += [
            f"  dev token  (sub=dev, every channel, {DEV_TOKEN_TTL // 3600} h; secret in {rel}/):",
            "",
            token,
            "",
            "  try it, in two more terminals:",
            f"    .venv/bin/python -m deploy.tail news --url wss://{host}/ws",
            f"    psql '{psql_url(config)}' -c \"{PUBLISH_SQL}\"",
        ]
    return "\n".join(lines) + "\n"


def redis_lines(config: StackConfig) -> list[str]:
    """The banner's lines about the stack's own Redis (``--redis sentinel|cluster``;
    none otherwise)."""
    if config.runs_cluster:
        first, last = config.redis_ports[0], config.redis_ports[-1]
        bus = cluster.BUS_PORT_OFFSET
        return [
            f"  Redis      Cluster on :{first}-{last} (bus :{first + bus}-{last + bus}),"
            f" {cluster.MASTERS} masters + {cluster.MASTERS * cluster.REPLICAS_PER_MASTER}"
            " replicas; sharded pub/sub",
            f"  REDIS_URL  {config.redis_url}",
            f"  nodes      redis-cli -p {first} cluster nodes;"
            " a failover: redis-cli -p REPLICA_PORT cluster failover",
        ]
    if not config.runs_redis:
        return []
    primary, *replicas = config.redis_ports
    return [
        f"  Redis      primary :{primary}, replica :{','.join(map(str, replicas))},"
        f" {len(config.sentinel_ports)} Sentinels; listeners and gateways follow the primary",
        f"  REDIS_URL  {config.redis_url}",
        f"  failover   redis-cli -p {config.sentinel_ports[0]} sentinel failover {sentinel.MASTER}",
    ]


def private_lines(config: StackConfig, rel: str) -> list[str]:
    """The banner's lines about the stack's own Postgres and Redis (none when it uses
    the configured or local ones). The URLs carry the passwords the stack made: a dev
    stack's, like its dev token, and kept in the run dir."""
    lines = []
    if config.runs_postgres:
        lines += [
            f"  Postgres   the stack's own, data in {rel}/pg/data (kept across runs)",
            f"             {config.database_url}",
        ]
    if config.runs_private_redis:
        lines += [
            f"  Redis      the stack's own, append-only file in {rel}/redis-data (kept)",
            f"             {config.redis_url}",
        ]
    return lines


def psql_url(config: StackConfig) -> str:
    """The URL the banner's psql line uses: whole for the stack's own Postgres (the
    banner shows it anyway), without its password for anyone else's."""
    return (
        config.database_url if config.runs_postgres else preflight.redact_url(config.database_url)
    )


def stop_line(config: StackConfig) -> str:
    then = ""
    if config.runs_redis:
        then = ", then Redis" if config.runs_cluster else ", then Sentinels, then Redis"
    then += ", then Redis" if config.runs_private_redis else ""
    then += ", then Postgres" if config.runs_postgres else ""
    return f"stopping: gateways drain, then nginx, then listeners{then} ..."


async def create_cluster(config: StackConfig) -> None:
    """``--redis cluster``: join the stack's own nodes (all answering by now) into one
    cluster and wait until it is ok; StackError saying why not."""
    print(  # noqa: T201
        f"creating the Redis Cluster ({cluster.MASTERS} masters +"
        f" {cluster.MASTERS * cluster.REPLICAS_PER_MASTER} replicas) ...",
        flush=True,
    )
    try:
        await cluster.create(config.redis_cli, config.redis_ports)
    except cluster.ClusterError as exc:
        raise StackError(str(exc)) from None


def migrate(config: StackConfig) -> None:
    print(f"migrating {preflight.redact_url(config.database_url)} ...", flush=True)  # noqa: T201
    _run_tool(config, [script("pgcast-migrate")], 120)


async def _until(stop: asyncio.Event, work: asyncio.Task[None]) -> bool:
    """Wait for ``work`` or ``stop``; True when the work finished (its error raised)."""
    waiter = asyncio.create_task(stop.wait())
    try:
        done, _ = await asyncio.wait({work, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiter
    if work in done:
        work.result()
        return True
    work.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await work
    return False


async def serve(config: StackConfig) -> None:
    """Run the stack until SIGINT/SIGTERM; raises StackError when it cannot start."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    config = ensure_installed(config)
    specs = plan(config)
    await preflight.run_all(config, specs)
    prepare(config, specs)

    async def before_group(order: int) -> None:
        if order == START_PGCAST and config.runs_cluster:  # every node answers now
            await create_cluster(config)
        if order == START_PGCAST and config.runs_postgres:  # now that it runs
            await asyncio.to_thread(migrate, config)

    if not config.runs_postgres:
        await asyncio.to_thread(migrate, config)
    supervisor = Supervisor(config, specs, before_group=before_group)
    await supervisor.start()
    try:
        if await _until(stop, asyncio.create_task(supervisor.wait_ready(READY_TIMEOUT))):
            supervisor.show()  # the table as it is now, before the banner
            print(banner(config, specs, dev_token(config)), flush=True)  # noqa: T201
            await stop.wait()
        print(stop_line(config), flush=True)  # noqa: T201
    finally:
        await supervisor.stop()


def stop_running(run_dir: Path, timeout: float = 90.0) -> int:
    """``--stop``: SIGTERM the runner recorded in the run dir and wait for it."""
    pid = preflight.running_pid(run_dir / "stack.json")
    if pid is None:
        print(f"no stack is running from {run_dir}")  # noqa: T201
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not preflight.pid_alive(pid):
            print(f"stopped the stack (runner pid {pid})")  # noqa: T201
            return 0
        time.sleep(0.2)
    print(f"the stack (runner pid {pid}) did not stop within {timeout:.0f}s", file=sys.stderr)  # noqa: T201
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.stop:
        return stop_running(args.run_dir.resolve())
    try:
        config = build(args, os.environ, private_servers.answering_defaults())
    except FlagConflict as exc:
        print(f"pgcast stack: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    try:
        asyncio.run(serve(config))
    except StackError as exc:
        print(f"pgcast stack: {exc}", file=sys.stderr)  # noqa: T201
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
