"""The load generator process: N WebSocket connections over K servers, driven over stdin.

Run as ``python -m bench.loadgen '<json config>'``. It opens the connections
(bounded handshake concurrency), prints ``{"event":"ready",...}`` once every
connection is subscribed or failed, then answers JSON-line commands on stdin:
``stats`` (deliveries so far, own CPU), ``window`` (restart latency samples),
``report`` (loss/duplicates against the expected per-channel counts; exits).

With ``"native": true`` the same protocol is spoken by ``bench/native/loadgen.c``:
this module builds every connection's upgrade request (JWT included) and
subscribe frame, writes them to a spec file and ``exec``s the compiled program
on it, so the process (and the PID whose CPU is measured) stays the same.
permessage-deflate stays here: a native config with ``deflate`` is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import resource
import sys
import tempfile
import time
from array import array
from dataclasses import dataclass, field
from typing import Any, NoReturn
from urllib.parse import quote

import jwt
import orjson

from bench import native
from bench import wsframes as wf
from bench.clients import PROTOCOLS, BenchConnection

MAX_SAMPLES = 200_000


@dataclass(frozen=True)
class LoadConfig:
    protocol: str
    targets: list[tuple[str, int]]
    connections: int
    first_index: int = 0
    mode: str = "broadcast"  # or "per_user": connection i subscribes to user:<i>
    channel: str = "bench"
    secret: str = ""
    deflate: bool = False
    sample_every: int = 10
    concurrency: int = 200
    ready_timeout: float = 60.0
    trace_index: int = -1  # a connection whose every receipt is kept (failover)
    native: bool = False  # exec bench/native/loadgen.c (no deflate) instead of this loop
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, raw: str | bytes) -> LoadConfig:
        data = orjson.loads(raw)
        data["targets"] = [tuple(t) for t in data["targets"]]
        return cls(**data)


def self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def raise_nofile() -> None:
    """Raise the soft open-files limit to the hard one (10,000 connections need it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def channel_for(config: LoadConfig, index: int) -> str:
    return f"user:{index}" if config.mode == "per_user" else config.channel


def path_for(config: LoadConfig, index: int) -> str:
    if config.protocol == "sio":
        return "/socket.io/?EIO=4&transport=websocket"
    if config.protocol == "raw":
        return "/ws?channel=" + quote(channel_for(config, index), safe="")
    return "/ws"


def headers_for(config: LoadConfig, index: int) -> dict[str, str]:
    if not config.secret:
        return {}
    claims: dict[str, Any] = {"sub": str(index), "exp": int(time.time()) + 3600}
    if config.mode != "per_user":
        claims["channels"] = [config.channel]
    token = jwt.encode(claims, config.secret, algorithm="HS256")
    return {"Authorization": f"Bearer {token}"}


class LoadGen:
    """Owns every connection and the counters the orchestrator asks for."""

    def __init__(self, config: LoadConfig) -> None:
        self.config = config
        self.conns: list[BenchConnection] = []
        self.deliveries = 0
        self.latencies = array("d")
        self.trace: list[tuple[float, float, int]] = []
        self.subscribed = 0
        self.failed: list[str] = []
        self.closed = 0
        self.resyncs = 0  # unsolicited "subscribed" (recovered:false): told to refetch
        self.settled = 0
        self.all_settled = asyncio.Event()
        self.slots = asyncio.Semaphore(config.concurrency)
        self._secret_tokens: dict[int, str] = {}

    # -- per connection -----------------------------------------------------
    def channel_for(self, index: int) -> str:
        return channel_for(self.config, index)

    def path_for(self, index: int) -> str:
        return path_for(self.config, index)

    def headers_for(self, index: int) -> dict[str, str]:
        return headers_for(self.config, index)

    def record(self, conn: BenchConnection, seq: int, sent: float, now: float) -> None:
        self.latencies.append(now - sent)
        if conn.index == self.config.trace_index:
            self.trace.append((now, sent, seq))

    def _settle(self, conn: BenchConnection) -> None:
        if not conn.done:
            conn.done = True
            self.settled += 1
            self.slots.release()
            if self.settled >= self.config.connections:
                self.all_settled.set()

    def on_subscribed(self, conn: BenchConnection) -> None:
        self.subscribed += 1
        self._settle(conn)

    def on_failed(self, conn: BenchConnection, reason: str) -> None:
        if len(self.failed) < 20:
            self.failed.append(reason)
        self._settle(conn)

    def on_closed(self, conn: BenchConnection) -> None:
        self.closed += 1
        if not conn.done:
            self.on_failed(conn, f"closed during setup ({conn.close_code})")

    # -- phases -----------------------------------------------------------------
    async def open_all(self) -> None:
        loop = asyncio.get_running_loop()
        cfg = self.config
        for n in range(cfg.connections):
            index = cfg.first_index + n
            host, port = cfg.targets[index % len(cfg.targets)]
            await self.slots.acquire()
            conn = PROTOCOLS[cfg.protocol](
                self, index, self.channel_for(index), f"{host}:{port}", self.path_for(index)
            )
            self.conns.append(conn)
            try:
                await loop.create_connection(lambda c=conn: c, host, port)  # type: ignore[misc]
            except OSError as exc:
                self.on_failed(conn, f"connect: {exc}")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(cfg.ready_timeout):
                await self.all_settled.wait()

    def stats(self) -> dict[str, Any]:
        return {
            "deliveries": self.deliveries,
            "subscribed": self.subscribed,
            "closed": self.closed,
            "resyncs": self.resyncs,
            "cpu": self_cpu(),
            "time": time.time(),
        }

    def report(self, expected: dict[str, int]) -> dict[str, Any]:
        lost = dups = 0
        close_codes: dict[str, int] = {}
        for conn in self.conns:
            if not conn.subscribed:
                continue
            lost += max(0, expected.get(conn.channel, 0) - conn.unique)
            dups += conn.dups
            if conn.close_code is not None:
                key = str(conn.close_code)
                close_codes[key] = close_codes.get(key, 0) + 1
        samples = list(self.latencies)
        if len(samples) > MAX_SAMPLES:
            samples = random.sample(samples, MAX_SAMPLES)
        return {
            **self.stats(),
            "lost": lost,
            "duplicated": dups,
            "close_codes": close_codes,
            "failed": self.failed,
            "latencies": [round(x, 6) for x in samples],
            "trace": self.trace,
        }

    def close_all(self) -> None:
        for conn in self.conns:
            conn.abort()


async def serve(config: LoadConfig) -> None:
    gen = LoadGen(config)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    started = time.monotonic()
    await gen.open_all()
    emit(
        {"event": "ready", **gen.stats(), "failed": gen.failed, "secs": time.monotonic() - started}
    )
    while line := await reader.readline():
        command = orjson.loads(line)
        if command["cmd"] == "stats":
            emit(gen.stats())
        elif command["cmd"] == "window":
            gen.latencies = array("d")
            gen.trace.clear()
            emit(gen.stats())
        elif command["cmd"] == "report":
            emit(gen.report(command.get("expected", {})))
            break
    gen.close_all()


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.buffer.write(orjson.dumps(obj) + b"\n")
    sys.stdout.buffer.flush()


# -- the native path -------------------------------------------------------------
def subscribe_frame(config: LoadConfig, channel: str) -> bytes:
    """What a connection sends to subscribe, masked: pgcast's frame, Socket.IO's event."""
    if config.protocol == "pgcast":
        return wf.client_frame(orjson.dumps({"type": "subscribe", "channel": channel, "id": 1}))
    if config.protocol == "sio":
        return wf.client_frame(b'421["subscribe",' + orjson.dumps(channel) + b"]")
    return b""  # raw: subscribed by the URL


def native_spec(config: LoadConfig) -> bytes:
    """The spec file ``loadgen.c`` reads: header lines, then one length-prefixed record each."""
    if config.protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {config.protocol!r}")
    out = [
        b"pgcast-loadgen 1\n",
        f"protocol {config.protocol}\nconnections {config.connections}\n".encode(),
        f"sample_every {config.sample_every}\nconcurrency {config.concurrency}\n".encode(),
        f"ready_timeout {config.ready_timeout}\ntrace_index {config.trace_index}\n".encode(),
    ]
    for n in range(config.connections):
        index = config.first_index + n
        host, port = config.targets[index % len(config.targets)]
        channel = channel_for(config, index).encode()
        key = wf.new_key()
        request = wf.upgrade_request(
            f"{host}:{port}", path_for(config, index), key, headers=headers_for(config, index)
        )
        hello = subscribe_frame(config, channel.decode())
        accept = wf.accept_for(key)
        sampled = int(index % config.sample_every == 0)
        lengths = f"{len(channel)} {len(request)} {len(hello)} {len(accept)}"
        out.append(f"conn {index} {host} {port} {sampled} {lengths}\n".encode())
        out += [channel, request, hello, accept]
    return b"".join(out)


def exec_native(config: LoadConfig) -> NoReturn:
    """Become the native load generator (same PID): it reads and deletes the spec file."""
    if config.deflate:
        raise SystemExit("the native load generator has no permessage-deflate: use the Python one")
    program = native.binary()
    if program is None:
        raise SystemExit(f"the native load generator does not build: {native.last_error}")
    fd, path = tempfile.mkstemp(prefix="pgcast-loadgen-", suffix=".spec")
    with os.fdopen(fd, "wb") as fh:
        fh.write(native_spec(config))
    sys.stdout.flush()
    os.execv(program, [str(program), path])  # noqa: S606 - our own binary, fixed argv


def main() -> None:
    raise_nofile()
    config = LoadConfig.from_json(sys.argv[1])
    if config.native:
        exec_native(config)
    try:
        import uvloop

        uvloop.run(serve(config))
    except ImportError:
        asyncio.run(serve(config))


if __name__ == "__main__":
    main()
