"""Smoke test of ``python -m bench.pipeline``: drain, latency and write path end to end.

A short run (``--quick``, 8 pgbench clients, one latency level, two write-path variants)
on its own private durable Postgres and Redis. What must hold whatever the machine's
speed: the drain publishes every queued event, the latency run sees every event it
wrote arrive, and the write path reports both variants with a ratio to plain. No timing
is asserted.
"""

from __future__ import annotations

from pathlib import Path

import orjson

from tests.integration.bench_support import run_bench


def test_quick_pipeline_run_reports_every_part(tmp_path: Path) -> None:
    out = tmp_path / "pipeline.json"
    argv = ["--quick", "--clients", "8", "--latency", "auto:50", "--variants", "plain,watch"]
    done = run_bench("bench.pipeline", [*argv, "--json", str(out)], timeout=240)
    report = orjson.loads(out.read_bytes())
    assert report["drain"]["events"] == 20_000
    assert report["drain"]["events_per_s"] > 0
    [latency] = report["latency"]
    assert latency["mode"] == "auto"
    assert latency["events"] > 0
    assert 0 < latency["p50_ms"] <= latency["p99_ms"]
    writepath = report["writepath"]
    assert writepath["plain"]["tps"][0] > 0
    assert writepath["watch"]["tps"][0] > 0
    assert len(writepath["watch"]["ratio"]) == 1
    assert writepath["watch"]["runs"][0]["cpu_us_per_txn"]["listener"] > 0
    assert "| watch |" in done.stderr
