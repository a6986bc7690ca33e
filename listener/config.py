"""The listener's settings: one frozen object, built once from the environment.

Every ``PGCAST_*`` name the listener reads is here (and in the README's
config-listener section). Bad values raise ConfigError before anything starts;
``PGCAST_*`` names read by nothing are only logged, because the listener and the
gateway commonly share one environment.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from pgcast.channels import channel_error
from pgcast.keys import DEFAULT_PARTITIONS, Layout
from pgcast.redis_url import RedisTarget, layout_for, parse_redis_url, read_partitions
from pgcast.settings import (
    DEFAULT_DATABASE_URL,
    DEFAULT_REDIS_URL,
    ConfigError,
    EnvReader,
    redact_url,
)

DEFAULT_LOCK_KEY = 0x706763617374  # "pgcast" in ASCII: any bigint shared by all replicas
BIGINT_MAX = 2**63 - 1
PG_IDENTIFIER_MAX = 63  # bytes; a relayed channel is a Postgres LISTEN identifier
# auto: sleep (NOTIFY wakes it) when idle, poll while busy; notify: always NOTIFY; poll: never.
NOTIFY_MODES = ("auto", "notify", "poll")
# With PGCAST_REDIS_MIN_REPLICAS: too few replicas acknowledged a publish -> keep its rows
# and retry (stall), or go on and count it (degrade).
REPLICA_POLICIES = ("stall", "degrade")
# outbox: triggers and pgcast.publish() write pgcast.outbox, the leader drains it; wal: the
# leader decodes the WAL (logical replication from the slot PGCAST_WAL_SLOT).
CAPTURE_MODES = ("outbox", "wal")
# A replication slot's name: Postgres allows lower-case letters, digits and underscores.
SLOT_NAME = re.compile(r"[a-z0-9_]{1,63}")


@dataclass(frozen=True, slots=True)
class ListenerSettings:
    database_url: str = field(default=DEFAULT_DATABASE_URL, repr=False)
    redis_url: str = field(default=DEFAULT_REDIS_URL, repr=False)
    redis: RedisTarget = field(
        default_factory=lambda: parse_redis_url(DEFAULT_REDIS_URL), repr=False
    )
    redis_partitions: int = DEFAULT_PARTITIONS
    redis_min_replicas: int = 0
    redis_replica_timeout: float = 1.0
    redis_replica_policy: str = "stall"
    host: str = "0.0.0.0"
    port: int = 8081
    history_size: int = 1000
    history_ttl: int = 86400
    capture: str = "outbox"
    wal_slot: str = "pgcast"
    wal_confirm_interval: float = 0.1
    notify_mode: str = "auto"
    poll_interval: float = 1.0
    awake_poll: float = 0.001
    awake_linger: float = 0.2
    wake_gap: float = 0.002
    batch_size: int = 500
    vacuum_every: int = 20000
    relay_channels: tuple[str, ...] = ()
    relay_queue_size: int = 10000
    lock_key: int = DEFAULT_LOCK_KEY
    standby_retry: float = 0.5
    liveness_interval: float = 5.0
    liveness_timeout: float = 5.0
    query_timeout: float = 30.0
    connect_timeout: float = 10.0
    startup_timeout: float = 30.0
    redis_timeout: float = 5.0
    backoff_max: float = 5.0
    tcp_keepalive_idle: int = 10
    tcp_keepalive_interval: int = 5
    tcp_keepalive_count: int = 3
    tcp_user_timeout: float = 30.0
    log_level: str = "info"
    log_format: str = "json"
    debug_hold_batch: float = 0.0
    unknown: tuple[str, ...] = ()

    @property
    def safe_database_url(self) -> str:
        return redact_url(self.database_url)

    @property
    def safe_redis_url(self) -> str:
        return self.redis.describe()

    def layout(self) -> Layout:
        """The Redis key layout: partitioned on a cluster, the classic names otherwise."""
        return layout_for(self.redis, self.redis_partitions)


def _relay_channels(env: EnvReader) -> tuple[str, ...]:
    channels = env.csv("PGCAST_RELAY_CHANNELS")
    for name in channels:
        reason = channel_error(name)
        if reason is None and len(name.encode()) > PG_IDENTIFIER_MAX:
            reason = f"longer than Postgres' {PG_IDENTIFIER_MAX}-byte identifier limit"
        if reason is None and name == "pgcast":
            reason = "'pgcast' is the outbox wake-up channel"
        if reason is not None:
            raise ConfigError(f"PGCAST_RELAY_CHANNELS: {name!r}: {reason}")
    return channels


def _slot_name(env: EnvReader) -> str:
    name = env.text("PGCAST_WAL_SLOT", "pgcast")
    if not SLOT_NAME.fullmatch(name):
        raise ConfigError(
            f"PGCAST_WAL_SLOT: {name[:100]!r} is not a replication slot name"
            " (1-63 lower-case letters, digits or underscores)"
        )
    return name


def load_settings(environ: Mapping[str, str]) -> ListenerSettings:
    """Validated settings from ``environ``; ConfigError names the first bad variable."""
    env = EnvReader(environ)
    pg_schemes = ("postgresql", "postgres")
    settings = ListenerSettings(
        database_url=env.url("DATABASE_URL", DEFAULT_DATABASE_URL, pg_schemes),
        redis_url=env.text("REDIS_URL", DEFAULT_REDIS_URL),
        redis=parse_redis_url(env.text("REDIS_URL", DEFAULT_REDIS_URL)),
        redis_partitions=read_partitions(env),
        redis_min_replicas=env.integer("PGCAST_REDIS_MIN_REPLICAS", 0, maximum=100),
        redis_replica_timeout=env.number(
            "PGCAST_REDIS_REPLICA_TIMEOUT", 1.0, minimum=0.001, maximum=60.0
        ),
        redis_replica_policy=env.choice("PGCAST_REDIS_REPLICA_POLICY", "stall", REPLICA_POLICIES),
        host=env.text("PGCAST_LISTENER_HOST", "0.0.0.0"),
        port=env.integer("PGCAST_LISTENER_PORT", 8081, maximum=65535),
        history_size=env.integer("PGCAST_HISTORY_SIZE", 1000, minimum=1),
        history_ttl=env.integer("PGCAST_HISTORY_TTL", 86400, minimum=1),
        capture=env.choice("PGCAST_CAPTURE", "outbox", CAPTURE_MODES),
        wal_slot=_slot_name(env),
        wal_confirm_interval=env.number(
            "PGCAST_WAL_CONFIRM_INTERVAL", 0.1, minimum=0.0, maximum=60.0
        ),
        notify_mode=env.choice("PGCAST_NOTIFY_MODE", "auto", NOTIFY_MODES),
        poll_interval=env.number("PGCAST_POLL_INTERVAL", 1.0, minimum=0.01),
        awake_poll=env.number("PGCAST_AWAKE_POLL", 0.001, minimum=0.0005, maximum=1.0),
        awake_linger=env.number("PGCAST_AWAKE_LINGER", 0.2, minimum=0.0, maximum=60.0),
        wake_gap=env.number("PGCAST_WAKE_GAP", 0.002, minimum=0.0, maximum=60.0),
        batch_size=env.integer("PGCAST_BATCH_SIZE", 500, minimum=1, maximum=10000),
        vacuum_every=env.integer("PGCAST_VACUUM_EVERY", 20000, minimum=0),
        relay_channels=_relay_channels(env),
        relay_queue_size=env.integer("PGCAST_RELAY_QUEUE_SIZE", 10000, minimum=1),
        lock_key=env.integer(
            "PGCAST_LOCK_KEY", DEFAULT_LOCK_KEY, minimum=-BIGINT_MAX - 1, maximum=BIGINT_MAX
        ),
        standby_retry=env.number("PGCAST_STANDBY_RETRY", 0.5, minimum=0.01),
        liveness_interval=env.number("PGCAST_LIVENESS_INTERVAL", 5.0, minimum=0.01),
        liveness_timeout=env.number("PGCAST_LIVENESS_TIMEOUT", 5.0, minimum=0.01),
        query_timeout=env.number("PGCAST_QUERY_TIMEOUT", 30.0, minimum=0.1),
        connect_timeout=env.number("PGCAST_CONNECT_TIMEOUT", 10.0, minimum=0.1),
        startup_timeout=env.number("PGCAST_STARTUP_TIMEOUT", 30.0, minimum=0.0),
        redis_timeout=env.number("PGCAST_REDIS_TIMEOUT", 5.0, minimum=0.1),
        backoff_max=env.number("PGCAST_BACKOFF_MAX", 5.0, minimum=0.01),
        tcp_keepalive_idle=env.integer("PGCAST_TCP_KEEPALIVE_IDLE", 10, minimum=1),
        tcp_keepalive_interval=env.integer("PGCAST_TCP_KEEPALIVE_INTERVAL", 5, minimum=1),
        tcp_keepalive_count=env.integer("PGCAST_TCP_KEEPALIVE_COUNT", 3, minimum=1),
        tcp_user_timeout=env.number("PGCAST_TCP_USER_TIMEOUT", 30.0, minimum=0.0),
        log_level=env.choice("PGCAST_LOG_LEVEL", "info", ("debug", "info", "warning", "error")),
        log_format=env.choice("PGCAST_LOG_FORMAT", "json", ("json", "text")),
        debug_hold_batch=env.number("PGCAST_DEBUG_HOLD_BATCH", 0.0),
    )
    return replace(settings, unknown=tuple(env.unknown()))
