"""The demo web app's settings, read once from the environment (``DEMO_*`` and the
pgcast variables it shares with the stack: ``DATABASE_URL``, ``PGCAST_JWT_SECRET``).

``gateway_url`` is the gateway as the *browser* reaches it (often a load balancer),
which is not necessarily how this server would reach it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pgcast.settings import DEFAULT_DATABASE_URL, ConfigError, EnvReader, redact_url


@dataclass(frozen=True)
class DemoSettings:
    database_url: str = DEFAULT_DATABASE_URL
    jwt_secret: str = ""
    gateway_url: str | None = None  # None: the page's own origin (behind the same nginx)
    host: str = "127.0.0.1"
    port: int = 8000
    token_ttl: int = 300
    simulate_every: float = 0.0  # seconds between simulated order changes; 0 = off
    seed: bool = True

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> DemoSettings:
        read = EnvReader(env)
        secret = read.optional("PGCAST_JWT_SECRET")
        if secret is None:
            raise ConfigError(
                "PGCAST_JWT_SECRET is required: the demo mints its visitors' tokens with it"
            )
        return cls(
            database_url=read.url("DATABASE_URL", DEFAULT_DATABASE_URL, ("postgresql", "postgres")),
            jwt_secret=secret,
            gateway_url=_gateway_url(read),
            host=read.text("DEMO_HOST", cls.host),
            port=read.integer("DEMO_PORT", cls.port, minimum=0, maximum=65535),
            token_ttl=read.integer("DEMO_TOKEN_TTL", cls.token_ttl, minimum=5),
            simulate_every=read.number("DEMO_SIMULATE_EVERY", 0.0, maximum=3600.0),
            seed=read.flag("DEMO_SEED", True),
        )

    def __repr__(self) -> str:
        return (
            f"DemoSettings(database_url={redact_url(self.database_url)!r}, jwt_secret='***', "
            f"gateway_url={self.gateway_url!r}, host={self.host!r}, port={self.port})"
        )


def _gateway_url(read: EnvReader) -> str | None:
    if read.optional("DEMO_GATEWAY_URL") is None:
        return None
    return read.url("DEMO_GATEWAY_URL", "", ("http", "https"))
