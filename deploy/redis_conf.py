"""The config files of the stack's own Redis processes (``--redis sentinel|cluster``).

A :class:`Server` is a pure description (name, kind, port, directory, config text) of
one process run from the local ``redis-server``; :func:`common` holds the lines every
one of them shares; :func:`write` lays out fresh directories and configs at every
start. :mod:`deploy.sentinel` and :mod:`deploy.cluster` describe their topologies
with them.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class Server:
    """One process of a topology: a Redis server, a Sentinel or a cluster node."""

    name: str
    kind: str  # "redis", "sentinel" or "cluster"
    port: int
    directory: Path
    conf: str
    bus_port: int | None = None  # a cluster node's bus (node to node only)

    @property
    def conf_path(self) -> Path:
        return self.directory / f"{self.kind}.conf"

    def argv(self, binary: str) -> tuple[str, ...]:
        argv = (binary, str(self.conf_path))
        return (*argv, "--sentinel") if self.kind == "sentinel" else argv


def quote(value: str) -> str:
    """A config-file string (redis-server splits lines like a shell, with C escapes)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def common(port: int, directory: Path) -> list[str]:
    """The lines every process shares: its port on loopback, its dir, logs to stdout."""
    return [
        f"port {port}",
        f"bind {HOST}",
        f"dir {quote(str(directory))}",
        "daemonize no",
        'logfile ""',  # stdout: the stack's log of this process
    ]


def write(root: Path, found: Sequence[Server]) -> None:
    """Fresh directories and configs under ``root`` (whatever an earlier run left is
    removed: each start begins with the topology the configs describe, empty)."""
    shutil.rmtree(root, ignore_errors=True)
    for server in found:
        server.directory.mkdir(parents=True, exist_ok=True)
        server.conf_path.write_text(server.conf)
