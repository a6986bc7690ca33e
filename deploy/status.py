"""What the runner shows: the status table, the state file, and a line from /metrics.

Pure functions over plain rows, so the format is tested without processes. The
state file (``stack.json``) is what ``make down`` and the stack test read: the
runner's PID and each process's name, kind, PID, port, state and restarts.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass

from prometheus_client.parser import text_string_to_metric_families

# What the table shows from each kind's /metrics: (metric family, how to say it).
GATEWAY_CONNECTIONS = "pgcast_gateway_connections"
LISTENER_LEADER = "pgcast_listener_leader"


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


def _samples(text: str) -> Mapping[str, float]:
    """Family name -> sum of its samples (a gauge split by label adds up)."""
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == family.name or sample.name == family.name + "_total":
                totals[family.name] = totals.get(family.name, 0.0) + sample.value
    return totals


def metrics_info(kind: str, text: str) -> str:
    """The INFO cell for a process of ``kind`` from its /metrics text ('' if unknown)."""
    try:
        values = _samples(text)
    except ValueError:
        return ""
    if kind == "gateway" and GATEWAY_CONNECTIONS in values:
        return f"{values[GATEWAY_CONNECTIONS]:.0f} connections"
    if kind == "listener" and LISTENER_LEADER in values:
        return "leader" if values[LISTENER_LEADER] >= 1 else "standby"
    return ""
