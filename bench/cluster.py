"""Redis Cluster against one Redis: per-user delivery, cluster bus traffic, gateway scaling.

``python -m bench.cluster [--quick] [--json FILE]`` starts, on 127.0.0.1 only, a private
durable Postgres, the Redis under test (one ``redis-server``, or a Redis Cluster of 3
masters, ``--replicas`` per master, 0 by default, built by tests/redis_cluster.py), a
real ``pgcast-listener`` and ``pgcast-gateway`` processes, and the load generator
(bench/loadgen.py: the native one where it builds) holding ``--connections`` WebSocket
connections, connection i subscribed to its own channel ``user:<i>``. Everything is
stopped by PID and removed afterwards; the shared servers are never used.

1. ``per_user``: for each topology (``single``, ``cluster``) and each ``--rates`` rate,
   events are written for ``--seconds`` round-robin over the connections' channels,
   through the real path: ``INSERT`` into ``bench_event`` whose deferred trigger calls
   ``pgcast.publish`` (bench/env.py), ``--batch`` rows per transaction (so the commit
   rate does not bound the event rate on these cores), the listener drains the outbox
   into Redis, the gateways deliver. Over a window after a warm-up: deliveries/s at the
   clients, CPU of every server-side process (listener, gateways, every Postgres
   process from /proc; each Redis node from ``INFO cpu``), the load generator's, the
   machine's other work, and on a cluster each node's ``CLUSTER INFO``
   ``cluster_stats_messages_sent``/``received`` deltas. Then the backlog left when
   writing stopped, the drain, loss and duplicates against what committed, latency
   (commit -> client) of the events received from the window on.
2. ``scaling``: the cluster, one rate (``--scale-rate``), 1, 2, 4 gateway processes
   (``--scale-gateways``): deliveries/s and server-side CPU per delivery.
3. ``bus``: classic ``PUBLISH`` against ``SPUBLISH`` on a 3-master cluster with one
   replica each (its own, 6 nodes): ``--bus-messages`` of each, 100-byte payloads, on
   pgcast's live channel names of ``--connections`` channels, each sent to the master
   that owns the channel's slot by a plain redis-py pipeline, no subscriber. Per node:
   ``CLUSTER INFO`` message deltas (all, and the ``publish``/``publishshard`` types) and
   ``INFO cpu``. pgcast itself always uses SPUBLISH on a cluster.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import redis.asyncio as aioredis

from bench import native
from bench.env import DURABLE, SCHEMA, ingest_trigger_sql, migrate
from bench.presence import cpu_of
from bench.procs import cpu_seconds, descendants, loadavg, rss_kib
from bench.stats import percentiles
from bench.systems import Proc, entry_point, python_module, wait_http
from pgcast.keys import Layout
from tests.redis_cluster import RedisCluster
from tests.servers import PgInstance, RedisInstance, free_port, free_port_below

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parents[1]
PAD = "x" * 100  # as bench/writer.py: an event body of about 150 bytes
NODE_TIMEOUT_MS = 5000  # busy cores must not get a node marked failing mid-run
PARTITIONS = 64  # PGCAST_REDIS_PARTITIONS, the default
INSERT = (
    "INSERT INTO bench_event (channel, body) "
    "SELECT c, b::jsonb FROM unnest($1::text[], $2::text[]) AS t(c, b)"
)


def log(message: str) -> None:
    print(f"[cluster {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- Redis, one or a cluster ---------------------------------------------------------------
@dataclass
class RedisNodeRef:
    """One Redis server of the topology: its role, port and PID."""

    role: str
    port: int
    pid: int


@dataclass
class Topology:
    """The Redis under test: ``single`` or ``cluster``; stopped by :meth:`destroy`."""

    name: str
    url: str
    nodes: list[RedisNodeRef]
    destroy: Callable[[], None]
    clients: dict[int, aioredis.Redis] = field(default_factory=dict)

    def client(self, port: int) -> aioredis.Redis:
        if port not in self.clients:
            self.clients[port] = aioredis.Redis(host=HOST, port=port, decode_responses=True)
        return self.clients[port]

    async def close(self) -> None:
        for client in self.clients.values():
            await client.aclose()
        self.clients.clear()

    async def cpu(self) -> dict[int, float]:
        """used_cpu_sys + used_cpu_user of every node, by port (INFO cpu)."""
        out = {}
        for node in self.nodes:
            info = await self.client(node.port).info("cpu")
            out[node.port] = float(info["used_cpu_sys"]) + float(info["used_cpu_user"])
        return out

    async def bus(self) -> dict[int, dict[str, int]]:
        """CLUSTER INFO's message counters of every node (empty for one Redis)."""
        if self.name != "cluster":
            return {}
        out = {}
        for node in self.nodes:
            text = await self.client(node.port).execute_command(  # type: ignore[no-untyped-call, unused-ignore]
                "CLUSTER", "INFO"
            )
            if isinstance(text, dict):  # redis-py may parse it into a dict already
                pairs = {str(k): str(v) for k, v in text.items()}
            else:
                pairs = dict(
                    line.strip().split(":", 1) for line in str(text).splitlines() if ":" in line
                )
            out[node.port] = {
                key.removeprefix("cluster_stats_messages_"): int(value)
                for key, value in pairs.items()
                if key.startswith("cluster_stats_messages_")
            }
        return out

    async def used_memory(self) -> dict[str, int]:
        out = {}
        for node in self.nodes:
            out[f"{node.role}:{node.port}"] = int(
                (await self.client(node.port).info("memory"))["used_memory"]
            )
        return out

    async def flush(self) -> None:
        for node in self.nodes:
            if node.role != "replica":
                await self.client(node.port).flushall()


