"""The ``REDIS_URL`` grammar, shared by the listener and the gateway (pure, no I/O).

``redis://``, ``rediss://`` and ``unix://`` name one Redis (optionally with replicas
behind one address); ``redis+sentinel://[[user]:password@]h1:26379,h2:26379/<master>[/<db>]``
names a Sentinel-managed primary that both sides follow across failovers. The
password authenticates to the primary and its replicas; Sentinels themselves are
asked without one unless ``?sentinel_password=`` says otherwise.
``redis+cluster://[[user]:password@]h1:7000,h2:7001`` names a Redis Cluster by some of
its nodes (the rest are discovered; no db: a cluster has only db 0). A malformed URL
raises ConfigError with a one-line reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from pgcast.keys import DEFAULT_PARTITIONS, Layout
from pgcast.settings import ConfigError, EnvReader

SENTINEL_SCHEME = "redis+sentinel"
CLUSTER_SCHEME = "redis+cluster"
SINGLE_SCHEMES = ("redis", "rediss", "unix")
DEFAULT_SENTINEL_PORT = 26379
DEFAULT_CLUSTER_PORT = 6379
SENTINEL_EXAMPLE = "redis+sentinel://[:password@]host1:26379,host2:26379/<master-name>[/<db>]"
CLUSTER_EXAMPLE = "redis+cluster://[:password@]host1:7000,host2:7001"
PARTITIONS_VARIABLE = "PGCAST_REDIS_PARTITIONS"
MAX_PARTITIONS = 1024


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """Where Redis is: one address (``url``), Sentinels and a master name, or some nodes
    of a Redis Cluster (``nodes``)."""

    kind: Literal["single", "sentinel", "cluster"]
    url: str = field(default="", repr=False)  # single: the URL as given (redis-py parses it)
    sentinels: tuple[tuple[str, int], ...] = ()
    master: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sentinel_password: str | None = field(default=None, repr=False)
    nodes: tuple[tuple[str, int], ...] = ()  # cluster: the startup nodes

    @property
    def cluster(self) -> bool:
        return self.kind == "cluster"

    def describe(self) -> str:
        """Safe to log: no password."""
        if self.kind == "single":
            from pgcast.settings import redact_url

            return redact_url(self.url)
        if self.kind == "cluster":
            return "Redis Cluster via " + ",".join(f"{host}:{port}" for host, port in self.nodes)
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
        return _cluster(url, name)
    raise ConfigError(
        f"{name} must start with redis://, rediss://, unix://, redis+sentinel://"
        " or redis+cluster://"
        f" (got {scheme or 'no scheme'}://...)"
    )


def _credentials(netloc: str) -> tuple[str | None, str | None, str]:
    """(username, password, host list) of ``[[user]:password@]hosts``."""
    userinfo, at, hostlist = netloc.rpartition("@")
    if not at:
        return None, None, hostlist
    user, colon, secret = userinfo.partition(":")
    return unquote(user) or None, unquote(secret) if colon else None, hostlist


def _cluster(url: str, name: str) -> RedisTarget:
    rest = url.split("://", 1)[1]
    rest, question, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    if path.strip("/"):
        raise ConfigError(
            f"{name}: a Redis Cluster URL has no path (a cluster has only db 0):"
            f" expected {CLUSTER_EXAMPLE}"
        )
    if question and query:
        option = next(iter(dict(parse_qsl(query, keep_blank_values=True))), query)
        raise ConfigError(f"{name}: unknown option {option!r} (a cluster URL takes none)")
    username, password, hostlist = _credentials(netloc)
    port, example = DEFAULT_CLUSTER_PORT, CLUSTER_EXAMPLE
    nodes = tuple(_host_port(item, name, port, example) for item in hostlist.split(","))
    return RedisTarget("cluster", nodes=nodes, username=username, password=password)


def _sentinel(url: str, name: str) -> RedisTarget:
    rest = url.split("://", 1)[1]
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    username, password, hostlist = _credentials(netloc)
    sentinels = tuple(
        _host_port(item, name, DEFAULT_SENTINEL_PORT, SENTINEL_EXAMPLE)
        for item in hostlist.split(",")
    )
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


def _host_port(item: str, name: str, default_port: int, example: str) -> tuple[str, int]:
    item = item.strip()
    if item.startswith("["):  # [::1]:26379
        host, _, port_text = item[1:].partition("]")
        port_text = port_text.removeprefix(":")
    else:
        host, _, port_text = item.rpartition(":") if ":" in item else (item, "", "")
    if not host:
        raise ConfigError(f"{name}: {item!r} is not a host[:port]: expected {example}")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(f"{name}: {item!r} has no valid port")
    return host, int(port_text)


def read_partitions(env: EnvReader) -> int:
    """``PGCAST_REDIS_PARTITIONS``: how many partitions channels hash to on a Redis Cluster
    (the listener and every gateway must agree; ignored with one Redis or Sentinel)."""
    return env.integer(PARTITIONS_VARIABLE, DEFAULT_PARTITIONS, minimum=1, maximum=MAX_PARTITIONS)


def layout_for(target: RedisTarget, partitions: int = DEFAULT_PARTITIONS) -> Layout:
    """The key layout of ``target``: partitioned on a cluster, the classic names otherwise."""
    return Layout(partitions) if target.kind == "cluster" else Layout()


def node_target(target: RedisTarget, host: str, port: int) -> RedisTarget:
    """One node of the cluster ``target`` as a plain address with the cluster's
    credentials (a gateway's sharded pub/sub link to that node)."""
    auth = ""
    if target.password is not None:
        auth = f"{quote(target.username or '', safe='')}:{quote(target.password, safe='')}@"
    return RedisTarget(
        kind="single",
        url=f"redis://{auth}{host}:{port}/0",
        username=target.username,
        password=target.password,
    )
