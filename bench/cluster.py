"""Redis Cluster against one Redis: per-user delivery, cluster bus traffic, gateway scaling.

``python -m bench.cluster [--quick] [--json FILE]`` starts, on 127.0.0.1 only, a private
durable Postgres, the Redis under test (one ``redis-server``, or a Redis Cluster of 3
masters, ``--replicas`` per master, 0 by default, built by tests/redis_cluster.py), a
real ``pgcast-listener`` and ``pgcast-gateway`` processes, and the load generator
(bench/loadgen.py: the native one where it builds) holding ``--connections`` WebSocket
connections, connection i subscribed to its own channel ``user:<i>``. Everything is
stopped by PID and removed afterwards; the shared servers are never used.

1. ``per_user``: for each topology (``single``, ``cluster``) and each ``--rates`` rate,
   events are written for ``--seconds`` round-robin over the connections' channels,
   through the real path: ``INSERT`` into ``bench_event`` whose deferred trigger calls
   ``pgcast.publish`` (bench/env.py), ``--batch`` rows per transaction (so the commit
   rate does not bound the event rate on these cores), the listener drains the outbox
   into Redis, the gateways deliver. Over a window after a warm-up: deliveries/s at the
   clients, CPU of every server-side process (listener, gateways, every Postgres
   process from /proc; each Redis node from ``INFO cpu``), the load generator's, the
   machine's other work, and on a cluster each node's ``CLUSTER INFO``
   ``cluster_stats_messages_sent``/``received`` deltas. Then the backlog left when
   writing stopped, the drain, loss and duplicates against what committed, latency
   (commit -> client) of the events received from the window on.
2. ``scaling``: the cluster, one rate (``--scale-rate``), 1, 2, 4 gateway processes
   (``--scale-gateways``): deliveries/s and server-side CPU per delivery.
3. ``bus``: classic ``PUBLISH`` against ``SPUBLISH`` on a 3-master cluster with one
   replica each (its own, 6 nodes): ``--bus-messages`` of each, 100-byte payloads, on
   pgcast's live channel names of ``--connections`` channels, each sent to the master
   that owns the channel's slot by a plain redis-py pipeline, no subscriber. Per node:
   ``CLUSTER INFO`` message deltas (all, and the ``publish``/``publishshard`` types) and
   ``INFO cpu``. pgcast itself always uses SPUBLISH on a cluster.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

from bench.cluster_bus import bus_part
from bench.cluster_per_user import per_user_part, scaling_part
from bench.cluster_rig import PARTITIONS, log, postgres
from bench.procs import loadavg

ROOT = Path(__file__).resolve().parents[1]


def tables(report: dict[str, Any]) -> str:
    lines = []
    header = (
        "| topology | gateways | offered/s | written/s | delivered/s (window) | backlog at end "
        "| drain s | lost | dup | p50 ms | p99 ms | server cores | server us/delivery "
        "| listener | gateways | postgres | redis (us/delivery) | Redis CPU % per node "
        "| loadgen cores | writer cores | machine busy | other work (irq, visible procs) "
        "| loadavg |"
    )
    sep = "|---" * header.count("|")
    sep = sep[: -len("|---")] + "|"
    for part in ("per_user", "scaling"):
        if not report.get(part):
            continue
        lines += ["", f"{part}:", header, sep]
        for row in report[part]:
            w = row["window"]
            per = w["cpu_us_per_delivery"]
            nodes = " / ".join(f"{n['role'][0]}{n['cpu_pct']}" for n in w["redis_nodes"])
            lines.append(
                f"| {row['topology']} | {row['gateways']} | {row['rate']:g} | {row['write_rate']} "
                f"| {w['deliveries_per_s']} | {row['backlog_at_write_end']} | {row['drain_s']} "
                f"| {row['lost']} | {row['duplicated']} | {row['latency_ms'].get('p50')} "
                f"| {row['latency_ms'].get('p99')} | {w['server_cpu_cores']} "
                f"| {w['server_cpu_us_per_delivery']} | {per['listener']} | {per['gateways']} "
                f"| {per['postgres']} | {per['redis']} | {nodes} | {w['cpu_cores']['loadgen']} "
                f"| {w['cpu_cores']['writer']} | {w['machine_busy_cores']} "
                f"| {w['other_work_cores']} ({w['irq_cores']}, {w['other_processes_cores']}) "
                f"| {row['loadavg_before'][0]} |"
            )
    bus = report.get("bus")
    if bus:
        lines += [
            "",
            f"bus: {bus['messages']} messages each way on {bus['channels']} channels, "
            "3 masters + 3 replicas, no subscribers:",
            "| command | bus msgs sent per message | received per message "
            "| Redis CPU us per message, all nodes | per node (sent publish/publishshard) |",
            "|---|---|---|---|---|",
        ]
        for key in bus["order"]:
            part = bus[key]
            per_node = " / ".join(
                f"{n['role'][0]}{n['port']}: {n['cpu_us_per_message']}us "
                f"{n['publish_sent']}/{n['publishshard_sent']}"
                for n in part["nodes"]
            )
            lines.append(
                f"| {key} | {part['bus_sent_per_message']} | {part['bus_received_per_message']} "
                f"| {part['cpu_us_per_message_all_nodes']} | {per_node} |"
            )
    return "\n".join(lines)


async def timed(what: str, coro: Awaitable[Any]) -> Any:
    t0 = time.monotonic()
    result = await coro
    log(f"{what} took {time.monotonic() - t0:.1f} s")
    return result


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {
        "commit": args.commit,
        "cpus": os.cpu_count(),
        "fd_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        "settings": {k: v for k, v in vars(args).items() if k not in ("json", "commit", "quick")},
        "partitions": PARTITIONS,
        "loadavg_start": loadavg(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    if "bus" in args.parts:
        report["bus"] = await timed("bus", bus_part(args.bus_messages, args.connections))
    if "per_user" in args.parts or "scaling" in args.parts:
        async with postgres() as pg:
            if "per_user" in args.parts:
                report["per_user"] = await timed("per_user", per_user_part(pg, args))
            if "scaling" in args.parts:
                report["scaling"] = await timed("scaling", scaling_part(pg, args))
    report["loadavg_end"] = loadavg()
    return report


def csv(kind: Callable[[str], Any]) -> Callable[[str], list[Any]]:
    return lambda text: [kind(x) for x in text.split(",") if x]


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (about a minute)")
    parser.add_argument("--connections", type=int, help="clients = channels (10000)")
    parser.add_argument("--rates", type=csv(float), help="per_user events/s (2000,...,10000)")
    parser.add_argument("--seconds", type=float, help="seconds of writing per rate (8)")
    parser.add_argument("--warmup", type=float, help="seconds before the window (2)")
    parser.add_argument("--batch", type=int, default=20, help="events per transaction (20)")
    parser.add_argument("--gateways", type=int, default=2, help="gateways in per_user (2)")
    parser.add_argument("--replicas", type=int, default=0, help="replicas per master (0)")
    parser.add_argument(
        "--topologies", type=csv(str), default=["single", "cluster"], help="single,cluster"
    )
    parser.add_argument("--scale-rate", type=float, help="events/s in scaling (8000)")
    parser.add_argument("--scale-gateways", type=csv(int), default=[1, 2, 4], help="1,2,4")
    parser.add_argument("--bus-messages", type=int, help="messages each way in bus (20000)")
    parser.add_argument(
        "--parts", type=csv(str), default=["bus", "per_user", "scaling"], help="which parts"
    )
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args()
    quick = args.quick
    args.connections = args.connections or (1000 if quick else 10_000)
    args.rates = args.rates or (
        [500.0, 1000.0] if quick else [2000.0, 4000.0, 6000.0, 8000.0, 10000.0]
    )
    args.seconds = args.seconds or (4.0 if quick else 8.0)
    args.warmup = args.warmup if args.warmup is not None else (1.0 if quick else 2.0)
    args.scale_rate = args.scale_rate or (1000.0 if quick else 8000.0)
    args.bus_messages = args.bus_messages or (2000 if quick else 20_000)
    unknown = set(args.parts) - {"bus", "per_user", "scaling"}
    if unknown or set(args.topologies) - {"single", "cluster"}:
        parser.error(f"unknown part or topology: {sorted(unknown)} {args.topologies}")
    if args.warmup >= args.seconds:
        parser.error("--warmup must be shorter than --seconds")
    if shutil.which("redis-cli") is None:
        parser.error("redis-cli is needed to create the cluster")
    args.commit = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    started = time.monotonic()
    report = asyncio.run(main_async(args))
    report["total_seconds"] = round(time.monotonic() - started, 1)
    print(tables(report))
    if args.json:
        args.json.write_text(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
