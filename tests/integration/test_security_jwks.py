"""Security review, JWKS: `kid` rotation, a `kid` pointing to a missing key, a JWKS endpoint
that is down, and the fetch rate an attacker can cause.

The JWKS is served by a local aiohttp server that counts its hits.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from tests.soak.harness import gateway_settings, handshake_status, running_gateway

Key = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


class JwksServer:
    """Serves ``/jwks.json`` from a mutable key list; counts requests."""

    def __init__(self) -> None:
        self.keys: dict[str, Key] = {}
        self.hits = 0
        self.port = 0

    def jwk(self, kid: str, key: Key) -> dict[str, Any]:
        if isinstance(key, rsa.RSAPrivateKey):
            jwk: dict[str, Any] = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
            jwk["alg"] = "RS256"
        else:
            jwk = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
            jwk["alg"] = "ES256"
        return {**jwk, "kid": kid, "use": "sig"}

    async def handle(self, request: web.Request) -> web.Response:
        self.hits += 1
        return web.json_response({"keys": [self.jwk(k, v) for k, v in self.keys.items()]})

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/jwks.json"

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[JwksServer]:
        app = web.Application()
        app.router.add_get("/jwks.json", self.handle)
        runner = web.AppRunner(app, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self.port)
        await site.start()
        self.port = runner.addresses[0][1]
        try:
            yield self
        finally:
            await runner.cleanup()


def token(key: Key, kid: str | None, alg: str = "RS256", **extra: Any) -> str:
    payload = {"sub": "7", "exp": int(time.time()) + 600, **extra}
    headers = {} if kid is None else {"kid": kid}
    return jwt.encode(payload, key, algorithm=alg, headers=headers)


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


@pytest.fixture(scope="module")
def keys() -> dict[str, Key]:
    return {
        "k1": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "k2": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "ec": ec.generate_private_key(ec.SECP256R1()),
        "evil": rsa.generate_private_key(public_exponent=65537, key_size=2048),
    }


async def test_kid_rotation_missing_kid_and_foreign_keys(
    redis_url: str, keys: dict[str, Key]
) -> None:
    """A known kid verifies, a rotated-in kid too; a missing kid or a foreign signature is 401."""
    jwks = JwksServer()
    jwks.keys = {"k1": keys["k1"], "ec": keys["ec"]}
    async with jwks.serving():
        settings = gateway_settings(
            redis_url,
            PGCAST_JWT_SECRET="",
            PGCAST_JWT_JWKS_URL=jwks.url,
            PGCAST_JWT_JWKS_COOLDOWN="0.5",
        )
        async with running_gateway(settings) as (_, port), aiohttp.ClientSession() as http:

            async def status(tok: str) -> int:
                return await handshake_status(http, port, headers=bearer(tok))

            assert await status(token(keys["k1"], "k1")) == 101
            assert await status(token(keys["k2"], "k2")) == 401  # not published yet
            assert await status(token(keys["evil"], "k1")) == 401  # right kid, foreign key
            assert await status(token(keys["evil"], "missing")) == 401
            assert await status(token(keys["k1"], None)) == 401  # no kid: no key is guessed
            assert await status(token(keys["ec"], "ec", alg="ES256")) == 101
            jwks.keys["k2"] = keys["k2"]  # rotation: the issuer publishes a new key
            deadline = time.monotonic() + 5
            while await status(token(keys["k2"], "k2")) != 101:
                assert time.monotonic() < deadline, "a rotated-in kid never became valid"


async def test_unknown_kids_cannot_hammer_the_jwks_endpoint(
    redis_url: str, keys: dict[str, Key]
) -> None:
    """50 tokens with random kids cause at most a few JWKS fetches (the refetch cooldown)."""
    jwks = JwksServer()
    jwks.keys = {"k1": keys["k1"]}
    async with jwks.serving():
        settings = gateway_settings(
            redis_url, PGCAST_JWT_SECRET="", PGCAST_JWT_JWKS_URL=jwks.url
        )  # the default cooldown
        async with running_gateway(settings) as (_, port), aiohttp.ClientSession() as http:
            assert (
                await handshake_status(http, port, headers=bearer(token(keys["k1"], "k1"))) == 101
            )
            before = jwks.hits
            for i in range(50):
                forged = token(keys["evil"], f"attacker-{i}")
                assert await handshake_status(http, port, headers=bearer(forged)) == 401
            assert jwks.hits - before <= 2, f"{jwks.hits - before} JWKS fetches for 50 bad kids"


async def test_jwks_endpoint_down_refuses_new_tokens_and_keeps_serving(
    redis_url: str, keys: dict[str, Key]
) -> None:
    """JWKS unreachable: tokens needing a fetch get 401, the gateway stays up and ready."""
    jwks = JwksServer()
    jwks.keys = {"k1": keys["k1"]}
    async with jwks.serving():
        url = jwks.url
    settings = gateway_settings(redis_url, PGCAST_JWT_SECRET="", PGCAST_JWT_JWKS_URL=url)
    async with running_gateway(settings) as (_, port), aiohttp.ClientSession() as http:
        assert await handshake_status(http, port, headers=bearer(token(keys["k1"], "k1"))) == 401
        async with http.get(f"http://127.0.0.1:{port}/readyz") as resp:
            assert resp.status == 200


async def test_kid_of_the_wrong_key_type_is_refused(redis_url: str, keys: dict[str, Key]) -> None:
    """A kid naming an EC key on an RS256 token (and an RSA key on ES256) is 401, not a 500."""
    jwks = JwksServer()
    jwks.keys = {"k1": keys["k1"], "ec": keys["ec"]}
    async with jwks.serving():
        settings = gateway_settings(redis_url, PGCAST_JWT_SECRET="", PGCAST_JWT_JWKS_URL=jwks.url)
        async with running_gateway(settings) as (_, port), aiohttp.ClientSession() as http:
            for forged in (token(keys["k1"], "ec"), token(keys["ec"], "k1", alg="ES256")):
                assert await handshake_status(http, port, headers=bearer(forged)) == 401
