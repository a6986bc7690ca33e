"""The gateway's settings: one frozen object built from the environment before start.

:meth:`GatewaySettings.from_env` validates everything (a bad value raises
ConfigError with a one-line reason); ``repr`` never shows the JWT secret and
shows the Redis URL without its password.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from pgcast.keys import DEFAULT_PARTITIONS, Layout
from pgcast.redis_url import RedisTarget, layout_for, parse_redis_url
from pgcast.settings import DEFAULT_REDIS_URL, ConfigError, EnvReader, redact_url

HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
ASYMMETRIC_ALGORITHMS = ("RS256", "RS384", "RS512", "ES256", "ES384", "PS256")
# Connections per `sub` per process (0: no limit): many tabs and devices fit; one user
# (or one leaked token) cannot take a process's PGCAST_MAX_CONNECTIONS for itself.
DEFAULT_MAX_USER_CONNECTIONS = 100
MIN_SECRET_BYTES = 32  # RFC 7518 §3.2: an HMAC key at least as long as the hash
_SECRET_FIELDS = frozenset({"jwt_secret"})


@dataclass(frozen=True)
class GatewaySettings:
    jwt_secret: str | None = None
    jwt_public_key: str | None = None
    jwt_jwks_url: str | None = None
    jwt_algorithms: tuple[str, ...] = ("HS256",)
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    jwt_leeway: float = 5.0
    jwks_cooldown: float = 10.0
    redis_url: str = DEFAULT_REDIS_URL
    redis_partitions: int = DEFAULT_PARTITIONS
    startup_timeout: float = 30.0
    host: str = "0.0.0.0"
    port: int = 8080
    allowed_origins: tuple[str, ...] = ()
    send_queue_bytes: int = 1 << 20
    ws_compression: bool = False
    ws_heartbeat: float = 25.0
    max_frame_bytes: int = 64 * 1024
    max_subscriptions: int = 100
    rate_limit: float = 50.0
    rate_burst: int = 100
    max_connections: int = 20000
    max_user_connections: int = DEFAULT_MAX_USER_CONNECTIONS
    drain_seconds: float = 5.0
    close_timeout: float = 2.0
    redis_heartbeat: float = 1.0
    redis_heartbeat_timeout: float = 5.0
    subscribe_timeout: float = 5.0
    history_ttl: int = 86400
    sse_keepalive: float = 15.0
    presence_ttl: float = 10.0
    presence_max_members: int = 1000
    presence_meta_bytes: int = 1024
    client_message_bytes: int = 8192
    client_publish_rate: float = 20.0
    client_publish_burst: int = 40
    gateway_id: str = field(default_factory=lambda: default_gateway_id())
    log_level: str = "info"
    log_format: str = "json"
    unused_env: tuple[str, ...] = ()  # PGCAST_* variables set but not read: typos, or another's

    @property
    def redis(self) -> RedisTarget:
        """Where Redis is (one address, or Sentinels and a master name)."""
        return parse_redis_url(self.redis_url)

    @property
    def layout(self) -> Layout:
        """The Redis key layout: partitioned for a cluster (same count as the listener)."""
        return layout_for(self.redis, self.redis_partitions)

    def __repr__(self) -> str:
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in _SECRET_FIELDS and value is not None:
                value = "***"
            elif f.name == "redis_url":
                value = redact_url(value)
            parts.append(f"{f.name}={value!r}")
        return f"GatewaySettings({', '.join(parts)})"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> GatewaySettings:
        """Build and validate the settings from ``env`` (``os.environ`` by default)."""
        r = EnvReader(os.environ if env is None else env)
        secret, public_key, jwks_url = _keys(r)
        settings = cls(
            jwt_secret=secret,
            jwt_public_key=public_key,
            jwt_jwks_url=jwks_url,
            jwt_algorithms=_algorithms(r, secret, public_key or jwks_url),
            jwt_audience=r.optional("PGCAST_JWT_AUDIENCE"),
            jwt_issuer=r.optional("PGCAST_JWT_ISSUER"),
            jwt_leeway=r.number("PGCAST_JWT_LEEWAY", 5.0, maximum=300.0),
            jwks_cooldown=r.number("PGCAST_JWT_JWKS_COOLDOWN", 10.0, maximum=3600.0),
            redis_url=r.text("REDIS_URL", DEFAULT_REDIS_URL),
            redis_partitions=r.integer(
                "PGCAST_REDIS_PARTITIONS", DEFAULT_PARTITIONS, minimum=1, maximum=1024
            ),
            startup_timeout=r.number("PGCAST_STARTUP_TIMEOUT", 30.0, maximum=600.0),
            host=r.text("PGCAST_HOST", "0.0.0.0"),
            port=r.integer("PGCAST_PORT", 8080, maximum=65535),
            allowed_origins=tuple(o.rstrip("/").lower() for o in r.csv("PGCAST_ALLOWED_ORIGINS")),
            send_queue_bytes=r.integer("PGCAST_SEND_QUEUE_BYTES", 1 << 20, minimum=4096),
            ws_compression=r.flag("PGCAST_WS_COMPRESSION", False),
            ws_heartbeat=r.number("PGCAST_WS_HEARTBEAT", 25.0, minimum=0.05),
            max_frame_bytes=r.integer("PGCAST_MAX_FRAME_BYTES", 64 * 1024, minimum=256),
            max_subscriptions=r.integer("PGCAST_MAX_SUBSCRIPTIONS", 100, minimum=1),
            rate_limit=r.number("PGCAST_RATE_LIMIT", 50.0, minimum=0.1),
            rate_burst=r.integer("PGCAST_RATE_BURST", 100, minimum=1),
            max_connections=r.integer("PGCAST_MAX_CONNECTIONS", 20000, minimum=1),
            max_user_connections=r.integer(
                "PGCAST_MAX_USER_CONNECTIONS", DEFAULT_MAX_USER_CONNECTIONS
            ),
            drain_seconds=r.number("PGCAST_DRAIN_SECONDS", 5.0, maximum=600.0),
            close_timeout=r.number("PGCAST_CLOSE_TIMEOUT", 2.0, minimum=0.05, maximum=60.0),
            redis_heartbeat=r.number("PGCAST_REDIS_HEARTBEAT", 1.0, minimum=0.05),
            redis_heartbeat_timeout=r.number("PGCAST_REDIS_HEARTBEAT_TIMEOUT", 5.0, minimum=0.2),
            subscribe_timeout=r.number("PGCAST_SUBSCRIBE_TIMEOUT", 5.0, minimum=0.1),
            history_ttl=r.integer("PGCAST_HISTORY_TTL", 86400, minimum=1),
            sse_keepalive=r.number("PGCAST_SSE_KEEPALIVE", 15.0, minimum=0.05),
            presence_ttl=r.number("PGCAST_PRESENCE_TTL", 10.0, minimum=0.5, maximum=3600.0),
            presence_max_members=r.integer("PGCAST_PRESENCE_MAX_MEMBERS", 1000, minimum=1),
            presence_meta_bytes=r.integer("PGCAST_PRESENCE_META_BYTES", 1024, minimum=2),
            client_message_bytes=r.integer("PGCAST_CLIENT_MESSAGE_BYTES", 8192, minimum=2),
            client_publish_rate=r.number("PGCAST_CLIENT_PUBLISH_RATE", 20.0, minimum=0.1),
            client_publish_burst=r.integer("PGCAST_CLIENT_PUBLISH_BURST", 40, minimum=1),
            gateway_id=r.text("PGCAST_GATEWAY_ID", default_gateway_id()),
            log_level=r.choice("PGCAST_LOG_LEVEL", "info", ("debug", "info", "warning", "error")),
            log_format=r.choice("PGCAST_LOG_FORMAT", "json", ("json", "text")),
        )
        parse_redis_url(settings.redis_url)  # a malformed one fails here, before anything runs
        if settings.redis_heartbeat_timeout <= settings.redis_heartbeat:
            raise ConfigError(
                "PGCAST_REDIS_HEARTBEAT_TIMEOUT must be longer than PGCAST_REDIS_HEARTBEAT"
            )
        return replace(settings, unused_env=tuple(r.unknown()))


def default_gateway_id() -> str:
    """Unique per process: several workers on one host each get their own heartbeat."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


