"""One delivery run: a contender, N clients on K server processes, events at a rate, measured.

Phases: reset servers and trigger -> start the contender -> open and subscribe
every client -> write events (open loop) -> after a warm-up, a measurement
window for throughput and CPU -> stop writing -> drain (bounded) -> count
lost and duplicated events against what was committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from bench import native
from bench.contenders import Ceiling
from bench.env import BenchEnv
from bench.procs import CpuMeter, rss_kib
from bench.stats import percentiles
from bench.systems import Proc, System, python_module
from bench.writer import Writer, WriteResult

SERVER_GROUPS = ("servers", "feeder", "redis", "postgres")
PROFILE_DIR: Path | None = None  # --profile: py-spy the server processes during the window
LOADGEN = "native"  # --loadgen: "native" (bench/native/loadgen.c, when it builds) or "python"


def loadgen_kind(spec: DeliverySpec) -> str:
    """Which load generator a run gets: native unless asked otherwise, deflate, or no compiler."""
    if LOADGEN != "native" or spec.compression:
        return "python"
    if native.binary() is None:
        print(f"native loadgen unavailable, using Python: {native.last_error}", file=sys.stderr)
        return "python"
    return "native"


@dataclass(frozen=True)
class DeliverySpec:
    scenario: str  # "broadcast": every client on one channel; "per_user": user:<i> each
    level: str
    clients: int
    rate: float  # events per second, over all channels
    seconds: float  # how long events are written
    procs: int = 1  # server processes
    compression: bool = False
    warmup: float = 1.0
    drain_timeout: float = 10.0
    loadgens: int = 1

    @property
    def key(self) -> str:
        suffix = "+deflate" if self.compression else ""
        return f"{self.scenario}/{self.level}{suffix}"

    def channels(self) -> list[str]:
        if self.scenario == "per_user":
            return [f"user:{i}" for i in range(self.clients)]
        return ["bench"]


class LoadGens:
    """The load generator processes of one run, asked together."""

    def __init__(
        self,
        system: System,
        spec: DeliverySpec,
        targets: list[tuple[str, int]],
        trace_index: int = -1,
    ) -> None:
        share = -(-spec.clients // spec.loadgens)
        self.kind = loadgen_kind(spec)
        self.procs: list[Proc] = []
        for n in range(spec.loadgens):
            first = n * share
            config = {
                "protocol": system.protocol,
                "targets": targets,
                "connections": min(share, spec.clients - first),
                "first_index": first,
                "mode": spec.scenario,
                "secret": system.env.secret,
                "deflate": spec.compression,
                "trace_index": trace_index,
                "native": self.kind == "native",
            }
            self.procs.append(Proc(python_module("bench.loadgen", orjson.dumps(config).decode())))

    def ready(self, timeout: float = 180) -> list[dict[str, Any]]:
        return [orjson.loads(p.readline(timeout)) for p in self.procs]

    async def ask(self, cmd: dict[str, Any], limit: float = 60) -> list[dict[str, Any]]:
        return await asyncio.gather(*(asyncio.to_thread(p.command, cmd, limit) for p in self.procs))

    async def deliveries(self) -> int:
        return sum(s["deliveries"] for s in await self.ask({"cmd": "stats"}))

    def stop(self) -> None:
        for proc in self.procs:
            proc.stop()


async def feed(system: System, spec: DeliverySpec, env: BenchEnv) -> WriteResult:
    """Produce the events: through Postgres for real systems, in-process for the ceiling."""
    if isinstance(system, Ceiling):
        sent = await asyncio.to_thread(system.generate, spec.rate, spec.seconds, spec.channels())
        return WriteResult(counts=sent, seconds=spec.seconds)
    async with Writer(env.dsn) as writer:
        return await writer.run(spec.rate, spec.seconds, spec.channels())


async def drain(gens: LoadGens, expected_total: int, limit: float) -> float:
    """Wait until everything arrived or deliveries stop moving for a second."""
    start = time.monotonic()
    last, still_since = -1, time.monotonic()
    while time.monotonic() - start < limit:
        now = await gens.deliveries()
        if now >= expected_total:
            break
        if now != last:
            last, still_since = now, time.monotonic()
        elif time.monotonic() - still_since > 1.0:
            break
        await asyncio.sleep(0.2)
    return time.monotonic() - start


@dataclass
class Measured:
    """What the orchestrator saw: a steady-state window, and the whole run."""

    window_cpu: dict[str, float]
    window_s: float
    window_deliveries: int
    run_cpu: dict[str, float]
    drain_s: float
    rss_idle: int
    rss_busy: int


def start_profilers(
    system: System, spec: DeliverySpec, seconds: float
) -> list[subprocess.Popen[bytes]]:
    """py-spy each Python server and feeder process (pgcast's listener) for the window
    (collapsed stacks for flamegraphs)."""
    if PROFILE_DIR is None or system.protocol == "raw" or system.name == "node-socketio":
        return []
    PROFILE_DIR.mkdir(parents=True, exist_ok=True)
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    procs = []
    for pid in [*system.server_pids(), *(p.pid for p in system.feeders)]:
        out = PROFILE_DIR / f"{system.name}-{spec.key.replace('/', '-')}-{pid}.txt"
        argv = [spy, "record", "-p", str(pid), "-d", str(max(1, int(seconds))), "-r", "250"]
        argv += ["-f", "raw", "-o", str(out), "--nonblocking"]
        procs.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    return procs


async def measure(
    system: System, spec: DeliverySpec, env: BenchEnv, gens: LoadGens
) -> tuple[Measured, WriteResult]:
    groups = {**system.groups(), "loadgen": lambda: [p.pid for p in gens.procs]}
    whole, meter = CpuMeter(groups), CpuMeter(groups)
    rss_idle = sum(rss_kib(pid) for pid in system.server_pids())
    whole.start()
    feeding = asyncio.create_task(feed(system, spec, env))
    try:
        await asyncio.sleep(spec.warmup)
        await gens.ask({"cmd": "window"})
        d0 = await gens.deliveries()
        meter.start()
        seconds = max(0.5, spec.seconds - spec.warmup - 0.3)
        profilers = start_profilers(system, spec, seconds)
        await asyncio.sleep(seconds)
        d1 = await gens.deliveries()
        cpu, window = meter.stop()
        rss_busy = sum(rss_kib(pid) for pid in system.server_pids())
        written = await feeding
        for profiler in profilers:
            await asyncio.to_thread(profiler.wait, 60)
    finally:
        if not feeding.done():
            feeding.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feeding
    expected_total = written.total * (spec.clients if spec.scenario == "broadcast" else 1)
    drained = await drain(gens, expected_total, spec.drain_timeout)
    run_cpu, _ = whole.stop()
    return Measured(cpu, window, d1 - d0, run_cpu, drained, rss_idle, rss_busy), written


async def run_delivery(system: System, spec: DeliverySpec, env: BenchEnv) -> dict[str, Any]:
    await env.prepare(system.ingest)
    try:
        targets = system.start(spec.procs, compression=spec.compression)
        gens = LoadGens(system, spec, targets)
        try:
            ready = await asyncio.to_thread(gens.ready)
            measured, written = await measure(system, spec, env, gens)
            reports = await gens.ask({"cmd": "report", "expected": written.expected}, limit=120)
        finally:
            gens.stop()
    finally:
        system.stop()
    return summarize(spec, system, ready, reports, written, measured) | {"loadgen": gens.kind}


def summarize(
    spec: DeliverySpec,
    system: System,
    ready: list[dict[str, Any]],
    reports: list[dict[str, Any]],
    written: WriteResult,
    m: Measured,
) -> dict[str, Any]:
    latencies = [x for r in reports for x in r["latencies"]]
    delivered_total = sum(r["deliveries"] for r in reports)
    server_cpu = sum(m.window_cpu[g] for g in SERVER_GROUPS)
    run_cpu = sum(m.run_cpu[g] for g in SERVER_GROUPS)
    codes: dict[str, int] = {}
    for r in reports:
        for code, n in r["close_codes"].items():
            codes[code] = codes.get(code, 0) + n
    return {
        "system": system.name,
        "spec": asdict(spec),
        "subscribed": sum(r["subscribed"] for r in ready),
        "connect_failures": [f for r in ready for f in r["failed"]][:5],
        "events_written": written.total,
        "write_rate": round(written.total / max(written.seconds, 1e-9), 1),
        "commit_ms": percentiles([x * 1000 for x in written.commit_latencies]),
        "window_s": round(m.window_s, 3),
        "deliveries_per_s": round(m.window_deliveries / m.window_s, 1),
        "cpu_us_per_delivery": round(server_cpu / max(m.window_deliveries, 1) * 1e6, 3),
        "cpu_s": {k: round(v, 3) for k, v in m.window_cpu.items()},
        "server_cpu_cores": round(server_cpu / m.window_s, 3),
        "loadgen_cpu_cores": round(m.window_cpu["loadgen"] / m.window_s, 3),
        "loadgen_cpu_us_per_delivery": round(
            m.window_cpu["loadgen"] / max(m.window_deliveries, 1) * 1e6, 3
        ),
        # Whole run (first event to end of drain): immune to where the window falls
        # when a contender runs ahead of its clients or falls behind them.
        "run_cpu_s": {k: round(v, 3) for k, v in m.run_cpu.items()},
        "run_cpu_us_per_delivery": round(run_cpu / max(delivered_total, 1) * 1e6, 3),
        "deliveries_per_server_cpu_s": round(delivered_total / max(m.run_cpu["servers"], 1e-9)),
        "latency_ms": percentiles([x * 1000 for x in latencies]),
        "delivered_total": delivered_total,
        "lost": sum(r["lost"] for r in reports),
        "duplicated": sum(r["duplicated"] for r in reports),
        "resyncs": sum(r["resyncs"] for r in reports),
        "close_codes": codes,
        "drain_s": round(m.drain_s, 2),
        "rss_kib": {"idle": m.rss_idle, "busy": m.rss_busy},
    }
