"""bench/presence.py's part 1: client messages from gateway A to subscribers on A and B."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time
from typing import Any

from bench.presence_client import WAIT, Hook, Ws
from bench.presence_rig import CHAT, Rig
from bench.procs import cpu_of
from bench.stats import percentiles


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
