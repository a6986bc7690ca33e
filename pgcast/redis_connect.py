"""Redis clients for a :class:`RedisTarget`: the kernel's one redis import, used by both sides.

:func:`client` returns a ``redis.asyncio.Redis`` for one address or for the
primary a set of Sentinels names; a Sentinel client asks the Sentinels again on
every new connection, and drops a connection to a demoted primary (READONLY), so
it follows failovers by itself; the caller's retry loop only has to reconnect.
Closing it closes its Sentinel connections too. For a Redis Cluster it returns a
``redis.asyncio.cluster.RedisCluster`` (it follows MOVED/ASK and refreshes the slot
map itself). :func:`verify` is the start-up check: a wrong password, a master no
Sentinel knows, a cluster not ``ok`` is a ConfigError.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import MasterNotFoundError, Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff
from redis.exceptions import (
    AskError,
    AuthenticationError,
    ClusterDownError,
    RedisClusterException,
    RedisError,
    ResponseError,
    TryAgainError,
)

from pgcast.cancellation import raise_if_cancelled
from pgcast.redis_url import RedisTarget
from pgcast.settings import ConfigError

__all__ = [
    "RedisClient",
    "RedisCluster",
    "client",
    "cluster_identity",
    "reason",
    "verify",
]

log = logging.getLogger(__name__)

# What a Redis call may raise when Redis is unreachable, failing over or refusing: a
# cluster client's "no node reachable" is not a RedisError (RedisClusterException).
ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    ConnectionError,
    RedisError,
    RedisClusterException,
)

RedisClient = aioredis.Redis


class _BlockingSentinelPool(SentinelConnectionPool, aioredis.BlockingConnectionPool):
    """A Sentinel pool whose callers wait for a free connection instead of failing."""


class _SentinelRedis(aioredis.Redis):
    """A client of a Sentinel-managed primary that also closes its Sentinel connections."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        manager = getattr(self.connection_pool, "sentinel_manager", None)
        if manager is not None:
            await manager.aclose()


def client(
    target: RedisTarget,
    *,
    timeout: float,
    retry: Retry | None = None,
    pool_size: int | None = None,
    pool_wait: float | None = None,
    **options: Any,
) -> Any:
    """A client of ``target``'s primary: socket timeouts ``timeout``; no retries unless
    ``retry``; a blocking pool of ``pool_size`` whose callers wait up to ``pool_wait``.

    A cluster target gives a ``RedisCluster`` (``pool_size`` connections per node; past
    that a caller gets MaxConnectionsError instead of waiting: redis-py's cluster pool does
    not block). It follows MOVED/ASK redirections whatever ``retry`` says; ``retry``
    covers connection errors and CLUSTERDOWN (with a topology refresh before each try)."""
    kwargs: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": retry or Retry(NoBackoff(), 0),
        **options,
    }
    if target.kind == "cluster":
        return _cluster_client(target, kwargs, pool_size)
    if target.kind == "single":
        if pool_size is None:
            return aioredis.Redis.from_url(target.url, **kwargs)
        pool = aioredis.BlockingConnectionPool.from_url(
            target.url, max_connections=pool_size, timeout=pool_wait, **kwargs
        )
        return aioredis.Redis.from_pool(pool)
    sentinel = Sentinel(
        list(target.sentinels),
        sentinel_kwargs={
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "password": target.sentinel_password,
        },
    )
    pool_options: dict[str, Any] = {}
    if pool_size is not None:
        pool_options = {
            "connection_pool_class": _BlockingSentinelPool,
            "max_connections": pool_size,
            "timeout": pool_wait,
        }
    return sentinel.master_for(  # type: ignore[no-any-return, unused-ignore]
        target.master,
        redis_class=_SentinelRedis,
        db=target.db,
        username=target.username,
        password=target.password,
        **pool_options,
        **kwargs,
    )


def _cluster_client(
    target: RedisTarget, kwargs: dict[str, Any], pool_size: int | None
) -> RedisCluster:
    if pool_size is not None:
        kwargs["max_connections"] = pool_size
    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in target.nodes],
        username=target.username,
        password=target.password,
        **kwargs,
    )


