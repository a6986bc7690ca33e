"""The contenders: pgcast (outbox or WAL capture), the ceiling, python-socketio, Node Socket.IO.

Each starts its processes on free ports and returns the addresses the load
generator spreads its connections over. pgcast runs its real console entry
points (listener and gateway) with their documented environment variables.
"""

from __future__ import annotations

from typing import Any

from bench.systems import NODE_DIR, Proc, System, entry_point, python_module, wait_http
from tests.servers import free_port, wait_port

HOST = "127.0.0.1"


class Pgcast(System):
    name, protocol, ingest = "pgcast", "pgcast", "pgcast"
    tree: str | None = None  # --tree: run listener and gateway from another checkout

    def listener(self, **env: str) -> Proc:
        port = free_port()
        proc = Proc(
            entry_point("listener.cli", self.tree),
            {
                "DATABASE_URL": self.env.dsn,
                "REDIS_URL": self.env.redis_url,
                "PGCAST_LISTENER_PORT": str(port),
                "PGCAST_LOG_LEVEL": "warning",
                **env,
            },
            piped=False,
        )
        wait_http(f"http://{HOST}:{port}/healthz", 30, proc)
        proc.port = port  # type: ignore[attr-defined]
        return proc

    def gateway(self, compression: bool = False) -> tuple[Proc, int]:
        port = free_port()
        proc = Proc(
            entry_point("gateway.cli", self.tree),
            {
                "REDIS_URL": self.env.redis_url,
                "PGCAST_JWT_SECRET": self.env.secret,
                "PGCAST_HOST": HOST,
                "PGCAST_PORT": str(port),
                "PGCAST_WS_COMPRESSION": "true" if compression else "false",
                "PGCAST_MAX_CONNECTIONS": "20000",
                "PGCAST_LOG_LEVEL": "warning",
            },
            piped=False,
        )
        wait_http(f"http://{HOST}:{port}/readyz", 30, proc)
        return proc, port

    def start(self, procs: int, **options: Any) -> list[tuple[str, int]]:
        listener_env = options.get("listener_env", {})
        self.feeders.append(self.listener(**listener_env))
        targets = []
        for _ in range(procs):
            proc, port = self.gateway(bool(options.get("compression")))
            self.servers.append(proc)
            targets.append((HOST, port))
        return targets


class PgcastWal(Pgcast):
    """pgcast with PGCAST_CAPTURE=wal: the listener decodes the WAL (its walsender is one
    of the postmaster's children, so its CPU is charged to Postgres)."""

    name = "pgcast-wal"

    def start(self, procs: int, **options: Any) -> list[tuple[str, int]]:
        wal = {"PGCAST_CAPTURE": "wal", "PGCAST_WAL_SLOT": "pgcast_bench_delivery"}
        listener_env = {**options.pop("listener_env", {}), **wal}
        return super().start(procs, listener_env=listener_env, **options)


class Ceiling(System):
    name, protocol, ingest = "ceiling", "raw", None

    def start(self, procs: int, **options: Any) -> list[tuple[str, int]]:
        port = free_port()
        proc = Proc(python_module("bench.ceiling", str(port)))
        proc.readline(20)
        self.servers.append(proc)
        return [(HOST, port)]

    def generate(self, rate: float, seconds: float, channels: list[str]) -> dict[str, int]:
        answer = self.servers[0].command(
            {"cmd": "run", "rate": rate, "seconds": seconds, "channels": channels},
            timeout=seconds + 120,
        )
        sent: dict[str, int] = answer["sent"]
        return sent


class PythonSocketIO(System):
    name, protocol, ingest = "python-socketio", "sio", "classic"

    def start(self, procs: int, **options: Any) -> list[tuple[str, int]]:
        feeder = Proc(python_module("bench.peers.sio_listener", self.env.dsn, self.env.redis_url))
        feeder.readline(30)
        self.feeders.append(feeder)
        targets = []
        for _ in range(procs):
            port = free_port()
            self.servers.append(
                Proc(
                    python_module(
                        "bench.peers.sio_server", str(port), self.env.redis_url, self.env.secret
                    )
                )
            )
            wait_port(port, 30)
            targets.append((HOST, port))
        return targets


class NodeSocketIO(System):
    name, protocol, ingest = "node-socketio", "sio", "classic"

    def start(self, procs: int, **options: Any) -> list[tuple[str, int]]:
        feeder = Proc(["node", str(NODE_DIR / "emitter.js"), self.env.dsn, self.env.redis_url])
        feeder.readline(30)
        self.feeders.append(feeder)
        targets = []
        for _ in range(procs):
            port = free_port()
            proc = Proc(
                [
                    "node",
                    str(NODE_DIR / "server.js"),
                    str(port),
                    self.env.redis_url,
                    self.env.secret,
                ]
            )
            proc.readline(30)
            wait_port(port, 30)
            self.servers.append(proc)
            targets.append((HOST, port))
        return targets


CONTENDERS: dict[str, type[System]] = {
    c.name: c for c in (Pgcast, PgcastWal, Ceiling, PythonSocketIO, NodeSocketIO)
}
