"""Presence and client messages across two gateways: latency, Redis memory, refresh cost.

``python -m bench.presence [--quick] [--json FILE]`` starts a private Redis on a free
port and two ``pgcast-gateway`` processes on 127.0.0.1 (no Postgres, no listener: client
messages and presence go through Redis only), opens ``--subscribers`` WebSocket
connections spread over both (a light client of its own, bench/wsframes.py, one
process), and measures:

1. client messages: one sender on gateway A publishes ``--messages`` messages at
   ``--rate``/s to a channel all connections subscribe to; latency = receipt at each
   subscriber − the send (same process, same clock), split by the subscriber's gateway
   (A: same as the sender's, B: the other one), and per message its first and last
   receipt. This one client process reads every socket in turn, on the gateways' cores:
   a late receipt includes its reading the sockets before (its CPU % is reported).
   PGCAST_CLIENT_PUBLISH_RATE is raised.
2. presence join: a connection on A sends ``track``; latency = the ``join`` frame at a
   watcher (``"presence":true``) on B (and one on A) − the send; ``--joins`` joins by a
   pool of 10 connections, each followed by an ``untrack`` (its ``leave`` awaited).
3. presence at rest: every connection tracks ``--per-conn`` of ``--channels`` channels
   (``--subscribers`` × ``--per-conn`` members, the same number on each channel). Redis
   ``used_memory`` before and after; then three idle windows of ``--window`` s: nothing
   tracked (baseline, before the tracking), tracked (the refresh each TTL/3), and tracked
   with every channel watched on both gateways (the refresh and the sweep each second).
   CPU: the gateways and the client process from /proc (schedstat: every thread, ns),
   Redis from INFO cpu; the presence script's calls and time from INFO commandstats.
   The gateways' WebSocket pings are turned off (PGCAST_WS_HEARTBEAT=3600) so that the
   connections' pings, all in step, fall in no window.

Everything is stopped by PID and removed afterwards; the shared servers are not used.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import resource
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import jwt
import orjson
import redis.asyncio as aioredis

from bench import wsframes as wf
from bench.stats import percentiles
from bench.systems import Proc, entry_point, wait_http
from pgcast.keys import Layout
from tests.servers import RedisInstance, free_port, free_port_below

SINGLE = Layout()  # the key names of one Redis

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parents[1]
CHAT = "bench:chat"
JOIN_CHANNEL = "bench:join"
TRACKERS = 10  # connections on gateway A taking turns to join in part 2
WAIT = 30.0  # bound on every single wait
DEFAULT_TTL = 10.0  # the gateway's PGCAST_PRESENCE_TTL default


def log(message: str) -> None:
    print(f"[presence {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


Hook = Callable[[float, dict[str, Any]], bool]


class Ws(asyncio.Protocol):
    """One client connection: upgrade, text frames as JSON with their arrival time.

    ``hook(now, frame)`` sees every text frame first (True: consumed); the rest go to
    ``inbox``. Server pings are answered.
    """

    def __init__(self, path: str, gateway: str) -> None:
        self.gateway = gateway
        self.key = wf.new_key()
        self.upgrade = wf.upgrade_request(f"{HOST}", path, self.key)
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.open: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.inbox: asyncio.Queue[tuple[float, dict[str, Any]]] = asyncio.Queue()
        self.hook: Hook | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport.write(self.upgrade)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.open.done():
            self.open.set_exception(ConnectionError(f"closed before the upgrade: {exc!r}"))

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        self.buf += data
        if not self.open.done():
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            try:
                wf.parse_upgrade_response(bytes(self.buf[:end]), self.key)
            except wf.HandshakeError as exc:
                self.open.set_exception(exc)
                return
            del self.buf[: end + 4]
            self.open.set_result(None)
        frames, used = wf.split_frames(self.buf)
        del self.buf[:used]
        for opcode, _, payload in frames:
            if opcode == wf.OP_TEXT:
                frame = orjson.loads(payload)
                if self.hook is None or not self.hook(now, frame):
                    self.inbox.put_nowait((now, frame))
            elif opcode == wf.OP_PING:
                self.write(payload, wf.OP_PONG)
            elif opcode == wf.OP_CLOSE:
                self.closed = True

    def write(self, payload: bytes, opcode: int = wf.OP_TEXT) -> None:
        assert self.transport is not None
        self.transport.write(wf.client_frame(payload, opcode))

    def send(self, **frame: Any) -> float:
        """Send one request; returns when (perf_counter) it was written."""
        payload = orjson.dumps(frame)
        sent = time.perf_counter()
        self.write(payload)
        return sent

    async def expect(self, kind: str) -> tuple[float, dict[str, Any]]:
        """The next frame of ``kind`` (and its arrival), skipping others; an error raises."""
        async with asyncio.timeout(WAIT):
            while True:
                at, frame = await self.inbox.get()
                if frame["type"] == kind:
                    return at, frame
                if frame["type"] == "error":
                    raise RuntimeError(f"{self.gateway}: waiting for {kind}: {frame}")

    async def request(self, kind: str, **frame: Any) -> tuple[float, dict[str, Any]]:
        self.send(**frame)
        return await self.expect(kind)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()


@dataclass
class Gateway:
    name: str
    proc: Proc
    port: int

    @property
    def pid(self) -> int:
        return self.proc.pid


@dataclass
class Rig:
    redis: RedisInstance
    client: aioredis.Redis
    gateways: list[Gateway]
    secret: str
    conns: list[Ws] = field(default_factory=list)

    def token(self, sub: str) -> str:
        claims = {"sub": sub, "exp": int(time.time()) + 7200, "channels": ["bench:*"]}
        claims["publish"] = [CHAT]
        return jwt.encode(claims, self.secret, algorithm="HS256")

    async def connect(self, gateway: Gateway, sub: str) -> Ws:
        loop = asyncio.get_running_loop()
        path = f"/ws?token={self.token(sub)}"
        _, ws = await loop.create_connection(lambda: Ws(path, gateway.name), HOST, gateway.port)
        async with asyncio.timeout(WAIT):
            await ws.open
        self.conns.append(ws)
        return ws

    async def connect_many(self, count: int, prefix: str, *, spread: bool = True) -> list[Ws]:
        """``count`` connections, alternating over the gateways (``spread``) or all on A."""
        limit = asyncio.Semaphore(100)

        async def one(i: int) -> Ws:
            async with limit:
                gw = self.gateways[i % 2 if spread else 0]
                return await self.connect(gw, f"{prefix}{i}")

        return list(await asyncio.gather(*(one(i) for i in range(count))))

    async def redis_cpu(self) -> float:
        info = await self.client.info("cpu")
        return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])

    async def script_stats(self) -> tuple[int, int]:
        """(calls, µs in Redis) of EVALSHA so far: the presence script's work."""
        stats = (await self.client.info("commandstats")).get("cmdstat_evalsha", {})
        return int(stats.get("calls", 0)), int(stats.get("usec", 0))

    async def used_memory(self) -> int:
        return int((await self.client.info("memory"))["used_memory"])