def _keys(r: EnvReader) -> tuple[str | None, str | None, str | None]:
    secret = r.optional("PGCAST_JWT_SECRET")
    public_key = r.optional("PGCAST_JWT_PUBLIC_KEY")
    jwks_url = r.optional("PGCAST_JWT_JWKS_URL")
    if secret is None and public_key is None and jwks_url is None:
        raise ConfigError(
            "no token key configured: set PGCAST_JWT_SECRET (HS256), PGCAST_JWT_PUBLIC_KEY"
            " (RS256/ES256 PEM) or PGCAST_JWT_JWKS_URL; the gateway never runs unauthenticated"
        )
    if secret is not None and len(secret.encode()) < MIN_SECRET_BYTES:
        raise ConfigError(
            f"PGCAST_JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes"
            " (try: openssl rand -hex 32)"
        )
    if public_key is not None:
        public_key = _pem(public_key)
    if public_key is not None and jwks_url is not None:
        raise ConfigError("set PGCAST_JWT_PUBLIC_KEY or PGCAST_JWT_JWKS_URL, not both")
    if jwks_url is not None:
        jwks_url = r.url("PGCAST_JWT_JWKS_URL", jwks_url, ("http", "https"))
    return secret, public_key, jwks_url


def _pem(value: str) -> str:
    """The PEM text itself, or read from a file when the value is a path."""
    if "-----BEGIN" in value:
        return value.replace("\\n", "\n")
    path = Path(value)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(
            f"PGCAST_JWT_PUBLIC_KEY is neither PEM text nor a readable file: {exc.strerror}"
        ) from None
    if "-----BEGIN" not in text:
        raise ConfigError(f"PGCAST_JWT_PUBLIC_KEY file {path} holds no PEM key")
    return text


def _algorithms(r: EnvReader, secret: str | None, asymmetric: str | None) -> tuple[str, ...]:
    """The explicit algorithm list: from the keys configured, or PGCAST_JWT_ALGORITHMS."""
    allowed: tuple[str, ...] = ()
    if secret is not None:
        allowed += HMAC_ALGORITHMS
    if asymmetric is not None:
        allowed += ASYMMETRIC_ALGORITHMS
    chosen = r.csv("PGCAST_JWT_ALGORITHMS")
    if not chosen:
        defaults = ("HS256",) if secret is not None else ()
        return defaults + (("RS256", "ES256") if asymmetric is not None else ())
    for alg in chosen:
        if alg not in allowed:
            raise ConfigError(
                f"PGCAST_JWT_ALGORITHMS: {alg!r} is not usable with the configured key"
                f" (allowed: {', '.join(allowed)}; 'none' never is)"
            )
    return tuple(chosen)
