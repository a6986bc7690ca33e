"""Shared pieces of the hardening, security and soak runs: waits, metrics, processes.

Start pgcast's real processes with fast failure-detection settings, read their
Prometheus metrics, and wait on conditions with a deadline (a hang fails by
name, never by the global test timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import jwt
import orjson
from aiohttp import web

from gateway.app import create_app
from gateway.config import GatewaySettings
from gateway.services import SERVICES
from listener.publisher import Event, Publisher
from tests.processes import Service
from tests.servers import free_port
from tests.waiting import eventually

# redis.asyncio clients: the installed types-redis stubs lag redis 5+ (no aclose()).
RedisClient = Any

# Fast failure detection for tests; each is a documented PGCAST_* setting.
FAST_LISTENER = {
    "PGCAST_LIVENESS_INTERVAL": "0.3",
    "PGCAST_LIVENESS_TIMEOUT": "1.0",
    "PGCAST_STANDBY_RETRY": "0.3",
    "PGCAST_CONNECT_TIMEOUT": "1.0",
    "PGCAST_STARTUP_TIMEOUT": "10",
    "PGCAST_POLL_INTERVAL": "0.5",
    "PGCAST_BACKOFF_MAX": "0.5",
    "PGCAST_TCP_KEEPALIVE_IDLE": "1",
    "PGCAST_TCP_KEEPALIVE_INTERVAL": "1",
    "PGCAST_TCP_KEEPALIVE_COUNT": "1",
    "PGCAST_TCP_USER_TIMEOUT": "2",
    "PGCAST_HISTORY_SIZE": "100000",
    "PGCAST_LOG_LEVEL": "info",
}


def http_get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    """Status and body of a GET (blocking; 0 when nothing answers)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except OSError:
        return 0, ""


async def http_get_async(url: str) -> tuple[int, str]:
    return await asyncio.to_thread(http_get, url)


def metric(text: str, name: str, **labels: str) -> float | None:
    """The value of one Prometheus sample in ``text`` (labels must all match), or None."""
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        match = re.match(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)", line)
        if match is None or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2) or ""))
        if all(found.get(key) == value for key, value in labels.items()):
            return float(match.group(3))
    return None


class Listener:
    """A pgcast-listener process with its probe port."""

    def __init__(self, database_url: str, redis_url: str, **env: str) -> None:
        self.port = free_port()
        self.service = Service(
            "listener",
            {
                **FAST_LISTENER,
                "DATABASE_URL": database_url,
                "REDIS_URL": redis_url,
                "PGCAST_LISTENER_HOST": "127.0.0.1",
                "PGCAST_LISTENER_PORT": str(self.port),
                **env,
            },
        )

    def start(self) -> Listener:
        self.service.start()
        self.service.wait_http(f"http://127.0.0.1:{self.port}/healthz", timeout=20)
        return self

    async def role(self) -> str | None:
        status, text = await http_get_async(f"http://127.0.0.1:{self.port}/metrics")
        if status != 200:
            return None
        if metric(text, "pgcast_listener_role", role="leader") == 1.0:
            return "leader"
        return "standby"

    async def metrics(self) -> str:
        return (await http_get_async(f"http://127.0.0.1:{self.port}/metrics"))[1]

    def log(self) -> str:
        return self.service.log()

    def stop(self) -> None:
        self.service.stop()


# -- gateway-side helpers ------------------------------------------------------------------

SECRET = "hardening-secret-0123456789abcdef-0123456789"


def mint(sub: str, channels: list[str] | None = None, *, ttl: float = 3600, **claims: Any) -> str:
    """An HS256 connection token signed with :data:`SECRET`."""
    payload: dict[str, Any] = {"sub": sub, "exp": int(time.time() + ttl), **claims}
    if channels is not None:
        payload["channels"] = channels
    return jwt.encode(payload, SECRET, algorithm="HS256")


def gateway_env(redis_url: str, **env: str) -> dict[str, str]:
    """Environment of a test gateway: fast heartbeats and drain, the test secret."""
    return {
        "REDIS_URL": redis_url,
        "PGCAST_JWT_SECRET": SECRET,
        "PGCAST_REDIS_HEARTBEAT": "0.2",
        "PGCAST_REDIS_HEARTBEAT_TIMEOUT": "1.5",
        "PGCAST_DRAIN_SECONDS": "0.2",
        "PGCAST_CLOSE_TIMEOUT": "1",
        **env,
    }


def gateway_settings(redis_url: str, **env: str) -> GatewaySettings:
    return GatewaySettings.from_env(gateway_env(redis_url, **env))


class Events:
    """Publishes through the listener's real publish script (leader epoch 1)."""

    def __init__(self, redis: RedisClient, history_size: int = 1000) -> None:
        self.publisher = Publisher(redis, history_size=history_size)
        self._claimed = False

    async def publish(self, channel: str, *payloads: dict[str, Any]) -> list[int]:
        if not self._claimed:
            await self.publisher.claim_fence(1)
            self._claimed = True
        events = [Event(channel, orjson.dumps(p)) for p in payloads]
        results = await self.publisher.publish(1, events)
        return [r.offset for r in results if r.offset is not None]


@contextlib.asynccontextmanager
async def running_gateway(settings: GatewaySettings) -> AsyncIterator[tuple[web.Application, int]]:
    """An in-process gateway on a free port, linked to Redis; yields (app, port)."""
    app = create_app(settings)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    try:
        await site.start()
        port: int = runner.addresses[0][1]
        hub = app[SERVICES].hub
        await eventually(lambda: hub.ready, 10, "gateway hub linked to Redis")
        yield app, port
    finally:
        await runner.cleanup()


async def handshake_status(
    session: aiohttp.ClientSession, port: int, path: str = "/ws", **kwargs: Any
) -> int:
    """The HTTP status a WebSocket handshake gets (101 when it upgraded; closed again)."""
    try:
        ws = await session.ws_connect(f"http://127.0.0.1:{port}{path}", **kwargs)
    except aiohttp.WSServerHandshakeError as exc:
        return exc.status
    await ws.close()
    return 101


class Gateway:
    """A pgcast-gateway process on a free port."""

    def __init__(self, redis_url: str, **env: str) -> None:
        self.port = free_port()
        self.service = Service(
            "gateway",
            {
                **gateway_env(redis_url),
                "PGCAST_HOST": "127.0.0.1",
                "PGCAST_PORT": str(self.port),
                **env,
            },
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, ready: bool = True) -> Gateway:
        self.service.start()
        self.service.wait_http(self.url + ("/readyz" if ready else "/healthz"), timeout=20)
        return self

    def log(self) -> str:
        return self.service.log()

    def stop(self) -> None:
        self.service.stop()
