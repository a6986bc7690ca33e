"""One redis-server in cluster mode, and how it sees the cluster (CLUSTER NODES, parsed).

A ClusterNode is a RedisNode (tests/redis_node.py) whose cluster bus port (port + 10000)
is free too; its nodes.conf, and so its node id, survives a restart in the same dir.
tests/redis_cluster.py builds a whole cluster from them.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from tests.redis_node import HOST, Address, RedisNode
from tests.servers import free_port_below

__all__ = ["BUS_PORT_OFFSET", "ClusterNode", "NodeEntry", "parse_cluster_nodes"]

BUS_PORT_OFFSET = 10000
# How a node sees a peer it cannot count on: suspected or agreed down, not yet met.
_NOT_HEALTHY = frozenset({"fail", "fail?", "handshake", "noaddr"})


@dataclass(frozen=True, slots=True)
class NodeEntry:
    """One line of CLUSTER NODES: how one node sees another (or itself)."""

    node_id: str
    address: Address
    flags: frozenset[str]
    master_id: str | None
    connected: bool
    slots: frozenset[int]
    migrating: bool  # an open IMPORTING/MIGRATING slot ("[slot->-id]" / "[slot-<-id]")

    @property
    def is_master(self) -> bool:
        return "master" in self.flags

    @property
    def healthy(self) -> bool:
        return self.connected and not self.flags & _NOT_HEALTHY


def _slots(fields: list[str]) -> frozenset[int]:
    slots: set[int] = set()
    for field in fields:
        if field.startswith("["):
            continue
        first, _, last = field.partition("-")
        slots.update(range(int(first), int(last or first) + 1))
    return frozenset(slots)


def parse_cluster_nodes(text: str) -> list[NodeEntry]:
    """``<id> <ip:port@cport> <flags> <master> <ping> <pong> <epoch> <link> <slot>...``."""
    entries = []
    for line in text.splitlines():
        fields = line.split()
        if not fields:
            continue
        host, _, port = fields[1].split("@")[0].rpartition(":")
        entries.append(
            NodeEntry(
                node_id=fields[0],
                address=(host, int(port)),
                flags=frozenset(fields[2].split(",")),
                master_id=None if fields[3] == "-" else fields[3],
                connected=fields[7] == "connected",
                slots=_slots(fields[8:]),
                migrating=any(field.startswith("[") for field in fields[8:]),
            )
        )
    return entries


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


class ClusterNode(RedisNode):
    """A redis-server in cluster mode; its nodes.conf (and so its node id) survives restarts."""

    def __init__(self, node_timeout_ms: int) -> None:
        cluster_args = (
            *("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"),
            *("--cluster-node-timeout", str(node_timeout_ms)),
        )
        super().__init__(persistence=False, extra_args=cluster_args)
        # The cluster bus listens on port + 10000: that one must be free too.
        while not _bindable(self.port + BUS_PORT_OFFSET):
            self.port = free_port_below()
        self._node_id: str | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None

    @property
    def node_id(self) -> str:
        if self._node_id is None:
            self._node_id = str(self.command("CLUSTER", "MYID"))
        return self._node_id

    def cluster_info(self) -> dict[str, str]:
        # "CLUSTER", "INFO" as two words: redis-py's callbacks (keyed "CLUSTER INFO")
        # stay out of it and the reply is the server's text.
        text = str(self.command("CLUSTER", "INFO"))
        pairs = (line.partition(":") for line in text.splitlines() if ":" in line)
        return {key: value.strip() for key, _, value in pairs}

    def cluster_nodes(self) -> list[NodeEntry]:
        """This node's view of the cluster."""
        return parse_cluster_nodes(str(self.command("CLUSTER", "NODES")))

    def __repr__(self) -> str:
        return f"<ClusterNode port={self.port} running={self.running}>"