def gateway_env(redis_url: str, secret: str, port: int, ttl: float | None) -> dict[str, str]:
    env = {
        "REDIS_URL": redis_url,
        "PGCAST_JWT_SECRET": secret,
        "PGCAST_HOST": HOST,
        "PGCAST_PORT": str(port),
        "PGCAST_WS_COMPRESSION": "false",
        "PGCAST_MAX_CONNECTIONS": "20000",
        # One sender publishes every message: its per-connection limit (20/s) is raised.
        "PGCAST_CLIENT_PUBLISH_RATE": "10000",
        "PGCAST_CLIENT_PUBLISH_BURST": "10000",
        "PGCAST_LOG_LEVEL": "warning",
        # The connections' WebSocket pings (every 25 s by default, all in step since they
        # connected together) would land in one idle window and not another.
        "PGCAST_WS_HEARTBEAT": "3600",
    }
    if ttl is not None:
        env["PGCAST_PRESENCE_TTL"] = str(ttl)
    return env


@contextlib.asynccontextmanager
async def rig(ttl: float | None) -> Any:
    redis = RedisInstance(port=free_port_below())
    secret = secrets.token_hex(32)
    gateways: list[Gateway] = []
    client: aioredis.Redis | None = None
    run: Rig | None = None
    try:
        redis.start()
        client = aioredis.Redis.from_url(redis.url)
        for name in ("A", "B"):
            port = free_port()
            proc = Proc(
                entry_point("gateway.cli"), gateway_env(redis.url, secret, port, ttl), piped=False
            )
            gateways.append(Gateway(name, proc, port))
            wait_http(f"http://{HOST}:{port}/readyz", 30, proc)
        run = Rig(redis, client, gateways, secret)
        yield run
    finally:
        if run is not None:
            for ws in run.conns:
                ws.close()
        for gw in gateways:
            gw.proc.stop()
        if client is not None:
            await client.aclose()
        redis.destroy()


