"""``python -m bench [--quick] [--systems a,b] [--scenarios x,y] [--loadgen native|python]``.

Starts private Postgres and Redis, waits (bounded) for a quiet machine, runs
the plan one contender at a time, writes ``bench/results/<date>.json``
(``<date>-quick.json`` for ``--quick``) and prints the results table with the
ratios against the ceiling and the peers, and the targets met or missed.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import platform
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from bench import delivery
from bench.contenders import CONTENDERS, Pgcast
from bench.env import BenchEnv
from bench.failover import run_failover
from bench.idle import run_idle
from bench.plan import Plan, full_plan, quick_plan, select
from bench.procs import loadavg, wait_quiet
from bench.report import render
from bench.setup import ensure_peers
from bench.writepath import run_writepath

RESULTS = Path(__file__).resolve().parent / "results"


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as fh:
        mem_kib = int(fh.readline().split()[1])
    return {
        "cpu": cpu,
        "cores": len(__import__("os").sched_getaffinity(0)),
        "memory_gib": round(mem_kib / 2**20, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


async def execute(plan: Plan, env: BenchEnv, quiet_wait: float) -> dict[str, Any]:
    results: dict[str, Any] = {"deliveries": []}
    for name, spec in plan.deliveries:
        quiet = wait_quiet(quiet_wait, log=log)
        log(f"{spec.key}: {name} ({spec.clients} clients, {spec.rate:g} ev/s, {spec.procs} proc)")
        row = await run_delivery_logged(name, spec, env)
        results["deliveries"].append(row | {"machine_before": quiet})
    if plan.idle_clients:
        wait_quiet(quiet_wait, log=log)
        log(f"idle: pgcast, {plan.idle_clients} connections")
        results["idle"] = [
            await run_idle(
                CONTENDERS["pgcast"](env), env, clients=plan.idle_clients, settle=2.0, mode=mode
            )
            for mode in ("per_user", "broadcast")
        ]
    if plan.failover:
        log("failover: SIGKILL the leader under load")
        results["failover"] = [
            await run_failover(env, **plan.failover),  # type: ignore[arg-type]
            await run_failover(env, **plan.failover, PGCAST_STANDBY_RETRY="0.25"),  # type: ignore[arg-type]
        ]
    if plan.writepath:
        wait_quiet(quiet_wait, log=log)
        log("write path: pgbench")
        results["writepath"] = await run_writepath(env, **plan.writepath)  # type: ignore[arg-type]
    return results


async def run_delivery_logged(name: str, spec: Any, env: BenchEnv) -> dict[str, Any]:
    from bench.delivery import run_delivery

    row = await run_delivery(CONTENDERS[name](env), spec, env)
    log(
        f"  -> {row['deliveries_per_s']:.0f} deliveries/s, {row['cpu_us_per_delivery']} µs CPU"
        f"/delivery, p50 {row['latency_ms'].get('p50')} ms, p99 {row['latency_ms'].get('p99')}"
        f" ms, lost {row['lost']}, dup {row['duplicated']}, {row['loadgen']} loadgen"
        f" {row['loadgen_cpu_cores']} cores ({row['loadgen_cpu_us_per_delivery']} µs/delivery)"
    )
    return row


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small N, a few seconds per run")
    parser.add_argument(
        "--systems",
        help="comma list: pgcast,pgcast-wal,ceiling,python-socketio,node-socketio",
    )
    parser.add_argument(
        "--scenarios", help="comma list: broadcast,per_user,idle,failover,writepath"
    )
    parser.add_argument(
        "--tree", help="run pgcast's listener and gateway from this checkout (measure a patch)"
    )
    parser.add_argument(
        "--profile", type=Path, help="py-spy the Python servers during each window into DIR"
    )
    parser.add_argument(
        "--loadgen",
        choices=("native", "python"),
        default="native",
        help="load generator: native (bench/native/loadgen.c; Python where it does not build"
        " or for deflate runs) or python (bench/loadgen.py)",
    )
    parser.add_argument("--out", type=Path, help="results file (default bench/results/<date>.json)")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=60.0,
        help="max seconds to wait for a quiet machine before each run",
    )
    return parser.parse_args(argv)


def csv(raw: str | None) -> set[str] | None:
    return set(raw.split(",")) if raw else None


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    plan = select(
        quick_plan() if args.quick else full_plan(), csv(args.systems), csv(args.scenarios)
    )
    needed = {name for name, _ in plan.deliveries}
    if args.profile:
        delivery.PROFILE_DIR = args.profile
    delivery.LOADGEN = args.loadgen
    if args.tree:
        Pgcast.tree = str(Path(args.tree).resolve())
    ensure_peers(needed, log)
    today = datetime.date.today().isoformat()
    out = args.out or RESULTS / f"{today}{'-quick' if args.quick else ''}.json"
    env = BenchEnv().start()
    started = time.time()
    try:
        results = asyncio.run(execute(plan, env, args.quiet_wait))
    finally:
        env.destroy()
    document = {
        "command": "python -m bench " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": today,
        "started": datetime.datetime.fromtimestamp(started).isoformat(timespec="seconds"),
        "duration_s": round(time.time() - started, 1),
        "machine": machine(),
        "loadavg_end": loadavg(),
        **results,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))
    print(render(document))
    log(f"results written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
