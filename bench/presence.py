"""Presence and client messages across two gateways: latency, Redis memory, refresh cost.

``python -m bench.presence [--quick] [--json FILE]`` starts a private Redis on a free
port and two ``pgcast-gateway`` processes on 127.0.0.1 (no Postgres, no listener: client
messages and presence go through Redis only), opens ``--subscribers`` WebSocket
connections spread over both (a light client of its own, bench/wsframes.py, one
process), and measures:

1. client messages: one sender on gateway A publishes ``--messages`` messages at
   ``--rate``/s to a channel all connections subscribe to; latency = receipt at each
   subscriber − the send (same process, same clock), split by the subscriber's gateway
   (A: same as the sender's, B: the other one), and per message its first and last
   receipt. This one client process reads every socket in turn, on the gateways' cores:
   a late receipt includes its reading the sockets before (its CPU % is reported).
   PGCAST_CLIENT_PUBLISH_RATE is raised.
2. presence join: a connection on A sends ``track``; latency = the ``join`` frame at a
   watcher (``"presence":true``) on B (and one on A) − the send; ``--joins`` joins by a
   pool of 10 connections, each followed by an ``untrack`` (its ``leave`` awaited).
3. presence at rest: every connection tracks ``--per-conn`` of ``--channels`` channels
   (``--subscribers`` × ``--per-conn`` members, the same number on each channel). Redis
   ``used_memory`` before and after; then three idle windows of ``--window`` s: nothing
   tracked (baseline, before the tracking), tracked (the refresh each TTL/3), and tracked
   with every channel watched on both gateways (the refresh and the sweep each second).
   CPU: the gateways and the client process from /proc (schedstat: every thread, ns),
   Redis from INFO cpu; the presence script's calls and time from INFO commandstats.
   The gateways' WebSocket pings are turned off (PGCAST_WS_HEARTBEAT=3600) so that the
   connections' pings, all in step, fall in no window.

Everything is stopped by PID and removed afterwards; the shared servers are not used.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from bench.presence_joins import bench_joins
from bench.presence_messages import bench_messages
from bench.presence_rest import bench_at_rest
from bench.presence_rig import DEFAULT_TTL, log, rig

ROOT = Path(__file__).resolve().parents[1]


def table(report: dict[str, Any]) -> str:
    msg, joins, rest = report["messages"], report["joins"], report["at_rest"]
    lines = [
        f"client messages: {msg['messages']} at {msg['rate_per_s']:g}/s from gateway A to "
        f"{msg['subscribers']['A']} + {msg['subscribers']['B']} subscribers on A + B "
        f"(lost {msg['lost']}); CPU % of a core: gateways {msg['cpu_pct']['gateways']}, "
        f"Redis {msg['cpu_pct']['redis']}, this client {msg['cpu_pct']['client']}; "
        f"gateways {msg['gateway_cpu_us_per_delivery']} us/delivery",
        "| latency send -> receipt | count | p50 ms | p99 ms | max ms |",
        "|---|---|---|---|---|",
    ]
    for name, row in [
        *msg["latency_ms"].items(),
        *(("join: " + k, v) for k, v in joins["join_to_watcher_ms"].items()),
        ("track -> tracked (A)", joins["track_to_tracked_ms"]),
        ("untrack -> leave (B)", joins["untrack_to_leave_other_gateway_ms"]),
    ]:
        lines.append(
            f"| {name} | {row['count']} | {row.get('p50')} | {row.get('p99')} | {row.get('max')} |"
        )
    mem = rest["redis_used_memory"]
    lines += [
        "",
        f"presence at rest: {rest['members']} members ({rest['connections']} connections x "
        f"{rest['per_connection']} channels, {rest['channels']} channels; "
        f"{rest['members_in_redis']} in Redis), member JSON {rest['member_json_bytes']} B, "
        f"TTL {rest['ttl_s']:g} s",
        f"Redis used_memory +{mem['delta']:,} B = {mem['bytes_per_member']} B/member "
        f"(hash {rest['redis_encodings']['hash']}, zset {rest['redis_encodings']['zset']}); "
        f"tracking took {rest['track_seconds']} s, CPU us/member: gateways "
        f"{rest['track_cpu_us_per_member']['gateways']}, Redis "
        f"{rest['track_cpu_us_per_member']['redis']}",
        "| idle window | s | gateways CPU % | Redis CPU % | client CPU % | script calls "
        "| script us in Redis | other work (cores) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in rest["windows"].items():
        lines.append(
            f"| {name} | {row['seconds']} | {row['gateways_cpu_pct']} | {row['redis_cpu_pct']} "
            f"| {row['client_cpu_pct']} | {row['script_calls']} | {row['script_us_in_redis']} "
            f"| {row['other_work_cores']} |"
        )
    ref, sweep = rest["refresh"], rest["sweep"]
    lines += [
        f"refresh (tracked - baseline): gateways {ref['gateways_cpu_pct']} % of a core "
        f"({ref['gateways_us_per_member_refresh']} us/member/refresh), Redis "
        f"{ref['redis_cpu_pct']} % ({ref['redis_us_per_member_refresh']} us/member/refresh)",
        f"sweep of {sweep['watched_channels_per_gateway']} watched channels per gateway each "
        f"second (tracked_watched - tracked): gateways {sweep['gateways_cpu_pct']} %, "
        f"Redis {sweep['redis_cpu_pct']} %",
    ]
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {
        "commit": args.commit,
        "fd_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        "cpus": os.cpu_count(),
    }
    async with rig(args.ttl) as run:
        log(f"{args.subscribers} connections over gateways A and B")
        conns = await run.connect_many(args.subscribers, "u")
        log(f"client messages: {args.messages} at {args.rate:g}/s")
        report["messages"] = await bench_messages(run, conns, args.messages, args.rate)
        log(f"presence joins: {args.joins}")
        report["joins"] = await bench_joins(run, args.joins, args.join_rate)
        report["at_rest"] = await bench_at_rest(
            run, conns, args.per_conn, args.channels, args.window, args.ttl or DEFAULT_TTL
        )
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (about 20 s)")
    parser.add_argument("--subscribers", type=int, help="connections, half per gateway (1000)")
    parser.add_argument("--messages", type=int, help="client messages measured (300)")
    parser.add_argument("--rate", type=float, default=20.0, help="client messages/s (20)")
    parser.add_argument("--joins", type=int, help="presence joins measured (200)")
    parser.add_argument("--join-rate", type=float, default=20.0, help="joins/s (20)")
    parser.add_argument("--channels", type=int, default=100, help="presence channels (100)")
    parser.add_argument("--per-conn", type=int, default=10, help="channels each tracks (10)")
    parser.add_argument("--window", type=float, help="idle window seconds (20)")
    parser.add_argument(
        "--ttl", type=float, help=f"PGCAST_PRESENCE_TTL (default: the gateway's, {DEFAULT_TTL:g})"
    )
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args()
    quick = args.quick
    args.subscribers = args.subscribers or (100 if quick else 1000)
    args.messages = args.messages or (50 if quick else 300)
    args.joins = args.joins or (20 if quick else 200)
    args.window = args.window or (3.0 if quick else 20.0)
    if args.per_conn > args.channels:
        parser.error("--per-conn must not exceed --channels")
    args.commit = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    started = time.monotonic()
    try:
        import uvloop

        report = uvloop.run(main_async(args))
    except ImportError:
        report = asyncio.run(main_async(args))
    report["total_seconds"] = round(time.monotonic() - started, 1)
    print(table(report))
    if args.json:
        args.json.write_text(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