def cpu_of(pids: list[int]) -> float:
    """CPU seconds of these processes, all threads, in ns resolution (schedstat's time on
    CPU; /proc/<pid>/stat counts 10 ms ticks, too coarse for a few ms per refresh)."""
    total = 0
    for pid in pids:
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{pid}/task/{task}/schedstat") as fh:
                    total += int(fh.read().split()[0])
            except (OSError, ValueError, IndexError):
                continue
    return total / 1e9


def machine_busy() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs so far, from /proc/stat."""
    with open("/proc/stat") as fh:
        values = [int(v) for v in fh.readline().split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


# -- 1. client messages ---------------------------------------------------------------
class Receipts:
    """When each subscriber got each client message (``data`` = ``{"k": k}``)."""

    def __init__(self, total: int, warmup: int, expected: int) -> None:
        self.sent = [0.0] * total
        self.first = [math.inf] * total  # the first receipt of each message
        self.last = [0.0] * total  # the last receipt of each message
        self.warmup = warmup
        self.latencies: dict[str, list[float]] = {"A": [], "B": []}
        self.received = 0
        self.expected = expected
        self.all_in = asyncio.Event()

    def hook_for(self, ws: Ws) -> Hook:
        into = self.latencies[ws.gateway]

        def hook(now: float, frame: dict[str, Any]) -> bool:
            if frame["type"] != "broadcast":
                return False
            k = frame["data"]["k"]
            self.received += 1
            self.first[k] = min(self.first[k], now)
            self.last[k] = max(self.last[k], now)
            if k >= self.warmup:
                into.append((now - self.sent[k]) * 1000)
            if self.received >= self.expected:
                self.all_in.set()
            return True

        return hook


async def bench_messages(run: Rig, subs: list[Ws], messages: int, rate: float) -> dict[str, Any]:
    """One sender on A, every connection of ``subs`` subscribed to CHAT."""
    limit = asyncio.Semaphore(200)

    async def subscribe(ws: Ws) -> None:
        async with limit:
            await ws.request("subscribed", type="subscribe", channel=CHAT)

    await asyncio.gather(*(subscribe(ws) for ws in subs))
    sender = await run.connect(run.gateways[0], "sender")
    warmup = min(10, messages // 10)
    total = warmup + messages
    got = Receipts(total, warmup, total * len(subs))
    for ws in subs:
        ws.hook = got.hook_for(ws)
    gw_pids, me = [gw.pid for gw in run.gateways], [os.getpid()]
    cpu_before = cpu_of(gw_pids), await run.redis_cpu(), cpu_of(me)
    started = time.perf_counter()
    for k in range(total):
        delay = started + k / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        got.sent[k] = sender.send(type="publish", channel=CHAT, data={"k": k})
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(got.all_in.wait(), WAIT)
    elapsed = time.perf_counter() - started
    cpu_after = cpu_of(gw_pids), await run.redis_cpu(), cpu_of(me)
    for ws in subs:
        ws.hook = None
    published = 0
    while not sender.inbox.empty():
        published += sender.inbox.get_nowait()[1]["type"] == "published"
    spread = [(got.last[k] - got.sent[k]) * 1000 for k in range(warmup, total)]
    first = [(got.first[k] - got.sent[k]) * 1000 for k in range(warmup, total)]
    return {
        "subscribers": {side: sum(ws.gateway == side for ws in subs) for side in "AB"},
        "messages": messages,
        "warmup_messages": warmup,
        "rate_per_s": rate,
        "acknowledged": published,
        "lost": got.expected - got.received,
        "latency_ms": {
            "same_gateway": percentiles(got.latencies["A"]),
            "other_gateway": percentiles(got.latencies["B"]),
            "first_subscriber": percentiles(first),
            "last_subscriber": percentiles(spread),
        },
        "gateway_cpu_us_per_delivery": round(
            (cpu_after[0] - cpu_before[0]) * 1e6 / got.expected, 2
        ),
        "redis_cpu_us_per_message": round((cpu_after[1] - cpu_before[1]) * 1e6 / total, 1),
        "cpu_pct": {
            name: round((cpu_after[i] - cpu_before[i]) / elapsed * 100, 1)
            for i, name in enumerate(("gateways", "redis", "client"))
        },
        "seconds": round(elapsed, 2),
    }


# -- 2. presence join ------------------------------------------------------------------
class Watcher:
    """A connection subscribed to a channel with ``"presence":true``: when each join and
    leave (by the ``k`` in the member's meta) arrived."""

    def __init__(self, ws: Ws) -> None:
        self.ws = ws
        self.seen: dict[tuple[str, int], float] = {}
        self.changed = asyncio.Event()
        ws.hook = self.hook

    def hook(self, now: float, frame: dict[str, Any]) -> bool:
        if frame["type"] not in ("join", "leave"):
            return False
        self.seen[(frame["type"], frame["member"]["meta"]["k"])] = now
        self.changed.set()
        return True

    async def wait(self, kind: str, k: int) -> float:
        async with asyncio.timeout(WAIT):
            while (kind, k) not in self.seen:
                self.changed.clear()
                await self.changed.wait()
        return self.seen[(kind, k)]


async def bench_joins(run: Rig, joins: int, rate: float) -> dict[str, Any]:
    """``joins`` tracks on A, seen by a watcher on B (other) and one on A (same)."""
    gw_a, gw_b = run.gateways
    watchers = {}
    for name, gw in (("other_gateway", gw_b), ("same_gateway", gw_a)):
        ws = await run.connect(gw, f"watcher-{name}")
        await ws.request("subscribed", type="subscribe", channel=JOIN_CHANNEL, presence=True)
        await ws.expect("presence")
        watchers[name] = Watcher(ws)
    trackers = [await run.connect(gw_a, f"tracker{i}") for i in range(TRACKERS)]
    join_ms: dict[str, list[float]] = {name: [] for name in watchers}
    ack_ms: list[float] = []
    leave_ms: list[float] = []
    started = time.perf_counter()
    for k in range(joins):
        delay = started + k / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        ws = trackers[k % TRACKERS]
        sent = ws.send(type="track", channel=JOIN_CHANNEL, meta={"k": k})
        acked, _ = await ws.expect("tracked")
        ack_ms.append((acked - sent) * 1000)
        for name, watcher in watchers.items():
            join_ms[name].append((await watcher.wait("join", k) - sent) * 1000)
        sent = ws.send(type="untrack", channel=JOIN_CHANNEL)
        await ws.expect("untracked")
        leave_ms.append((await watchers["other_gateway"].wait("leave", k) - sent) * 1000)
        for watcher in watchers.values():
            await watcher.wait("leave", k)
    for watcher in watchers.values():
        watcher.ws.close()
    for ws in trackers:
        ws.close()
    return {
        "joins": joins,
        "rate_per_s": rate,
        "join_to_watcher_ms": {name: percentiles(v) for name, v in join_ms.items()},
        "track_to_tracked_ms": percentiles(ack_ms),
        "untrack_to_leave_other_gateway_ms": percentiles(leave_ms),
    }


# -- 3. presence at rest -----------------------------------------------------------------
async def idle_window(run: Rig, seconds: float) -> dict[str, Any]:
    """CPU of the gateways, Redis and this process over ``seconds`` of nothing asked."""
    gw_pids = [gw.pid for gw in run.gateways]
    me = [os.getpid()]
    busy0 = machine_busy()
    script0 = await run.script_stats()
    before = cpu_of(gw_pids), await run.redis_cpu(), cpu_of(me)
    t0 = time.perf_counter()
    await asyncio.sleep(seconds)
    after = cpu_of(gw_pids), await run.redis_cpu(), cpu_of(me)
    elapsed = time.perf_counter() - t0
    script1 = await run.script_stats()
    busy1 = machine_busy()
    cores = os.cpu_count() or 1
    machine = (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]) * cores
    used = [b - a for a, b in zip(before, after, strict=True)]
    return {
        "seconds": round(elapsed, 2),
        "gateways_cpu_s": round(used[0], 4),
        "redis_cpu_s": round(used[1], 4),
        "gateways_cpu_pct": round(used[0] / elapsed * 100, 3),
        "redis_cpu_pct": round(used[1] / elapsed * 100, 3),
        "client_cpu_pct": round(used[2] / elapsed * 100, 3),
        "script_calls": script1[0] - script0[0],
        "script_us_in_redis": script1[1] - script0[1],
        "other_work_cores": round(max(0.0, machine - sum(used) / elapsed), 2),
    }


