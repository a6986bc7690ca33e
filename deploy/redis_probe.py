"""The supervisor's probe of the stack's own Redis servers and Sentinels (``--redis sentinel``)
and cluster nodes (``--redis cluster``).

One short connection per probe, so a restarted server is simply asked again: INFO
replication of a server, SENTINEL MASTER of a Sentinel, CLUSTER INFO and CLUSTER
NODES of a cluster node. :mod:`deploy.status` turns the answer into health and the
INFO cell; no answer is unhealthy.
"""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from deploy.cluster import parse_info
from deploy.sentinel import MASTER
from deploy.status import cluster_health, replication_health, sentinel_health

TIMEOUT = 2.0


def _text(reply: object) -> str:
    return reply.decode() if isinstance(reply, bytes) else str(reply)


async def probe(kind: str, url: str, master: str = MASTER) -> tuple[bool, str]:
    """(healthy, INFO cell) of the ``kind`` ("redis", "sentinel" or "cluster") process
    at ``url``."""
    client = aioredis.Redis.from_url(
        url, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT, retry=Retry(NoBackoff(), 0)
    )
    try:
        if kind == "sentinel":
            command = client.execute_command("SENTINEL MASTER", master)  # type: ignore[no-untyped-call, unused-ignore]
            return sentinel_health(await command)
        if kind == "cluster":
            # Two words each: redis-py's callbacks stay out, the replies are Redis' text.
            info = await client.execute_command("CLUSTER", "INFO")  # type: ignore[no-untyped-call, unused-ignore]
            nodes = await client.execute_command("CLUSTER", "NODES")  # type: ignore[no-untyped-call, unused-ignore]
            return cluster_health(parse_info(_text(info)), _text(nodes))
        return replication_health(await client.info("replication"))
    except (OSError, TimeoutError, RedisError):
        return False, ""
    finally:
        await client.aclose()  # type: ignore[attr-defined, unused-ignore]
