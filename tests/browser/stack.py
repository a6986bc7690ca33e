"""Real pgcast processes for the client tests: one listener and N gateways, plus tokens.

Events travel the whole pipeline: ``pgcast.publish`` / ``pgcast.notify_trigger`` in
Postgres, the listener process, Redis, a gateway process, the client. Gateways can
be SIGKILLed, SIGTERMed (drain: 1012) and restarted on the same port.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import math
import secrets
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import jwt

from tests.processes import Service
from tests.servers import free_port

SECRET = "client-tests-" + "s" * 40  # HS256 keys must be >= 32 bytes


def mint(
    sub: str = "u1", channels: tuple[str, ...] = ("*",), ttl: float = 120.0, **extra: object
) -> str:
    """A token for ``sub``; ``extra`` adds claims (``publish=[...]``, ``presence=[...]``)."""
    now = time.time()
    claims = {"sub": sub, "exp": math.ceil(now + ttl), "iat": int(now), "channels": list(channels)}
    return jwt.encode({**claims, **extra}, SECRET, algorithm="HS256")


@dataclass
class Stack:
    database_url: str
    redis_url: str
    origins: tuple[str, ...] = ()
    gateway_env: dict[str, str] = field(default_factory=dict)
    listener: Service | None = None
    gateways: list[Service] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)

    def http_url(self, index: int = 0) -> str:
        return f"http://127.0.0.1:{self.ports[index]}"

    def ws_url(self, index: int = 0) -> str:
        return f"ws://127.0.0.1:{self.ports[index]}/ws"

    def start_listener(self) -> Service:
        port = free_port()
        env = {
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_url,
            "PGCAST_LISTENER_HOST": "127.0.0.1",
            "PGCAST_LISTENER_PORT": str(port),
            "PGCAST_LOCK_KEY": str(secrets.randbelow(1 << 40)),
        }
        self.listener = Service("listener", env).start()
        self.listener.wait_http(f"http://127.0.0.1:{port}/healthz")
        return self.listener

    def _gateway_env(self, port: int) -> dict[str, str]:
        return {
            "REDIS_URL": self.redis_url,
            "PGCAST_JWT_SECRET": SECRET,
            "PGCAST_HOST": "127.0.0.1",
            "PGCAST_PORT": str(port),
            "PGCAST_ALLOWED_ORIGINS": ",".join(self.origins),
            "PGCAST_DRAIN_SECONDS": "0.5",
            **self.gateway_env,
        }

    def add_gateway(self) -> Service:
        port = free_port()
        self.ports.append(port)
        self.gateways.append(self._launch(port))
        return self.gateways[-1]

    def _launch(self, port: int) -> Service:
        service = Service("gateway", self._gateway_env(port)).start()
        service.wait_http(f"http://127.0.0.1:{port}/readyz")
        return service

    def kill_gateway(self, index: int) -> None:
        self.gateways[index].kill9()

    def drain_gateway(self, index: int) -> int:
        """SIGTERM: the gateway closes its clients with 1012 and exits; returns its code."""
        return self.gateways[index].terminate(30)

    def restart_gateway(self, index: int) -> Service:
        """A fresh gateway process on the same port (after a kill or a drain)."""
        self.gateways[index].stop()
        self.gateways[index] = self._launch(self.ports[index])
        return self.gateways[index]

    def logs(self) -> str:
        parts = [s.log() for s in [*self.gateways, self.listener] if s is not None]
        return "\n---\n".join(parts)

    def stop(self) -> None:
        for service in [*self.gateways, self.listener]:
            if service is not None:
                with contextlib.suppress(Exception):
                    service.stop()
                with contextlib.suppress(Exception):
                    service.signal(signal.SIGKILL)


def start_stack(
    database_url: str,
    redis_url: str,
    gateways: int = 1,
    origins: tuple[str, ...] = (),
    gateway_env: dict[str, str] | None = None,
) -> Stack:
    stack = Stack(database_url, redis_url, origins, dict(gateway_env or {}))
    try:
        stack.start_listener()
        for _ in range(gateways):
            stack.add_gateway()
    except BaseException:
        stack.stop()
        raise
    return stack


async def until(predicate: Callable[[], object], what: str, limit: float = 30.0) -> None:
    """Poll ``predicate`` (a check, sync or async) until true; fail by name after ``limit`` s."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        await asyncio.sleep(0.02)
    raise TimeoutError(f"timed out after {limit}s waiting for {what}")