def channel_of(conn: int, j: int, per_conn: int, channels: int) -> str:
    """Connection ``conn``'s ``j``-th channel: ``per_conn`` consecutive ones (mod
    ``channels``), the same for connections 2m (gateway A) and 2m+1 (B), so each channel
    gets the same number of members, half of them on each gateway."""
    return f"bench:p:{((conn // 2) * per_conn + j) % channels}"


async def bench_at_rest(
    run: Rig, conns: list[Ws], per_conn: int, channels: int, window: float, ttl: float
) -> dict[str, Any]:
    members = len(conns) * per_conn
    log(f"idle window, nothing tracked ({window:g} s)")
    baseline = await idle_window(run, window)
    memory_before = await run.used_memory()
    keys_before = await run.client.dbsize()
    gw_pids = [gw.pid for gw in run.gateways]
    cpu_before = cpu_of(gw_pids), await run.redis_cpu()
    limit = asyncio.Semaphore(200)

    async def track_all(i: int, ws: Ws) -> None:
        async with limit:
            for j in range(per_conn):
                channel = channel_of(i, j, per_conn, channels)
                await ws.request("tracked", type="track", channel=channel, meta={"name": f"u{i}"})

    t0 = time.perf_counter()
    await asyncio.gather(*(track_all(i, ws) for i, ws in enumerate(conns)))
    track_seconds = time.perf_counter() - t0
    cpu_after = cpu_of(gw_pids), await run.redis_cpu()
    await asyncio.sleep(1.0)  # let anything deferred settle before reading memory
    memory_after = await run.used_memory()
    keys_after = await run.client.dbsize()
    counted = await count_members(run, per_conn, channels, len(conns))
    member_bytes = await sample_member_bytes(run, channel_of(0, 0, per_conn, channels))
    keys = SINGLE.presence_keys(channel_of(0, 0, per_conn, channels))
    encodings = {
        "hash": (await run.client.object("encoding", keys.members)).decode(),
        "zset": (await run.client.object("encoding", keys.expiry)).decode(),
    }
    log(f"{counted} members in Redis; idle window, tracked ({window:g} s)")
    tracked = await idle_window(run, window)

    # Every channel watched on both gateways: 10 connections per gateway, per_conn each.
    watchers = await run.connect_many(2 * math.ceil(channels / per_conn), "watcher")
    for w, ws in enumerate(watchers):
        for j in range(per_conn):
            channel = channel_of(w, j, per_conn, channels)
            await ws.request("subscribed", type="subscribe", channel=channel, presence=True)
            await ws.expect("presence")
    log(f"idle window, tracked and every channel watched on both gateways ({window:g} s)")
    watched = await idle_window(run, window)

    # Member refreshes done in the window, from the script calls: one call per (gateway,
    # channel with members there) and round (at most REFRESH_CHUNK = 500 members each);
    # the nominal 3/TTL per member per second only when no call was seen.
    pairs = {
        (i % 2, channel_of(i, j, per_conn, channels))
        for i in range(len(conns))
        for j in range(per_conn)
    }
    rounds = tracked["script_calls"] / len(pairs)
    refreshes_per_s = rounds / tracked["seconds"] if rounds else 3 / ttl

    def per_s(window: dict[str, Any], what: str) -> float:
        return float(window[what]) / float(window["seconds"])

    gateways_refresh = per_s(tracked, "gateways_cpu_s") - per_s(baseline, "gateways_cpu_s")
    redis_refresh = per_s(tracked, "redis_cpu_s") - per_s(baseline, "redis_cpu_s")
    per_member = 1e6 / (members * refreshes_per_s)  # µs per member-refresh per CPU-s/s
    return {
        "connections": len(conns),
        "channels": channels,
        "per_connection": per_conn,
        "members": members,
        "members_in_redis": counted,
        "member_json_bytes": member_bytes,
        "redis_encodings": encodings,
        "ttl_s": ttl,
        "track_seconds": round(track_seconds, 2),
        "track_cpu_us_per_member": {
            "gateways": round((cpu_after[0] - cpu_before[0]) * 1e6 / members, 1),
            "redis": round((cpu_after[1] - cpu_before[1]) * 1e6 / members, 1),
        },
        "redis_used_memory": {
            "before": memory_before,
            "after": memory_after,
            "delta": memory_after - memory_before,
            "bytes_per_member": round((memory_after - memory_before) / members, 1),
            "keys_before": keys_before,
            "keys_after": keys_after,
        },
        "windows": {"baseline": baseline, "tracked": tracked, "tracked_watched": watched},
        "refresh": {
            "refreshes_per_member_per_s": round(refreshes_per_s, 3),
            "nominal_refreshes_per_member_per_s": round(3 / ttl, 3),
            "gateways_cpu_pct": round(gateways_refresh * 100, 3),
            "redis_cpu_pct": round(redis_refresh * 100, 3),
            "gateways_us_per_member_refresh": round(gateways_refresh * per_member, 2),
            "redis_us_per_member_refresh": round(redis_refresh * per_member, 2),
        },
        "sweep": {
            "watched_channels_per_gateway": channels,
            "gateways_cpu_pct": round(
                (per_s(watched, "gateways_cpu_s") - per_s(tracked, "gateways_cpu_s")) * 100, 3
            ),
            "redis_cpu_pct": round(
                (per_s(watched, "redis_cpu_s") - per_s(tracked, "redis_cpu_s")) * 100, 3
            ),
        },
    }


