"""What the runner shows: the status table, the state file, and a line from /metrics.

Pure functions over plain rows, so the format is tested without processes. The
state file (``stack.json``) is what ``make down`` and the stack test read: the
runner's PID and each process's name, kind, PID, port, state and restarts. The
stack's own Redis servers and Sentinels (``--redis sentinel``) are judged here from
their answers to INFO replication and SENTINEL MASTER, its cluster nodes
(``--redis cluster``) from CLUSTER INFO and CLUSTER NODES.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

# What the table shows from each kind's /metrics.
GATEWAY_CONNECTIONS = "pgcast_gateway_connections"
LISTENER_ROLE = "pgcast_listener_role"  # one sample per role label, 1 for the current one


@dataclass(frozen=True, slots=True)
class Row:
    """One process as the table and the state file show it."""

    name: str
    kind: str
    pid: int | None
    port: int | None
    state: str
    restarts: int
    info: str


COLUMNS = ("NAME", "PID", "PORT", "STATE", "RESTARTS", "INFO")


def table(rows: Sequence[Row], title: str) -> str:
    """The status table, aligned, under a timestamped title line."""
    cells = [COLUMNS] + [
        (
            r.name,
            str(r.pid or "-"),
            str(r.port or "-"),
            r.state,
            str(r.restarts),
            r.info,
        )
        for r in rows
    ]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in cells
    ]
    stamp = time.strftime("%H:%M:%S")
    return "\n".join([f"[{stamp}] {title}", *("  " + line for line in lines)])


def state_document(runner_pid: int, url: str, rows: Iterable[Row]) -> dict[str, object]:
    return {"runner_pid": runner_pid, "url": url, "procs": [asdict(r) for r in rows]}


def _families(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Family name -> its (labels, value) samples, counters' ``_total`` included."""
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in (family.name, family.name + "_total"):
                found.setdefault(family.name, []).append((sample.labels, sample.value))
    return found


def metrics_info(kind: str, text: str) -> str:
    """The INFO cell for a process of ``kind`` from its /metrics text ('' if unknown)."""
    try:
        families = _families(text)
    except ValueError:
        return ""
    if kind == "gateway" and GATEWAY_CONNECTIONS in families:
        total = sum(value for _, value in families[GATEWAY_CONNECTIONS])
        return f"{total:.0f} connections"
    if kind == "listener":
        roles = [labels.get("role", "?") for labels, v in families.get(LISTENER_ROLE, []) if v >= 1]
        return roles[0] if roles else ""
    return ""


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def replication_health(info: Mapping[str, Any]) -> tuple[bool, str]:
    """A Redis server's health and INFO cell from its INFO replication: a primary is
    healthy; a replica while its link to the primary is up."""
    if info.get("role") == "master":
        return True, "primary, " + _plural(int(info.get("connected_slaves", 0)), "replica")
    link = str(info.get("master_link_status", "down"))
    where = f"{info.get('master_host', '?')}:{info.get('master_port', '?')}"
    return link == "up", f"replica of {where} (link {link})"


def sentinel_health(state: Mapping[str, Any]) -> tuple[bool, str]:
    """A Sentinel's health and INFO cell from SENTINEL MASTER: healthy once it names the
    master's address; the cell adds what it knows and whether it sees a failure."""
    if not state.get("ip") or not state.get("port"):
        return False, ""
    parts = [
        f"master {state['ip']}:{state['port']}",
        _plural(int(state.get("num-slaves", 0)), "replica"),
        _plural(int(state.get("num-other-sentinels", 0)), "other sentinel"),
    ]
    flags = str(state.get("flags", ""))
    if "failover_in_progress" in flags:
        parts.append("failing over")
    elif state.get("is_odown"):
        parts.append("master down")
    elif state.get("is_sdown"):
        parts.append("master unreachable")
    return True, ", ".join(parts)


def _slot_count(fields: Sequence[str]) -> int:
    """How many slots a CLUSTER NODES line's slot fields name (open migrations skipped)."""
    count = 0
    for field in fields:
        if not field.startswith("["):
            first, _, last = field.partition("-")
            count += int(last or first) - int(first) + 1
    return count


def cluster_health(info: Mapping[str, str], nodes: str) -> tuple[bool, str]:
    """A cluster node's health and INFO cell from CLUSTER INFO and CLUSTER NODES. A node
    not yet in a cluster is healthy (``redis-cli --cluster create`` joins it once all
    answer), a member while its ``cluster_state`` is ok or, while it is not, no slot's
    master is suspected down (a cluster being created, a master's first seconds);
    the cell gives its role and the state."""
    lines = [line.split() for line in nodes.splitlines() if line.strip()]
    me = next((f for f in lines if len(f) > 7 and "myself" in f[2].split(",")), None)
    if me is None or info.get("cluster_known_nodes") == "1":
        return True, "not in a cluster yet"
    state = info.get("cluster_state", "?")
    if "master" in me[2].split(","):
        replicas = sum(1 for f in lines if f[3] == me[0] and "fail" not in f[2].split(","))
        role = f"master, {_plural(_slot_count(me[8:]), 'slot')}, {_plural(replicas, 'replica')}"
    else:
        master = next((f for f in lines if f[0] == me[3]), None)
        where = master[1].split("@")[0] if master is not None else "?"
        role = f"replica of {where}"
    failing = int(info.get("cluster_slots_pfail", 0)) + int(info.get("cluster_slots_fail", 0))
    return state == "ok" or failing == 0, f"{role}, cluster {state}"
