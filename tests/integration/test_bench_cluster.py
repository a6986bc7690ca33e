"""Smoke test of ``python -m bench.cluster``: every part once, at tiny sizes.

A private durable Postgres, one Redis and then a 3-master Redis Cluster, the real
listener and gateways, 50 per-user connections, one rate for 1 s; the gateway scaling
at 1 process; 300 PUBLISH and 300 SPUBLISH on a 6-node cluster. What must hold
whatever the machine's speed: every event written reaches its one subscriber once, CPU
and bus counters are read from every node, and SPUBLISH crosses the bus less than
PUBLISH (a classic PUBLISH goes to every other node, a sharded one only to the shard's
replica). No timing is asserted.
"""

from __future__ import annotations

from pathlib import Path

import orjson

from tests.integration.bench_support import run_bench


def test_tiny_run_reports_every_part(tmp_path: Path) -> None:
    out = tmp_path / "cluster.json"
    argv = ["--connections", "50", "--rates", "100", "--seconds", "1", "--warmup", "0.3"]
    argv += ["--scale-rate", "100", "--scale-gateways", "1", "--bus-messages", "300"]
    done = run_bench("bench.cluster", [*argv, "--json", str(out)], timeout=240)
    report = orjson.loads(out.read_bytes())

    rows = report["per_user"] + report["scaling"]
    assert [(r["topology"], r["gateways"]) for r in rows] == [
        ("single", 2),
        ("cluster", 2),
        ("cluster", 1),
    ]
    for row in rows:
        assert row["written"] == 100
        assert row["write_failed"] == 0
        assert row["delivered"] == row["written"]
        assert row["lost"] == 0
        assert row["duplicated"] == 0
        window = row["window"]
        assert window["deliveries"] > 0
        assert set(window["cpu_cores"]) >= {"listener", "gateways", "postgres", "redis"}
        roles = [node["role"] for node in window["redis_nodes"]]
        assert roles == (["single"] if row["topology"] == "single" else ["master"] * 3)
        if row["topology"] == "cluster":
            assert all("bus_sent" in node for node in window["redis_nodes"])

    bus = report["bus"]
    assert bus["order"] == ["publish", "spublish", "publish_again"]
    assert [n["role"] for n in bus["nodes"]] == ["master"] * 3 + ["replica"] * 3
    publish, spublish = bus["publish"], bus["spublish"]
    assert sum(n["publish_sent"] for n in publish["nodes"]) >= 5 * 300
    assert sum(n["publishshard_sent"] for n in spublish["nodes"]) >= 300
    assert sum(n["publish_sent"] for n in spublish["nodes"]) == 0
    assert spublish["bus_sent_per_message"] < publish["bus_sent_per_message"]
    assert "| spublish |" in done.stdout
    assert "| cluster | 2 | 100 |" in done.stdout