async def cluster_identity(redis: RedisCluster) -> str | None:
    """Which Redis Cluster this is: every master's run id and replication id, sorted (a
    restart or failover of any master changes it); None where INFO is not allowed."""
    try:
        infos = await redis.execute_command(
            "INFO", "server", "replication", target_nodes=RedisCluster.PRIMARIES
        )
    except ResponseError:
        return None
    ids = []
    for info in infos.values() if isinstance(infos, dict) else ():
        run_id, replid = info.get("run_id"), info.get("master_replid")
        if not (run_id and replid):
            return None
        ids.append(f"{run_id}/{replid}")
    return ",".join(sorted(ids)) or None


def reason(exc: BaseException) -> str:
    """``exc`` in one short line: redis-py's MasterNotFoundError carries the repr of every
    Sentinel connection (kilobytes a line); the first part says it all."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, MasterNotFoundError):
        text = text.split(" : ", 1)[0]
    return text[:300]


async def _known_master(target: RedisTarget, wait: float) -> bool | None:
    """Whether a reachable Sentinel knows ``target.master``; None when none answers."""
    answered = False
    for host, port in target.sentinels:
        probe = aioredis.Redis(
            host=host,
            port=port,
            password=target.sentinel_password,
            socket_timeout=wait,
            socket_connect_timeout=wait,
            retry=Retry(NoBackoff(), 0),
        )
        try:
            masters = await probe.sentinel_masters()  # type: ignore[no-untyped-call, unused-ignore]
        except AuthenticationError as exc:
            raise ConfigError(
                f"Sentinel {host}:{port} refused the connection: {reason(exc)}"
            ) from None
        except Exception as exc:  # unreachable, or not a Sentinel: ask the next one
            raise_if_cancelled()
            log.debug("Sentinel %s:%d did not answer: %s", host, port, exc)
        else:
            answered = True
            if target.master in masters:
                return True
        finally:
            await probe.aclose()
    return False if answered else None


class ClusterNotReady(Exception):
    """The cluster answers but is not ``cluster_state:ok`` (slots uncovered, failing over)."""


# Errors a cluster answers while it fails over or moves slots: retried, not a refusal.
_CLUSTER_TRANSIENT = (ClusterDownError, TryAgainError, AskError)


async def _cluster_ok(redis: RedisCluster) -> None:
    """Raise unless the cluster answers and a node says ``cluster_state:ok``."""
    info = await redis.execute_command("CLUSTER INFO", target_nodes=RedisCluster.RANDOM)
    state = info.get("cluster_state") if isinstance(info, dict) else None
    if state != "ok":
        raise ClusterNotReady(f"cluster_state is {state}")


async def _why_unreachable(target: RedisTarget, exc: Exception, wait: float) -> str:
    """Why ``target`` does not answer, in one line; ConfigError when no Sentinel knows the
    master (retrying cannot fix that)."""
    if target.kind != "sentinel" or not isinstance(exc, MasterNotFoundError):
        return reason(exc)
    known = await _known_master(target, wait)
    if known is False:
        raise ConfigError(
            f"no Sentinel of {target.describe()} knows a master named {target.master!r}"
        ) from None
    return "no Sentinel answers" if known is None else "the Sentinels report no healthy primary"


async def verify(
    target: RedisTarget,
    redis: Any,
    *,
    deadline: float,
    must_answer: bool = True,
    retry_every: float = 0.2,
) -> bool:
    """PING ``redis`` until it answers (True; a cluster: until a node says
    ``cluster_state:ok``); ConfigError on what retrying cannot fix (a wrong password, a
    master no Sentinel knows) at once. Still unreachable at ``deadline``:
    ConfigError, or False when not ``must_answer``."""
    where = f"Redis at {target.describe()}"
    while True:
        try:
            if target.kind == "cluster":
                await _cluster_ok(redis)
            else:
                await redis.ping()
            return True
        except (AuthenticationError, ResponseError) as exc:
            if not isinstance(exc, _CLUSTER_TRANSIENT):
                raise ConfigError(f"{where} refused the connection: {reason(exc)}") from None
            why = reason(exc)
        except Exception as exc:  # unreachable, timed out, loading, failing over: retry
            raise_if_cancelled()
            why = await _why_unreachable(target, exc, retry_every * 5)
        if time.monotonic() >= deadline:
            if not must_answer:
                log.warning("cannot reach %s yet: %s", where, why)
                return False
            raise ConfigError(f"cannot reach {where}: {why}") from None
        await asyncio.sleep(retry_every)