def start_single() -> Topology:
    server = RedisInstance(port=free_port_below())
    server.start()
    assert server.proc is not None
    node = RedisNodeRef("single", server.port, server.proc.pid)
    return Topology("single", server.url, [node], server.destroy)


def start_cluster(replicas: int) -> Topology:
    cluster = RedisCluster(masters=3, replicas_per_master=replicas, node_timeout_ms=NODE_TIMEOUT_MS)
    try:
        cluster.start()
        masters = {node.port for node in cluster.masters()}
        nodes = [
            RedisNodeRef("master" if node.port in masters else "replica", node.port, node.pid)
            for node in cluster.nodes
        ]
    except BaseException:
        cluster.destroy()
        raise
    nodes.sort(key=lambda n: (n.role != "master", n.port))
    return Topology("cluster", cluster.url, nodes, cluster.destroy)


# -- pgcast's processes ---------------------------------------------------------------------
@dataclass
class Rig:
    """Postgres, the Redis topology, the listener and the gateways of one part."""

    pg: PgInstance
    redis: Topology
    secret: str
    listener: Proc | None = None
    gateways: list[tuple[Proc, int]] = field(default_factory=list)

    @property
    def dsn(self) -> str:
        return self.pg.dsn

    def pgcast_env(self) -> dict[str, str]:
        return {
            "REDIS_URL": self.redis.url,
            "PGCAST_REDIS_PARTITIONS": str(PARTITIONS),
            "PGCAST_LOG_LEVEL": "warning",
        }

    def start_listener(self) -> None:
        port = free_port()
        env = {**self.pgcast_env(), "DATABASE_URL": self.dsn, "PGCAST_LISTENER_PORT": str(port)}
        self.listener = Proc(entry_point("listener.cli"), env, piped=False)
        wait_http(f"http://{HOST}:{port}/healthz", 60, self.listener)

    def start_gateways(self, count: int) -> None:
        self.stop_gateways()
        for _ in range(count):
            port = free_port()
            env = {
                **self.pgcast_env(),
                "PGCAST_JWT_SECRET": self.secret,
                "PGCAST_HOST": HOST,
                "PGCAST_PORT": str(port),
                "PGCAST_WS_COMPRESSION": "false",
                "PGCAST_MAX_CONNECTIONS": "20000",
            }
            proc = Proc(entry_point("gateway.cli"), env, piped=False)
            self.gateways.append((proc, port))
            wait_http(f"http://{HOST}:{port}/readyz", 60, proc)

    def stop_gateways(self) -> None:
        for proc, _ in self.gateways:
            proc.stop()
        self.gateways = []

    def stop(self) -> None:
        self.stop_gateways()
        if self.listener is not None:
            self.listener.stop()
            self.listener = None


