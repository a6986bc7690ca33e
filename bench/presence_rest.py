"""bench/presence.py's part 3: presence at rest: Redis memory per member and the idle
cost of refresh and sweep.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from typing import Any

from bench.presence_client import Ws
from bench.presence_rig import Rig, log
from bench.procs import cpu_of, machine_jiffies
from pgcast.keys import Layout

SINGLE = Layout()  # the key names of one Redis


# -- 3. presence at rest -----------------------------------------------------------------
async def idle_window(run: Rig, seconds: float) -> dict[str, Any]:
    """CPU of the gateways, Redis and this process over ``seconds`` of nothing asked."""
    gw_pids = [gw.pid for gw in run.gateways]
    me = [os.getpid()]
    busy0 = machine_jiffies()
    script0 = await run.script_stats()
    before = cpu_of(gw_pids), await run.redis_cpu(), cpu_of(me)
    t0 = time.perf_counter()
    await asyncio.sleep(seconds)
    after = cpu_of(gw_pids), await run.redis_cpu(), cpu_of(me)
    elapsed = time.perf_counter() - t0
    script1 = await run.script_stats()
    busy1 = machine_jiffies()
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
