"""Smoke test of ``python -m bench.redis_durability``: one drain run end to end.

The smallest piece of the benchmark (one round, today's listener on one Redis, a
200-event backlog on one channel, no subscriber measurement) on its own private
durable Postgres and Redis. What must hold whatever the machine's speed: every
queued event reaches Redis, the watermark is written, and a rate is reported. No
timing is asserted.
"""

from __future__ import annotations

from pathlib import Path

import orjson

from tests.integration.bench_support import run_bench


def test_one_drain_run_reports_a_rate(tmp_path: Path) -> None:
    out = tmp_path / "redis_durability.json"
    argv = ["--events", "200", "--rounds", "1", "--variants", "watermark", "--shapes", "one"]
    done = run_bench(
        "bench.redis_durability", [*argv, "--skip-subscribe", "--json", str(out)], timeout=120
    )
    report = orjson.loads(out.read_bytes())
    [run] = report["drain"]["runs"]
    assert run["variant"] == "watermark"
    assert run["events"] == 200
    assert run["watermark_rows"] == 1
    assert report["drain"]["summary"]["one"]["watermark"]["events_per_s"] > 0
    assert "| watermark | one |" in done.stdout
