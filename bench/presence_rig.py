"""bench/presence.py's servers: a private Redis and gateways A and B, with the CPU,
memory and script counters read from that Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import jwt
import redis.asyncio as aioredis

from bench.presence_client import HOST, WAIT, Ws
from bench.systems import Proc, entry_point, wait_http
from tests.servers import RedisInstance, free_port, free_port_below

CHAT = "bench:chat"
DEFAULT_TTL = 10.0  # the gateway's PGCAST_PRESENCE_TTL default


def log(message: str) -> None:
    print(f"[presence {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


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
