"""Security review, logs: no token, secret or password ever reaches the processes' logs.

Real gateway and listener processes at DEBUG level; tokens (valid, expired,
forged, garbage) travel in the Authorization header, the bearer subprotocol, the
query string (WS and SSE) and refresh requests; then every captured log line is
searched for each token, its signature, the JWT secret and the server passwords.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import aiohttp
import jwt
import pytest

from tests.servers import RedisInstance
from tests.soak.harness import SECRET, Gateway, Listener, mint

REDIS_PASSWORD = "redis-log-pw-7Hq2"
PG_PASSWORD = "pg-log-pw-9Kd4"


def fresh(**claims: object) -> str:
    return mint("7", ["news"], jti=uuid.uuid4().hex, **claims)  # type: ignore[arg-type]


async def exercise(url: str, tokens: list[str]) -> None:
    """Use every token every way a client can; outcomes do not matter here, only logs."""
    async with aiohttp.ClientSession() as http:
        for token in tokens:
            for kwargs in (
                {"headers": {"Authorization": f"Bearer {token}"}},
                {"protocols": ("pgcast.v1", f"bearer.{token}")},
                {"params": {"token": token}},
            ):
                try:
                    ws = await http.ws_connect(url + "/ws", **kwargs)
                except aiohttp.WSServerHandshakeError:
                    continue
                await ws.send_json({"type": "subscribe", "channel": "user:7"})
                await ws.receive(timeout=10)
                for other in tokens:
                    await ws.send_json({"type": "refresh", "token": other})
                    await ws.receive(timeout=10)
                await ws.close()
            sse = url + "/sse"
            async with http.get(sse, params={"channel": "user:7", "token": token}) as resp:
                if resp.status == 200:
                    await resp.content.readline()


@pytest.mark.slow
async def test_tokens_and_secrets_never_reach_the_logs(
    database_url: str, private_redis: Callable[..., RedisInstance]
) -> None:
    """Grep every log line of a DEBUG gateway and listener for tokens and passwords."""
    redis = private_redis("--requirepass", REDIS_PASSWORD)
    redis_url = f"redis://:{REDIS_PASSWORD}@127.0.0.1:{redis.port}/0"
    dsn = database_url.replace("postgres@", f"postgres:{PG_PASSWORD}@", 1)
    assert PG_PASSWORD in dsn, "the test DSN carries a password (trust auth ignores it)"
    listener = Listener(dsn, redis_url, PGCAST_LOG_LEVEL="debug").start()
    gateway = Gateway(redis_url, PGCAST_LOG_LEVEL="debug", PGCAST_LOG_FORMAT="json")
    tokens = [
        fresh(),
        fresh(),
        fresh(exp=int(time.time()) - 3600),
        jwt.encode({"sub": "7", "exp": int(time.time()) + 60}, "x" * 40, algorithm="HS256"),
        fresh(nbf=int(time.time()) + 3600),
        "garbage." + uuid.uuid4().hex + "." + uuid.uuid4().hex,
    ]
    try:
        gateway.start()
        await exercise(gateway.url, tokens)
        assert gateway.service.terminate(20) == 0
    finally:
        gateway.stop()
        listener.stop()
    logs = {"gateway": gateway.log(), "listener": listener.log()}
    assert all(len(t.rsplit(".", 1)[-1]) >= 32 for t in tokens)
    assert "refused /ws" in logs["gateway"], "the refusals were logged (without tokens)"
    secrets = [SECRET, REDIS_PASSWORD, PG_PASSWORD]
    for token in tokens:
        secrets += [token, token.rsplit(".", 1)[-1]]  # every signature is >= 32 characters
    for name, text in logs.items():
        for secret in secrets:
            assert secret not in text, f"{name} logged a secret: {secret[:12]}..."
