"""bench/cluster.py's parts 1 and 2: per-user delivery at each rate and gateway scaling."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from typing import Any

from bench.cluster_load import LoadGen, drain, write_events
from bench.cluster_measure import snapshot, window_figures
from bench.cluster_rig import Rig, log, reset_tables, rig
from bench.procs import loadavg, rss_kib
from bench.stats import percentiles
from tests.servers import PgInstance


async def one_rate(
    run: Rig, connections: int, rate: float, seconds: float, warmup: float, batch: int
) -> dict[str, Any]:
    """A fresh load generator on the running gateways, events at ``rate`` for ``seconds``."""
    await reset_tables(run.dsn)
    rss_before = sum(rss_kib(proc.pid) for proc, _ in run.gateways)
    gen = LoadGen(run, connections)
    try:
        ready = await asyncio.to_thread(gen.ready)
        if ready.get("subscribed") != connections:
            raise RuntimeError(f"{ready.get('subscribed')} of {connections} subscribed: {ready}")
        rss_idle = sum(rss_kib(proc.pid) for proc, _ in run.gateways)
        load = loadavg()
        start = await snapshot(run, gen)
        writing = asyncio.create_task(write_events(run.dsn, rate, seconds, connections, batch))
        try:
            await asyncio.sleep(warmup)
            await gen.ask("window")
            w0 = await snapshot(run, gen)
            await asyncio.sleep(max(0.5, seconds - warmup - 0.5))
            w1 = await snapshot(run, gen)
            rss_busy = sum(rss_kib(proc.pid) for proc, _ in run.gateways)
            written = await writing
        finally:
            if not writing.done():
                writing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await writing
        at_end = await gen.deliveries()
        drained_in = await drain(gen, written.total, limit=max(15.0, seconds * 2))
        end = await snapshot(run, gen)
        memory = await run.redis.used_memory()
        names = [f"user:{i}" for i in range(connections)]
        report = await gen.ask("report", 120, expected=written.expected(names))
    finally:
        gen.proc.stop()
    window = window_figures(run, w0, w1)
    whole = window_figures(run, start, end)
    return {
        "topology": run.redis.name,
        "gateways": len(run.gateways),
        "connections": connections,
        "rate": rate,
        "written": written.total,
        "write_failed": sum(written.failed.values()),
        "write_rate": round(written.total / max(written.seconds, written.total / rate, 1e-9)),
        "loadavg_before": load,
        "window": window,
        "whole_run": {
            k: whole[k]
            for k in ("seconds", "deliveries", "server_cpu_us_per_delivery", "cpu_us_per_delivery")
        },
        "backlog_at_write_end": written.total - at_end,
        "drain_s": round(drained_in, 2),
        "delivered": report["deliveries"],
        "lost": report["lost"],
        "duplicated": report["duplicated"],
        "latency_ms": percentiles([x * 1000 for x in report["latencies"]]),
        "gateway_rss_kib": {"before": rss_before, "connected": rss_idle, "busy": rss_busy},
        "redis_used_memory": memory,
        "loadgen": gen.kind,
    }


async def per_user_part(pg: PgInstance, args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for topology in args.topologies:
        async with rig(pg, topology, args.replicas) as run:
            await asyncio.to_thread(run.start_gateways, args.gateways)
            for rate in args.rates:
                log(f"per_user: {topology}, {args.gateways} gateways, {rate:g} events/s")
                row = await one_rate(
                    run, args.connections, rate, args.seconds, args.warmup, args.batch
                )
                log(summary_line(row))
                rows.append(row)
    return rows


async def scaling_part(pg: PgInstance, args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    async with rig(pg, "cluster", args.replicas) as run:
        for count in args.scale_gateways:
            await asyncio.to_thread(run.start_gateways, count)
            log(f"scaling: cluster, {count} gateways, {args.scale_rate:g} events/s")
            row = await one_rate(
                run, args.connections, args.scale_rate, args.seconds, args.warmup, args.batch
            )
            log(summary_line(row))
            rows.append(row)
    return rows


def summary_line(row: dict[str, Any]) -> str:
    w = row["window"]
    return (
        f"{row['topology']} x{row['gateways']} @ {row['rate']:g}/s: wrote {row['write_rate']}/s, "
        f"delivered {w['deliveries_per_s']}/s, server {w['server_cpu_cores']} cores "
        f"({w['server_cpu_us_per_delivery']} us/delivery), backlog {row['backlog_at_write_end']}"
        f", lost {row['lost']}, dup {row['duplicated']}, p50 {row['latency_ms'].get('p50')} ms"
        f", other work {w['other_work_cores']} cores (irq {w['irq_cores']}, visible processes "
        f"{w['other_processes_cores']})"
    )
