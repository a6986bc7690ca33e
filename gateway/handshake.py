"""Handshake checks as pure functions: where the token is, and whether the Origin may connect.

Browsers cannot set headers on a WebSocket, so the token may ride in the
``Sec-WebSocket-Protocol`` list as ``bearer.<jwt>`` next to ``pgcast.v1``; servers
use ``Authorization: Bearer``; simple clients ``?token=`` (which leaks into proxy
logs: the gateway never logs a query string).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

SUBPROTOCOL = "pgcast.v1"
BEARER_PREFIX = "bearer."


@dataclass(frozen=True, slots=True)
class TokenSource:
    token: str
    via: str  # "header" | "subprotocol" | "query"


def offered_subprotocols(header: str | None) -> list[str]:
    if not header:
        return []
    return [part.strip() for part in header.split(",") if part.strip()]


def find_token(
    authorization: str | None, subprotocols: str | None, query: Mapping[str, str]
) -> TokenSource | None:
    """The first token found: Authorization header, then subprotocol, then query."""
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return TokenSource(value.strip(), "header")
    for proto in offered_subprotocols(subprotocols):
        if proto.lower().startswith(BEARER_PREFIX) and len(proto) > len(BEARER_PREFIX):
            return TokenSource(proto[len(BEARER_PREFIX) :], "subprotocol")
    token = query.get("token")
    if token:
        return TokenSource(token, "query")
    return None


def origin_allowed(origin: str | None, allowed: tuple[str, ...]) -> bool:
    """No Origin (a non-browser client) always passes; ``*`` allows any origin."""
    if origin is None:
        return True
    if "*" in allowed:
        return True
    return origin.strip().rstrip("/").lower() in allowed
