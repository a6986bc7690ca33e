"""Handshake refusals by HTTP status before any upgrade, and channel authorization on the wire."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import jwt
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import create_app
from tests.gateway_support import SECRET, Client, Events, settings, token
from tests.unit.test_gateway_auth import RSA_KEY, forge_hs256, pem

MakeClient = Callable[..., Awaitable[TestClient]]


async def status_of(http: TestClient, path: str = "/ws", **kw: Any) -> int:
    """The HTTP status of a WebSocket handshake that is refused (never upgraded)."""
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await http.ws_connect(path, **kw)
    return info.value.status


async def test_every_rejection_path_answers_before_the_upgrade(
    aiohttp_client: MakeClient, redis_url: str
) -> None:
    """Missing, malformed, expired, badly signed, none-alg tokens: 401; bad Origin: 403."""
    http = await aiohttp_client(
        create_app(settings(redis_url, PGCAST_ALLOWED_ORIGINS="https://app.example"))
    )
    expired = jwt.encode({"sub": "1", "exp": int(time.time()) - 60}, SECRET, algorithm="HS256")
    no_sub = jwt.encode({"exp": int(time.time()) + 60}, SECRET, algorithm="HS256")
    unsigned = jwt.encode({"sub": "1", "exp": int(time.time()) + 60}, None, algorithm="none")
    cases = {
        "missing": {},
        "malformed": {"headers": {"Authorization": "Bearer nonsense"}},
        "expired": {"headers": {"Authorization": f"Bearer {expired}"}},
        "bad signature": {"headers": {"Authorization": f"Bearer {token(secret='x' * 40)}"}},
        "no sub": {"params": {"token": no_sub}},
        "alg none": {"protocols": ("pgcast.v1", f"bearer.{unsigned}")},
    }
    for name, kw in cases.items():
        assert await status_of(http, **kw) == 401, name
    good = {"Authorization": f"Bearer {token()}"}
    assert await status_of(http, headers={**good, "Origin": "https://evil.example"}) == 403
    ws = await http.ws_connect("/ws", headers={**good, "Origin": "https://app.example"})
    await ws.close()
    metrics = await (await http.get("/metrics")).text()
    for reason in ("missing", "malformed", "expired", "bad_signature", "bad_claims", "origin"):
        assert f'pgcast_gateway_auth_failures_total{{reason="{reason}"}} 1.0' in metrics


async def test_token_in_each_place_and_the_subprotocol_answer(
    aiohttp_client: MakeClient, redis_url: str
) -> None:
    """Header, bearer.<jwt> subprotocol (answered pgcast.v1) and query tokens all connect."""
    http = await aiohttp_client(create_app(settings(redis_url)))
    browser = await http.ws_connect("/ws", protocols=("pgcast.v1", f"bearer.{token()}"))
    assert browser.protocol == "pgcast.v1"
    server = await http.ws_connect("/ws", headers={"Authorization": f"Bearer {token()}"})
    simple = await http.ws_connect("/ws", params={"token": token()})
    for ws in (browser, server, simple):
        client = Client(ws)
        assert (await client.subscribe("user:42"))["type"] == "subscribed"
        await ws.close()


async def test_rs256_gateway_refuses_the_public_key_as_hs256_secret(
    aiohttp_client: MakeClient, redis_url: str
) -> None:
    """Key confusion: an HS256 token signed with the RS256 public key is a 401."""
    public = pem(RSA_KEY)
    http = await aiohttp_client(
        create_app(settings(redis_url, PGCAST_JWT_SECRET="", PGCAST_JWT_PUBLIC_KEY=public))
    )
    payload = {"sub": "42", "exp": int(time.time()) + 60}
    forged = forge_hs256(payload, public.encode())
    assert await status_of(http, headers={"Authorization": f"Bearer {forged}"}) == 401
    real = jwt.encode(payload, RSA_KEY, algorithm="RS256")
    ws = await http.ws_connect("/ws", headers={"Authorization": f"Bearer {real}"})
    await ws.close()


async def test_forbidden_channel_never_sends_a_byte(
    aiohttp_client: MakeClient, redis_url: str, redis_client: aioredis.Redis
) -> None:
    """Subscribing to another user's channel is forbidden; none of its messages arrive."""
    http = await aiohttp_client(create_app(settings(redis_url)))
    client = Client(await http.ws_connect("/ws", params={"token": token("42")}))
    refused = await client.subscribe("user:43", id=1)
    assert refused == {
        "type": "error",
        "code": "forbidden",
        "message": "token does not grant user:43",
        "id": 1,
    }
    assert (await client.subscribe("user:42"))["type"] == "subscribed"
    events = Events(redis_client)
    await events.numbered("user:43", 1, 5)
    await events.numbered("user:42", 1, 2)
    got = await client.messages(2)
    assert {f["channel"] for f in got} == {"user:42"}
    await client.send(type="ping")
    assert (await client.recv())["type"] == "pong"  # nothing of user:43 came before it
    assert all(f.get("channel") != "user:43" or f["type"] == "error" for f in client.frames)


