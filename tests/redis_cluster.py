"""A private Redis Cluster for failure tests: masters with replicas, on loopback.

RedisCluster starts redis-server nodes in cluster mode (tests/redis_cluster_node.py), joins
them with ``redis-cli --cluster create``, and kills, fails over, restarts, grows (add_master),
reshards and shrinks (empty_master, remove_node) them. The topology is always read back
from CLUSTER NODES, never assumed. Every wait polls with a deadline and fails naming what
it waited for (and what was still wrong); processes are stopped by PID. The methods
block: async tests call them through asyncio.to_thread.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Callable

import redis
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from tests.redis_cluster_node import ClusterNode, NodeEntry
from tests.redis_node import HOST, Address, wait_until
from tests.servers import NoServerError

__all__ = ["ClusterNode", "NodeEntry", "RedisCluster", "wait_until"]


class RedisCluster:
    """``masters`` masters with ``replicas_per_master`` replicas each, on private ports.

    The node timeout (1 s by default) bounds failure detection. Measured on a 2-CPU
    machine, Redis 7.0.15: start 2.2 s; SIGKILL of a master -> its replica serves the
    slots and every node is ok again 2.1-2.9 s (median 2.5 s, 14 runs); a killed node
    restarted is a synced replica 0.15 s later; CLUSTER FAILOVER 0.4-0.6 s; moving a
    slot with 1,000 keys 0.07-0.11 s (0.1-0.23 s with the CPUs saturated).
    """

    def __init__(
        self, masters: int = 3, replicas_per_master: int = 1, node_timeout_ms: int = 1000
    ) -> None:
        if masters < 3:
            raise ValueError("redis-cli --cluster create needs at least 3 masters")
        self.replicas_per_master = replicas_per_master
        self.node_timeout_ms = node_timeout_ms
        count = masters * (1 + replicas_per_master)
        self.nodes = tuple(ClusterNode(node_timeout_ms) for _ in range(count))
        # Port of a master killed or failed over by this object -> one slot it served:
        # the shard is whoever owns that slot now.
        self._shard_slot: dict[int, int] = {}

    @property
    def startup_nodes(self) -> list[Address]:
        return [node.address for node in self.nodes]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"{host}:{port}" for host, port in self.startup_nodes)

    # -- start and stop -------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> RedisCluster:
        for node in self.nodes:
            node.start()
        cli = shutil.which("redis-cli")
        if cli is None:
            raise NoServerError("no redis-cli on PATH (Debian: apt-get install redis-tools)")
        seeds = [f"{host}:{port}" for host, port in self.startup_nodes]
        argv = [cli, "--cluster", "create", *seeds, "--cluster-yes"]
        argv += ["--cluster-replicas", str(self.replicas_per_master)]
        try:
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise TimeoutError(f"redis-cli --cluster create ran over {timeout}s") from exc
        if done.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed:\n{done.stdout}{done.stderr}")
        self.wait_healthy(timeout)
        for node in self.nodes:
            _ = node.node_id  # known from now on, even while the node is down
        return self

    def add_master(self, timeout: float = 15.0) -> ClusterNode:
        """Start an empty node and join it (CLUSTER MEET) as a master serving no slot yet
        (move_slot gives it some); returns it once every node sees it and the cluster is
        healthy."""
        node = ClusterNode(self.node_timeout_ms)
        seed = self.running_nodes()[0]
        self.nodes = (*self.nodes, node)  # before start: destroy() reaps it even if it fails
        node.start()
        seed.command("CLUSTER", "MEET", HOST, node.port)
        _ = node.node_id
        _wait_for_no_reason(self._unhealthy_reason, timeout, f"port {node.port} to join")
        return node

    def destroy(self) -> None:
        for node in self.nodes:
            with contextlib.suppress(Exception):
                node.destroy()  # SIGKILL by PID and a bounded reap: never hangs

    # -- topology ---------------------------------------------------------------

    def running_nodes(self) -> list[ClusterNode]:
        return [node for node in self.nodes if node.running]

    def node_at(self, port: int) -> ClusterNode:
        for node in self.nodes:
            if node.port == port:
                return node
        raise LookupError(f"no node of this cluster listens on port {port}")

    def node_by_id(self, node_id: str) -> ClusterNode:
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        raise LookupError(f"no node of this cluster has the id {node_id}")

    def view(self) -> list[NodeEntry]:
        """CLUSTER NODES from the first running node that answers."""
        errors: list[str] = []
        for node in self.running_nodes():
            try:
                return node.cluster_nodes()
            except (redis.RedisError, OSError) as exc:
                errors.append(f"port {node.port}: {exc!r}")
        raise RuntimeError(f"no cluster node answered CLUSTER NODES: {errors}")

    def masters(self) -> list[ClusterNode]:
        """The healthy masters, in port order (a master with no slots counts)."""
        return self._with_role(master=True)

    def replicas(self) -> list[ClusterNode]:
        """The healthy replicas, in port order."""
        return self._with_role(master=False)

    def _with_role(self, master: bool) -> list[ClusterNode]:
        ports = sorted(
            entry.address[1]
            for entry in self.view()
            if entry.healthy and (entry.is_master if master else "slave" in entry.flags)
        )
        return [self.node_at(port) for port in ports]

    def replicas_of(self, master: ClusterNode) -> list[ClusterNode]:
        view = self.view()
        return [
            self.node_at(entry.address[1])
            for entry in view
            if entry.master_id == master.node_id and entry.healthy
        ]

    def master_of_slot(self, slot: int) -> ClusterNode:
        for entry in self.view():
            if entry.is_master and slot in entry.slots:
                return self.node_at(entry.address[1])
        raise LookupError(f"no master serves slot {slot}")

    @staticmethod
    def key_slot(key: str | bytes) -> int:
        """The hash slot of a key or shard channel (hash tags honoured), as CLUSTER KEYSLOT."""
        return key_slot(key.encode() if isinstance(key, str) else key)

    # -- health -------------------------------------------------------------------

    def wait_healthy(self, timeout: float = 15.0) -> None:
        """Every running node says cluster_state:ok, sees every running node healthy, agrees
        on who serves each of the 16384 slots, and every replica's link is up."""
        _wait_for_no_reason(self._unhealthy_reason, timeout, "the cluster to be healthy")

    def _unhealthy_reason(self) -> str | None:
        running = self.running_nodes()
        ports = {node.port for node in running}
        owners: dict[str, tuple[str | None, frozenset[int]]] | None = None
        for node in running:
            info = node.cluster_info()
            if info.get("cluster_state") != "ok":
                return f"port {node.port}: cluster_state {info.get('cluster_state')}"
            view = node.cluster_nodes()
            reason = self._view_problem(node, view, ports)
            if reason is not None:
                return reason
            # Gossip reaches the nodes one by one: wait until all tell the same story.
            mine = {
                entry.node_id: (entry.master_id, entry.slots)
                for entry in view
                if entry.address[1] in ports or entry.slots
            }
            if owners is not None and mine != owners:
                return f"port {node.port} disagrees with the others on roles or slots"
            owners = mine
        return None

    def _view_problem(
        self, node: ClusterNode, view: list[NodeEntry], ports: set[int]
    ) -> str | None:
        by_port = {entry.address[1]: entry for entry in view}
        for port in sorted(ports):
            entry = by_port.get(port)
            if entry is None or not entry.healthy:
                state = "nothing" if entry is None else sorted(entry.flags)
                return f"port {node.port} sees port {port} as {state}"
            if entry.migrating:
                return f"port {node.port} sees a slot migration open on port {port}"
        covered = sum(len(entry.slots) for entry in view if entry.address[1] in ports)
        if covered != REDIS_CLUSTER_HASH_SLOTS:
            return f"port {node.port} sees {covered} slots served by running nodes"
        me = by_port[node.port]
        if not me.is_master:
            link = node.info_replication().get("master_link_status")
            if link != "up":
                return f"replica on port {node.port}: master_link_status {link}"
        return None

    # -- failures -----------------------------------------------------------------

    def kill_master(self, node: ClusterNode) -> ClusterNode:
        """SIGKILL a master (remembering its shard for wait_failover); returns it."""
        self._remember_shard(node)
        node.kill9()
        return node

    def _remember_shard(self, node: ClusterNode) -> None:
        entry = next((e for e in node.cluster_nodes() if "myself" in e.flags), None)
        if entry is None or not entry.is_master or not entry.slots:
            raise RuntimeError(f"port {node.port} is not a master serving slots")
        self._shard_slot[node.port] = min(entry.slots)

    def wait_failover(self, old_port: int, timeout: float = 15.0) -> ClusterNode:
        """A replica of the master killed on ``old_port`` serves its slots and answers ROLE
        master, and the cluster is healthy again; returns the new master."""
        if old_port not in self._shard_slot:
            raise LookupError(f"port {old_port} was not killed or failed over by kill_master")
        slot = self._shard_slot[old_port]

        def promoted() -> str | None:
            owner = self.master_of_slot(slot)
            if owner.port == old_port:
                return f"port {old_port} still serves slot {slot}"
            if owner.role() != "master":
                return f"port {owner.port} serves slot {slot} but is not master yet"
            return self._unhealthy_reason()

        _wait_for_no_reason(promoted, timeout, f"a failover away from port {old_port}")
        return self.master_of_slot(slot)

    def failover(self, replica: ClusterNode, timeout: float = 15.0) -> ClusterNode:
        """CLUSTER FAILOVER on ``replica``: a coordinated switch that loses no acknowledged
        write (the master stops clients until the replica caught up). Returns the former
        master, now a replica of ``replica``."""
        entry = next((e for e in replica.cluster_nodes() if "myself" in e.flags), None)
        if entry is None or entry.master_id is None:
            raise RuntimeError(f"port {replica.port} is not a replica")
        old = self.node_by_id(entry.master_id)
        self._remember_shard(old)
        replica.command("CLUSTER", "FAILOVER")

        def switched() -> str | None:
            if replica.role() != "master" or old.role() != "slave":
                return f"port {replica.port} to be master and port {old.port} its replica"
            return self._unhealthy_reason()

        _wait_for_no_reason(switched, timeout, f"CLUSTER FAILOVER on port {replica.port}")
        return old

    def restart(self, node: ClusterNode, timeout: float = 15.0) -> ClusterNode:
        """SIGKILL (if running) and start on the same port and dir, with its nodes.conf but
        no data; a master failed over meanwhile rejoins as a replica of its successor."""
        node.restart()
        self.wait_healthy(timeout)
        return node

    # -- resharding ---------------------------------------------------------------

    def move_slot(
        self, slot: int, to_master: ClusterNode, batch: int = 100, timeout: float = 15.0
    ) -> int:
        """Move a slot with its keys to another master, the documented way; returns how
        many keys moved. SETSLOT IMPORTING on the target, MIGRATING on the source, MIGRATE
        the keys in batches, then SETSLOT NODE on the target, the source and every master."""
        source = self.master_of_slot(slot)
        if source is to_master:
            raise ValueError(f"port {to_master.port} already serves slot {slot}")
        target_id = to_master.node_id
        to_master.command("CLUSTER", "SETSLOT", slot, "IMPORTING", source.node_id)
        source.command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
        moved = 0
        # MIGRATE's own timeout (5 s) bounds each batch; the client waits a little longer.
        with source.client(timeout=7.0) as client:
            while keys := _as_list(client.execute_command("CLUSTER", "GETKEYSINSLOT", slot, batch)):
                client.execute_command("MIGRATE", HOST, to_master.port, "", 0, 5000, "KEYS", *keys)
                moved += len(keys)
        others = [node for node in self.masters() if node not in (source, to_master)]
        for node in (to_master, source, *others):
            node.command("CLUSTER", "SETSLOT", slot, "NODE", target_id)

        def owned() -> str | None:
            for node in self.running_nodes():
                for entry in node.cluster_nodes():
                    if slot in entry.slots and entry.node_id != target_id:
                        return f"port {node.port} says port {entry.address[1]} serves it"
            return self._unhealthy_reason()

        _wait_for_no_reason(
            owned, timeout, f"every node to see slot {slot} on port {to_master.port}"
        )
        return moved

    def empty_master(self, node: ClusterNode, timeout: float = 120.0) -> None:
        """Move every slot of master ``node`` (with its keys) to the other masters, the way an
        operator does: ``redis-cli --cluster rebalance --cluster-weight <id>=0``. Redis then
        makes the emptied master (and its replicas) replicas of a master that took its slots.
        Returns once the cluster is healthy and no node says ``node`` serves a slot."""
        self._redis_cli(
            ["rebalance", f"{HOST}:{node.port}", "--cluster-weight", f"{node.node_id}=0"],
            timeout,
        )

        def emptied() -> str | None:
            for entry in self.view():
                if entry.node_id == node.node_id and entry.slots:
                    return f"port {node.port} still serves {len(entry.slots)} slots"
            return self._unhealthy_reason()

        _wait_for_no_reason(emptied, 15.0, f"port {node.port} to serve no slot")

    def remove_node(self, node: ClusterNode, timeout: float = 15.0) -> None:
        """Take a node that serves no slot out of the cluster: CLUSTER FORGET on every other
        node (each then ignores it for 60 s, longer than this takes), then stop it by PID.
        Returns once the cluster is healthy and no running node knows it."""
        for entry in node.cluster_nodes():
            if "myself" in entry.flags and entry.slots:
                raise RuntimeError(f"port {node.port} still serves {len(entry.slots)} slots")
        gone = node.node_id
        others = [other for other in self.running_nodes() if other is not node]
        for other in others:
            if any(e.master_id == gone for e in other.cluster_nodes() if "myself" in e.flags):
                raise RuntimeError(f"port {other.port} is a replica of port {node.port}")
        for other in others:
            other.command("CLUSTER", "FORGET", gone)
        node.stop()

        def forgotten() -> str | None:
            for other in others:
                if any(entry.node_id == gone for entry in other.cluster_nodes()):
                    return f"port {other.port} still knows port {node.port}"
            return self._unhealthy_reason()

        _wait_for_no_reason(forgotten, timeout, f"the cluster to forget port {node.port}")

    def _redis_cli(self, args: list[str], timeout: float) -> str:
        cli = shutil.which("redis-cli")
        if cli is None:
            raise NoServerError("no redis-cli on PATH (Debian: apt-get install redis-tools)")
        argv = [cli, "--cluster", *args, "--cluster-yes"]
        try:
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise TimeoutError(f"redis-cli --cluster {args[0]} ran over {timeout}s") from exc
        if done.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster {args[0]} failed:\n{done.stdout}{done.stderr}")
        return done.stdout


def _as_list(reply: object) -> list[str]:
    if not isinstance(reply, list):
        raise TypeError(f"expected a list, got {reply!r}")
    return [str(item) for item in reply]


def _wait_for_no_reason(reason: Callable[[], str | None], timeout: float, what: str) -> None:
    """Poll until ``reason`` answers None; a timeout names the last thing still wrong."""
    last: list[str] = []

    def settled() -> bool:
        found = reason()
        if found is not None:
            last[:] = [found]
        return found is None

    try:
        wait_until(settled, timeout, what)
    except TimeoutError as exc:
        still = f"; still: {last[0]}" if last else ""
        raise TimeoutError(f"{exc}{still}") from None
