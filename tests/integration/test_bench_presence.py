"""Smoke test of ``python -m bench.presence``: every part once, at tiny sizes.

Two real gateway processes on a private Redis, 20 connections, 10 client messages, 5
presence joins, 40 members on 4 channels and three 1 s idle windows (TTL 1 s, so a
refresh falls in each). What must hold whatever the machine's speed: every message
reaches every subscriber, every join and member is seen, and the report has its
numbers. No timing is asserted.
"""

from __future__ import annotations

from pathlib import Path

import orjson

from tests.integration.bench_support import run_bench


def test_tiny_run_reports_latencies_memory_and_cpu(tmp_path: Path) -> None:
    out = tmp_path / "presence.json"
    argv = ["--subscribers", "20", "--messages", "10", "--rate", "50", "--joins", "5"]
    argv += ["--channels", "4", "--per-conn", "2", "--window", "1", "--ttl", "1"]
    done = run_bench("bench.presence", [*argv, "--json", str(out)], timeout=120)
    report = orjson.loads(out.read_bytes())

    msg = report["messages"]
    assert msg["subscribers"] == {"A": 10, "B": 10}
    assert msg["lost"] == 0
    assert msg["acknowledged"] == msg["messages"] + msg["warmup_messages"]
    for side in ("same_gateway", "other_gateway"):
        assert msg["latency_ms"][side]["count"] == 10 * msg["messages"]
        assert msg["latency_ms"][side]["p99"] >= msg["latency_ms"][side]["p50"] > 0

    joins = report["joins"]
    for side in ("same_gateway", "other_gateway"):
        assert joins["join_to_watcher_ms"][side]["count"] == 5
        assert joins["join_to_watcher_ms"][side]["p50"] > 0

    rest = report["at_rest"]
    assert rest["members"] == rest["members_in_redis"] == 40
    assert rest["redis_used_memory"]["delta"] > 0
    windows = rest["windows"]
    assert set(windows) == {"baseline", "tracked", "tracked_watched"}
    assert windows["baseline"]["script_calls"] == 0  # nothing tracked, nothing watched
    assert windows["tracked"]["script_calls"] > 0  # the refresh ran
    assert windows["tracked_watched"]["script_calls"] > windows["tracked"]["script_calls"]
    for key in ("gateways_us_per_member_refresh", "redis_us_per_member_refresh"):
        assert isinstance(rest["refresh"][key], float)
    assert "| other_gateway | 100 |" in done.stdout
    assert "B/member" in done.stdout
