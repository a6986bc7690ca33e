"""Smoke test of the benchmark suite: its quick pgcast broadcast run works end to end.

Runs ``python -m bench --quick`` for one pgcast scenario on its own private
Postgres and Redis and checks what must hold whatever the machine's speed:
every client subscribed, every committed event delivered to every client
exactly once. No timing is asserted (numbers come from ``make bench``). It runs
the Python load generator; tests/integration/test_bench_native_loadgen.py runs
the native one (the default) the same way.
"""

from __future__ import annotations

from pathlib import Path

import orjson

from tests.integration.bench_support import run_bench


def test_quick_pgcast_broadcast_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    """The quick broadcast run delivers every event once to each of its clients."""
    out = tmp_path / "results.json"
    argv = ["--quick", "--systems", "pgcast", "--scenarios", "broadcast/moderate"]
    argv += ["--loadgen", "python", "--quiet-wait", "0", "--out", str(out)]
    done = run_bench("bench", argv, timeout=100)
    document = orjson.loads(out.read_bytes())
    [row] = document["deliveries"]
    assert row["system"] == "pgcast"
    assert row["loadgen"] == "python"
    clients = row["spec"]["clients"]
    assert row["subscribed"] == clients
    assert row["events_written"] > 0
    assert row["lost"] == 0
    assert row["duplicated"] == 0
    assert row["delivered_total"] == row["events_written"] * clients
    assert "| broadcast/moderate | pgcast |" in done.stdout


def test_quick_write_path_runs_every_variant_against_plain(tmp_path: Path) -> None:
    """``python -m bench --scenarios writepath``: every variant ran pgbench (through
    bench.pipeline_writepath) and is reported against plain in its own round, with the
    CPU of the listener for the pgcast variants that run one."""
    out = tmp_path / "results.json"
    argv = ["--quick", "--systems", "pgcast", "--scenarios", "writepath"]
    argv += ["--quiet-wait", "0", "--out", str(out)]
    done = run_bench("bench", argv, timeout=240)
    rows = {row["variant"]: row for row in orjson.loads(out.read_bytes())["writepath"]["variants"]}
    assert list(rows) == [
        "plain",
        "pgcast-auto",
        "pgcast-always-notify",
        "pgcast-poll",
        "pgcast-watch-auto",
        "pgcast-wal",
        "classic",
    ]
    assert all(row["tps"] > 0 for row in rows.values())
    assert rows["plain"]["ratio_vs_plain"] == 1.0
    assert (
        rows["pgcast-watch-auto"]["ratio_vs_plain"] == rows["pgcast-watch-auto"]["ratio_rounds"][0]
    )
    assert rows["pgcast-watch-auto"]["cpu_us_per_txn"]["listener"] > 0
    assert rows["pgcast-wal"]["cpu_us_per_txn"]["listener"] > 0
    assert rows["pgcast-wal"]["cpu_us_per_txn"]["pg_walsender"] > 0
    assert "| pgbench TPS pgcast-watch-auto ÷ plain (16 clients) |" in done.stdout
