"""The checks before a connection is accepted, answered by HTTP status before any upgrade.

Draining or full process: 503; ``Origin`` not allowed: 403; no valid token: 401;
too many connections for this user: 429. Every refusal is counted by reason.
Nothing here logs a token or a query string.
"""

from __future__ import annotations

import asyncio
import logging

import orjson
from aiohttp import hdrs, web

from gateway.auth import AuthError, Claims
from gateway.handshake import find_token, origin_allowed
from gateway.services import Services

log = logging.getLogger(__name__)


def refuse(status: int, reason: str, message: str) -> web.HTTPException:
    """An HTTP error response with a small JSON body (``error`` = the reason)."""
    body = orjson.dumps({"error": reason, "message": message}).decode()
    headers = {}
    if status == 401:
        headers[hdrs.WWW_AUTHENTICATE] = 'Bearer error="invalid_token"'
    if status in (429, 503):
        headers[hdrs.RETRY_AFTER] = "1"
    cls = {
        401: web.HTTPUnauthorized,
        403: web.HTTPForbidden,
        429: web.HTTPTooManyRequests,
        503: web.HTTPServiceUnavailable,
    }.get(status, web.HTTPBadRequest)
    return cls(text=body, content_type="application/json", headers=headers)


async def admit(request: web.Request, services: Services) -> Claims:
    """The caller's claims, or raise the HTTP refusal (counted, logged without secrets)."""
    sessions, metrics = services.sessions, services.metrics
    refusal = sessions.refusal(None)
    if refusal is not None:
        raise refuse(*refusal, "gateway cannot take this connection now")
    if not origin_allowed(request.headers.get(hdrs.ORIGIN), services.settings.allowed_origins):
        metrics.auth_failures.labels("origin").inc()
        log.debug("refused %s: origin not allowed", request.path)
        raise refuse(403, "origin", "origin not allowed")
    source = find_token(
        request.headers.get(hdrs.AUTHORIZATION),
        request.headers.get(hdrs.SEC_WEBSOCKET_PROTOCOL),
        request.query,
    )
    if source is None:
        metrics.auth_failures.labels("missing").inc()
        raise refuse(401, "missing", "no token: use Authorization, bearer.<jwt> or ?token=")
    verifier = services.verifier
    try:
        if verifier.blocking:
            claims = await asyncio.to_thread(verifier.verify, source.token)
        else:
            claims = verifier.verify(source.token)
    except AuthError as exc:
        metrics.auth_failures.labels(exc.reason).inc()
        log.debug("refused %s: %s (token via %s)", request.path, exc.reason, source.via)
        raise refuse(401, exc.reason, exc.message) from None
    refusal = sessions.refusal(claims.sub)
    if refusal is not None:
        raise refuse(*refusal, "too many connections")
    return claims