async def test_globs_grant_exactly_what_they_say(
    aiohttp_client: MakeClient, redis_url: str
) -> None:
    """orders:* grants orders:<anything>, not orders itself; names grant themselves only."""
    http = await aiohttp_client(create_app(settings(redis_url)))
    tok = token("7", channels=["articles", "orders:*", "team:?"])
    client = Client(await http.ws_connect("/ws", params={"token": tok}))
    verdicts = {}
    for channel in (
        "articles",
        "orders:1",
        "orders:1:x",
        "team:a",
        "user:7",
        "articles:1",
        "orders",
        "team:ab",
        "user:8",
        "xorders:1",
    ):
        verdicts[channel] = (await client.subscribe(channel))["type"]
    assert verdicts == {
        "articles": "subscribed",
        "orders:1": "subscribed",
        "orders:1:x": "subscribed",
        "team:a": "subscribed",
        "user:7": "subscribed",
        "articles:1": "error",
        "orders": "error",
        "team:ab": "error",
        "user:8": "error",
        "xorders:1": "error",
    }


async def test_jwks_rotation_by_kid(
    aiohttp_client: MakeClient, aiohttp_server: Callable[..., Awaitable[TestServer]], redis_url: str
) -> None:
    """A new kid is fetched once (rotation works); an unknown kid after the refetch is a 401."""
    from cryptography.hazmat.primitives.asymmetric import rsa
    from jwt.algorithms import RSAAlgorithm

    keys = {"a": RSA_KEY, "b": rsa.generate_private_key(public_exponent=65537, key_size=2048)}
    published = ["a"]
    fetches = []

    async def jwks(request: web.Request) -> web.Response:
        fetches.append(list(published))
        out = []
        for kid in published:
            jwk: dict[str, Any] = RSAAlgorithm.to_jwk(keys[kid].public_key(), as_dict=True)
            out.append({**jwk, "kid": kid, "alg": "RS256", "use": "sig"})
        return web.json_response({"keys": out})

    jwks_app = web.Application()
    jwks_app.router.add_get("/jwks", jwks)
    jwks_server = await aiohttp_server(jwks_app)
    http = await aiohttp_client(
        create_app(
            settings(
                redis_url,
                PGCAST_JWT_SECRET="",
                PGCAST_JWT_JWKS_URL=str(jwks_server.make_url("/jwks")),
                PGCAST_JWT_JWKS_COOLDOWN="0",
            )
        )
    )

    def signed(kid: str) -> dict[str, str]:
        payload = {"sub": "42", "exp": int(time.time()) + 60}
        tok = jwt.encode(payload, keys[kid], algorithm="RS256", headers={"kid": kid})
        return {"Authorization": f"Bearer {tok}"}

    await (await http.ws_connect("/ws", headers=signed("a"))).close()
    published.append("b")  # rotation: the issuer starts signing with b
    await (await http.ws_connect("/ws", headers=signed("b"))).close()
    assert fetches == [["a"], ["a", "b"]]
    keys["c"] = keys["a"]
    assert await status_of(http, headers=signed("c")) == 401
    assert len(fetches) == 3  # one refetch for the unknown kid, then refused
    await asyncio.sleep(0)
