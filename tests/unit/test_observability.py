"""deploy/observability/, offline: the dashboard and alert rules name only metrics the code
exports, the rules are well-formed Prometheus rule groups, and the multiprocess hooks work."""

from __future__ import annotations

import json
import re
import runpy
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
import yaml
from prometheus_client import CollectorRegistry

from gateway import metrics as gateway_metrics
from gateway.control import ControlFeed
from gateway.history import History
from gateway.hub import Hub, HubOptions
from gateway.metrics import Metrics
from gateway.presence import Presence
from gateway.presence_store import PresenceStore
from gateway.sessions import Sessions
from gateway.topology import Topology
from listener.metrics import ListenerMetrics
from pgcast.keys import Layout
from pgcast.redis_url import parse_redis_url
from pgcast.settings import ConfigError
from tests.gateway_support import settings

ROOT = Path(__file__).resolve().parents[2]
OBSERVABILITY = ROOT / "deploy" / "observability"
DASHBOARD = OBSERVABILITY / "grafana-dashboard.json"
ALERTS = OBSERVABILITY / "alerts.yml"
ALERT_CASES = ROOT / "tests" / "data" / "alerts_test.yml"
DOC = ROOT / "docs" / "observability.md"
# Labels Prometheus adds at scrape time, and the histogram bucket bound.
TARGET_LABELS = {"instance", "job", "le"}
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
}
METRIC = re.compile(r"\bpgcast_[a-z0-9_]+")
SELECTOR = re.compile(r"\b(pgcast_[a-z0-9_]+)\{([^}]*)\}")
MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")


def _series(registry: CollectorRegistry, objects: Iterator[Any]) -> dict[str, set[str]]:
    """Series names a registry exposes (with the suffixes of their type) -> label names."""
    labels: dict[str, set[str]] = {}
    for obj in objects:  # label names are known before any child exists
        if hasattr(obj, "_labelnames") and hasattr(obj, "_name"):
            labels[obj._name] = set(obj._labelnames)
    found: dict[str, set[str]] = {}
    for family in registry.collect():
        for suffix in SUFFIXES[family.type]:
            found[family.name + suffix] = labels.get(family.name, set())
    return found


async def exported_series() -> dict[str, set[str]]:
    """Every series the listener and a fully wired gateway process can expose."""
    listener = ListenerMetrics()
    gateway = Metrics()
    redis = aioredis.Redis()  # never connected: the hub only registers its gauges here
    sessions = Sessions(settings("redis://127.0.0.1:1"), gateway)
    layout = Layout()
    control = ControlFeed(redis, sessions.apply, layout)
    hub = Hub(
        HubOptions("test"),
        redis,
        History(redis, 60, layout),
        gateway,
        control,
        Topology(parse_redis_url("redis://127.0.0.1:1"), layout, redis),
    )
    Presence(PresenceStore(redis, 10.0, 100, layout), hub, gateway, 10.0)
    await redis.aclose()
    return {
        **_series(listener.registry, iter(vars(listener).values())),
        **_series(gateway.registry, iter(vars(gateway).values())),
    }


def dashboard_exprs() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in board["panels"] for t in p.get("targets", [])]


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def check_names(exprs: list[str], series: dict[str, set[str]]) -> None:
    for expr in exprs:
        named = set(METRIC.findall(expr))
        assert named, f"no pgcast metric in {expr!r}"
        assert named <= set(series), f"{sorted(named - set(series))} not exported: {expr!r}"
        for name, matchers in SELECTOR.findall(expr):
            used = set(MATCHER.findall(matchers))
            assert used <= series[name] | TARGET_LABELS, f"{name} has no label {used}: {expr!r}"
        known = set().union(*(series[n] for n in named)) | TARGET_LABELS
        for grouping in GROUPING.findall(expr):
            used = {label.strip() for label in grouping.split(",") if label.strip()}
            assert used <= known, f"labels {sorted(used - known)} on no metric of {expr!r}"


async def test_exported_series_include_suffixes_and_scrape_time_gauges() -> None:
    """The inventory sees counters as _total, histograms as _bucket, and computed gauges."""
    series = await exported_series()
    assert series["pgcast_listener_role"] == {"role"}
    assert "pgcast_listener_redis_history_lost_total" in series
    assert "pgcast_listener_publish_batch_seconds_bucket" in series
    assert series["pgcast_gateway_auth_failures_total"] == {"reason"}
    for gauge in ("connections", "subscriptions", "channels", "ready"):
        assert f"pgcast_gateway_{gauge}" in series
    assert "pgcast_gateway_messages_out_total" in series


async def test_dashboard_names_only_exported_metrics() -> None:
    """Every query of the dashboard names metrics and labels the code exports."""
    exprs = dashboard_exprs()
    assert len(exprs) >= 20
    check_names(exprs, await exported_series())


async def test_alert_rules_name_only_exported_metrics() -> None:
    """Every alert expression names metrics and labels the code exports."""
    check_names([rule["expr"] for rule in alert_rules()], await exported_series())


