"""Token verification: algorithms, keys, required claims, and the channel grants."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from gateway.auth import AuthError, Claims, Verifier
from gateway.config import GatewaySettings
from tests.gateway_support import SECRET

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def pem(key: Any) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def verifier(**env: str) -> Verifier:
    return Verifier(GatewaySettings.from_env(env))


def claims(**extra: Any) -> dict[str, Any]:
    return {"sub": "42", "exp": int(time.time()) + 60, **extra}


def refused(v: Verifier, token: str) -> str:
    with pytest.raises(AuthError) as info:
        v.verify(token)
    return info.value.reason


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge_hs256(payload: dict[str, Any], key: bytes) -> str:
    """An HS256 token signed by hand (PyJWT refuses to sign with a PEM as HMAC key)."""
    head = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = _b64(json.dumps(payload).encode())
    sig = hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(sig)}"


def test_hs256_token_gives_claims() -> None:
    v = verifier(PGCAST_JWT_SECRET=SECRET)
    got = v.verify(jwt.encode(claims(channels=["a", "orders:*"]), SECRET, algorithm="HS256"))
    assert got == Claims("42", got.exp, ("a", "orders:*"))


@pytest.mark.parametrize(
    ("token_claims", "reason"),
    [
        ({"exp": int(time.time()) - 60}, "expired"),
        ({"sub": None}, "bad_claims"),
        ({"exp": None}, "bad_claims"),
        ({"sub": 42}, "bad_claims"),
        ({"channels": "a,b"}, "bad_claims"),
        ({"channels": ["ok", "bad[x]"]}, "bad_claims"),
        ({"sub": "a\u0001b"}, "bad_claims"),
    ],
)
def test_claims_rules(token_claims: dict[str, Any], reason: str) -> None:
    """exp and sub are required, channels must be a list of valid names or patterns."""
    payload = {k: v for k, v in claims(**token_claims).items() if v is not None}
    v = verifier(PGCAST_JWT_SECRET=SECRET)
    assert refused(v, jwt.encode(payload, SECRET, algorithm="HS256")) == reason


def test_wrong_secret_none_algorithm_and_garbage_are_refused() -> None:
    v = verifier(PGCAST_JWT_SECRET=SECRET)
    assert refused(v, jwt.encode(claims(), "another-secret-" + SECRET, algorithm="HS256")) == (
        "bad_signature"
    )
    unsigned = jwt.encode(claims(), None, algorithm="none")
    assert refused(v, unsigned) == "bad_algorithm"
    assert refused(v, "not-a-jwt") == "malformed"
    hs512 = jwt.encode(claims(), SECRET + SECRET, algorithm="HS512")
    assert refused(v, hs512) == "bad_algorithm"  # not in the explicit list


def test_rs256_and_es256_with_public_keys() -> None:
    rs = verifier(PGCAST_JWT_PUBLIC_KEY=pem(RSA_KEY))
    assert rs.verify(jwt.encode(claims(), RSA_KEY, algorithm="RS256")).sub == "42"
    es = verifier(PGCAST_JWT_PUBLIC_KEY=pem(EC_KEY))
    assert es.verify(jwt.encode(claims(), EC_KEY, algorithm="ES256")).sub == "42"
    # An ES256 token against an RSA key: refused before any crypto.
    assert refused(rs, jwt.encode(claims(), EC_KEY, algorithm="ES256")) == "bad_algorithm"


def test_public_key_used_as_hs256_secret_is_refused() -> None:
    """The classic key confusion: an HS256 token signed with the RSA public key PEM."""
    public_pem = pem(RSA_KEY)
    forged = forge_hs256(claims(), public_pem.encode())
    assert refused(verifier(PGCAST_JWT_PUBLIC_KEY=public_pem), forged) == "bad_algorithm"
    both = verifier(PGCAST_JWT_PUBLIC_KEY=public_pem, PGCAST_JWT_SECRET=SECRET)
    assert refused(both, forged) == "bad_signature"  # HS256 is checked with the secret only


def test_audience_and_issuer_when_configured() -> None:
    v = verifier(PGCAST_JWT_SECRET=SECRET, PGCAST_JWT_AUDIENCE="app", PGCAST_JWT_ISSUER="me")
    good = jwt.encode(claims(aud="app", iss="me"), SECRET, algorithm="HS256")
    assert v.verify(good).sub == "42"
    for bad in ({"aud": "other", "iss": "me"}, {"aud": "app", "iss": "x"}, {"iss": "me"}):
        assert refused(v, jwt.encode(claims(**bad), SECRET, algorithm="HS256")) == "bad_claims"


@pytest.mark.parametrize(
    ("patterns", "channel", "allowed"),
    [
        ((), "user:42", True),
        ((), "user:43", False),
        ((), "user:420", False),
        (("articles",), "articles", True),
        (("articles",), "articles:1", False),
        (("orders:*",), "orders:9", True),
        (("orders:*",), "orders:9:items", True),
        (("orders:*",), "orders", False),
        (("orders:*",), "xorders:1", False),
        (("team:?",), "team:a", True),
        (("team:?",), "team:ab", False),
        (("*",), "anything at all", True),
    ],
)
def test_grants(patterns: tuple[str, ...], channel: str, allowed: bool) -> None:
    """user:<sub> always; other channels exactly as the names and globs say."""
    assert Claims("42", 0, patterns).allows(channel) is allowed
