"""Pending (gateway-auth-jwks-key-type.diff): a JWKS ``kid`` naming a key of the wrong type.

Append to tests/integration/test_security_jwks.py once the patch is applied: today
PyJWT raises TypeError ("Expecting a PEM-formatted key.") for an EC key under
RS256, which escapes as an HTTP 500 with an ERROR traceback per request.
"""

from __future__ import annotations

import aiohttp

from tests.integration.test_security_jwks import JwksServer, Key, bearer, token
from tests.integration.test_security_jwks import keys as keys  # the fixture
from tests.soak.harness import gateway_settings, handshake_status, running_gateway


async def test_kid_of_the_wrong_key_type_is_refused(redis_url: str, keys: dict[str, Key]) -> None:
    """A kid naming an EC key on an RS256 token (and an RSA key on ES256) is 401, not a 500."""
    jwks = JwksServer()
    jwks.keys = {"k1": keys["k1"], "ec": keys["ec"]}
    async with jwks.serving():
        settings = gateway_settings(redis_url, PGCAST_JWT_SECRET="", PGCAST_JWT_JWKS_URL=jwks.url)
        async with running_gateway(settings) as (_, port), aiohttp.ClientSession() as http:
            for forged in (token(keys["k1"], "ec"), token(keys["ec"], "k1", alg="ES256")):
                assert await handshake_status(http, port, headers=bearer(forged)) == 401
