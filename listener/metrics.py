"""The listener's Prometheus metrics, in a registry of its own (no global state).

Names start with ``pgcast_listener_``. The role gauge carries one series per
role, 1 for the current one; lag and queue usage are sampled by the leader's
liveness query, and reset to 0 by a standby (it does not know them).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from listener.control import OPS

ROLES = ("leader", "standby")


class ListenerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.role = Gauge(
            "pgcast_listener_role", "1 for this listener's current role", ["role"], registry=r
        )
        self.epoch = Gauge(
            "pgcast_listener_leader_epoch", "Leader epoch held (0 when standby)", registry=r
        )
        self.lag = Gauge(
            "pgcast_listener_publish_lag_seconds",
            "Age of the oldest unpublished outbox row (leader only)",
            registry=r,
        )
        self.queue_usage = Gauge(
            "pgcast_listener_notification_queue_usage",
            "pg_notification_queue_usage(): fraction of the NOTIFY queue in use",
            registry=r,
        )
        self.events = Counter(
            "pgcast_listener_events",
            "Outbox events by result: published, duplicate, fenced, invalid",
            ["result"],
            registry=r,
        )
        self.controls = Counter(
            "pgcast_listener_controls",
            "Server-side controls published to the gateways, by op: disconnect, unsubscribe",
            ["op"],
            registry=r,
        )
        self.relayed = Counter(
            "pgcast_listener_relayed",
            "Relayed NOTIFY payloads by result: published, malformed, dropped, fenced",
            ["result"],
            registry=r,
        )
        self.wakeups = Counter(
            "pgcast_listener_wakeups", "NOTIFY wake-ups received on 'pgcast'", registry=r
        )
        self.awake = Gauge(
            "pgcast_listener_awake",
            "1 while the leader polls (writers skip the NOTIFY), 0 while it sleeps or is standby",
            registry=r,
        )
        self.sleeps = Counter(
            "pgcast_listener_sleeps",
            "Attempts to fall asleep: slept, or refused (a writer skipping the NOTIFY in flight)",
            ["result"],
            registry=r,
        )
        self.wakes = Counter(
            "pgcast_listener_wakes", "Times the sleeping leader woke up to poll", registry=r
        )
        self.batches = Histogram(
            "pgcast_listener_publish_batch_seconds",
            "Time to publish one outbox batch to Redis",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=r,
        )
        self.errors = Counter(
            "pgcast_listener_errors",
            "Failures by server: postgres (leadership ends), redis (publish retried) or"
            " replicas (too few acknowledged a publish, retried under policy stall)",
            ["server"],
            registry=r,
        )
        self.history_lost = Counter(
            "pgcast_listener_redis_history_lost",
            "Channels whose Redis state had gone back behind its watermark (new epoch started)",
            registry=r,
        )
        # PGCAST_CAPTURE=wal
        self.wal_lag_bytes = Gauge(
            "pgcast_listener_wal_lag_bytes",
            "WAL written since the replication slot's confirmed position (leader, wal mode)",
            registry=r,
        )
        self.wal_lag_seconds = Gauge(
            "pgcast_listener_wal_lag_seconds",
            "Age of the last transaction published from the WAL when it was confirmed;"
            " grows while the leader falls behind (leader, wal mode)",
            registry=r,
        )
        self.wal_resets = Counter(
            "pgcast_listener_wal_slot_invalidations",
            "Replication slots Postgres had invalidated, replaced (every channel reset)",
            registry=r,
        )
        self.replicas_acked = Gauge(
            "pgcast_listener_redis_replicas_acked",
            "Redis replicas that acknowledged the last publish (WAIT; PGCAST_REDIS_MIN_REPLICAS)",
            registry=r,
        )
        self.replicas_short = Gauge(
            "pgcast_listener_redis_replicas_short",
            "1 while the last publish reached fewer replicas than PGCAST_REDIS_MIN_REPLICAS",
            registry=r,
        )
        self.unreplicated = Counter(
            "pgcast_listener_redis_unreplicated_batches",
            "Batches accepted with fewer replicas than required (policy degrade)",
            registry=r,
        )
        self.acquired = Counter(
            "pgcast_listener_leadership_acquired", "Times this listener became leader", registry=r
        )
        for name in ("published", "duplicate", "fenced", "invalid"):
            self.events.labels(name)
        for op in OPS:
            self.controls.labels(op)
        for name in ("published", "malformed", "dropped", "fenced"):
            self.relayed.labels(name)
        for server in ("postgres", "redis", "replicas"):
            self.errors.labels(server)
        for result in ("slept", "refused"):
            self.sleeps.labels(result)
        self.current_role = "standby"
        self.current_epoch = 0
        self.replicas_lagging = False
        self.set_standby()

    def set_leader(self, epoch: int) -> None:
        self.current_role, self.current_epoch = "leader", epoch
        self.role.labels("leader").set(1)
        self.role.labels("standby").set(0)
        self.epoch.set(epoch)
        self.acquired.inc()

    def set_replicas(self, acked: int, short: bool, accepted: bool) -> None:
        """WAIT's answer to the last publish (called by the publisher); ``accepted``: the
        batch went on although ``short`` (policy degrade)."""
        self.replicas_acked.set(acked)
        self.replicas_short.set(1 if short else 0)
        self.replicas_lagging = short
        if short and accepted:
            self.unreplicated.inc()

    def set_standby(self) -> None:
        self.current_role, self.current_epoch = "standby", 0
        self.role.labels("leader").set(0)
        self.role.labels("standby").set(1)
        self.epoch.set(0)
        self.awake.set(0)
        self.lag.set(0)
        self.queue_usage.set(0)
        self.wal_lag_bytes.set(0)
        self.wal_lag_seconds.set(0)

    def render(self) -> bytes:
        return generate_latest(self.registry)
