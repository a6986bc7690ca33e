"""The gateway's Prometheus metrics, in one registry per app (no global state).

Rare events (auth failures, closes, limit breaches, reconnects, resumes) are
prometheus-client counters. Per-message counts live in :class:`HotStats` as
plain integers, bumped on the fan-out path for a few nanoseconds each and
turned into counters only when /metrics is scraped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

PREFIX = "pgcast_gateway_"


class HotStats:
    """Counters of the hot path: plain ints, read at scrape time."""

    __slots__ = ("bad_payloads", "messages_in", "messages_out")

    def __init__(self) -> None:
        self.messages_in = 0
        self.messages_out = 0
        self.bad_payloads = 0


class _HotCollector(Collector):
    def __init__(self, stats: HotStats, gauges: dict[str, tuple[str, Callable[[], float]]]) -> None:
        self.stats = stats
        self.gauges = gauges

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        s = self.stats
        yield CounterMetricFamily(
            PREFIX + "messages_in", "Messages received from Redis pub/sub", value=s.messages_in
        )
        yield CounterMetricFamily(
            PREFIX + "messages_out",
            "Messages written to clients (one per client per message)",
            value=s.messages_out,
        )
        yield CounterMetricFamily(
            PREFIX + "bad_payloads", "Malformed pub/sub payloads dropped", value=s.bad_payloads
        )
        for name, (doc, read) in self.gauges.items():
            yield GaugeMetricFamily(PREFIX + name, doc, value=read())


class Metrics:
    """Every metric of one gateway process."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.hot = HotStats()
        self._gauges: dict[str, tuple[str, Callable[[], float]]] = {}
        self.registry.register(_HotCollector(self.hot, self._gauges))
        r = self.registry
        self.connections_total = Counter(
            PREFIX + "connections_opened", "Connections accepted", ["transport"], registry=r
        )
        self.auth_failures = Counter(
            PREFIX + "auth_failures", "Handshakes refused, by reason", ["reason"], registry=r
        )
        self.closes = Counter(
            PREFIX + "closes", "Connections closed by the gateway, by code", ["code"], registry=r
        )
        self.slow_consumer_closes = Counter(
            PREFIX + "slow_consumer_closes", "Connections closed 4008 (send queue full)", registry=r
        )
        self.limit_breaches = Counter(
            PREFIX + "limit_breaches", "Limit breaches, by limit", ["limit"], registry=r
        )
        self.resumes = Counter(
            PREFIX + "resumes", "Resume attempts, by outcome", ["recovered"], registry=r
        )
        self.resyncs = Counter(
            PREFIX + "resyncs",
            "Unsolicited recovered:false sent to live subscribers (continuity lost)",
            registry=r,
        )
        self.redis_reconnects = Counter(
            PREFIX + "redis_reconnects", "Pub/sub connections re-established", registry=r
        )
        self.heartbeat_stale = Counter(
            PREFIX + "redis_heartbeat_stale",
            "Pub/sub links dropped for a stale heartbeat",
            registry=r,
        )
        self.request_errors = Counter(
            PREFIX + "request_errors", "Error frames sent, by code", ["code"], registry=r
        )
        self.ready = Gauge(PREFIX + "ready", "1 when /readyz answers 200", registry=r)

    def gauge(self, name: str, doc: str, read: Callable[[], float]) -> None:
        """A gauge computed at scrape time (connections, subscriptions, channels)."""
        self._gauges[name] = (doc, read)
