"""Start pgcast's real processes (listener, gateway) for tests, and stop them by PID.

A :class:`Service` runs a console entry point in a child process with its own
environment, captures its output to a file (so tests can grep logs, e.g. for
tokens that must never appear), and can be SIGKILLed, SIGSTOPped, SIGCONTed.
Under pytest the log files live in one directory per session (:func:`log_directory`,
entered by tests/conftest.py), removed when the session ends.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ENTRY_POINTS = {
    "listener": "listener.cli",
    "gateway": "gateway.cli",
    "migrate": "listener.migrate",
}

# The innermost log_directory() in force; empty: the system temp dir (e.g. the soak run).
_log_dirs: list[Path] = []


@contextlib.contextmanager
def log_directory() -> Iterator[Path]:
    """New services log into a fresh directory while this is entered; it is removed
    (their logs with it) on exit."""
    directory = Path(tempfile.mkdtemp(prefix="pgcast-test-logs-"))
    _log_dirs.append(directory)
    try:
        yield directory
    finally:
        _log_dirs.remove(directory)
        shutil.rmtree(directory, ignore_errors=True)


def new_log_path() -> Path:
    """An empty log file in the current log directory."""
    fd, path = tempfile.mkstemp(
        prefix="pgcast-svc-", suffix=".log", dir=_log_dirs[-1] if _log_dirs else None
    )
    os.close(fd)
    return Path(path)


@dataclass
class Service:
    """One pgcast process started by a test."""

    kind: str
    env: dict[str, str]
    log_path: Path = field(default_factory=new_log_path)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Service:
        module = ENTRY_POINTS[self.kind]
        env = {**os.environ, "PGCAST_LOG_FORMAT": "text", **self.env}
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the child's lifetime
        self.proc = subprocess.Popen(
            [sys.executable, "-c", f"import sys; from {module} import main; sys.exit(main())"],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def wait_http(self, url: str, timeout: float = 20.0, status: int = 200) -> None:
        """Wait until ``url`` answers ``status`` (fails by name with the log tail)."""
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(url, timeout=1) as resp:
                    if resp.status == status:
                        return
                    last = resp.status
            except urllib.error.HTTPError as exc:
                last = exc.code
                if exc.code == status:
                    return
            except OSError as exc:
                last = exc
            time.sleep(0.05)  # poll interval of a wait bounded by `timeout`
        raise TimeoutError(f"{url} did not answer {status} (last: {last}):\n{self.log()[-3000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: signal.Signals) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def kill9(self) -> None:
        if self.proc is not None:
            self.signal(signal.SIGKILL)
            self.proc.wait(10)

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; returns the exit code (SIGKILL after ``timeout``)."""
        assert self.proc is not None
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(Exception):
                self.terminate(10)
        with contextlib.suppress(Exception):
            self._log.close()
