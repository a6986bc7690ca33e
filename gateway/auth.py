"""Connection tokens: verify a JWT and turn its claims into channel grants.

An explicit algorithm list per key kind (never ``none``): an HMAC algorithm is
verified only with the shared secret, an asymmetric one only with the public key
or the JWKS key chosen by ``kid``, so an RS256 public key can never serve as an
HS256 secret. ``exp`` and ``sub`` are required; ``aud``/``iss`` checked when
configured. No aiohttp/redis here; JWKS fetches (PyJWKClient) block: call
:meth:`Verifier.verify` from a thread when :attr:`Verifier.blocking`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from jwt.exceptions import InvalidSubjectError

from gateway.config import HMAC_ALGORITHMS, GatewaySettings
from pgcast.channels import channel_error, matches, pattern_error, user_channel
from pgcast.settings import ConfigError

_PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


class AuthError(Exception):
    """A refused token; ``reason`` labels the metric, ``message`` is safe to show."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True, slots=True)
class Claims:
    """Who the client is and which channels it may subscribe to."""

    sub: str
    exp: float
    channels: tuple[str, ...] = ()
    publish: tuple[str, ...] = ()  # where the user may send client messages
    presence: tuple[str, ...] | None = None  # None: wherever the user may subscribe

    @property
    def own_channel(self) -> str:
        return user_channel(self.sub)

    def allows(self, channel: str) -> bool:
        """``user:<sub>`` always; anything else needs a name or pattern in ``channels``."""
        if channel == self.own_channel:
            return True
        return any(matches(pattern, channel) for pattern in self.channels)

    def may_publish(self, channel: str) -> bool:
        """Client messages need a name or pattern in the ``publish`` claim."""
        return any(matches(pattern, channel) for pattern in self.publish)

    def may_join_presence(self, channel: str) -> bool:
        """The ``presence`` claim when given, else the subscribe grant."""
        if self.presence is None:
            return self.allows(channel)
        return any(matches(pattern, channel) for pattern in self.presence)


def claims_from(payload: dict[str, Any]) -> Claims:
    """Validate the pgcast claims of a verified payload."""
    sub = payload.get("sub")
    if not isinstance(sub, str) or not sub:
        raise AuthError("bad_claims", "'sub' must be a non-empty string")
    if channel_error(user_channel(sub)) is not None:
        raise AuthError("bad_claims", "'sub' cannot form a channel name")
    exp = payload.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        raise AuthError("bad_claims", "'exp' must be a number")
    channels = _patterns(payload, "channels")
    publish = _patterns(payload, "publish")
    presence = _patterns(payload, "presence") if "presence" in payload else None
    return Claims(sub, float(exp), channels, publish, presence)


def _patterns(payload: dict[str, Any], claim: str) -> tuple[str, ...]:
    """A claim that lists channel names or glob patterns (absent: none)."""
    patterns = payload.get(claim, [])
    if not isinstance(patterns, list):
        raise AuthError("bad_claims", f"'{claim}' must be a list of names or patterns")
    for pattern in patterns:
        problem = pattern_error(pattern)
        if problem is not None:
            raise AuthError("bad_claims", f"'{claim}': {problem}")
    return tuple(patterns)


class Verifier:
    """Verifies tokens against the configured secret, public key or JWKS endpoint."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.algorithms = frozenset(settings.jwt_algorithms)
        self.audience = settings.jwt_audience
        self.issuer = settings.jwt_issuer
        self.leeway = settings.jwt_leeway
        self._secret = settings.jwt_secret
        self._public_key: _PublicKey | None = None
        if settings.jwt_public_key is not None:
            self._public_key = _load_public_key(settings.jwt_public_key)
        self._jwks: jwt.PyJWKClient | None = None
        if settings.jwt_jwks_url is not None:
            self._jwks = jwt.PyJWKClient(
                settings.jwt_jwks_url,
                cache_jwk_set=True,
                lifespan=300,
                timeout=5,
                cooldown_duration=settings.jwks_cooldown,
            )

    @property
    def blocking(self) -> bool:
        """True when verifying may fetch the JWKS over the network."""
        return self._jwks is not None

    def verify(self, token: str) -> Claims:
        """The token's claims, or AuthError with the reason it was refused."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError:
            raise AuthError("malformed", "token is not a JWT") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise AuthError("bad_algorithm", "token algorithm not accepted")
        key = self._key_for(alg, token)
        try:
            payload = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={
                    "require": ["exp", "sub"],
                    "verify_aud": self.audience is not None,
                    "enforce_minimum_key_length": True,
                },
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("expired", "token expired") from None
        except jwt.InvalidSignatureError:
            raise AuthError("bad_signature", "token signature is invalid") from None
        except (
            jwt.MissingRequiredClaimError,
            jwt.InvalidAudienceError,
            jwt.InvalidIssuerError,
            InvalidSubjectError,
            jwt.ImmatureSignatureError,
            jwt.InvalidIssuedAtError,
        ) as exc:
            raise AuthError("bad_claims", str(exc)) from None
        except (jwt.InvalidTokenError, jwt.InvalidKeyError):
            raise AuthError("malformed", "token could not be verified") from None
        return claims_from(payload)

    def _key_for(self, alg: str, token: str) -> Any:
        if alg in HMAC_ALGORITHMS:
            if self._secret is None:
                raise AuthError("bad_algorithm", "token algorithm not accepted")
            return self._secret
        # A JWKS key is chosen by the token's kid: it must fit the token's alg as much as a
        # configured key does (an EC key under RS256 makes PyJWT raise TypeError: a 500).
        key = _jwks_key(self._jwks, token) if self._jwks is not None else self._public_key
        expected = ec.EllipticCurvePublicKey if alg.startswith("ES") else rsa.RSAPublicKey
        if key is None or not isinstance(key, expected):
            raise AuthError("bad_algorithm", "token algorithm does not fit the key")
        return key


def _jwks_key(client: jwt.PyJWKClient, token: str) -> Any:
    """The JWKS key for the token's ``kid``: an unknown kid refetches once, then fails."""
    try:
        return client.get_signing_key_from_jwt(token).key
    except jwt.PyJWKClientConnectionError:
        raise AuthError("jwks_unavailable", "signing keys could not be fetched") from None
    except jwt.PyJWKClientError:
        raise AuthError("unknown_key", "no signing key matches the token's kid") from None
    except jwt.DecodeError:
        raise AuthError("malformed", "token is not a JWT") from None


def _load_public_key(pem: str) -> _PublicKey:
    try:
        key = load_pem_public_key(pem.encode())
    except ValueError as exc:
        raise ConfigError(f"PGCAST_JWT_PUBLIC_KEY is not a PEM public key: {exc}") from None
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise ConfigError("PGCAST_JWT_PUBLIC_KEY must be an RSA or EC public key")
    return key
