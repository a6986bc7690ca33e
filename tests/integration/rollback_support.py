"""Helpers for the "Redis went back in time" tests: a real listener + gateways on a Redis the
test controls, clients that record everything they are told, and the invariant they check.

The invariant (CONTRACT.md, "Redis deployments"): a client gets every event in order,
once, or is told (``recovered:false``) where it missed some; an offset never names two
different events within one epoch.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import asyncpg
import orjson
import redis.asyncio as aioredis

from pgcast.keys import Layout
from tests.gateway_support import gateway_env, token
from tests.integration.listener_support import Listeners
from tests.processes import Service
from tests.servers import free_port
from tests.waiting import eventually

SINGLE = Layout()  # the key names of one Redis (and Sentinel)

CHANNEL = "feed"


async def publish(pg: asyncpg.Connection, first: int, last: int, channel: str = CHANNEL) -> None:
    """Events ``{"n": first}`` .. ``{"n": last}`` from SQL, one transaction each."""
    for n in range(first, last + 1):
        await pg.execute("SELECT pgcast.publish($1, jsonb_build_object('n', $2::int))", channel, n)


@dataclass
class Watcher:
    """A client following one channel through any of ``urls``; on a close it reconnects and
    resumes from its last position. Logs every subscribed notice and message in order."""

    session: aiohttp.ClientSession
    urls: list[str]
    channel: str = CHANNEL
    sub: str = "watcher"
    epoch: str | None = None
    offset: int = 0
    log: list[tuple[Any, ...]] = field(default_factory=list)  # ("sub", ...) | ("msg", ...)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    connects: int = 0
    churn: float | None = None  # seconds on each connection before resuming on another
    errors: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ns(self) -> list[int]:
        return [entry[3] for entry in self.log if entry[0] == "msg"]

    @property
    def notices(self) -> list[tuple[Any, ...]]:
        return [entry for entry in self.log if entry[0] == "sub"]

    def has(self, n: int) -> bool:
        return n in self.ns

    async def run(self) -> None:
        while not self.stop.is_set():
            url = self.urls[self.connects % len(self.urls)]
            self.connects += 1
            with contextlib.suppress(aiohttp.ClientError, OSError, asyncio.TimeoutError):
                await self._follow(url)
            if not self.stop.is_set():
                await asyncio.sleep(0.1)  # a client's pause before it reconnects

    async def _follow(self, url: str) -> None:
        tok = token(self.sub, channels=[self.channel])
        loop = asyncio.get_running_loop()
        async with self.session.ws_connect(url, protocols=("pgcast.v1", f"bearer.{tok}")) as ws:
            request: dict[str, Any] = {"type": "subscribe", "channel": self.channel}
            if self.epoch is not None:
                request.update(since=str(self.offset), epoch=self.epoch)
            await ws.send_str(orjson.dumps(request).decode())
            until = None if self.churn is None else loop.time() + self.churn
            while not self.stop.is_set():
                try:
                    wait = None if until is None else max(0.0, until - loop.time())
                    msg = await ws.receive(timeout=wait)
                except TimeoutError:
                    return  # churn: leave, and resume on the next gateway
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    return
                frame = orjson.loads(msg.data)
                if frame["type"] == "error":
                    self.errors.append(frame)  # e.g. unavailable: resume again shortly
                    return
                self._frame(frame)

    def _frame(self, frame: dict[str, Any]) -> None:
        if frame["type"] == "subscribed":
            self.log.append(("sub", frame["epoch"], int(frame["offset"]), frame["recovered"]))
            self.epoch = frame["epoch"]
            if not frame["recovered"]:
                self.offset = int(frame["offset"])
        elif frame["type"] == "message":
            self.offset = int(frame["offset"])
            n = int(frame["data"]["n"])
            self.log.append(("msg", self.epoch, self.offset, n))


def check(watcher: Watcher, expected: Iterable[int]) -> None:
    """The invariant for one client: no duplicate, in order, and every event it lacks (a
    hole, or the tail) is covered by a ``recovered:false`` notice at that place."""
    ns = watcher.ns
    assert len(ns) == len(set(ns)), f"{watcher.sub}: duplicates in {ns}"
    assert ns == sorted(ns), f"{watcher.sub}: out of order: {ns}"
    wanted = sorted(expected)
    told = False
    previous: int | None = None
    for entry in watcher.log:
        if entry[0] == "sub":
            told = told or not entry[3]
            continue
        n = entry[3]
        skipped = [m for m in wanted if (previous is None or m > previous) and m < n]
        assert not skipped or told, f"{watcher.sub}: silently missed {skipped} before {n}"
        told, previous = False, n
    tail = [m for m in wanted if previous is None or m > previous]
    assert not tail or told, f"{watcher.sub}: silently missed the tail {tail}"


async def drained(pg: asyncpg.Connection) -> bool:
    """Whether the listener has published (and deleted) every outbox row."""
    return bool(await pg.fetchval("SELECT count(*) = 0 FROM pgcast.outbox"))


async def caught_up(watcher: Watcher, redis: aioredis.Redis, channel: str = CHANNEL) -> bool:
    """Whether ``watcher`` stands at the channel's current epoch and top offset in Redis."""
    epoch, top = await redis.hmget(SINGLE.channel_keys(channel).meta, ["e", "s"])
    if epoch is None or top is None:
        return False
    return (watcher.epoch, watcher.offset) == (epoch.decode(), int(top))


async def history_ns(redis: aioredis.Redis, channel: str = CHANNEL) -> list[int]:
    """The events (their n) of the channel's current history, oldest first."""
    entries = await redis.xrange(SINGLE.channel_keys(channel).history)
    return [int(orjson.loads(fields[b"f"])["data"]["n"]) for _, fields in entries]


def check_offsets(*watchers: Watcher) -> None:
    """Across every client: an (epoch, offset) names one event, never two."""
    named: dict[tuple[str, int], int] = {}
    for watcher in watchers:
        for kind, epoch, offset, n in (e for e in watcher.log if e[0] == "msg"):
            assert kind == "msg"
            other = named.setdefault((epoch, offset), n)
            assert other == n, f"offset {offset} of epoch {epoch} named events {other} and {n}"


@dataclass
class Stack:
    """A listener and ``gateways`` gateway processes on one Redis URL."""

    listeners: Listeners
    gateways: list[Service]
    urls: list[str]
    ports: list[int]


@contextlib.asynccontextmanager
async def stack(
    database_url: str, redis_url: str, gateways: int = 1, **listener_env: str
) -> AsyncIterator[Stack]:
    listeners = Listeners(database_url, redis_url)
    services: list[Service] = []
    try:
        listeners.start(**listener_env)
        ports = [free_port() for _ in range(gateways)]
        for port in ports:
            services.append(Service("gateway", gateway_env(redis_url, port)).start())
        for service, port in zip(services, ports, strict=True):
            service.wait_http(f"http://127.0.0.1:{port}/readyz")
        yield Stack(listeners, services, [f"ws://127.0.0.1:{p}/ws" for p in ports], ports)
    finally:
        for service in services:
            service.stop()
        listeners.stop_all()


@contextlib.asynccontextmanager
async def watching(watchers: list[Watcher]) -> AsyncIterator[None]:
    """Run ``watchers`` for the block; stop and reap them after."""
    tasks = [asyncio.create_task(w.run()) for w in watchers]
    try:
        yield
    finally:
        for watcher in watchers:
            watcher.stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def until(check_: Any, what: str, wait: float = 20.0) -> None:
    await eventually(check_, wait, what, 0.05)
