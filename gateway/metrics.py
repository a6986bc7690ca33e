"""The gateway's Prometheus metrics, in one registry per app (no global state).

Rare events (auth failures, closes, limit breaches, reconnects, resumes) are
prometheus-client counters. Per-message counts live in :class:`HotStats` as
plain integers, bumped on the fan-out path for a few nanoseconds each and
turned into counters only when /metrics is scraped.

Under gunicorn with ``PROMETHEUS_MULTIPROC_DIR`` set, prometheus-client keeps every
value in a per-process file there, and :meth:`Metrics.render` merges the files of all
workers: any worker's /metrics shows the sum. Values computed at scrape time (the hot
counters, connections, readiness) are copied into those files by :meth:`Metrics.run`
every :data:`SYNC_SECONDS`, since a worker cannot compute another's.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest, values
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from pgcast.settings import ConfigError

log = logging.getLogger(__name__)

PREFIX = "pgcast_gateway_"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
SYNC_SECONDS = 1.0  # how stale another worker's gauges may be in a merged scrape
HOT_COUNTERS = {
    "messages_in": "Messages received from Redis pub/sub",
    "messages_out": "Messages written to clients (one per client per message)",
    "bad_payloads": "Malformed pub/sub payloads dropped",
    "ephemeral_in": "Client messages and presence announcements received from Redis pub/sub",
}


def multiprocess_dir() -> str | None:
    """``PROMETHEUS_MULTIPROC_DIR`` when set (multiprocess mode), else None.

    prometheus-client reads the same variable once, when first imported, to choose
    file-backed values; a directory that is missing, or set too late, is a ConfigError.
    """
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not path:
        return None
    if not os.path.isdir(path):
        raise ConfigError(f"{MULTIPROC_ENV}={path} is not a directory")
    if not getattr(values.ValueClass, "_multiprocess", False):
        raise ConfigError(f"{MULTIPROC_ENV} was set after prometheus_client was imported")
    return path


class HotStats:
    """Counters of the hot path: plain ints, read at scrape time."""

    __slots__ = ("bad_payloads", "ephemeral_in", "messages_in", "messages_out")

    def __init__(self) -> None:
        self.ephemeral_in = 0
        self.messages_in = 0
        self.messages_out = 0
        self.bad_payloads = 0


class _HotCollector(Collector):
    def __init__(self, stats: HotStats, gauges: dict[str, tuple[str, Callable[[], float]]]) -> None:
        self.stats = stats
        self.gauges = gauges

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        for name, doc in HOT_COUNTERS.items():
            yield CounterMetricFamily(PREFIX + name, doc, value=getattr(self.stats, name))
        for name, (doc, read) in self.gauges.items():
            yield GaugeMetricFamily(PREFIX + name, doc, value=read())


class _SharedValues:
    """Multiprocess mode: the scrape-time values of this worker, written to its files."""

    def __init__(self, stats: HotStats) -> None:
        self.stats = stats
        # Counters only grow: each sync adds what the plain ints gained since the last.
        self.counters = {
            name: Counter(PREFIX + name, doc, registry=None) for name, doc in HOT_COUNTERS.items()
        }
        self.synced = dict.fromkeys(HOT_COUNTERS, 0)
        self.gauges: list[tuple[Gauge, Callable[[], float]]] = []

    def add_gauge(self, name: str, doc: str, read: Callable[[], float]) -> None:
        # livesum: a dead worker's connections are gone (gunicorn's child_exit removes its file).
        gauge = Gauge(PREFIX + name, doc, multiprocess_mode="livesum", registry=None)
        self.gauges.append((gauge, read))

    def sync(self) -> None:
        for name, counter in self.counters.items():
            value = getattr(self.stats, name)
            if value > self.synced[name]:
                counter.inc(value - self.synced[name])
                self.synced[name] = value
        for gauge, read in self.gauges:
            gauge.set(read())


class Metrics:
    """Every metric of one gateway process; ``multiprocess`` merges the workers' files."""

    def __init__(self, multiprocess: str | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.hot = HotStats()
        self.multiprocess = multiprocess
        self._shared = _SharedValues(self.hot) if multiprocess else None
        self._gauges: dict[str, tuple[str, Callable[[], float]]] = {}
        self._is_ready: Callable[[], bool] | None = None
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
        self.client_messages = Counter(
            PREFIX + "client_messages", "Client messages (publish) sent to Redis", registry=r
        )
        self.controls = Counter(
            PREFIX + "controls",
            "pgcast.disconnect / pgcast.unsubscribe controls received, by op",
            ["op"],
            registry=r,
        )
        # livemin: merged across workers, 1 only while every live worker is ready.
        self.ready = Gauge(
            PREFIX + "ready", "1 when /readyz answers 200", multiprocess_mode="livemin", registry=r
        )

    def gauge(self, name: str, doc: str, read: Callable[[], float]) -> None:
        """A gauge computed at scrape time (connections, subscriptions, channels)."""
        self._gauges[name] = (doc, read)
        if self._shared is not None:
            self._shared.add_gauge(name, doc, read)

    def ready_when(self, is_ready: Callable[[], bool]) -> None:
        """Where :attr:`ready` comes from: read at each scrape and each sync."""
        self._is_ready = is_ready

    def sync(self) -> None:
        """Refresh the values computed on demand (readiness; in multiprocess mode also the
        hot counters and gauges, into this worker's files)."""
        if self._is_ready is not None:
            self.ready.set(1 if self._is_ready() else 0)
        if self._shared is not None:
            self._shared.sync()

    def render(self) -> bytes:
        """The /metrics body: this process's registry, or every worker's files merged."""
        self.sync()
        if self.multiprocess is None:
            return generate_latest(self.registry)
        merged = CollectorRegistry()
        MultiProcessCollector(merged, path=self.multiprocess)  # type: ignore[no-untyped-call]
        return generate_latest(merged)

    async def run(self) -> None:
        """Multiprocess mode: keep this worker's computed values fresh in its files, so a
        scrape answered by another worker sees them."""
        while True:
            await asyncio.sleep(SYNC_SECONDS)
            try:
                self.sync()
            except Exception:  # a metrics glitch must not stop the loop (nor the worker)
                log.exception("syncing metrics to %s failed", self.multiprocess)
