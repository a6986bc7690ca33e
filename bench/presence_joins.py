"""bench/presence.py's part 2: presence join and leave, seen on the same and the other gateway."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench.presence_client import WAIT, Ws
from bench.presence_rig import Rig
from bench.stats import percentiles

JOIN_CHANNEL = "bench:join"
TRACKERS = 10  # connections on gateway A taking turns to join in part 2


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
