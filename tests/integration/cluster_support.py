"""Support for the Redis Cluster gateway tests (test_gateway_cluster*.py): a listener and
gateway processes on a cluster, WebSocket readers that log every notice and message, a
paced Postgres writer, exact-delivery checks and delivery delays (who owns or subscribes to what on
the cluster: cluster_nodes_support.py)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import asyncpg
import orjson

from pgcast.keys import Layout
from tests.gateway_support import gateway_env, token
from tests.integration.listener_support import Listeners
from tests.processes import Service
from tests.redis_cluster import RedisCluster
from tests.servers import free_port
from tests.waiting import eventually

LAYOUT = Layout(64)  # PGCAST_REDIS_PARTITIONS' default, on the listener and the gateways
GATEWAY_ENV = {
    # Clients here hold hundreds of subscriptions each and send them all at once.
    "PGCAST_MAX_SUBSCRIPTIONS": "1000",
    "PGCAST_RATE_LIMIT": "100000",
    "PGCAST_RATE_BURST": "100000",
    "PGCAST_SEND_QUEUE_BYTES": str(8 << 20),
}
RESUME_BOUND = 15.0  # seconds: delivery resumes after a failover within this (asserted)


# -- the stack ---------------------------------------------------------------------------


@dataclass
class Stack:
    listeners: Listeners
    gateways: list[Service]
    urls: list[str]


@contextlib.asynccontextmanager
async def stack_on(
    cluster: RedisCluster, database_url: str, gateways: int = 2
) -> AsyncIterator[Stack]:
    """A listener and ``gateways`` gateway processes on the cluster's redis+cluster:// URL."""
    listeners = Listeners(database_url, cluster.url)
    services: list[Service] = []
    try:
        listeners.start()
        ports = [free_port() for _ in range(gateways)]
        for port in ports:
            env = gateway_env(cluster.url, port, **GATEWAY_ENV)
            services.append(Service("gateway", env).start())
        for service, port in zip(services, ports, strict=True):
            await asyncio.to_thread(service.wait_http, f"http://127.0.0.1:{port}/readyz", 30.0)
        yield Stack(listeners, services, [f"ws://127.0.0.1:{p}/ws" for p in ports])
    finally:
        for service in services:
            service.stop()
        listeners.stop_all()


# -- clients -----------------------------------------------------------------------------


@dataclass
class Reader:
    """One WebSocket connection subscribed to ``channels``. Logs, per channel, every
    ``subscribed`` notice ("sub", epoch, offset, recovered, t) and message ("msg", epoch,
    offset, n, t) in order. On a close it reconnects and resumes every channel; a refused
    subscribe (e.g. ``unavailable``) is sent again, resuming. With ``churn`` it leaves
    after that many seconds on each connection and resumes on the next of ``urls``."""

    session: aiohttp.ClientSession
    urls: list[str]
    channels: list[str]
    sub: str
    churn: float | None = None
    log: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)
    epoch: dict[str, str] = field(default_factory=dict)
    offset: dict[str, int] = field(default_factory=dict)
    confirmed: set[str] = field(default_factory=set)
    errors: list[dict[str, Any]] = field(default_factory=list)
    connects: int = 0
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.log = {c: [] for c in self.channels}

    def ns(self, channel: str) -> list[int]:
        return [e[3] for e in self.log[channel] if e[0] == "msg"]

    def last(self, channel: str) -> int:
        ns = self.ns(channel)
        return ns[-1] if ns else 0

    async def run(self) -> None:
        while not self.stop.is_set():
            self.connects += 1
            with contextlib.suppress(aiohttp.ClientError, OSError, asyncio.TimeoutError):
                await self._follow()
            if not self.stop.is_set():
                await asyncio.sleep(0.1)

    def _request(self, channel: str) -> str:
        request: dict[str, Any] = {"type": "subscribe", "channel": channel, "id": channel}
        if channel in self.epoch:
            request.update(since=str(self.offset[channel]), epoch=self.epoch[channel])
        return orjson.dumps(request).decode()

    async def _follow(self) -> None:
        tok = token(self.sub, channels=["*"])
        protocols = ("pgcast.v1", f"bearer.{tok}")
        url = self.urls[(self.connects - 1) % len(self.urls)]
        loop = asyncio.get_running_loop()
        until = None if self.churn is None else loop.time() + self.churn
        async with self.session.ws_connect(url, protocols=protocols) as ws:
            self.confirmed.clear()
            for channel in self.channels:
                await ws.send_str(self._request(channel))
            while not self.stop.is_set():
                try:
                    wait = None if until is None else max(0.0, until - loop.time())
                    msg = await ws.receive(timeout=wait)
                except TimeoutError:
                    return  # churn: leave, and resume every channel on the next gateway
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    return
                frame = orjson.loads(msg.data)
                if frame["type"] == "error":
                    self.errors.append(frame)
                    channel = frame.get("id")
                    if channel in self.log:
                        await asyncio.sleep(0.2)
                        await ws.send_str(self._request(channel))
                    continue
                self._frame(frame)

    def _frame(self, frame: dict[str, Any]) -> None:
        now = time.monotonic()
        kind, channel = frame["type"], str(frame.get("channel"))
        if kind == "subscribed":
            self.confirmed.add(channel)
            self.log[channel].append(
                ("sub", frame["epoch"], int(frame["offset"]), frame["recovered"], now)
            )
            self.epoch[channel] = frame["epoch"]
            if not frame["recovered"]:
                self.offset[channel] = int(frame["offset"])
        elif kind == "message":
            offset = int(frame["offset"])
            self.offset[channel] = offset
            n = int(frame["data"]["n"])
            self.log[channel].append(("msg", self.epoch.get(channel), offset, n, now))


