"""Private redis-server processes for failure tests: kill, freeze, restart, re-point.

A RedisNode owns one redis-server on a free port below 55536 in its own temp dir; it
comes back from a restart with its last explicit snapshot (persistence) or empty.
Every wait polls with a deadline and fails naming what it waited for; processes are
stopped by PID. tests/redis_topology.py builds replicas and Sentinel groups on it.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.servers import NoServerError, free_port_below

HOST = "127.0.0.1"
Address = tuple[str, int]
T = TypeVar("T")


def wait_until(check: Callable[[], T | None], timeout: float, what: str) -> T:
    """Poll ``check`` until truthy and return it; a Redis or OS error counts as not yet."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            result = check()
            if result:
                return result
        except (redis.RedisError, OSError) as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error!r})" if last_error is not None else ""
            raise TimeoutError(f"not within {timeout}s: {what}{detail}")
        time.sleep(0.05)  # poll interval of a wait bounded by `timeout`


def control_client(address: Address, timeout: float = 2.0) -> redis.Redis:
    """A sync client for control commands; the caller closes it (``with``)."""
    # Short timeouts and no retries: a frozen or dead server fails a command in
    # seconds instead of stalling the test that asked.
    return redis.Redis(
        host=address[0],
        port=address[1],
        socket_timeout=timeout,
        socket_connect_timeout=min(timeout, 1.0),
        retry=Retry(NoBackoff(), 0),
        decode_responses=True,
    )


class RedisProcess:
    """One redis-server process (a data node or a Sentinel): a fixed port, its own dir."""

    control_timeout = 2.0

    def __init__(self, prefix: str) -> None:
        self.port = free_port_below()
        self.root = Path(tempfile.mkdtemp(prefix=prefix))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> Address:
        return (HOST, self.port)

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError(f"redis-server on port {self.port} is not running")
        return self.proc.pid

    @property
    def logfile(self) -> Path:
        return self.root / "redis.log"

    def argv(self) -> list[str]:
        raise NotImplementedError

    def client(self, timeout: float | None = None) -> redis.Redis:
        """A new sync client (close it: ``with node.client() as client``)."""
        return control_client(self.address, timeout or self.control_timeout)

    def command(self, *args: str | int) -> object:
        with self.client() as client:
            return client.execute_command(*args)

    def log_tail(self, chars: int = 3000) -> str:
        """The end of its log, after what it printed before opening that log."""
        text = ""
        for path in (self.root / "stdio.log", self.logfile):
            with contextlib.suppress(OSError):
                text += path.read_text(errors="replace")
        return text[-chars:]

    def spawn(self, timeout: float) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise NoServerError("no redis-server on PATH (Debian: apt-get install redis-server)")
        # A bad option is reported on stdout/stderr, before the logfile is opened.
        with open(self.root / "stdio.log", "ab") as stdio:
            proc = subprocess.Popen([binary, *self.argv()], stdout=stdio, stderr=stdio)
        self.proc = proc

        # PING answers only once the port is open and loading is done (-LOADING before).
        def answers() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"redis-server exited {proc.returncode}:\n{self.log_tail()}")
            return self.command("PING") is True

        try:
            wait_until(answers, timeout, f"redis-server on port {self.port} to answer PING")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\n{self.log_tail()}") from None

    def kill9(self) -> None:
        """SIGKILL (works on a frozen process too) and reap it."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited within 5 s."""
        if self.proc is None:
            return
        self.proc.terminate()
        # A frozen process acts on SIGTERM only once thawed.
        self.proc.send_signal(signal.SIGCONT)
        try:
            self.proc.wait(5)
            self.proc = None
        except subprocess.TimeoutExpired:
            self.kill9()

    def sigstop(self) -> None:
        """Freeze it: the port stays open, nothing answers (a GC pause, a hung VM)."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGSTOP)

    def sigcont(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGCONT)

    def destroy(self) -> None:
        try:
            self.kill9()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


class RedisNode(RedisProcess):
    """A private redis-server that a test may kill, freeze, restart and re-point."""

    def __init__(
        self,
        persistence: bool = False,
        replicaof: Address | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        super().__init__("pgcast-redis-node-")
        self.persistence = persistence
        # What the next start() is told to follow; Sentinel may change the live role since.
        self.follows = replicaof
        self.extra_args = tuple(extra_args)

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def argv(self) -> list[str]:
        argv = [
            *("--port", str(self.port), "--bind", HOST, "--dir", str(self.root)),
            *("--logfile", str(self.logfile), "--dbfilename", "dump.rdb"),
            # No save schedule: a snapshot exists only when a test calls save().
            *("--save", "", "--appendonly", "no"),
            # Full syncs start at once (the default waits 5 s) and never overwrite the
            # master's dump.rdb, the snapshot a test took.
            *("--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0"),
        ]
        if self.follows is not None:
            argv += ["--replicaof", self.follows[0], str(self.follows[1])]
        return [*argv, *self.extra_args]

    def start(self, timeout: float = 10.0) -> RedisNode:
        if not self.persistence:
            # A replica's full sync leaves a dump.rdb; without persistence a node comes back empty.
            (self.root / "dump.rdb").unlink(missing_ok=True)
        self.spawn(timeout)
        return self

    def restart(self, timeout: float = 10.0) -> RedisNode:
        """SIGKILL and start again on the same port and dir (from dump.rdb with persistence)."""
        self.kill9()
        return self.start(timeout)

    def save(self) -> None:
        """SAVE: a synchronous snapshot, the state a restart goes back to (with persistence)."""
        self.command("SAVE")

    def replicaof(self, host: str, port: int) -> None:
        self.command("REPLICAOF", host, port)
        self.follows = (host, port)

    def replicaof_no_one(self) -> None:
        self.command("REPLICAOF", "NO", "ONE")
        self.follows = None

    def role(self) -> str:
        """ROLE's first word: "master" or "slave"."""
        reply = self.command("ROLE")
        if not isinstance(reply, list):
            raise TypeError(f"ROLE answered {reply!r}")
        return str(reply[0])

    def info_replication(self) -> dict[str, str]:
        with self.client() as client:
            return {key: str(value) for key, value in client.info("replication").items()}

    def wait_synced(self, timeout: float = 10.0) -> None:
        """As a replica: the link is up and the offset reached the master's (read once up)."""
        target: list[int] = []

        def synced() -> bool:
            info = self.info_replication()
            if info.get("role") != "slave" or info.get("master_link_status") != "up":
                return False
            if not target:
                master = control_client((info["master_host"], int(info["master_port"])))
                with master:
                    target.append(int(master.info("replication")["master_repl_offset"]))
            return int(info["slave_repl_offset"]) >= target[0]

        wait_until(synced, timeout, f"replica on port {self.port} to sync with its master")
