"""``make up``'s own Postgres and Redis, for a machine that has neither running.

Used when ``DATABASE_URL`` (``REDIS_URL``) is unset and nothing answers on the
default port 5432 (6379), or always with ``--private-servers``. Each keeps its data
in the run dir across runs: Postgres is initialised once (``pg/data``, run as the
postgres user when we are root), Redis writes an append-only file (``redis-data/``).
Both listen on 127.0.0.1 only, on ports of their own, with a password generated once
and kept (mode 0600) beside their data. Pure descriptions here, plus the few steps
that touch the disk (:func:`prepare_postgres`, :func:`prepare_redis`, :func:`install`).
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"
PG_HOME, REDIS_HOME = "pg", "redis-data"  # in the run dir: each server's data and password
PG_PORT, REDIS_PORT = 5532, 6479  # of their own: never the defaults another server may want
DEFAULT_PG_PORT, DEFAULT_REDIS_PORT = 5432, 6379
PG_USER = "postgres"  # initdb and postgres refuse to run as root: they run as this user
PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"  # Debian keeps the server binaries off PATH
PG_INSTALL = ("/usr/lib/postgresql/*/bin/initdb", "postgresql")  # ensure-package.sh's args
REDIS_INSTALL = ("redis-server", "redis-server")


@dataclass(frozen=True, slots=True)
class Choice:
    """Which servers the stack runs itself."""

    postgres: bool = False
    redis: bool = False


def decide(
    force: bool, database_url: str, redis_url: str, answering: Choice, own_redis: bool
) -> Choice:
    """Run a server of our own when forced, or when no URL names one and nothing answers
    on its default port; ``answering``: what answers there; ``own_redis``: the stack
    already runs its own Redis (``--redis sentinel``)."""
    postgres = force or not (database_url or answering.postgres)
    redis = not own_redis and (force or not (redis_url or answering.redis))
    return Choice(postgres=postgres, redis=redis)


def answers(port: int, host: str = "localhost", timeout: float = 0.5) -> bool:
    """Whether something accepts a TCP connection on ``host:port``."""
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError:
        return False
    return True


def answering_defaults() -> Choice:
    """What answers on the default ports, where the stack would otherwise connect."""
    return Choice(postgres=answers(DEFAULT_PG_PORT), redis=answers(DEFAULT_REDIS_PORT))


def pg_bin_dir(data_dir: Path, pattern: str = PG_BIN_GLOB) -> Path | None:
    """The directory of initdb and postgres: the version that made ``data_dir`` if it is
    installed, else the newest installed, else whatever PATH has; None if none is."""
    candidates = sorted(
        (Path(d) for d in glob.glob(pattern) if os.access(Path(d) / "postgres", os.X_OK)),
        key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else 0,
    )
    try:
        made_by = (data_dir / "PG_VERSION").read_text().strip()
    except OSError:
        made_by = ""
    for directory in candidates:
        if directory.parent.name == made_by:
            return directory
    if candidates:
        return candidates[-1]
    found = shutil.which("postgres")
    return Path(found).parent if found and shutil.which("initdb") else None


def as_root() -> bool:
    return os.geteuid() == 0


def pg_user() -> str | None:
    """The user Postgres runs as: ours, or the postgres user when we are root."""
    return PG_USER if as_root() else None


def postgres_argv(bin_dir: Path, data_dir: Path, port: int) -> tuple[str, ...]:
    """The postmaster in the foreground: TCP on 127.0.0.1 only, no Unix socket."""
    return (
        str(bin_dir / "postgres"),
        "-D",
        str(data_dir),
        "-p",
        str(port),
        "-c",
        f"listen_addresses={HOST}",
        "-c",
        "unix_socket_directories=",
        "-c",
        "wal_level=logical",  # so that `make up ARGS="--capture wal"` works
    )


def initdb_argv(bin_dir: Path, data_dir: Path, pwfile: Path) -> list[str]:
    return [
        str(bin_dir / "initdb"),
        "-D",
        str(data_dir),
        "-U",
        PG_USER,
        "-A",
        "scram-sha-256",
        f"--pwfile={pwfile}",
        "-E",
        "UTF8",
    ]


def database_url(port: int, password: str) -> str:
    return f"postgresql://{PG_USER}:{password}@{HOST}:{port}/postgres"


def redis_url(port: int, password: str) -> str:
    return f"redis://:{password}@{HOST}:{port}/0"


def redis_conf(port: int, directory: Path, password: str) -> str:
    """The private Redis' config: its data in ``directory``, every write in the
    append-only file (fsynced each second), so a second ``make up`` finds it."""
    quoted = '"' + str(directory).replace("\\", "\\\\").replace('"', '\\"') + '"'
    lines = [
        f"port {port}",
        f"bind {HOST}",
        f"dir {quoted}",
        "daemonize no",
        'logfile ""',  # stdout: the stack's log of this process
        "appendonly yes",
        "appendfsync everysec",
        'save ""',
        f"requirepass {password}",
    ]
    return "\n".join(lines) + "\n"


def password(path: Path) -> str:
    """The password kept in ``path`` (mode 0600), generated on first use."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_hex(16)  # hex: safe in a URL and in a config line
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    return value