@contextlib.asynccontextmanager
async def readers_on(
    urls: list[str],
    channels: list[str],
    per_gateway: int,
    churn: float | None = None,
    prefix: str = "r",
) -> AsyncIterator[list[Reader]]:
    """On every gateway, ``per_gateway`` connections that share ``channels`` between them
    (so every channel has a subscriber on every gateway); waits until all are subscribed.
    With ``churn``, each leaves its gateway every ``churn`` seconds and resumes on the next."""
    # aiohttp's default connector holds at most 100 connections per session.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        readers = [
            Reader(
                session, urls[g:] + urls[:g], channels[i::per_gateway], f"{prefix}{g}.{i}", churn
            )
            for g in range(len(urls))
            for i in range(per_gateway)
        ]
        tasks = [asyncio.create_task(r.run()) for r in readers]
        try:
            await eventually(
                lambda: all(r.confirmed >= set(r.channels) for r in readers),
                30.0,
                "every reader subscribed to all its channels",
                0.05,
            )
            yield readers
        finally:
            for reader in readers:
                reader.stop.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


def caught_up(readers: list[Reader], sent: Counter[str]) -> bool:
    return all(r.last(c) == sent[c] for r in readers for c in r.channels)


def behind(readers: list[Reader], sent: Counter[str]) -> list[tuple[str, str, int, int]]:
    return [
        (r.sub, c, r.last(c), sent[c]) for r in readers for c in r.channels if r.last(c) != sent[c]
    ][:10]


async def wait_caught_up(readers: list[Reader], sent: Counter[str], within: float) -> float:
    try:
        return await eventually(lambda: caught_up(readers, sent), within, "clients caught up")
    except TimeoutError as exc:
        raise AssertionError(
            f"{exc}: (reader, channel, last n, sent) {behind(readers, sent)}"
        ) from None


# -- the invariant -----------------------------------------------------------------------


def check_channel(reader: Reader, channel: str, sent: int) -> int:
    """Nothing lost silently on one channel: no duplicate, in order; within an epoch the
    offsets are contiguous; every event missed (a hole, or the tail) is covered by a
    ``subscribed`` recovered:false at that place. Returns how many such notices came
    after the first message (0 = the channel never lost continuity)."""
    where = f"{reader.sub} {channel}"
    ns = reader.ns(channel)
    assert len(ns) == len(set(ns)), f"{where}: duplicates in {ns}"
    assert ns == sorted(ns), f"{where}: out of order: {ns}"
    told = False
    previous: tuple[str, int, int] | None = None  # (epoch, offset, n) of the last message
    notices = 0
    for entry in reader.log[channel]:
        if entry[0] == "sub":
            if not entry[3]:
                told = True
                notices += previous is not None
            continue
        _, epoch, offset, n, _ = entry
        if previous is None:
            skipped = list(range(1, n))
        else:
            skipped = list(range(previous[2] + 1, n))
            if not told:
                gap = f"{where}: offset {offset} of {epoch} after {previous[1]} of {previous[0]}"
                assert epoch == previous[0], gap
                assert offset == previous[1] + 1, gap
        assert not skipped or told, f"{where}: silently missed {skipped} before {n}"
        told, previous = False, (epoch, offset, n)
    tail = list(range((previous[2] if previous else 0) + 1, sent + 1))
    assert not tail or told, f"{where}: silently missed the tail {tail}"
    return notices


