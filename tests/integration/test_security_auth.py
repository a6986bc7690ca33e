"""Security review, authentication: Origin (CSWSH), algorithm confusion, `none`, time claims.

Each test runs a real in-process gateway and checks the HTTP status of the
WebSocket handshake: a refusal must come before the upgrade.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any

import aiohttp
import jwt
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.soak.harness import (
    SECRET,
    gateway_settings,
    handshake_status,
    mint,
    running_gateway,
)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    """A JWT assembled by hand, as an attacker would (PyJWT refuses to build these)."""
    return f"{b64(orjson.dumps(header))}.{b64(orjson.dumps(payload))}.{b64(signature)}"


def hs(payload: dict[str, Any], key: bytes, digest: Any, alg: str) -> str:
    """An HMAC-signed JWT built by hand (any key, even a PEM public key)."""
    signing_input = f"{b64(orjson.dumps({'alg': alg, 'typ': 'JWT'}))}.{b64(orjson.dumps(payload))}"
    return signing_input + "." + b64(hmac.new(key, signing_input.encode(), digest).digest())


def claims(**extra: Any) -> dict[str, Any]:
    return {"sub": "7", "exp": int(time.time()) + 600, **extra}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


async def test_cross_site_websocket_hijacking_is_refused(redis_url: str) -> None:
    """Only listed Origins open /ws and /sse (403 before the upgrade, even with a valid token)."""
    settings = gateway_settings(
        redis_url, PGCAST_ALLOWED_ORIGINS="https://app.example, https://admin.example/"
    )
    token = mint("7", ["news"])
    cases = {
        "https://app.example": 101,
        "HTTPS://APP.EXAMPLE/": 101,
        "https://admin.example": 101,
        "https://evil.example": 403,
        "https://app.example.evil.example": 403,
        "https://evil.example/https://app.example": 403,
        "http://app.example": 403,
        "https://app.example:8443": 403,
        "null": 403,
        "": 403,
    }
    async with running_gateway(settings) as (_, port), aiohttp.ClientSession() as http:
        for origin, expected in cases.items():
            got = await handshake_status(http, port, headers={**bearer(token), "Origin": origin})
            assert got == expected, origin
        # The Origin check comes first: a hijacking page learns nothing about tokens.
        assert await handshake_status(http, port, headers={"Origin": "https://evil.example"}) == 403
        assert await handshake_status(http, port, headers=bearer(token)) == 101  # no Origin
        url = f"http://127.0.0.1:{port}/sse?channel=news"
        async with http.get(url, headers={**bearer(token), "Origin": "https://evil.example"}) as r:
            assert r.status == 403


async def test_without_allowed_origins_every_browser_is_refused(redis_url: str) -> None:
    """The default allows no browser Origin at all: a deployment must list its sites."""
    settings = gateway_settings(redis_url)
    async with running_gateway(settings) as (_, port), aiohttp.ClientSession() as http:
        headers = {**bearer(mint("7")), "Origin": "https://anything.example"}
        assert await handshake_status(http, port, headers=headers) == 403


async def test_algorithm_confusion_and_none_are_refused_with_a_public_key(
    redis_url: str, rsa_key: rsa.RSAPrivateKey
) -> None:
    """RS256 configured: HS256 signed with the public key, `none`, foreign keys, ES256: 401."""
    public_pem = pem(rsa_key)
    settings = gateway_settings(
        redis_url, PGCAST_JWT_SECRET="", PGCAST_JWT_PUBLIC_KEY=public_pem.decode()
    )
    other_rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    body = claims()
    signing_input = f"{b64(orjson.dumps({'alg': 'HS256', 'typ': 'JWT'}))}.{b64(orjson.dumps(body))}"
    confused = (
        signing_input
        + "."
        + b64(hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest())
    )
    refused = {
        "hs256 keyed with the public key": confused,
        "alg none": forge({"alg": "none", "typ": "JWT"}, body),
        "alg None": forge({"alg": "None"}, body),
        "alg NONE with a signature": forge({"alg": "NONE"}, body, b"sig"),
        "rs256 by another key": jwt.encode(body, other_rsa, algorithm="RS256"),
        "es256 on an rsa deployment": jwt.encode(body, ec_key, algorithm="ES256"),
        "ps256 not enabled": jwt.encode(body, rsa_key, algorithm="PS256"),
        "jku pointing elsewhere": jwt.encode(
            body, other_rsa, algorithm="RS256", headers={"jku": "http://127.0.0.1:9/jwks"}
        ),
        "hs256 with the test secret": jwt.encode(body, SECRET, algorithm="HS256"),
        "not a jwt": "abc.def",
    }
    async with running_gateway(settings) as (_, port), aiohttp.ClientSession() as http:
        for name, token in refused.items():
            assert await handshake_status(http, port, headers=bearer(token)) == 401, name
        good = jwt.encode(body, rsa_key, algorithm="RS256")
        assert await handshake_status(http, port, headers=bearer(good)) == 101


async def test_none_and_asymmetric_tokens_are_refused_with_a_secret(redis_url: str) -> None:
    """HS256 configured: `none`, HS512 (not enabled), RS256 and a wrong secret are 401."""
    body = claims()
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    refused = {
        "none": forge({"alg": "none"}, body),
        "none, empty alg list trick": forge({"alg": ""}, body),
        "hs512 (not enabled)": hs(body, SECRET.encode(), hashlib.sha512, "HS512"),
        "rs256": jwt.encode(body, rsa_key, algorithm="RS256"),
        "wrong secret": jwt.encode(body, "x" * 40, algorithm="HS256"),
        "alg missing": forge({"typ": "JWT"}, body),
    }
    settings = gateway_settings(redis_url)
    async with running_gateway(settings) as (_, port), aiohttp.ClientSession() as http:
        for name, token in refused.items():
            assert await handshake_status(http, port, headers=bearer(token)) == 401, name


async def test_time_and_identity_claims_are_enforced(redis_url: str) -> None:
    """Expired and not-yet-valid tokens (beyond the leeway) and bad sub/channels claims: 401."""
    settings = gateway_settings(redis_url, PGCAST_JWT_LEEWAY="5")

    def signed(payload: dict[str, Any]) -> str:
        return jwt.encode(payload, SECRET, algorithm="HS256")

    async with running_gateway(settings) as (_, port), aiohttp.ClientSession() as http:
        now = int(time.time())  # after the start: "within leeway" has seconds to spare
        cases = {
            "expired": (signed({"sub": "7", "exp": now - 60}), 401),
            "expired within leeway": (signed({"sub": "7", "exp": now - 2}), 101),
            "not yet valid (nbf)": (signed({"sub": "7", "exp": now + 600, "nbf": now + 60}), 401),
            "nbf within leeway": (signed({"sub": "7", "exp": now + 600, "nbf": now + 2}), 101),
            "issued in the future": (signed({"sub": "7", "exp": now + 600, "iat": now + 600}), 401),
            "no exp": (signed({"sub": "7"}), 401),
            "exp as text": (signed({"sub": "7", "exp": str(now + 600)}), 401),
            "no sub": (signed({"exp": now + 600}), 401),
            "sub not a string": (signed({"sub": 7, "exp": now + 600}), 401),
            "sub with a control char": (signed({"sub": "7\n", "exp": now + 600}), 401),
            "sub too long for a channel": (signed({"sub": "7" * 251, "exp": now + 600}), 401),
            "channels not a list": (signed({"sub": "7", "exp": now + 600, "channels": "*"}), 401),
            "channel pattern with [": (
                signed({"sub": "7", "exp": now + 600, "channels": ["a[b]"]}),
                401,
            ),
        }
        huge = signed({"sub": "7" * 10240, "exp": now + 600})
        for name, (token, expected) in cases.items():
            assert await handshake_status(http, port, headers=bearer(token)) == expected, name
        # 10 KB tokens hit the HTTP parser's line limit first: 400, before any JWT work.
        assert await handshake_status(http, port, headers=bearer(huge)) == 400
        assert await handshake_status(http, port, path=f"/ws?token={huge}") in (400, 414)


async def test_audience_and_issuer_when_configured(redis_url: str) -> None:
    """With PGCAST_JWT_AUDIENCE/ISSUER set, a token for another service is refused."""
    settings = gateway_settings(
        redis_url, PGCAST_JWT_AUDIENCE="pgcast", PGCAST_JWT_ISSUER="https://auth.example"
    )
    iss = "https://auth.example"
    cases = {
        "right aud and iss": (mint("7", aud="pgcast", iss=iss), 101),
        "no aud": (mint("7", iss=iss), 401),
        "other aud": (mint("7", aud="billing", iss=iss), 401),
        "other iss": (mint("7", aud="pgcast", iss="https://evil.example"), 401),
        "no iss": (mint("7", aud="pgcast"), 401),
    }
    async with running_gateway(settings) as (_, port), aiohttp.ClientSession() as http:
        for name, (token, expected) in cases.items():
            assert await handshake_status(http, port, headers=bearer(token)) == expected, name
