"""One child process of the stack: start it, watch it, restart it out loud, stop it by PID.

A :class:`Proc` owns its ``subprocess.Popen`` and its ``run()`` loop. Every
state change goes through ``_set`` so the runner can re-print the status table:
nothing is restarted silently, and a process that dies before it was ever
ready fails the whole start (its log tail says why) instead of looping.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO

from deploy.procs import ProcSpec
from pgcast.backoff import Backoff

CONFIG_ERROR_EXIT = 2  # pgcast.runtime: bad configuration; restarting cannot help
_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True)


def _die_with_parent() -> None:
    """In the child: get SIGTERM if the runner dies, so no orphan keeps a port."""
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        return f"killed by {signal.Signals(-returncode).name}"
    return f"exit {returncode}"


class Proc:
    """A supervised child process."""

    def __init__(
        self,
        spec: ProcSpec,
        env: Mapping[str, str],
        log_path: Path,
        on_change: Callable[[Proc, str], None],
        restart: bool = True,
    ) -> None:
        self.spec = spec
        self.env = dict(env)
        self.log_path = log_path
        self.on_change = on_change
        self.restart = restart
        self.state = "created"
        self.info = ""
        self.restarts = 0
        self.ever_ready = False
        self.failed: str | None = None  # why it is down for good
        self._popen: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._stopping = False
        self._exited = asyncio.Event()
        self._backoff = Backoff(base=0.5, cap=15.0, healthy_after=30.0)

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen is not None else None

    @property
    def alive(self) -> bool:
        return self._popen is not None and not self._exited.is_set()

    def _set(self, state: str, why: str = "") -> None:
        if state != self.state:
            self.state = state
            if state not in ("ready", "unhealthy"):
                self.info = ""  # metrics of a process that is gone would mislead
            self.on_change(self, why)

    def mark_health(self, ok: bool) -> None:
        """Called by the prober with the result of the health URL."""
        if self._stopping or not self.alive:
            return
        if ok:
            self.ever_ready = True
            self._backoff.mark_healthy()
            self._set("ready")
        elif self.state == "ready":
            self._set("unhealthy", "health check failing")

    def _start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - open for the child's lifetime
        self._popen = subprocess.Popen(
            self.spec.argv,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches the runner only: it stops us in order
            preexec_fn=_die_with_parent,  # only a prctl() call; no thread is running Python
            # The postgres user for the stack's own Postgres when we are root. The child
            # changes user before preexec_fn, so the death signal survives the change.
            user=self.spec.user,
            group=self.spec.user,
            extra_groups=[] if self.spec.user else None,
        )
        # A pidfd turns "the child exited" into an event on the loop: no polling thread.
        self._exited = asyncio.Event()
        pidfd = os.pidfd_open(self._popen.pid)
        asyncio.get_running_loop().add_reader(pidfd, self._on_exit, pidfd)
        self._set("starting", f"pid {self._popen.pid}")

    def _on_exit(self, pidfd: int) -> None:
        asyncio.get_running_loop().remove_reader(pidfd)
        os.close(pidfd)
        assert self._popen is not None
        self._popen.wait()  # reap it: returncode is set from here on
        if self._log is not None:
            self._log.close()
        self._exited.set()

    async def _wait_exit(self) -> int:
        await self._exited.wait()
        assert self._popen is not None
        return self._popen.wait()  # already reaped: returns at once

    async def run(self) -> None:
        """Run until stopped; restart after a crash (announced) unless told not to."""
        while not self._stopping:
            self._start()
            code = await self._wait_exit()
            if self._stopping:
                self._set("stopped", describe_exit(code))
                return
            why = describe_exit(code)
            if not self.ever_ready or not self.restart or code == CONFIG_ERROR_EXIT:
                self.failed = why
                self._set("exited", why)
                return
            delay = self._backoff.next()
            self.restarts += 1
            self._set("restarting", f"{why}; restart #{self.restarts} in {delay:.1f}s")
            await asyncio.sleep(delay)
        self._set("stopped")

    async def stop(self) -> None:
        """Send the spec's stop signal; SIGKILL (announced) after its timeout."""
        self._stopping = True
        if not self.alive:
            if self.state not in ("exited", "stopped"):
                self._set("stopped")
            return
        assert self._popen is not None
        self._set("stopping", self.spec.stop_signal.name)
        os.kill(self._popen.pid, self.spec.stop_signal)
        try:
            async with asyncio.timeout(self.spec.stop_timeout):
                await self._exited.wait()
        except TimeoutError:
            self._set("killing", f"no exit after {self.spec.stop_timeout:.0f}s: SIGKILL")
            os.kill(self._popen.pid, signal.SIGKILL)
            await self._exited.wait()

    def log_tail(self, limit: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-limit:]
        except OSError:
            return ""
