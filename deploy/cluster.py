"""``--redis cluster``: the stack's own Redis Cluster, 3 masters and 3 replicas on loopback.

Pure descriptions (:class:`deploy.redis_conf.Server`) of the six ``redis-server``
nodes in cluster mode, the ``redis+cluster://`` URL that names them, and the
``redis-cli --cluster create`` command that joins them; then :func:`create`, which
runs it once every node answers and waits until every node says ``cluster_state:ok``
with all 16384 slots served. The configs, and so each node's ``nodes.conf``, are
fresh at every start: the cluster is created anew each time, empty.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from deploy.redis_conf import HOST, Server, common

MASTERS = 3
REPLICAS_PER_MASTER = 1
NODES = MASTERS * (1 + REPLICAS_PER_MASTER)
SLOTS = 16384
BUS_PORT_OFFSET = 10000  # each node's cluster bus: node to node only, never clients
MAX_PORT = 65535 - BUS_PORT_OFFSET
# Quick failovers for a development stack (Redis' default: 15 s): a replica takes over
# a master that has not answered its peers for this long.
NODE_TIMEOUT_MS = 1000
CREATE_TIMEOUT = 30.0
POLL = 0.2  # the pause between two looks at a forming cluster


class ClusterError(RuntimeError):
    """The cluster could not be created or did not become healthy; says why."""


def node_conf(port: int, directory: Path) -> str:
    """One cluster node's config (its ``nodes.conf`` is Redis' own, in ``directory``)."""
    lines = [
        *common(port, directory),
        "cluster-enabled yes",
        "cluster-config-file nodes.conf",
        f"cluster-node-timeout {NODE_TIMEOUT_MS}",
        # The append-only file, not snapshots: a master the stack restarts before its
        # replica takes over comes back with its data, not empty.
        "appendonly yes",
        'save ""',
        "repl-diskless-sync-delay 0",  # a replica syncs at once, not after 5 s
    ]
    return "\n".join(lines) + "\n"


def servers(root: Path, ports: Sequence[int]) -> list[Server]:
    """One node per port, ``redis-1`` ... in ``root``; which are masters is
    ``redis-cli --cluster create``'s choice (the first three, on one host)."""
    return [
        Server(
            name=f"redis-{i}",
            kind="cluster",
            port=port,
            directory=root / f"redis-{i}",
            conf=node_conf(port, root / f"redis-{i}"),
            bus_port=port + BUS_PORT_OFFSET,
        )
        for i, port in enumerate(ports, 1)
    ]


def url(ports: Sequence[int]) -> str:
    """The ``REDIS_URL`` naming every node (any one that answers is enough to start)."""
    return "redis+cluster://" + ",".join(f"{HOST}:{port}" for port in ports)


def create_argv(cli: str, ports: Sequence[int]) -> list[str]:
    """``redis-cli --cluster create`` of the nodes, one replica per master, no prompt."""
    seeds = [f"{HOST}:{port}" for port in ports]
    replicas = ["--cluster-replicas", str(REPLICAS_PER_MASTER)]
    return [cli, "--cluster", "create", *seeds, *replicas, "--cluster-yes"]


def parse_info(text: str) -> dict[str, str]:
    """CLUSTER INFO's ``key:value`` lines."""
    pairs = (line.partition(":") for line in text.splitlines() if ":" in line)
    return {key.strip(): value.strip() for key, _, value in pairs}


def not_ok(info: Mapping[str, str], nodes: int = NODES, masters: int = MASTERS) -> str | None:
    """Why a node's CLUSTER INFO is not yet that of the whole, healthy cluster (None: it is)."""
    wanted = {
        "cluster_state": "ok",
        "cluster_slots_ok": str(SLOTS),
        "cluster_known_nodes": str(nodes),
        "cluster_size": str(masters),
    }
    for key, value in wanted.items():
        if info.get(key) != value:
            return f"{key} {info.get(key, '?')} (want {value})"
    return None


async def cluster_info(port: int) -> dict[str, str]:
    """CLUSTER INFO of the node on ``port``, over one short connection."""
    client = aioredis.Redis(host=HOST, port=port, socket_timeout=2, decode_responses=True)
    try:
        # Two words: redis-py's callback (keyed "CLUSTER INFO") stays out, the text is Redis'.
        reply = await client.execute_command("CLUSTER", "INFO")  # type: ignore[no-untyped-call, unused-ignore]
        return parse_info(str(reply))
    finally:
        await client.aclose()  # type: ignore[attr-defined, unused-ignore]


async def wait_ok(ports: Sequence[int], within: float) -> None:
    """Until every node says ``cluster_state:ok``, knows every node, and all slots are
    served; ClusterError naming a node and what was still wrong otherwise."""
    deadline = time.monotonic() + within
    while True:
        reason = None
        for port in ports:
            try:
                reason = not_ok(await cluster_info(port), len(ports))
            except (OSError, RedisError) as exc:
                reason = f"no answer ({exc or type(exc).__name__})"
            if reason is not None:
                reason = f"port {port}: {reason}"
                break
        if reason is None:
            return
        if time.monotonic() > deadline:
            raise ClusterError(f"the Redis Cluster is not ok after {within:.0f}s: {reason}")
        await asyncio.sleep(POLL)  # gossip spreads the news node by node


async def create(cli: str, ports: Sequence[int], within: float = CREATE_TIMEOUT) -> None:
    """Join the (answering, empty) nodes into one cluster and wait until it is ok; each
    step gets ``within`` seconds (the timeout names the step and what was still wrong)."""
    proc = await asyncio.create_subprocess_exec(
        *create_argv(cli, ports),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with asyncio.timeout(within):
            out, _ = await proc.communicate()
    except BaseException as exc:  # over time, or the stack stops meanwhile
        with contextlib.suppress(ProcessLookupError):
            proc.kill()  # by its PID: the redis-cli started here
        await proc.wait()
        if isinstance(exc, TimeoutError):
            raise ClusterError(f"redis-cli --cluster create ran over {within:.0f}s") from None
        raise
    if proc.returncode != 0:
        text = out.decode(errors="replace").strip()[-2000:]
        raise ClusterError(f"redis-cli --cluster create failed:\n{text}")
    await wait_ok(ports, within)
