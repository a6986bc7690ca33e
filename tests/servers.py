"""Real Postgres and Redis servers for the tests: given, containerised, or private.

Order for the shared servers: ``PGCAST_TEST_DATABASE_URL`` / ``PGCAST_TEST_REDIS_URL``
when set; else testcontainers where a Docker engine answers; else private
instances started from the local binaries (initdb/pg_ctl, redis-server) on free
ports in a temporary directory. Failure tests always get private instances that
they may kill, freeze and restart. No server at all is a failure, never a skip.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

PG_BIN_DIRS = ("/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin", "/usr/local/bin")


class NoServerError(RuntimeError):
    """Neither a configured server, nor Docker, nor local binaries: say what to install."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# Ports this run has handed out: two servers set up before either binds must differ.
_HANDED_OUT: set[int] = set()


def free_port_below(limit: int = 55536, tries: int = 200) -> int:
    """A free port under ``limit`` not yet handed out by this run.

    Below 55536 because Redis listens on port + 10000 for its cluster bus, which must
    stay a valid port; the kernel's ephemeral range here reaches 60999.
    """
    for _ in range(tries):
        port = free_port()
        if port < limit and port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError(f"no free port below {limit} after {tries} tries")


def wait_port(port: int, timeout: float = 20.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)  # poll interval of a wait bounded by `timeout`
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


def docker_answers() -> bool:
    # Without an endpoint docker-py's constructor fails half-way and leaks a socket
    # (a ResourceWarning, an error under -W error): only ask when one can exist.
    if not os.environ.get("DOCKER_HOST") and not os.path.exists("/var/run/docker.sock"):
        return False
    try:
        import docker  # type: ignore[import-untyped]

        client = docker.from_env(timeout=3)
        client.ping()
        client.close()
        return True
    except Exception:
        return False


def pg_binary(name: str) -> str | None:
    """The path of a PostgreSQL server binary (Debian keeps them off PATH), or None."""
    for directory in PG_BIN_DIRS:
        candidate = os.path.join(directory, name)
        if os.access(candidate, os.X_OK):
            return candidate
    return shutil.which(name)


def as_postgres_user(argv: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root: drop to the postgres user."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *argv]
    return argv


@dataclass
class PgInstance:
    """A private PostgreSQL cluster in a temp dir; killable, restartable."""

    port: int = field(default_factory=free_port)
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="pgcast-pg-")))
    extra_conf: dict[str, str] = field(default_factory=dict)

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def init(self) -> PgInstance:
        initdb = pg_binary("initdb")
        if initdb is None:
            raise NoServerError(
                "no Postgres for the tests: set PGCAST_TEST_DATABASE_URL, start Docker, "
                "or install the server (Debian: apt-get install postgresql-15)"
            )
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        subprocess.run(
            as_postgres_user(
                [
                    initdb,
                    "-D",
                    str(self.datadir),
                    "-U",
                    "postgres",
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--no-sync",
                ]
            ),
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        conf = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.root}'",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "200",
            "shared_buffers": "64MB",
            "log_min_messages": "warning",
            # PGCAST_CAPTURE=wal: logical decoding, one slot and walsender per test database
            "wal_level": "logical",
            "max_replication_slots": "40",
            "max_wal_senders": "40",
            **self.extra_conf,
        }
        with open(self.datadir / "postgresql.conf", "a") as fh:
            fh.writelines(f"{key} = {value}\n" for key, value in conf.items())
        return self

    def start(self) -> None:
        pg_ctl = pg_binary("pg_ctl")
        assert pg_ctl is not None
        subprocess.run(
            as_postgres_user(
                [
                    pg_ctl,
                    "-D",
                    str(self.datadir),
                    "-l",
                    str(self.root / "log"),
                    "-w",
                    "-t",
                    "30",
                    "start",
                ]
            ),
            check=True,
            stdout=subprocess.DEVNULL,
        )
        wait_port(self.port)

    def postmaster_pid(self) -> int:
        return int((self.datadir / "postmaster.pid").read_text().split()[0])

    def stop(self, mode: str = "fast") -> None:
        pg_ctl = pg_binary("pg_ctl")
        assert pg_ctl is not None
        subprocess.run(
            as_postgres_user([pg_ctl, "-D", str(self.datadir), "-m", mode, "-w", "stop"]),
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def kill9(self) -> None:
        """SIGKILL the postmaster (its backends notice and exit); the next start recovers."""
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            pid = self.postmaster_pid()
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)  # poll until the process is gone (bounded: 10 s)
        # Orphaned backends exit on their own once the postmaster is gone; wait for the port.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
            except OSError:
                break
            time.sleep(0.05)  # poll until the port is closed (bounded: 10 s)
        with contextlib.suppress(FileNotFoundError):
            (self.datadir / "postmaster.pid").unlink()

    def restart(self) -> None:
        self.stop()
        self.start()

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class RedisInstance:
    """A private redis-server on a free port, no persistence; killable, restartable."""

    port: int = field(default_factory=free_port)
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="pgcast-redis-")))
    proc: subprocess.Popen[bytes] | None = None
    extra_args: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise NoServerError(
                "no Redis for the tests: set PGCAST_TEST_REDIS_URL, start Docker, "
                "or install the server (Debian: apt-get install redis-server)"
            )
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.root),
                "--logfile",
                str(self.root / "redis.log"),
                *self.extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_port(self.port)

    def kill9(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
            self.proc = None

    def restart(self) -> None:
        self.kill9()
        self.start()

    def destroy(self) -> None:
        self.kill9()
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class SharedServers:
    """The session's shared servers, and how to release them."""

    database_url: str
    redis_url: str
    cleanups: list[object] = field(default_factory=list)

    def close(self) -> None:
        for item in reversed(self.cleanups):
            with contextlib.suppress(Exception):
                if isinstance(item, PgInstance | RedisInstance):
                    item.destroy()
                else:
                    item.stop()  # type: ignore[attr-defined]


def _container_servers(servers: SharedServers, need_pg: bool, need_redis: bool) -> None:
    from testcontainers.postgres import PostgresContainer
    from testcontainers.redis import RedisContainer

    if need_pg:
        pg = PostgresContainer("postgres:15-alpine", driver=None).with_command(
            "postgres -c wal_level=logical -c max_replication_slots=40 -c max_wal_senders=40"
        )
        pg.start()
        servers.cleanups.append(pg)
        servers.database_url = pg.get_connection_url()
    if need_redis:
        rd = RedisContainer("redis:7-alpine")
        rd.start()
        servers.cleanups.append(rd)
        host = rd.get_container_host_ip()
        servers.redis_url = f"redis://{host}:{rd.get_exposed_port(6379)}/0"


def start_shared_servers() -> SharedServers:
    """Decide where the session's Postgres and Redis come from, and start what is needed."""
    servers = SharedServers(
        database_url=os.environ.get("PGCAST_TEST_DATABASE_URL", ""),
        redis_url=os.environ.get("PGCAST_TEST_REDIS_URL", ""),
    )
    need_pg, need_redis = not servers.database_url, not servers.redis_url
    if (need_pg or need_redis) and docker_answers():
        _container_servers(servers, need_pg, need_redis)
        return servers
    if need_pg:
        pg = PgInstance().init()
        servers.cleanups.append(pg)
        pg.start()
        servers.database_url = pg.dsn
    if need_redis:
        rd = RedisInstance()
        servers.cleanups.append(rd)
        rd.start()
        servers.redis_url = rd.url
    return servers
