"""Property tests of token claims and grants: any payload is Claims or AuthError, grants are
exactly the glob rule, and any token string is verified or refused, never a crash."""

from __future__ import annotations

import base64
import time
from typing import Any

import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gateway.auth import AuthError, Claims, Verifier, claims_from
from gateway.config import ASYMMETRIC_ALGORITHMS, HMAC_ALGORITHMS, GatewaySettings
from pgcast.channels import MAX_CHANNEL_LENGTH, is_valid_channel
from tests.unit.test_prop_channels import reference_match

SECRET = "p" * 40
NAME_CHAR = st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="*?[]")
VALID_NAME = st.text(NAME_CHAR, min_size=1, max_size=MAX_CHANNEL_LENGTH)
PATTERN = st.text(st.sampled_from("ab:*?"), min_size=1, max_size=10)
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)
PAYLOAD = st.fixed_dictionaries(
    {},
    optional={
        "sub": st.text(max_size=300) | JSON,
        "exp": st.integers(0, 2**40) | JSON,
        "channels": st.lists(st.text(max_size=20) | PATTERN | JSON, max_size=4) | JSON,
    },
)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@given(PAYLOAD)
@example({"sub": "7", "exp": 1, "channels": ["a[b]"]})
@example({"sub": "x" * 251, "exp": 1})
@example({"sub": "7", "exp": True})
def test_any_payload_is_claims_or_an_auth_error(payload: dict[str, Any]) -> None:
    """claims_from never raises anything but AuthError; what it returns is usable."""
    try:
        claims = claims_from(payload)
    except AuthError as exc:
        refused: AuthError | None = exc
    else:
        refused = None
    if refused is not None:
        assert refused.reason == "bad_claims"
        return
    assert is_valid_channel(claims.own_channel)
    assert isinstance(claims.exp, float)
    assert all(isinstance(p, str) for p in claims.channels)


@given(
    st.text(st.sampled_from("0123456789ab"), min_size=1, max_size=8),
    st.lists(PATTERN, max_size=4),
    st.text(st.sampled_from("ab:"), min_size=1, max_size=12),
)
@example("7", [], "user:7")
@example("7", ["user:*"], "user:8")
def test_grants_are_exactly_the_glob_rule(sub: str, patterns: list[str], channel: str) -> None:
    """allows(c) iff c is user:<sub> or some pattern matches c (reference matcher)."""
    claims = Claims(sub, time.time() + 60, tuple(patterns))
    expected = channel == f"user:{sub}" or any(reference_match(p, channel) for p in patterns)
    assert claims.allows(channel) is expected
    assert claims.allows(f"user:{sub}")


def verifier(**env: str) -> Verifier:
    return Verifier(GatewaySettings.from_env({"PGCAST_JWT_SECRET": SECRET, **env}))


RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_PEM = (
    RSA_KEY.public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    .decode()
)


VERIFIERS = (verifier(), verifier(PGCAST_JWT_SECRET="", PGCAST_JWT_PUBLIC_KEY=RSA_PEM))


@given(
    st.sampled_from([*HMAC_ALGORITHMS, *ASYMMETRIC_ALGORITHMS, "none", "None", "", "HS256 "])
    | JSON,
    PAYLOAD,
    st.binary(max_size=64),
)
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_any_forged_token_is_refused_cleanly(
    alg: object, payload: dict[str, Any], sig: bytes
) -> None:
    """A forged header/payload/signature is an AuthError with both key kinds, never a crash."""
    token = f"{b64(orjson.dumps({'alg': alg, 'kid': 'k'}))}.{b64(orjson.dumps(payload))}.{b64(sig)}"
    for v in VERIFIERS:
        try:
            v.verify(token)
        except AuthError:
            continue
        raise AssertionError(f"forged token accepted: {token[:60]}")


@given(st.text(max_size=400) | st.binary(max_size=200).map(lambda b: b.decode("latin-1")))
@example("a.b.c")
@example("..")
@example("eyJhbGciOiJub25lIn0..")
def test_any_token_string_is_verified_or_refused(token: str) -> None:
    """Random strings where a token belongs: AuthError, never another exception."""
    try:
        VERIFIERS[0].verify(token)
    except AuthError:
        return
    raise AssertionError("a random string verified")
