"""The results as Markdown: runs, ratios against the ceiling and the peers, targets.

``render(document)`` is what ``python -m bench`` prints and what the README's
performance section is pasted from; ``python -m bench.report FILE`` renders a
saved results file again.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import orjson

from bench.stats import ratio
from bench.writepath import TARGETED, WAL_TARGET


def find(doc: dict[str, Any], system: str, key: str) -> dict[str, Any] | None:
    row: dict[str, Any]
    for row in doc.get("deliveries", []):
        spec = row["spec"]
        suffix = "+deflate" if spec["compression"] else ""
        if row["system"] == system and f"{spec['scenario']}/{spec['level']}{suffix}" == key:
            return row
    return None


def _offered(row: dict[str, Any]) -> float:
    spec = row["spec"]
    return float(spec["rate"] * (spec["clients"] if spec["scenario"] == "broadcast" else 1))


def delivery_table(doc: dict[str, Any]) -> list[str]:
    lines = [
        "| scenario | system | clients × procs | offered/s | delivered/s (window) |"
        " deliveries per server-process CPU-s | server-side CPU µs/delivery (run / window)"
        " | p50 ms | p99 ms | lost¹ | dup | loadgen cores |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in doc.get("deliveries", []):
        spec, lat = row["spec"], row["latency_ms"]
        suffix = " +deflate" if spec["compression"] else ""
        lines.append(
            f"| {spec['scenario']}/{spec['level']}{suffix} | {row['system']} | "
            f"{spec['clients']} × {spec['procs']} | {_offered(row):,.0f} | "
            f"{row['deliveries_per_s']:,.0f} | {row['deliveries_per_server_cpu_s']:,.0f} | "
            f"{row['run_cpu_us_per_delivery']:.2f} / {row['cpu_us_per_delivery']:.2f} | "
            f"{lat.get('p50', '-')} | {lat.get('p99', '-')} | {row['lost']} | "
            f"{row['duplicated']} | {row['loadgen_cpu_cores']:.2f}"
            f"{' (' + row['loadgen'] + ')' if row.get('loadgen') else ''} |"
        )
    return lines


def cpu_floor_ms(doc: dict[str, Any], key: str) -> float | None:
    """The least median latency these cores allow for one broadcast event, from the
    ceiling's own run: every delivery costs the server s and the load generator c µs of
    CPU, so the k-th delivery of an event completes no sooner than k × (s + c) ÷ cores
    after the event, nor before k × c ÷ loadgen processes (each reads its sockets in turn);
    the median is k = clients ÷ 2 (perfect parallelism, no database, no hop)."""
    row = find(doc, "ceiling", key)
    if row is None or row["spec"]["scenario"] != "broadcast":
        return None
    cores = int(doc.get("machine", {}).get("cores") or 1)
    loadgens = min(cores, int(row["spec"].get("loadgens") or 1))
    loadgen = row.get("loadgen_cpu_us_per_delivery")
    if loadgen is None:  # files before 2026-12-02: from the window's CPU seconds
        delivered = row["deliveries_per_s"] * row["window_s"]
        loadgen = row["cpu_s"].get("loadgen", 0.0) / delivered * 1e6 if delivered else 0.0
    server, client = float(row["cpu_us_per_delivery"]), float(loadgen)
    half = int(row["spec"]["clients"]) / 2
    return round(max(half * (server + client) / cores, half * client / loadgens) / 1000, 2)


def ratios(doc: dict[str, Any]) -> list[tuple[str, float | str | None, str, bool | None]]:
    """(what, value, target, met) for every ratio the issue names."""

    def metric(system: str, key: str, field: str) -> float | None:
        row = find(doc, system, key)
        return None if row is None else float(row[field])

    def check(value: float | None, ok: bool) -> bool | None:
        return None if value is None else ok

    sat, fan = "broadcast/saturation", "broadcast/fanout-5k"
    cpu, per_core = "run_cpu_us_per_delivery", "deliveries_per_server_cpu_s"
    out: list[tuple[str, float | str | None, str, bool | None]] = []
    r = ratio(metric("pgcast", fan, per_core), metric("ceiling", fan, per_core))
    label = "pgcast ÷ ceiling, deliveries per server-process CPU-s, 5,000 connections"
    out.append((label, r, "≥ 0.8", check(r, (r or 0) >= 0.8)))
    r = ratio(metric("pgcast", fan, "deliveries_per_s"), metric("ceiling", fan, "deliveries_per_s"))
    out.append(("pgcast ÷ ceiling, delivered/s at the clients, 5,000 connections", r, "-", None))
    r = ratio(metric("pgcast", sat, per_core), metric("ceiling", sat, per_core))
    label = "pgcast ÷ ceiling, deliveries per server-process CPU-s, 1,000 connections"
    out.append((label, r, "-", None))
    r = ratio(metric("pgcast", sat, cpu), metric("python-socketio", sat, cpu))
    out.append(
        (
            "pgcast ÷ python-socketio, server-side CPU µs/delivery",
            r,
            "≤ 0.333",
            check(r, (r or 9) <= 1 / 3),
        )
    )
    r = ratio(metric("pgcast", sat, cpu), metric("node-socketio", sat, cpu))
    out.append(
        ("pgcast ÷ Node Socket.IO, server-side CPU µs/delivery", r, "≤ 1", check(r, (r or 9) <= 1))
    )
    mod = "broadcast/moderate"
    r = ratio(metric("pgcast", mod + "+deflate", cpu), metric("pgcast", mod, cpu))
    out.append(
        ("pgcast compression on ÷ off, CPU µs/delivery (moderate)", r, "(off by default)", None)
    )
    on, off = find(doc, "pgcast", mod + "+deflate"), find(doc, "pgcast", mod)
    if on and off:
        clients = on["spec"]["clients"]
        grow = [(row["rss_kib"]["busy"] - row["rss_kib"]["idle"]) / clients for row in (on, off)]
        label = "pgcast compression on / off: gateway RSS growth per connection, KiB"
        out.append((label, f"{grow[0]:.1f} / {grow[1]:.1f}", "(off by default)", None))
    return out


def latency_targets(doc: dict[str, Any]) -> list[tuple[str, float | str | None, str, bool | None]]:
    out: list[tuple[str, float | str | None, str, bool | None]] = []
    for key in ("broadcast/moderate", "per_user/moderate"):
        row = find(doc, "pgcast", key)
        lat = row["latency_ms"] if row else {}
        for p, limit in (("p50", 3.0), ("p99", 15.0)):
            value = lat.get(p)
            out.append(
                (
                    f"pgcast {key} latency {p} (ms)",
                    value,
                    f"≤ {limit:g}",
                    None if value is None else value <= limit,
                )
            )
        floor = cpu_floor_ms(doc, key)
        if floor is not None:
            what = f"{key} p50 floor: any server, clients on the same cores (ms, CPU bound)"
            out.append((what, floor, "≤ 3 for the target to be reachable", floor <= 3.0))
    return out


def other_targets(doc: dict[str, Any]) -> list[tuple[str, float | str | None, str, bool | None]]:
    out: list[tuple[str, float | str | None, str, bool | None]] = []
    idle = doc.get("idle") or []
    for row in [idle] if isinstance(idle, dict) else idle:  # older files hold one dict
        v = row["rss_per_connection_kib"]
        mode = row.get("mode", "per_user")
        what = f"RSS KiB per idle subscribed connection ({row['clients']:,}, {mode})"
        out.append((what, v, "≤ 20", v <= 20))
    for fo in doc.get("failover", []):
        v = fo["first_new_event_s"]
        label = f"failover s ({fo['listener_env'] or 'defaults'}), lost {fo['lost']}"
        out.append((label, v, "≤ 1, 0 lost", None if v is None else v <= 1 and fo["lost"] == 0))
    wp = doc.get("writepath")
    if wp:
        for row in wp["variants"][1:]:
            v = row["ratio_vs_plain"]
            targeted = row["variant"] in TARGETED
            rounds = wp.get("rounds")
            over = f", median of {rounds} rounds" if rounds and rounds > 1 else ""
            what = f"pgbench TPS {row['variant']} ÷ plain ({wp['clients']} clients{over})"
            if row["variant"] == "pgcast-wal":
                out.append((what, v, f"≥ {WAL_TARGET}", v >= WAL_TARGET))
                continue
            out.append((what, v, "≥ 0.75" if targeted else "-", v >= 0.75 if targeted else None))
    return out


def render(doc: dict[str, Any]) -> str:
    m = doc.get("machine", {})
    lines = [
        f"Command: `{doc.get('command')}` — {doc.get('date')} — {m.get('cores')} × {m.get('cpu')},"
        f" {m.get('memory_gib')} GiB, Linux {m.get('kernel')}, Python {m.get('python')}"
        f" — load average at end {doc.get('loadavg_end')}",
        "",
        *delivery_table(doc),
        "",
        "¹ at saturation: events not yet delivered when the run stopped (backlog), not dropped.",
        "",
        "| measure | value | target | met |",
        "|---|---|---|---|",
    ]
    for what, value, target, met in ratios(doc) + latency_targets(doc) + other_targets(doc):
        mark = "-" if met is None else ("yes" if met else "**no**")
        lines.append(f"| {what} | {'n/a' if value is None else value} | {target} | {mark} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(render(orjson.loads(Path(sys.argv[1]).read_bytes())))