async def count_members(run: Rig, per_conn: int, channels: int, conns: int) -> int:
    names = {channel_of(i, j, per_conn, channels) for i in range(conns) for j in range(per_conn)}
    total = 0
    for name in names:
        total += await run.client.hlen(presence_key(name))
    return total


def presence_key(channel: str) -> str:
    return SINGLE.presence_keys(channel).members


async def sample_member_bytes(run: Rig, channel: str) -> float:
    values = await run.client.hvals(presence_key(channel))
    return round(sum(len(v) for v in values) / max(1, len(values)), 1)


# -- the run -----------------------------------------------------------------------------
def table(report: dict[str, Any]) -> str:
    msg, joins, rest = report["messages"], report["joins"], report["at_rest"]
    lines = [
        f"client messages: {msg['messages']} at {msg['rate_per_s']:g}/s from gateway A to "
        f"{msg['subscribers']['A']} + {msg['subscribers']['B']} subscribers on A + B "
        f"(lost {msg['lost']}); CPU % of a core: gateways {msg['cpu_pct']['gateways']}, "
        f"Redis {msg['cpu_pct']['redis']}, this client {msg['cpu_pct']['client']}; "
        f"gateways {msg['gateway_cpu_us_per_delivery']} us/delivery",
        "| latency send -> receipt | count | p50 ms | p99 ms | max ms |",
        "|---|---|---|---|---|",
    ]
    for name, row in [
        *msg["latency_ms"].items(),
        *(("join: " + k, v) for k, v in joins["join_to_watcher_ms"].items()),
        ("track -> tracked (A)", joins["track_to_tracked_ms"]),
        ("untrack -> leave (B)", joins["untrack_to_leave_other_gateway_ms"]),
    ]:
        lines.append(
            f"| {name} | {row['count']} | {row.get('p50')} | {row.get('p99')} | {row.get('max')} |"
        )
    mem = rest["redis_used_memory"]
    lines += [
        "",
        f"presence at rest: {rest['members']} members ({rest['connections']} connections x "
        f"{rest['per_connection']} channels, {rest['channels']} channels; "
        f"{rest['members_in_redis']} in Redis), member JSON {rest['member_json_bytes']} B, "
        f"TTL {rest['ttl_s']:g} s",
        f"Redis used_memory +{mem['delta']:,} B = {mem['bytes_per_member']} B/member "
        f"(hash {rest['redis_encodings']['hash']}, zset {rest['redis_encodings']['zset']}); "
        f"tracking took {rest['track_seconds']} s, CPU us/member: gateways "
        f"{rest['track_cpu_us_per_member']['gateways']}, Redis "
        f"{rest['track_cpu_us_per_member']['redis']}",
        "| idle window | s | gateways CPU % | Redis CPU % | client CPU % | script calls "
        "| script us in Redis | other work (cores) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in rest["windows"].items():
        lines.append(
            f"| {name} | {row['seconds']} | {row['gateways_cpu_pct']} | {row['redis_cpu_pct']} "
            f"| {row['client_cpu_pct']} | {row['script_calls']} | {row['script_us_in_redis']} "
            f"| {row['other_work_cores']} |"
        )
    ref, sweep = rest["refresh"], rest["sweep"]
    lines += [
        f"refresh (tracked - baseline): gateways {ref['gateways_cpu_pct']} % of a core "
        f"({ref['gateways_us_per_member_refresh']} us/member/refresh), Redis "
        f"{ref['redis_cpu_pct']} % ({ref['redis_us_per_member_refresh']} us/member/refresh)",
        f"sweep of {sweep['watched_channels_per_gateway']} watched channels per gateway each "
        f"second (tracked_watched - tracked): gateways {sweep['gateways_cpu_pct']} %, "
        f"Redis {sweep['redis_cpu_pct']} %",
    ]
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {
        "commit": args.commit,
        "fd_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        "cpus": os.cpu_count(),
    }
    async with rig(args.ttl) as run:
        log(f"{args.subscribers} connections over gateways A and B")
        conns = await run.connect_many(args.subscribers, "u")
        log(f"client messages: {args.messages} at {args.rate:g}/s")
        report["messages"] = await bench_messages(run, conns, args.messages, args.rate)
        log(f"presence joins: {args.joins}")
        report["joins"] = await bench_joins(run, args.joins, args.join_rate)
        report["at_rest"] = await bench_at_rest(
            run, conns, args.per_conn, args.channels, args.window, args.ttl or DEFAULT_TTL
        )
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (about 20 s)")
    parser.add_argument("--subscribers", type=int, help="connections, half per gateway (1000)")
    parser.add_argument("--messages", type=int, help="client messages measured (300)")
    parser.add_argument("--rate", type=float, default=20.0, help="client messages/s (20)")
    parser.add_argument("--joins", type=int, help="presence joins measured (200)")
    parser.add_argument("--join-rate", type=float, default=20.0, help="joins/s (20)")
    parser.add_argument("--channels", type=int, default=100, help="presence channels (100)")
    parser.add_argument("--per-conn", type=int, default=10, help="channels each tracks (10)")
    parser.add_argument("--window", type=float, help="idle window seconds (20)")
    parser.add_argument(
        "--ttl", type=float, help=f"PGCAST_PRESENCE_TTL (default: the gateway's, {DEFAULT_TTL:g})"
    )
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args()
    quick = args.quick
    args.subscribers = args.subscribers or (100 if quick else 1000)
    args.messages = args.messages or (50 if quick else 300)
    args.joins = args.joins or (20 if quick else 200)
    args.window = args.window or (3.0 if quick else 20.0)
    if args.per_conn > args.channels:
        parser.error("--per-conn must not exceed --channels")
    args.commit = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    started = time.monotonic()
    try:
        import uvloop

        report = uvloop.run(main_async(args))
    except ImportError:
        report = asyncio.run(main_async(args))
    report["total_seconds"] = round(time.monotonic() - started, 1)
    print(table(report))
    if args.json:
        args.json.write_text(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
