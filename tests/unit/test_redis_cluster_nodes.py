"""CLUSTER NODES parsing for the cluster test infrastructure (tests/redis_cluster_node.py)."""

from __future__ import annotations

from tests.redis_cluster_node import parse_cluster_nodes

# Redis 7.0's format: the source's view during a migration, one replica, one failed master.
TEXT = """\
a1 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460 [5461->-b2]
b2 127.0.0.1:30002@40002,host-b master - 0 1700000000000 2 connected 5461-10922
c3 127.0.0.1:30003@40003 master,fail - 1700000000000 1700000000000 3 disconnected
d4 127.0.0.1:30004@40004 slave a1 0 1700000000000 1 connected
e5 127.0.0.1:30005@40005 master - 0 1700000000000 7 connected 10923-16383
"""


def test_cluster_nodes_lines_become_entries() -> None:
    """Slot ranges expand, open migrations are flagged not counted, roles and links read."""
    entries = {entry.node_id: entry for entry in parse_cluster_nodes(TEXT)}
    mine, other, dead, replica, last = (entries[key] for key in ("a1", "b2", "c3", "d4", "e5"))
    assert (mine.address, len(mine.slots), mine.migrating) == (("127.0.0.1", 30001), 5461, True)
    assert (mine.is_master, mine.healthy) == (True, True)
    assert (other.address, other.migrating) == (("127.0.0.1", 30002), False)
    assert (dead.is_master, dead.healthy, dead.slots) == (True, False, frozenset())
    assert (replica.master_id, replica.is_master, replica.healthy) == ("a1", False, True)
    assert len(mine.slots | other.slots | last.slots) == 16384