def check_exact(reader: Reader, channel: str, sent: int) -> None:
    """Zero loss: every event 1..sent once, in order, at offsets 1..sent of one epoch."""
    msgs = [e for e in reader.log[channel] if e[0] == "msg"]
    where = f"{reader.sub} {channel}"
    assert [e[3] for e in msgs] == list(range(1, sent + 1)), (where, [e[3] for e in msgs])
    assert [e[2] for e in msgs] == list(range(1, sent + 1)), (where, [e[2] for e in msgs])
    assert len({e[1] for e in msgs}) <= 1, (where, "epochs", {e[1] for e in msgs})
    assert check_channel(reader, channel, sent) == 0


@dataclass(frozen=True)
class Delays:
    """Commit -> delivery delays of the events committed in a window, over every client."""

    events: int  # events committed in the window
    worst: float  # seconds: the slowest delivery of any of them to any client
    median: float
    missing: int  # deliveries that never came (each must be covered by recovered:false)

    def __str__(self) -> str:
        return f"worst {self.worst:.2f}s, median {self.median:.3f}s over {self.events} events"


def delays(
    readers: list[Reader], writer: Writer, channels: Iterable[str], start: float, end: float
) -> Delays:
    """How long the events committed on ``channels`` between ``start`` and ``end``
    (time.monotonic) took from their commit to each client that follows them."""
    wanted = set(channels)
    found: list[float] = []
    missing = 0
    events = 0
    for channel in wanted:
        committed = [(n, t) for n, t in writer.committed[channel].items() if start <= t <= end]
        events += len(committed)
        for reader in readers:
            if channel not in reader.log:
                continue
            arrived = {e[3]: e[4] for e in reader.log[channel] if e[0] == "msg"}
            for n, t in committed:
                if n in arrived:
                    found.append(max(0.0, arrived[n] - t))
                else:
                    missing += 1
    found.sort()
    return Delays(
        events, found[-1] if found else 0.0, found[len(found) // 2] if found else 0.0, missing
    )


# -- load --------------------------------------------------------------------------------


class Writer:
    """Commits about ``rate`` events/s through pgcast.publish, round-robin over
    ``channels``; each channel's ``n`` counts 1, 2, 3 ..."""

    def __init__(self, pg: asyncpg.Connection, channels: list[str], rate: int) -> None:
        self.pg = pg
        self.channels = channels
        self.rate = rate
        self.sent: Counter[str] = Counter()
        # channel -> n -> when its transaction committed (time.monotonic)
        self.committed: dict[str, dict[int, float]] = {c: {} for c in channels}
        self.started = time.monotonic()
        self._turn = 0

    async def run(self) -> None:
        tick = 0.02
        per_tick = max(1, int(self.rate * tick))
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            names, ns = [], []
            for _ in range(per_tick):
                channel = self.channels[self._turn % len(self.channels)]
                self._turn += 1
                self.sent[channel] += 1
                names.append(channel)
                ns.append(self.sent[channel])
            await self.pg.execute(
                """SELECT pgcast.publish(c, jsonb_build_object('n', n))
                   FROM unnest($1::text[], $2::int[]) WITH ORDINALITY AS t(c, n, i) ORDER BY i""",
                names,
                ns,
            )
            now = time.monotonic()
            for channel, n in zip(names, ns, strict=True):
                self.committed[channel][n] = now
            next_at += tick
            await asyncio.sleep(max(0.0, next_at - loop.time()))

    def total(self) -> int:
        return sum(self.sent.values())

    def achieved(self) -> float:
        """Events/s committed since the writer was made."""
        return self.total() / max(1e-9, time.monotonic() - self.started)


@contextlib.asynccontextmanager
async def writing(writer: Writer) -> AsyncIterator[Writer]:
    task = asyncio.create_task(writer.run())
    try:
        yield writer
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def drained(pg: asyncpg.Connection) -> bool:
    return bool(await pg.fetchval("SELECT count(*) = 0 FROM pgcast.outbox"))