class PrepareError(RuntimeError):
    """A private server cannot be set up; the message says why and what to do."""


def prepare_postgres(bin_dir: Path, data_dir: Path, secret: str) -> bool:
    """Initialise ``data_dir`` unless a cluster is there; True when it was just made."""
    if (data_dir / "PG_VERSION").exists():
        return False
    home = data_dir.parent
    home.mkdir(parents=True, exist_ok=True)
    user = pg_user()
    if user is not None:
        try:
            pwd.getpwnam(user)
        except KeyError:
            raise PrepareError(
                f"initdb and postgres refuse to run as root, and there is no {user} user to"
                f" run them as: create it (useradd --system {user}) or run make up as a user"
            ) from None
    pwfile = home / "initdb-password"
    fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secret + "\n")
    if user is not None:
        shutil.chown(home, user, user)
        shutil.chown(pwfile, user, user)
    try:
        done = subprocess.run(
            initdb_argv(bin_dir, data_dir, pwfile),
            user=user,
            group=user,
            extra_groups=[] if user else None,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        pwfile.unlink(missing_ok=True)
    if done.returncode != 0:
        reach = f" (it runs as {user}, who must be able to enter {home})" if user else ""
        raise PrepareError(f"initdb failed{reach}:\n{done.stderr.strip()[-2000:]}")
    return True


def prepare_redis(directory: Path, port: int, secret: str) -> Path:
    """The config (fresh each start) in ``directory``, which keeps the data; its path."""
    directory.mkdir(parents=True, exist_ok=True)
    conf = directory / "redis.conf"
    conf.write_text(redis_conf(port, directory, secret))
    conf.chmod(0o600)  # it holds the password
    return conf


def missing(package: str) -> str:
    """The one line saying what to install (or set) when ``package`` is missing."""
    what, url = ("Postgres", "DATABASE_URL") if package == "postgresql" else ("Redis", "REDIS_URL")
    return (
        f"{package} is not installed (make up runs its own {what} when {url} is unset and"
        f" none is running): sudo apt-get install -y {package}, or set {url}"
    )


def install(program: str, package: str, script: Path) -> None:
    """Install Debian's ``package`` with ``script`` (deploy/ensure-package.sh) when we
    may (root, apt-get), as ``make up`` installs nginx; PrepareError saying what to
    install otherwise."""
    if not as_root() or shutil.which("apt-get") is None:
        raise PrepareError(missing(package))
    # RUNLEVEL=1 keeps invoke-rc.d from starting the system-wide service on install.
    env = {**os.environ, "RUNLEVEL": "1"}
    argv = ["sh", str(script), program, package, "make up"]
    if subprocess.run(argv, env=env, timeout=900, check=False).returncode != 0:
        raise PrepareError(f"could not install {package}: sudo apt-get install -y {package}")
