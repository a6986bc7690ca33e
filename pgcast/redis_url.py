"""The ``REDIS_URL`` grammar, shared by the listener and the gateway (pure, no I/O).

``redis://``, ``rediss://`` and ``unix://`` name one Redis (optionally with replicas
behind one address); ``redis+sentinel://[[user]:password@]h1:26379,h2:26379/<master>[/<db>]``
names a Sentinel-managed primary that both sides follow across failovers. The
password authenticates to the primary and its replicas; Sentinels themselves are
asked without one unless ``?sentinel_password=`` says otherwise. A malformed URL
raises ConfigError with a one-line reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import parse_qsl, unquote, urlsplit

from pgcast.settings import ConfigError

SENTINEL_SCHEME = "redis+sentinel"
CLUSTER_SCHEME = "redis+cluster"
SINGLE_SCHEMES = ("redis", "rediss", "unix")
DEFAULT_SENTINEL_PORT = 26379
SENTINEL_EXAMPLE = "redis+sentinel://[:password@]host1:26379,host2:26379/<master-name>[/<db>]"


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """Where Redis is: one address (``url``), or Sentinels and a master name."""

    kind: Literal["single", "sentinel"]
    url: str = field(default="", repr=False)  # single: the URL as given (redis-py parses it)
    sentinels: tuple[tuple[str, int], ...] = ()
    master: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sentinel_password: str | None = field(default=None, repr=False)

    def describe(self) -> str:
        """Safe to log: no password."""
        if self.kind == "single":
            from pgcast.settings import redact_url

            return redact_url(self.url)
        hosts = ",".join(f"{host}:{port}" for host, port in self.sentinels)
        return f"Sentinel master {self.master!r} via {hosts} (db {self.db})"


def parse_redis_url(url: str, name: str = "REDIS_URL") -> RedisTarget:
    """The target ``url`` names; ConfigError (naming ``name``) when it is malformed."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in SINGLE_SCHEMES:
        try:
            urlsplit(url).port  # noqa: B018 - raises ValueError on a bad port
        except ValueError as exc:
            raise ConfigError(f"{name} is not a valid URL: {exc}") from None
        return RedisTarget("single", url=url)
    if scheme == SENTINEL_SCHEME:
        return _sentinel(url, name)
    if scheme == CLUSTER_SCHEME:
        raise ConfigError(
            f"{name}: Redis Cluster (redis+cluster://) is not supported by this version;"
            " use redis://, rediss:// or redis+sentinel://"
        )
    raise ConfigError(
        f"{name} must start with redis://, rediss://, unix:// or redis+sentinel://"
        f" (got {scheme or 'no scheme'}://...)"
    )


def _sentinel(url: str, name: str) -> RedisTarget:
    rest = url.split("://", 1)[1]
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    userinfo, at, hostlist = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    sentinels = tuple(_host_port(item, name) for item in hostlist.split(","))
    segments = [unquote(part) for part in path.split("/")] if path else []
    if not segments or not segments[0]:
        raise ConfigError(f"{name} names no master: expected {SENTINEL_EXAMPLE}")
    if len(segments) > 2 or (len(segments) == 2 and not segments[1].isdigit()):
        raise ConfigError(f"{name}: the path must be /<master-name>[/<db>], got /{path}")
    options = dict(parse_qsl(query, keep_blank_values=True))
    unknown = sorted(set(options) - {"sentinel_password"})
    if unknown:
        raise ConfigError(f"{name}: unknown option {unknown[0]!r} (known: sentinel_password)")
    return RedisTarget(
        "sentinel",
        sentinels=sentinels,
        master=segments[0],
        db=int(segments[1]) if len(segments) == 2 else 0,
        username=username,
        password=password,
        sentinel_password=options.get("sentinel_password") or None,
    )


def _host_port(item: str, name: str) -> tuple[str, int]:
    item = item.strip()
    if item.startswith("["):  # [::1]:26379
        host, _, port_text = item[1:].partition("]")
        port_text = port_text.removeprefix(":")
    else:
        host, _, port_text = item.rpartition(":") if ":" in item else (item, "", "")
    if not host:
        raise ConfigError(
            f"{name}: {item!r} is not a Sentinel host[:port]: expected {SENTINEL_EXAMPLE}"
        )
    if not port_text:
        return host, DEFAULT_SENTINEL_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(f"{name}: {item!r} has no valid port")
    return host, int(port_text)
