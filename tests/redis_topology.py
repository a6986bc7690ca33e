"""Redis topologies for failure tests: a primary, a replica and three Sentinels.

A SentinelGroup starts them on private ports, kills the primary, waits for the
Sentinels' failover and brings the killed node back as a replica. It re-exports
RedisNode (tests/redis_node.py), so tests import both from here.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable

import redis

from tests.redis_node import HOST, Address, RedisNode, RedisProcess, wait_until

__all__ = ["RedisNode", "SentinelGroup", "SentinelNode", "wait_until"]


def _fields(entry: object) -> dict[str, str]:
    """One SENTINEL REPLICAS entry (redis-py 8 pairs the fields up; older ones do not)."""
    if isinstance(entry, dict):
        return {str(key): str(value) for key, value in entry.items()}
    flat = [str(item) for item in _as_list(entry, "SENTINEL REPLICAS")]
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _as_list(reply: object, command: str) -> list[object]:
    if not isinstance(reply, list):
        raise TypeError(f"{command} answered {reply!r}")
    return reply


class SentinelNode(RedisProcess):
    """One Sentinel with its own writable config file (Sentinel rewrites it)."""

    # Sentinel queries are cheap: a frozen Sentinel should cost a poll little time.
    control_timeout = 1.0

    def __init__(self, master_name: str, master: Address, settings: dict[str, str]) -> None:
        super().__init__("pgcast-sentinel-")
        self.master_name = master_name
        self.conf = self.root / "sentinel.conf"
        lines = [
            f"port {self.port}",
            f"bind {HOST}",
            f"dir {self.root}",
            f"logfile {self.logfile}",
            f"sentinel monitor {master_name} {master[0]} {master[1]} 2",
            *(f"sentinel {key} {master_name} {value}" for key, value in settings.items()),
        ]
        self.conf.write_text("\n".join(lines) + "\n")

    def argv(self) -> list[str]:
        return [str(self.conf), "--sentinel"]

    def start(self, timeout: float = 10.0) -> SentinelNode:
        self.spawn(timeout)
        return self

    def master_address(self) -> Address | None:
        reply = self.command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name)
        if not isinstance(reply, list):
            return None
        return (str(reply[0]), int(reply[1]))

    def replicas(self) -> list[dict[str, str]]:
        reply = _as_list(self.command("SENTINEL", "REPLICAS", self.master_name), "REPLICAS")
        return [_fields(entry) for entry in reply]

    def peers(self) -> int:
        """How many other Sentinels this one knows for the master."""
        return len(_as_list(self.command("SENTINEL", "SENTINELS", self.master_name), "SENTINELS"))


class SentinelGroup:
    """A primary, one replica and three Sentinels (quorum 2) on private ports.

    Measured on a 2-CPU machine, Redis 7.0.15, these settings: SIGKILL of the primary
    -> a majority of Sentinels naming a new master that answers ROLE master took
    1.1-3.1 s, median 2.3 s, over 40 runs. A Sentinel that voted in a failover will not
    start another within 2 × failover-timeout, so a kill right after the previous
    failover can take up to ~5.5 s (once in 40; ~7.3 s with failover-timeout 3000).
    A Sentinel frozen for over 2 s enters TILT for 30 s after SIGCONT and takes no part
    in a failover meanwhile: with another Sentinel down, none happens for ~40 s.
    The methods block: async tests call them through asyncio.to_thread.
    """

    def __init__(self, master_name: str = "pgcast", persistence: bool = False) -> None:
        self.master_name = master_name
        first = RedisNode(persistence)
        self.nodes = (first, RedisNode(persistence, replicaof=first.address))
        settings = {
            "down-after-milliseconds": "1000",
            # Twice this is how long a Sentinel waits after a vote before it starts a
            # failover itself: 2000 keeps back-to-back failovers quick, and promotion
            # (REPLICAOF NO ONE, seen by the next 1 s INFO) still fits inside it.
            "failover-timeout": "2000",
            "parallel-syncs": "1",
        }
        self.sentinels = tuple(SentinelNode(master_name, first.address, settings) for _ in "abc")

    @property
    def url(self) -> str:
        hosts = ",".join(f"{host}:{port}" for host, port in self.sentinel_addresses)
        return f"redis+sentinel://{hosts}/{self.master_name}/0"

    @property
    def sentinel_addresses(self) -> list[Address]:
        return [sentinel.address for sentinel in self.sentinels]

    def start(self, timeout: float = 20.0) -> SentinelGroup:
        for node in self.nodes:
            node.start()
        self.nodes[1].wait_synced()
        for sentinel in self.sentinels:
            sentinel.start()
        # A failover needs Sentinels that know each other (hello messages, every 2 s)
        # and a replica to promote.
        wait_until(
            self._sentinels_ready,
            timeout,
            "each Sentinel to know the two others and a healthy replica",
        )
        return self

    def _sentinels_ready(self) -> bool:
        return all(
            sentinel.peers() >= 2 and self._healthy_replica(sentinel, self.nodes[1].port)
            for sentinel in self.sentinels
        )

    @staticmethod
    def _healthy_replica(sentinel: SentinelNode, port: int) -> bool:
        bad = {"s_down", "o_down", "disconnected"}
        return any(
            int(entry["port"]) == port and not bad & set(entry["flags"].split(","))
            for entry in sentinel.replicas()
        )

    def _answering_agree(self, check: Callable[[SentinelNode], bool]) -> bool:
        """``check`` holds on every Sentinel that answers, and a majority answers."""
        answered = 0
        for sentinel in self.sentinels:
            try:
                if not check(sentinel):
                    return False
            except (redis.RedisError, OSError):
                continue  # killed or frozen: not part of the agreement
            answered += 1
        return answered >= 2

    def _votes(self) -> Counter[Address]:
        votes: Counter[Address] = Counter()
        for sentinel in self.sentinels:
            with contextlib.suppress(redis.RedisError, OSError):
                address = sentinel.master_address()
                if address is not None:
                    votes[address] += 1
        return votes

    def node_at(self, port: int) -> RedisNode:
        for node in self.nodes:
            if node.port == port:
                return node
        raise LookupError(f"no node of this group listens on port {port}")

    def primary(self) -> RedisNode:
        """The node a majority of Sentinels report as master."""
        for address, count in self._votes().items():
            if count >= 2:
                return self.node_at(address[1])
        raise RuntimeError(f"no majority of Sentinels agrees on a master: {self._votes()}")

    def replica_of(self, primary: RedisNode) -> RedisNode:
        return self.nodes[1] if primary is self.nodes[0] else self.nodes[0]

    def replica(self) -> RedisNode:
        return self.replica_of(self.primary())

    def kill_primary(self) -> RedisNode:
        """SIGKILL the node Sentinels report as master; returns it (to restart later)."""
        node = self.primary()
        node.kill9()
        return node

    def wait_failover(self, old_port: int, timeout: float = 15.0) -> RedisNode:
        """A majority of Sentinels report another master, and it answers ROLE master."""

        def promoted() -> RedisNode | None:
            for (_, port), count in self._votes().items():
                if port != old_port and count >= 2 and self.node_at(port).role() == "master":
                    return self.node_at(port)
            return None

        return wait_until(promoted, timeout, f"failover away from port {old_port}")

    def restart_as_replica(self, node: RedisNode, timeout: float = 15.0) -> None:
        """Restart a killed node as a replica of the new primary; wait until it is synced."""
        new = self.primary()
        if new is node:
            raise RuntimeError(f"port {node.port} is still the primary: wait_failover first")
        # Every answering Sentinel must name the new master first: one still naming this
        # node would see it come back and count it as its (demoted) master.
        wait_until(
            lambda: self._answering_agree(lambda s: s.master_address() == new.address),
            timeout,
            f"every answering Sentinel to name port {new.port} as master",
        )
        # Started as a replica, never a second master even briefly.
        node.follows = new.address
        node.restart()
        node.wait_synced(timeout)
        wait_until(
            lambda: self._answering_agree(lambda s: self._healthy_replica(s, node.port)),
            timeout,
            f"every answering Sentinel to list port {node.port} as a healthy replica",
        )

    def kill_sentinels(self) -> None:
        for sentinel in self.sentinels:
            sentinel.kill9()

    def destroy(self) -> None:
        for process in (*self.sentinels, *self.nodes):
            with contextlib.suppress(Exception):
                process.destroy()
