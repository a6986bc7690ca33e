"""Connection tokens: a fixed string or an async factory called on each connect and
before expiry.

The client never verifies a token (the gateway does); it only reads ``exp`` from
the payload to know when to ask the factory again. Tokens are never logged.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable

import orjson

TokenFactory = Callable[[], Awaitable[str]]


class NoTokenError(ValueError):
    """Neither a token nor a factory, or the factory returned something unusable."""


def token_expiry(token: str) -> float | None:
    """The ``exp`` claim (Unix seconds) of a JWT, or None when there is none."""
    try:
        payload = token.split(".")[1]
        raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        exp = orjson.loads(raw).get("exp")
    except (IndexError, ValueError, binascii.Error, AttributeError):
        return None
    return float(exp) if isinstance(exp, int | float) else None


def refresh_delay(token: str, now: float, margin: float) -> float | None:
    """Seconds from ``now`` until a fresh token should be fetched (a margin before
    expiry, at most a fifth of the time left), or None if the token never expires."""
    exp = token_expiry(token)
    if exp is None:
        return None
    left = exp - now
    return max(0.0, left - min(margin, left * 0.2))


class TokenSource:
    """Gives the current token: the fixed one, or a new one from the factory."""

    def __init__(self, token: str | None, factory: TokenFactory | None) -> None:
        if (token is None) == (factory is None):
            raise NoTokenError("give exactly one of token= and token_factory=")
        self._token = token
        self._factory = factory

    @property
    def refreshable(self) -> bool:
        return self._factory is not None

    async def get(self) -> str:
        if self._factory is None:
            return self._token or ""
        token = await self._factory()
        if not isinstance(token, str) or not token:
            raise NoTokenError("token_factory returned no token")
        return token

    def __repr__(self) -> str:
        return f"TokenSource(refreshable={self.refreshable})"