@contextlib.asynccontextmanager
async def postgres() -> Any:
    pg = PgInstance(extra_conf=dict(DURABLE)).init()
    try:
        pg.start()
        await asyncio.to_thread(migrate, pg.dsn)
        conn = await asyncpg.connect(pg.dsn)
        try:
            await conn.execute(SCHEMA)
            await conn.execute("DROP TRIGGER IF EXISTS bench_ingest ON bench_event")
            await conn.execute(ingest_trigger_sql("pgcast"))
        finally:
            await conn.close()
        yield pg
    finally:
        pg.destroy()


@contextlib.asynccontextmanager
async def rig(pg: PgInstance, topology: str, replicas: int) -> Any:
    """A fresh Redis of ``topology``, the outbox emptied, the listener running."""
    if topology == "cluster":
        redis = await asyncio.to_thread(start_cluster, replicas)
    else:
        redis = await asyncio.to_thread(start_single)
    run = Rig(pg, redis, secrets.token_hex(32))
    try:
        await reset_tables(pg.dsn)
        await asyncio.to_thread(run.start_listener)
        yield run
    finally:
        run.stop()
        await redis.close()
        redis.destroy()


async def reset_tables(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("TRUNCATE bench_event")
        await conn.execute("DELETE FROM pgcast.outbox")
    finally:
        await conn.close()


# -- the writer: paced multi-row transactions -----------------------------------------------
@dataclass
class Written:
    counts: list[int]
    failed: dict[int, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.counts) - sum(self.failed.values())

    def expected(self, names: list[str]) -> dict[str, int]:
        return {names[i]: n - self.failed.get(i, 0) for i, n in enumerate(self.counts) if n}


async def write_events(
    dsn: str, rate: float, seconds: float, channels: int, batch: int, concurrency: int = 8
) -> Written:
    """``rate`` events/s for ``seconds``, round-robin over ``user:0..channels-1``, ``batch``
    rows per transaction (open loop: transaction j is due at start + j * batch / rate)."""
    names = [f"user:{i}" for i in range(channels)]
    written = Written([0] * channels)
    pool = await asyncpg.create_pool(dsn, min_size=concurrency, max_size=concurrency)
    slots = asyncio.Semaphore(concurrency)
    total = int(rate * seconds)

    async def one(rows: list[int], bodies: list[str]) -> None:
        try:
            await pool.execute(INSERT, [names[i] for i in rows], bodies)
        except (asyncpg.PostgresError, OSError):
            for i in rows:
                written.failed[i] = written.failed.get(i, 0) + 1
        finally:
            slots.release()

    try:
        start = time.monotonic()
        async with asyncio.TaskGroup() as tasks:
            for j, first in enumerate(range(0, total, batch)):
                delay = start + j * batch / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                await slots.acquire()
                rows, bodies = [], []
                now = time.time()
                for k in range(first, min(total, first + batch)):
                    i = k % channels
                    written.counts[i] += 1
                    rows.append(i)
                    bodies.append(f'{{"bseq":{written.counts[i]},"bts":{now},"pad":"{PAD}"}}')
                tasks.create_task(one(rows, bodies))
        written.seconds = time.monotonic() - start
    finally:
        await pool.close()
    return written


# -- the load generator ------------------------------------------------------------------------
class LoadGen:
    """One load generator process holding every connection (per_user mode)."""

    def __init__(self, run: Rig, connections: int) -> None:
        self.kind = "native" if native.binary() is not None else "python"
        config = {
            "protocol": "pgcast",
            "targets": [(HOST, port) for _, port in run.gateways],
            "connections": connections,
            "first_index": 0,
            "mode": "per_user",
            "secret": run.secret,
            "native": self.kind == "native",
            "ready_timeout": 180.0,
        }
        self.proc = Proc(python_module("bench.loadgen", orjson.dumps(config).decode()))

    def ready(self) -> dict[str, Any]:
        answer: dict[str, Any] = orjson.loads(self.proc.readline(240))
        return answer

    async def ask(self, cmd: str, limit: float = 60, **extra: Any) -> dict[str, Any]:
        return await asyncio.to_thread(self.proc.command, {"cmd": cmd, **extra}, limit)

    async def deliveries(self) -> int:
        return int((await self.ask("stats"))["deliveries"])


def machine_jiffies() -> tuple[int, int, int]:
    """(busy, total, irq + softirq) jiffies of all CPUs so far (/proc/stat). Loopback TCP
    runs much of its work in softirq, which no process's CPU time includes."""
    with open("/proc/stat") as fh:
        values = [int(v) for v in fh.readline().split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values), values[5] + values[6]


def every_process_cpu() -> dict[int, float]:
    """utime + stime of every process on the machine (10 ms ticks), by PID."""
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            out[int(entry)] = cpu_seconds(int(entry))
    return out


@dataclass
class Snapshot:
    """Counters at one moment of a run."""

    at: float
    procs: dict[str, float]
    redis_cpu: dict[int, float]
    bus: dict[int, dict[str, int]]
    jiffies: tuple[int, int, int]
    deliveries: int
    ours: set[int]
    everyone: dict[int, float]


async def snapshot(run: Rig, gen: LoadGen) -> Snapshot:
    groups = process_groups(run, gen)
    deliveries = await gen.deliveries()
    return Snapshot(
        at=time.monotonic(),
        procs={name: cpu_of(pids) for name, pids in groups.items()},
        redis_cpu=await run.redis.cpu(),
        bus=await run.redis.bus(),
        jiffies=machine_jiffies(),
        deliveries=deliveries,
        ours={pid for pids in groups.values() for pid in pids},
        everyone=every_process_cpu(),
    )


def process_groups(run: Rig, gen: LoadGen) -> dict[str, list[int]]:
    return {
        "listener": [run.listener.pid] if run.listener is not None else [],
        "gateways": [proc.pid for proc, _ in run.gateways],
        "postgres": descendants(run.pg.postmaster_pid()),
        "redis": [node.pid for node in run.redis.nodes],
        "loadgen": [gen.proc.pid],
        "writer": [os.getpid()],  # this process: the writer (client side, not a server)
    }


def window_figures(run: Rig, a: Snapshot, b: Snapshot) -> dict[str, Any]:
    """Rates and CPU between two snapshots."""
    seconds = b.at - a.at
    delivered = b.deliveries - a.deliveries
    cpu = {name: b.procs[name] - a.procs.get(name, 0.0) for name in b.procs}
    server = cpu["listener"] + cpu["gateways"] + cpu["postgres"] + cpu["redis"]
    cores = os.cpu_count() or 1
    total = max(1, b.jiffies[1] - a.jiffies[1])
    busy = (b.jiffies[0] - a.jiffies[0]) / total * cores
    irq = (b.jiffies[2] - a.jiffies[2]) / total * cores
    ours = a.ours | b.ours
    others = sum(
        cpu_now - a.everyone.get(pid, 0.0) for pid, cpu_now in b.everyone.items() if pid not in ours
    )
    nodes = []
    for node in run.redis.nodes:
        used = b.redis_cpu[node.port] - a.redis_cpu[node.port]
        row: dict[str, Any] = {
            "role": node.role,
            "port": node.port,
            "cpu_pct": round(used / seconds * 100, 1),
            "cpu_us_per_delivery": round(used * 1e6 / max(delivered, 1), 2),
        }
        if b.bus:
            before, after = a.bus[node.port], b.bus[node.port]
            row["bus_sent"] = after.get("sent", 0) - before.get("sent", 0)
            row["bus_received"] = after.get("received", 0) - before.get("received", 0)
        nodes.append(row)
    return {
        "seconds": round(seconds, 2),
        "deliveries": delivered,
        "deliveries_per_s": round(delivered / seconds),
        "cpu_cores": {name: round(used / seconds, 3) for name, used in cpu.items()},
        "server_cpu_cores": round(server / seconds, 3),
        "server_cpu_us_per_delivery": round(server * 1e6 / max(delivered, 1), 2),
        "cpu_us_per_delivery": {
            name: round(used * 1e6 / max(delivered, 1), 2) for name, used in cpu.items()
        },
        "redis_nodes": nodes,
        "machine_busy_cores": round(busy, 2),
        # Busy, less this run's processes: other work (other engineers' processes, visible
        # here or in other containers) and the kernel's interrupt work.
        "other_work_cores": round(
            max(0.0, busy - (server + cpu["loadgen"] + cpu["writer"]) / seconds), 2
        ),
        # Kernel interrupt work (loopback TCP's softirq): no process is charged for it.
        "irq_cores": round(irq, 2),
        # Of that, the processes this machine's /proc shows that are not this run's.
        "other_processes_cores": round(others / seconds, 2),
    }


async def one_rate(
    run: Rig, connections: int, rate: float, seconds: float, warmup: float, batch: int
) -> dict[str, Any]:
    """A fresh load generator on the running gateways, events at ``rate`` for ``seconds``."""
    await reset_tables(run.dsn)
    rss_before = sum(rss_kib(proc.pid) for proc, _ in run.gateways)
    gen = LoadGen(run, connections)
    try:
        ready = await asyncio.to_thread(gen.ready)
        if ready.get("subscribed") != connections:
            raise RuntimeError(f"{ready.get('subscribed')} of {connections} subscribed: {ready}")
        rss_idle = sum(rss_kib(proc.pid) for proc, _ in run.gateways)
        load = loadavg()
        start = await snapshot(run, gen)
        writing = asyncio.create_task(write_events(run.dsn, rate, seconds, connections, batch))
        try:
            await asyncio.sleep(warmup)
            await gen.ask("window")
            w0 = await snapshot(run, gen)
            await asyncio.sleep(max(0.5, seconds - warmup - 0.5))
            w1 = await snapshot(run, gen)
            rss_busy = sum(rss_kib(proc.pid) for proc, _ in run.gateways)
            written = await writing
        finally:
            if not writing.done():
                writing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await writing
        at_end = await gen.deliveries()
        drained_in = await drain(gen, written.total, limit=max(15.0, seconds * 2))
        end = await snapshot(run, gen)
        memory = await run.redis.used_memory()
        names = [f"user:{i}" for i in range(connections)]
        report = await gen.ask("report", 120, expected=written.expected(names))
    finally:
        gen.proc.stop()
    window = window_figures(run, w0, w1)
    whole = window_figures(run, start, end)
    return {
        "topology": run.redis.name,
        "gateways": len(run.gateways),
        "connections": connections,
        "rate": rate,
        "written": written.total,
        "write_failed": sum(written.failed.values()),
        "write_rate": round(written.total / max(written.seconds, written.total / rate, 1e-9)),
        "loadavg_before": load,
        "window": window,
        "whole_run": {
            k: whole[k]
            for k in ("seconds", "deliveries", "server_cpu_us_per_delivery", "cpu_us_per_delivery")
        },
        "backlog_at_write_end": written.total - at_end,
        "drain_s": round(drained_in, 2),
        "delivered": report["deliveries"],
        "lost": report["lost"],
        "duplicated": report["duplicated"],
        "latency_ms": percentiles([x * 1000 for x in report["latencies"]]),
        "gateway_rss_kib": {"before": rss_before, "connected": rss_idle, "busy": rss_busy},
        "redis_used_memory": memory,
        "loadgen": gen.kind,
    }


async def drain(gen: LoadGen, expected: int, limit: float) -> float:
    """Until every event arrived, or nothing moved for 2 s, or ``limit`` s."""
    start = time.monotonic()
    last, still = -1, time.monotonic()
    while time.monotonic() - start < limit:
        now = await gen.deliveries()
        if now >= expected:
            break
        if now != last:
            last, still = now, time.monotonic()
        elif time.monotonic() - still > 2.0:
            break
        await asyncio.sleep(0.2)
    return time.monotonic() - start


# -- 3. PUBLISH against SPUBLISH on the bus -------------------------------------------------------
async def bus_part(messages: int, channels: int) -> dict[str, Any]:
    topology = await asyncio.to_thread(start_cluster, 1)
    try:
        layout = Layout(PARTITIONS)
        names = [layout.live_channel(f"user:{i}") for i in range(channels)]
        owner = await slot_owners(topology)
        by_master: dict[int, list[str]] = {}
        for k in range(messages):
            name = names[k % channels]
            by_master.setdefault(owner(name), []).append(name)
        payload = b"1:0123456789abcdef:" + b"x" * 81  # 100 bytes, a live payload's shape
        result: dict[str, Any] = {
            "messages": messages,
            "channels": channels,
            "nodes": [{"role": n.role, "port": n.port} for n in topology.nodes],
        }
        for command in ("PUBLISH", "SPUBLISH", "PUBLISH"):
            await asyncio.sleep(0.5)
            cpu0, bus0, t0 = await topology.cpu(), await topology.bus(), time.monotonic()
            for port, targets in by_master.items():
                client = topology.client(port)
                for at in range(0, len(targets), 200):
                    pipe = client.pipeline(transaction=False)
                    for name in targets[at : at + 200]:
                        pipe.execute_command(command, name, payload)
                    await pipe.execute()
            await asyncio.sleep(1.0)  # let the bus carry what was queued
            seconds = time.monotonic() - t0
            cpu1, bus1 = await topology.cpu(), await topology.bus()
            rows: list[dict[str, Any]] = []
            for node in topology.nodes:
                before, after = bus0[node.port], bus1[node.port]

                def delta(key: str, a: dict[str, int] = before, b: dict[str, int] = after) -> int:
                    return b.get(key, 0) - a.get(key, 0)

                rows.append(
                    {
                        "role": node.role,
                        "port": node.port,
                        "sent": delta("sent"),
                        "received": delta("received"),
                        "publish_sent": delta("publish_sent"),
                        "publish_received": delta("publish_received"),
                        "publishshard_sent": delta("publishshard_sent"),
                        "publishshard_received": delta("publishshard_received"),
                        "cpu_us_per_message": round(
                            (cpu1[node.port] - cpu0[node.port]) * 1e6 / messages, 2
                        ),
                    }
                )
            key = command.lower() if command.lower() not in result else command.lower() + "_again"
            sent = sum(int(r["sent"]) for r in rows)
            received = sum(int(r["received"]) for r in rows)
            cpu = sum(float(r["cpu_us_per_message"]) for r in rows)
            result[key] = {
                "seconds": round(seconds, 2),
                "nodes": rows,
                "bus_sent_per_message": round(sent / messages, 3),
                "bus_received_per_message": round(received / messages, 3),
                "cpu_us_per_message_all_nodes": round(cpu, 2),
            }
            result.setdefault("order", []).append(key)
            log(f"bus: {command}: {result[key]['bus_sent_per_message']} bus messages sent each")
        return result
    finally:
        await topology.close()
        topology.destroy()


async def slot_owners(topology: Topology) -> Callable[[str], int]:
    """channel -> port of the master serving its slot (CLUSTER SLOTS of the first node)."""
    from redis.crc import key_slot

    client = topology.client(topology.nodes[0].port)
    reply = await client.execute_command("CLUSTER", "SLOTS")  # type: ignore[no-untyped-call, unused-ignore]
    ranges: list[tuple[int, int, int]] = []
    if isinstance(reply, dict):  # redis-py parses it: {(first, last): {"primary": (host, port)}}
        for (first, last), info in reply.items():
            ranges.append((int(first), int(last), int(info["primary"][1])))
    else:
        for entry in reply:
            ranges.append((int(entry[0]), int(entry[1]), int(entry[2][1])))

    def owner(name: str) -> int:
        slot = key_slot(name.encode())
        for first, last, port in ranges:
            if first <= slot <= last:
                return port
        raise LookupError(f"no master serves slot {slot}")

    return owner


# -- the run -------------------------------------------------------------------------------------
async def per_user_part(pg: PgInstance, args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for topology in args.topologies:
        async with rig(pg, topology, args.replicas) as run:
            await asyncio.to_thread(run.start_gateways, args.gateways)
            for rate in args.rates:
                log(f"per_user: {topology}, {args.gateways} gateways, {rate:g} events/s")
                row = await one_rate(
                    run, args.connections, rate, args.seconds, args.warmup, args.batch
                )
                log(summary_line(row))
                rows.append(row)
    return rows


async def scaling_part(pg: PgInstance, args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    async with rig(pg, "cluster", args.replicas) as run:
        for count in args.scale_gateways:
            await asyncio.to_thread(run.start_gateways, count)
            log(f"scaling: cluster, {count} gateways, {args.scale_rate:g} events/s")
            row = await one_rate(
                run, args.connections, args.scale_rate, args.seconds, args.warmup, args.batch
            )
            log(summary_line(row))
            rows.append(row)
    return rows


def summary_line(row: dict[str, Any]) -> str:
    w = row["window"]
    return (
        f"{row['topology']} x{row['gateways']} @ {row['rate']:g}/s: wrote {row['write_rate']}/s, "
        f"delivered {w['deliveries_per_s']}/s, server {w['server_cpu_cores']} cores "
        f"({w['server_cpu_us_per_delivery']} us/delivery), backlog {row['backlog_at_write_end']}"
        f", lost {row['lost']}, dup {row['duplicated']}, p50 {row['latency_ms'].get('p50')} ms"
        f", other work {w['other_work_cores']} cores (irq {w['irq_cores']}, visible processes "
        f"{w['other_processes_cores']})"
    )


def tables(report: dict[str, Any]) -> str:
    lines = []
    header = (
        "| topology | gateways | offered/s | written/s | delivered/s (window) | backlog at end "
        "| drain s | lost | dup | p50 ms | p99 ms | server cores | server us/delivery "
        "| listener | gateways | postgres | redis (us/delivery) | Redis CPU % per node "
        "| loadgen cores | writer cores | machine busy | other work (irq, visible procs) "
        "| loadavg |"
    )
    sep = "|---" * header.count("|")
    sep = sep[: -len("|---")] + "|"
    for part in ("per_user", "scaling"):
        if not report.get(part):
            continue
        lines += ["", f"{part}:", header, sep]
        for row in report[part]:
            w = row["window"]
            per = w["cpu_us_per_delivery"]
            nodes = " / ".join(f"{n['role'][0]}{n['cpu_pct']}" for n in w["redis_nodes"])
            lines.append(
                f"| {row['topology']} | {row['gateways']} | {row['rate']:g} | {row['write_rate']} "
                f"| {w['deliveries_per_s']} | {row['backlog_at_write_end']} | {row['drain_s']} "
                f"| {row['lost']} | {row['duplicated']} | {row['latency_ms'].get('p50')} "
                f"| {row['latency_ms'].get('p99')} | {w['server_cpu_cores']} "
                f"| {w['server_cpu_us_per_delivery']} | {per['listener']} | {per['gateways']} "
                f"| {per['postgres']} | {per['redis']} | {nodes} | {w['cpu_cores']['loadgen']} "
                f"| {w['cpu_cores']['writer']} | {w['machine_busy_cores']} "
                f"| {w['other_work_cores']} ({w['irq_cores']}, {w['other_processes_cores']}) "
                f"| {row['loadavg_before'][0]} |"
            )
    bus = report.get("bus")
    if bus:
        lines += [
            "",
            f"bus: {bus['messages']} messages each way on {bus['channels']} channels, "
            "3 masters + 3 replicas, no subscribers:",
            "| command | bus msgs sent per message | received per message "
            "| Redis CPU us per message, all nodes | per node (sent publish/publishshard) |",
            "|---|---|---|---|---|",
        ]
        for key in bus["order"]:
            part = bus[key]
            per_node = " / ".join(
                f"{n['role'][0]}{n['port']}: {n['cpu_us_per_message']}us "
                f"{n['publish_sent']}/{n['publishshard_sent']}"
                for n in part["nodes"]
            )
            lines.append(
                f"| {key} | {part['bus_sent_per_message']} | {part['bus_received_per_message']} "
                f"| {part['cpu_us_per_message_all_nodes']} | {per_node} |"
            )
    return "\n".join(lines)


async def timed(what: str, coro: Awaitable[Any]) -> Any:
    t0 = time.monotonic()
    result = await coro
    log(f"{what} took {time.monotonic() - t0:.1f} s")
    return result


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {
        "commit": args.commit,
        "cpus": os.cpu_count(),
        "fd_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        "settings": {k: v for k, v in vars(args).items() if k not in ("json", "commit", "quick")},
        "partitions": PARTITIONS,
        "loadavg_start": loadavg(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    if "bus" in args.parts:
        report["bus"] = await timed("bus", bus_part(args.bus_messages, args.connections))
    if "per_user" in args.parts or "scaling" in args.parts:
        async with postgres() as pg:
            if "per_user" in args.parts:
                report["per_user"] = await timed("per_user", per_user_part(pg, args))
            if "scaling" in args.parts:
                report["scaling"] = await timed("scaling", scaling_part(pg, args))
    report["loadavg_end"] = loadavg()
    return report


def csv(kind: Callable[[str], Any]) -> Callable[[str], list[Any]]:
    return lambda text: [kind(x) for x in text.split(",") if x]


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (about a minute)")
    parser.add_argument("--connections", type=int, help="clients = channels (10000)")
    parser.add_argument("--rates", type=csv(float), help="per_user events/s (2000,...,10000)")
    parser.add_argument("--seconds", type=float, help="seconds of writing per rate (8)")
    parser.add_argument("--warmup", type=float, help="seconds before the window (2)")
    parser.add_argument("--batch", type=int, default=20, help="events per transaction (20)")
    parser.add_argument("--gateways", type=int, default=2, help="gateways in per_user (2)")
    parser.add_argument("--replicas", type=int, default=0, help="replicas per master (0)")
    parser.add_argument(
        "--topologies", type=csv(str), default=["single", "cluster"], help="single,cluster"
    )
    parser.add_argument("--scale-rate", type=float, help="events/s in scaling (8000)")
    parser.add_argument("--scale-gateways", type=csv(int), default=[1, 2, 4], help="1,2,4")
    parser.add_argument("--bus-messages", type=int, help="messages each way in bus (20000)")
    parser.add_argument(
        "--parts", type=csv(str), default=["bus", "per_user", "scaling"], help="which parts"
    )
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args()
    quick = args.quick
    args.connections = args.connections or (1000 if quick else 10_000)
    args.rates = args.rates or (
        [500.0, 1000.0] if quick else [2000.0, 4000.0, 6000.0, 8000.0, 10000.0]
    )
    args.seconds = args.seconds or (4.0 if quick else 8.0)
    args.warmup = args.warmup if args.warmup is not None else (1.0 if quick else 2.0)
    args.scale_rate = args.scale_rate or (1000.0 if quick else 8000.0)
    args.bus_messages = args.bus_messages or (2000 if quick else 20_000)
    unknown = set(args.parts) - {"bus", "per_user", "scaling"}
    if unknown or set(args.topologies) - {"single", "cluster"}:
        parser.error(f"unknown part or topology: {sorted(unknown)} {args.topologies}")
    if args.warmup >= args.seconds:
        parser.error("--warmup must be shorter than --seconds")
    if shutil.which("redis-cli") is None:
        parser.error("redis-cli is needed to create the cluster")
    args.commit = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    started = time.monotonic()
    report = asyncio.run(main_async(args))
    report["total_seconds"] = round(time.monotonic() - started, 1)
    print(tables(report))
    if args.json:
        args.json.write_text(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