def test_dashboard_uses_a_prometheus_datasource_variable() -> None:
    """Import picks the Prometheus: every panel and query uses ${datasource}; ids unique."""
    board = json.loads(DASHBOARD.read_text())
    (var,) = [v for v in board["templating"]["list"] if v["type"] == "datasource"]
    assert (var["name"], var["query"]) == ("datasource", "prometheus")
    panels = [p for p in board["panels"] if p["type"] != "row"]
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert all(t["datasource"] == panel["datasource"] for t in panel["targets"])
        grid = panel["gridPos"]
        assert grid["x"] >= 0
        assert grid["x"] + grid["w"] <= 24
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    assert "__inputs" not in board  # nothing to map by hand on import


def test_rules_are_prometheus_rule_groups() -> None:
    """alerts.yml has the rule-file shape: named groups of alerts with severity and help."""
    doc = yaml.safe_load(ALERTS.read_text())
    assert set(doc) == {"groups"}
    names = [group["name"] for group in doc["groups"]]
    assert len(names) == len(set(names))
    for group in doc["groups"]:
        assert set(group) <= {"name", "interval", "rules", "limit"}
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
            assert re.fullmatch(r"Pgcast[A-Za-z]+", rule["alert"])
            assert isinstance(rule["expr"], str)
            assert re.fullmatch(r"\d+[smh]", rule.get("for", "0s"))
            assert rule["labels"]["severity"] in {"critical", "warning"}
            assert {"summary", "description"} <= set(rule["annotations"])


def test_the_issue_alerts_exist_and_are_documented() -> None:
    """The alerts the operations issue asks for exist, each has promtool cases and a doc
    section in docs/observability.md."""
    alerts = {rule["alert"] for rule in alert_rules()}
    assert alerts >= {
        "PgcastLeaderMissing",
        "PgcastPublishLagHigh",
        "PgcastOutboxGrowing",
        "PgcastGatewayNotReady",
        "PgcastSlowConsumerCloses",
        "PgcastAuthFailuresSpike",
        "PgcastRedisReplicasShort",
        "PgcastRedisHistoryLost",
    }
    cases = yaml.safe_load(ALERT_CASES.read_text())
    tested = {t["alertname"] for case in cases["tests"] for t in case["alert_rule_test"]}
    assert tested == alerts
    doc = DOC.read_text()
    for alert in alerts:
        assert f"### {alert}" in doc, alert


async def test_doc_names_only_exported_metrics() -> None:
    """Every metric name docs/observability.md mentions is one the code exports."""
    named = set(METRIC.findall(DOC.read_text()))
    assert named
    assert named <= set(await exported_series())


def test_doc_links_point_at_files() -> None:
    """docs/observability.md links only to files that exist, by relative path."""
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", DOC.read_text()):
        assert not target.startswith(("http://", "https://", "/")), target
        assert (DOC.parent / target).exists(), target


def test_promtool_checks_and_runs_the_rule_cases() -> None:
    """`promtool check rules` and `promtool test rules` pass.

    promtool comes from Debian's `prometheus` package, which `make test` installs
    (install-observability-tools); missing, this test fails with the command to run.
    """
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail(
            "promtool is missing: run `make install-observability-tools`"
            " (apt-get install prometheus)"
        )
    for args in (["check", "rules", str(ALERTS)], ["test", "rules", str(ALERT_CASES)]):
        done = subprocess.run(
            [promtool, *args], capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 0, done.stdout + done.stderr


def test_multiprocess_dir_must_be_a_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """PROMETHEUS_MULTIPROC_DIR unset: single process; missing dir or set after
    prometheus_client chose in-memory values: a ConfigError (exit 2), not a crash later."""
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    assert gateway_metrics.multiprocess_dir() is None
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "absent"))
    with pytest.raises(ConfigError, match="not a directory"):
        gateway_metrics.multiprocess_dir()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    with pytest.raises(ConfigError, match="after prometheus_client was imported"):
        gateway_metrics.multiprocess_dir()


class _Worker:
    pid = 4242


def test_gunicorn_hooks_empty_the_dir_and_drop_dead_workers(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """on_starting creates and empties the directory; child_exit removes a dead worker's
    live gauges and keeps its counters."""
    metrics_dir = tmp_path / "metrics"
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(metrics_dir))
    conf = runpy.run_path(str(ROOT / "deploy" / "gunicorn_conf.py"))
    conf["on_starting"](None)
    assert metrics_dir.is_dir()
    (metrics_dir / "counter_1.db").write_bytes(b"stale")
    conf["on_starting"](None)
    assert list(metrics_dir.iterdir()) == []
    for name in ("counter_4242.db", "gauge_livesum_4242.db", "gauge_livemin_4242.db"):
        (metrics_dir / name).write_bytes(b"")
    conf["child_exit"](None, _Worker())
    assert [p.name for p in metrics_dir.iterdir()] == ["counter_4242.db"]
