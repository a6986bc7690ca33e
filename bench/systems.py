"""The systems under test, each started as real processes on free ports, stopped by PID.

- ``pgcast``: ``pgcast-listener`` + K ``pgcast-gateway`` processes.
- ``ceiling``: bench/ceiling.py (generates its own events).
- ``python-socketio``: K aiohttp servers with AsyncRedisManager + the classic bridge.
- ``node-socketio``: K Node servers with @socket.io/redis-adapter + a redis-emitter bridge.

Each names the groups of server-side processes whose CPU is charged to it.
"""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import IO, Any

import orjson

from bench.env import BenchEnv
from bench.procs import PidSource, descendants

NODE_DIR = Path(__file__).resolve().parent / "peers" / "node"
# Every process's stderr (and services' stdout) stays here after the run, for post-mortems.
LOG_DIR = Path(tempfile.gettempdir()) / "pgcast-bench-logs"


class Proc:
    """A child process with a piped stdin/stdout and stderr in a log file."""

    def __init__(
        self, argv: list[str], env: dict[str, str] | None = None, *, piped: bool = True
    ) -> None:
        """``piped=False``: stdout goes to the log too (services that only log)."""
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^\w.]+", "_", " ".join(argv[1:3]))[-40:]
        self.log = Path(tempfile.mkstemp(prefix=f"{name}-", suffix=".log", dir=LOG_DIR)[1])
        with open(self.log, "ab") as log:
            self.popen = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE if piped else log,
                stderr=log,
                env={**os.environ, **(env or {})},
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def readline(self, timeout: float) -> bytes:
        """One line of stdout within ``timeout`` seconds (TimeoutError otherwise)."""
        out = self.popen.stdout
        assert out is not None
        with selectors.DefaultSelector() as sel:
            sel.register(out, selectors.EVENT_READ)
            if not sel.select(timeout):
                raise TimeoutError(f"{self.popen.args!r}: no output in {timeout}s\n{self.tail()}")
        line = out.readline()
        if not line:
            raise RuntimeError(f"{self.popen.args!r} exited:\n{self.tail()}")
        return line

    def command(self, obj: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Send one JSON-line command and read its one JSON-line answer."""
        stdin: IO[bytes] | None = self.popen.stdin
        assert stdin is not None
        stdin.write(orjson.dumps(obj) + b"\n")
        stdin.flush()
        answer: dict[str, Any] = orjson.loads(self.readline(timeout))
        return answer

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def stop(self, timeout: float = 10.0) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout)
        for stream in (self.popen.stdin, self.popen.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()

    def kill9(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(10)


def wait_http(url: str, timeout: float, proc: Proc) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{url}: process exited:\n{proc.tail()}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as resp:  # noqa: S310 - http://127.0.0.1 only
            if resp.status == 200:
                return
        time.sleep(0.1)
    raise TimeoutError(f"{url} not ready in {timeout}s:\n{proc.tail()}")


class System:
    """Base: a name, the client protocol, how events get in, and the processes."""

    name = ""
    protocol = ""
    ingest: str | None = None  # bench_event trigger: "pgcast", "classic", or None

    def __init__(self, env: BenchEnv) -> None:
        self.env = env
        self.servers: list[Proc] = []
        self.feeders: list[Proc] = []

    def start(self, procs: int, **options: Any) -> list[tuple[str, int]]:
        raise NotImplementedError

    def groups(self) -> dict[str, PidSource]:
        """Server-side processes whose CPU counts, by role."""
        return {
            "servers": lambda: [p.pid for p in self.servers],
            "feeder": lambda: [p.pid for p in self.feeders],
            "redis": lambda: [self.env.redis.proc.pid] if self.env.redis.proc else [],
            "postgres": lambda: descendants(self.env.pg.postmaster_pid()),
        }

    def server_pids(self) -> list[int]:
        return [p.pid for p in self.servers]

    def stop(self) -> None:
        for proc in [*self.servers, *self.feeders]:
            proc.stop()
        self.servers, self.feeders = [], []


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def entry_point(module: str, tree: str | None = None) -> list[str]:
    """Run a console script's ``main`` as ``pip install`` would (exit code included).

    ``tree``: a directory searched first for the module (to measure a patched copy).
    """
    first = f"sys.path.insert(0, {tree!r}); " if tree else ""
    code = f"import sys; {first}from {module} import main; sys.exit(main())"
    return [sys.executable, "-c", code]
