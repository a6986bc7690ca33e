"""Connection churn for soak runs: connect, subscribe (resuming), read, disconnect, repeat.

Each worker is one simulated client slot. It remembers its position per channel
across its connections and resumes from it, so every gap or duplicate the
gateway would cause shows up in :class:`ChurnStats`. About one disconnect in ten
is an abort (RST, no close frame), as when a phone loses its network.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from tests.soak.harness import mint
from tests.soak.wsraw import CLOSE, PING, PONG, TEXT, RawWebSocket, close_payload

Position = tuple[str, int]  # (epoch, last offset seen)


@dataclass
class ChurnStats:
    connects: int = 0
    handshake_failures: int = 0
    aborts: int = 0
    subscribes: int = 0
    resumes: int = 0
    resumes_not_recovered: int = 0
    messages: int = 0
    gaps: int = 0
    duplicates: int = 0
    unexpected: list[str] = field(default_factory=list)
    live: int = 0  # connections open right now

    def problem(self, what: str) -> None:
        if len(self.unexpected) < 20:  # keep a sample, not a flood
            self.unexpected.append(what)


@dataclass(frozen=True)
class ChurnConfig:
    host: str
    port: int
    channels: tuple[str, ...]
    lifetime: float  # mean seconds a connection stays open
    users: int = 1000
    per_connection: int = 2  # channels subscribed by each connection
    abort_ratio: float = 0.1  # disconnects that are an RST instead of a close handshake


class Worker:
    """One client slot: connections one after another until the deadline."""

    def __init__(self, slot: int, config: ChurnConfig, stats: ChurnStats) -> None:
        self.slot = slot
        self.config = config
        self.stats = stats
        self.rng = random.Random(slot)
        self.positions: dict[str, Position] = {}
        self.pending: dict[str, int | None] = {}  # channel -> since sent (None: fresh)
        self.token = mint(f"soak-{slot % config.users}", ["soak:*"], ttl=24 * 3600)
        # A few "home" channels per slot, so most subscribes are resumes (like an app's).
        self.home = self.rng.sample(
            config.channels, min(len(config.channels), config.per_connection + 1)
        )

    async def run(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            lifetime = self.config.lifetime * self.rng.uniform(0.5, 1.5)
            await self.one_connection(min(deadline, time.monotonic() + lifetime))

    async def one_connection(self, until: float) -> None:
        try:
            async with asyncio.timeout(10):
                ws = await RawWebSocket.connect(
                    self.config.host,
                    self.config.port,
                    headers={"Authorization": f"Bearer {self.token}"},
                )
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError):
            self.stats.handshake_failures += 1
            await asyncio.sleep(self.rng.uniform(0.1, 0.5))  # pacing: back off like a client
            return
        if ws.status != 101:
            self.stats.handshake_failures += 1
            ws.close()
            await asyncio.sleep(self.rng.uniform(0.1, 0.5))
            return
        self.stats.connects += 1
        self.stats.live += 1
        try:
            self.subscribe_some(ws)
            await self.read_until(ws, until)
            await self.leave(ws)
        finally:
            self.stats.live -= 1
            ws.close()

    def subscribe_some(self, ws: RawWebSocket) -> None:
        self.pending.clear()
        for channel in self.rng.sample(self.home, self.config.per_connection):
            request: dict[str, Any] = {"type": "subscribe", "channel": channel}
            known = self.positions.get(channel)
            if known is not None:
                request["epoch"], request["since"] = known[0], str(known[1])
                self.stats.resumes += 1
            self.pending[channel] = None if known is None else known[1]
            self.stats.subscribes += 1
            ws.send(TEXT, orjson.dumps(request))

    async def read_until(self, ws: RawWebSocket, until: float) -> None:
        try:
            async with asyncio.timeout(max(0.0, until - time.monotonic())):
                while (frame := await ws.read_frame()) is not None:
                    if frame.opcode == TEXT:
                        self.on_frame(orjson.loads(frame.payload))
                    elif frame.opcode == PING:
                        ws.send(PONG, frame.payload)
                    elif frame.opcode == CLOSE:
                        self.stats.problem(f"server closed {frame.close_code}")
                        return
        except TimeoutError:
            return  # the lifetime is over: time to leave
        self.stats.problem("connection dropped by the server")

    async def leave(self, ws: RawWebSocket) -> None:
        if self.rng.random() < self.config.abort_ratio:
            self.stats.aborts += 1
            ws.writer.transport.abort()
            return
        ws.send(CLOSE, close_payload(1000))
        try:
            async with asyncio.timeout(5):
                while (frame := await ws.read_frame()) is not None:
                    if frame.opcode == TEXT:
                        self.on_frame(orjson.loads(frame.payload))
        except TimeoutError:
            self.stats.problem("close handshake not answered in 5s")

    def on_frame(self, frame: dict[str, Any]) -> None:
        kind, channel = frame.get("type"), frame.get("channel")
        if kind == "subscribed" and isinstance(channel, str):
            since = self.pending.pop(channel, None)
            if since is not None and frame["recovered"]:
                self.positions[channel] = (frame["epoch"], since)
            else:
                if since is not None:
                    self.stats.resumes_not_recovered += 1
                self.positions[channel] = (frame["epoch"], int(frame["offset"]))
        elif kind == "message" and isinstance(channel, str):
            self.stats.messages += 1
            if channel not in self.positions:
                self.stats.problem(f"message before subscribed on {channel}")
                return
            epoch, last = self.positions[channel]
            offset = int(frame["offset"])
            if offset <= last:
                self.stats.duplicates += 1
            elif offset > last + 1:
                self.stats.gaps += 1
            self.positions[channel] = (epoch, max(last, offset))
        elif kind != "unsubscribed":
            self.stats.problem(f"unexpected frame {str(frame)[:120]}")


async def churn(config: ChurnConfig, workers: int, seconds: float, stats: ChurnStats) -> None:
    """Run ``workers`` slots for ``seconds``, ramping up over the first tenth (at most 10 s)."""
    deadline = time.monotonic() + seconds
    ramp = min(10.0, seconds / 10)
    slots = [Worker(slot, config, stats) for slot in range(workers)]

    async def start(worker: Worker, delay: float) -> None:
        await asyncio.sleep(delay)  # pacing: spread the ramp-up
        await worker.run(deadline)

    async with asyncio.TaskGroup() as group:
        for i, worker in enumerate(slots):
            group.create_task(start(worker, ramp * i / max(1, workers)))
