"""``--redis sentinel``: the stack's own Redis primary, its replica and three Sentinels.

Pure descriptions (name, port, directory, config text) of each server run from the
local ``redis-server``, the ``redis+sentinel://`` URL that names them, and
:func:`write` (:mod:`deploy.redis_conf`), which lays out fresh configs at every
start. Each server gets its own writable config: Sentinel rewrites its own and the
servers' (after a failover the old primary comes back as a replica, and a restart
keeps the role it was given).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from deploy.redis_conf import HOST, Server, common, write

__all__ = ["MASTER", "Server", "redis_conf", "sentinel_conf", "servers", "url", "write"]

MASTER = "pgcast"
QUORUM = 2  # of 3 Sentinels: one may be down, and no single one decides a failover
DOWN_AFTER_MS = 1000  # quick failovers for a development stack (Redis' default: 30 s)
FAILOVER_TIMEOUT_MS = 5000  # and quick retries of a failed one (Redis' default: 3 min)


def redis_conf(port: int, directory: Path, replica_of: int | None = None) -> str:
    """A Redis server's config; ``replica_of``: the primary's port, for the replica."""
    lines = [
        *common(port, directory),
        # The append-only file, not snapshots: a primary restarted by the stack before
        # the Sentinels notice comes back with its data, not empty (which its replica
        # would then copy).
        "appendonly yes",
        'save ""',
        "repl-diskless-sync-delay 0",  # a replica syncs at once, not after 5 s
    ]
    if replica_of is not None:
        lines.append(f"replicaof {HOST} {replica_of}")
    return "\n".join(lines) + "\n"


def sentinel_conf(port: int, directory: Path, primary_port: int, master: str = MASTER) -> str:
    """A Sentinel's config: it monitors ``master`` at ``primary_port`` with the others."""
    lines = [
        *common(port, directory),
        f"sentinel monitor {master} {HOST} {primary_port} {QUORUM}",
        f"sentinel down-after-milliseconds {master} {DOWN_AFTER_MS}",
        f"sentinel failover-timeout {master} {FAILOVER_TIMEOUT_MS}",
    ]
    return "\n".join(lines) + "\n"


def servers(root: Path, redis_ports: Sequence[int], sentinel_ports: Sequence[int]) -> list[Server]:
    """The primary (first of ``redis_ports``), its replicas, then the Sentinels."""
    primary = redis_ports[0]
    found: list[Server] = []
    for i, port in enumerate(redis_ports, 1):
        directory = root / f"redis-{i}"
        conf = redis_conf(port, directory, None if port == primary else primary)
        found.append(Server(f"redis-{i}", "redis", port, directory, conf))
    for i, port in enumerate(sentinel_ports, 1):
        directory = root / f"sentinel-{i}"
        conf = sentinel_conf(port, directory, primary)
        found.append(Server(f"sentinel-{i}", "sentinel", port, directory, conf))
    return found


def url(sentinel_ports: Sequence[int], master: str = MASTER, db: int = 0) -> str:
    """The ``REDIS_URL`` naming the master through every Sentinel."""
    hosts = ",".join(f"{HOST}:{port}" for port in sentinel_ports)
    return f"redis+sentinel://{hosts}/{master}/{db}"
