"""Where gateways should subscribe: the primary's CPU per PUBLISH with subscribers on it or
on its replica (pub/sub messages reach replicas through replication).

``subscribers`` raw RESP connections SUBSCRIBE on one side; the primary takes
``messages`` PUBLISHes in pipelines of 100; each process's CPU comes from /proc.
Run by ``python -m bench.redis_durability`` (its rig gives the primary and replica).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from tests.servers import RedisInstance


def bulk(data: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(data), data)


def cpu_seconds(server: RedisInstance) -> float:
    """utime + stime of the server's process from /proc (fields 14 and 15 of its stat)."""
    if server.proc is None:
        raise RuntimeError(f"redis-server on port {server.port} is not running")
    fields = Path(f"/proc/{server.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _subscriber(port: int, channel: bytes) -> tuple[asyncio.StreamReader, Any]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"SUBSCRIBE " + channel + b"\r\n")
    await reader.readexactly(len(b"*3\r\n" + bulk(b"subscribe") + bulk(channel) + b":1\r\n"))
    return reader, writer


async def _receive(reader: asyncio.StreamReader, size: int) -> None:
    left = size
    while left > 0:
        chunk = await reader.read(min(left, 1 << 16))
        if not chunk:
            raise ConnectionError("a subscriber's connection closed")
        left -= len(chunk)


async def subscribe_once(
    primary: RedisInstance, replica: RedisInstance, where: str, subscribers: int, messages: int
) -> dict[str, Any]:
    """``subscribers`` raw connections on ``where``; ``messages`` PUBLISHes on the primary."""
    channel, payload = b"pgcast:{bench}:live", b"1:0123456789abcdef:" + b"x" * 100
    frame = b"*3\r\n" + bulk(b"message") + bulk(channel) + bulk(payload)
    target = primary if where == "primary" else replica
    conns = [await _subscriber(target.port, channel) for _ in range(subscribers)]
    client = aioredis.Redis.from_url(primary.url)
    try:
        before = cpu_seconds(primary), cpu_seconds(replica)
        started = time.perf_counter()
        receiving = [asyncio.create_task(_receive(r, len(frame) * messages)) for r, _ in conns]
        for at in range(0, messages, 100):
            pipe = client.pipeline(transaction=False)
            for _ in range(min(100, messages - at)):
                pipe.publish(channel, payload)
            await pipe.execute()
        async with asyncio.timeout(300):
            await asyncio.gather(*receiving)
        elapsed = time.perf_counter() - started
        after = cpu_seconds(primary), cpu_seconds(replica)
    finally:
        await client.aclose()
        for _, writer in conns:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
    return {
        "subscribed_on": where,
        "primary_cpu_us_per_msg": round((after[0] - before[0]) * 1e6 / messages, 1),
        "replica_cpu_us_per_msg": round((after[1] - before[1]) * 1e6 / messages, 1),
        "seconds": round(elapsed, 3),
    }


async def bench_subscribe(
    primary: RedisInstance,
    replica: RedisInstance,
    subscribers: int,
    messages: int,
    rounds: int,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Rounds of :func:`subscribe_once` on each side, interleaved; medians per side."""
    runs = []
    for r in range(rounds):
        for where in ("primary", "replica") if r % 2 == 0 else ("replica", "primary"):
            result = await subscribe_once(primary, replica, where, subscribers, messages)
            log(f"subscribe round {r + 1}/{rounds}: {result}")
            runs.append(result)
    summary = {
        where: {
            key: statistics.median(x[key] for x in runs if x["subscribed_on"] == where)
            for key in ("primary_cpu_us_per_msg", "replica_cpu_us_per_msg")
        }
        for where in ("primary", "replica")
    }
    return {"subscribers": subscribers, "messages": messages, "summary": summary, "runs": runs}


def subscribe_table(sub: dict[str, Any]) -> list[str]:
    """The summary of :func:`bench_subscribe` as Markdown table lines."""
    lines = [
        f"{sub['subscribers']} subscribers, {sub['messages']} PUBLISHes on the primary:",
        "| subscribed on | primary CPU us/msg | replica CPU us/msg |",
        "|---|---|---|",
    ]
    for where, row in sub["summary"].items():
        lines.append(
            f"| {where} | {row['primary_cpu_us_per_msg']} | {row['replica_cpu_us_per_msg']} |"
        )
    return lines
