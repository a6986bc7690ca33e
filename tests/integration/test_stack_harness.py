"""Helpers of the stack tests: run ``python -m deploy.stack`` on free ports, raw wss clients.

:class:`RunningStack` starts the real runner (the one ``make up`` starts) with a
private run dir and the test's Postgres/Redis, reads its ``stack.json``, and
stops it with SIGTERM. :class:`RawClient` speaks the wire protocol itself and
keeps every frame, so a duplicate or a gap is visible (no client-side dedupe).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import jwt

from deploy.preflight import pid_alive

__all__ = ["RawClient", "RunningStack", "free_block", "pid_alive"]

ROOT = Path(__file__).resolve().parents[2]


def free_block(count: int) -> int:
    """A base port such that base .. base+count-1 are all free on 127.0.0.1."""
    for _ in range(200):
        base = random.randrange(20000, 40000)
        socks = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError(f"no block of {count} free ports")


@dataclass
class RunningStack:
    """The stack runner as a child process, on free ports, in ``run_dir``."""

    run_dir: Path
    env: dict[str, str]
    gateways: int = 4
    listeners: int = 2
    extra_args: tuple[str, ...] = ()
    https_port: int = field(default_factory=lambda: free_block(1))
    proc: subprocess.Popen[bytes] | None = None

    @property
    def out_path(self) -> Path:
        return self.run_dir.parent / "runner.out"

    def start(self) -> RunningStack:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "deploy.stack", "--run-dir", str(self.run_dir)]
        argv += ["--port", str(self.https_port), "--gateways", str(self.gateways)]
        argv += ["--gateway-base-port", str(free_block(self.gateways))]
        argv += ["--listeners", str(self.listeners)]
        argv += ["--listener-base-port", str(free_block(self.listeners)), *self.extra_args]
        self._out = open(self.out_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env={**os.environ, **self.env},
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )
        return self

    def output(self) -> str:
        return self.out_path.read_text(errors="replace")

    def state(self) -> dict[str, Any]:
        try:
            doc: dict[str, Any] = json.loads((self.run_dir / "stack.json").read_text())
        except (OSError, ValueError):
            return {"procs": []}
        return doc

    def procs(self, kind: str) -> list[dict[str, Any]]:
        return [p for p in self.state()["procs"] if p["kind"] == kind]

    def wait_up(self, timeout: float = 60.0) -> None:
        """Until the runner printed its banner (every process ready)."""
        deadline = time.monotonic() + timeout
        while "pgcast is up" not in self.output():
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"the runner exited {self.proc.returncode}:\n{self.output()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"stack not up after {timeout}s:\n{self.output()[-4000:]}")
            time.sleep(0.1)  # poll interval of a wait bounded by `timeout`

    def ca_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.run_dir / "tls" / "ca.pem"))

    def token(self, sub: str = "tester", channels: tuple[str, ...] = ("*",)) -> str:
        secret = (self.run_dir / "jwt-secret").read_text().strip()
        claims = {"sub": sub, "exp": int(time.time()) + 3600, "channels": list(channels)}
        return jwt.encode(claims, secret, algorithm="HS256")

    def wait(self, timeout: float) -> int:
        """Wait for the runner to exit by itself; returns its exit code."""
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        finally:
            self._out.close()

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM the runner (as Ctrl-C would) and wait; returns its exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise
        finally:
            self._out.close()

    def tail_one(self, channel: str = "news") -> subprocess.Popen[bytes]:
        """Start ``deploy.tail`` for one event of ``channel`` over wss through nginx."""
        argv = [sys.executable, "-m", "deploy.tail", channel, "--count", "1"]
        argv += ["--url", f"wss://localhost:{self.https_port}/ws"]
        return subprocess.Popen(
            [*argv, "--run-dir", str(self.run_dir)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )

    def stop_with_cli(self) -> subprocess.CompletedProcess[str]:
        """``python -m deploy.stack --stop`` (make down) on this run directory."""
        return subprocess.run(
            [sys.executable, "-m", "deploy.stack", "--stop", "--run-dir", str(self.run_dir)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )


@dataclass
class RawClient:
    """One wss client through nginx: subscribes to a channel, resumes after every drop."""

    url: str
    token: str
    channel: str
    session: aiohttp.ClientSession
    seqs: list[int] = field(default_factory=list)
    offset: str | None = None
    epoch: str | None = None
    connects: int = 0
    subscribed: asyncio.Event = field(default_factory=asyncio.Event)
    not_recovered: int = 0
    errors: list[str] = field(default_factory=list)

    def _subscribe_frame(self) -> str:
        frame: dict[str, str] = {"type": "subscribe", "channel": self.channel}
        if self.offset is not None and self.epoch is not None:
            frame.update(since=self.offset, epoch=self.epoch)
        return json.dumps(frame)

    def _on_frame(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind == "message":
            self.seqs.append(int(frame["data"]["seq"]))
            self.offset = frame["offset"]
        elif kind == "subscribed":
            if self.connects > 1 and not frame.get("recovered", False):
                self.not_recovered += 1
            self.epoch = frame["epoch"]
            if self.offset is None:
                self.offset = frame["offset"]
            self.subscribed.set()
        elif kind == "error":
            self.errors.append(json.dumps(frame))

    async def _session_once(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        async with self.session.ws_connect(self.url, headers=headers, heartbeat=None) as ws:
            self.connects += 1
            await ws.send_str(self._subscribe_frame())
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    self._on_frame(json.loads(msg.data))

    async def run(self) -> None:
        """Connect, read, and on any drop reconnect (with jitter) until cancelled."""
        while True:
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                await self._session_once()
            await asyncio.sleep(random.uniform(0.05, 0.5))
