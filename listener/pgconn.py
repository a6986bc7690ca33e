"""Open and close the listener's Postgres connection, with TCP keepalives on both ends.

The advisory lock lives and dies with this connection, so how fast each side
notices a dead peer bounds a failover: the server side through keepalive GUCs
sent at connect (a vanished leader host releases the lock), the client side
through socket options (a leader notices a vanished server). Knows asyncpg only.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from typing import Any

import asyncpg

from listener.config import ListenerSettings

log = logging.getLogger(__name__)


def server_settings(settings: ListenerSettings) -> dict[str, str]:
    """Session GUCs: keepalives and tcp_user_timeout for the server's end of the socket."""
    return {
        "application_name": "pgcast-listener",
        "tcp_keepalives_idle": str(settings.tcp_keepalive_idle),
        "tcp_keepalives_interval": str(settings.tcp_keepalive_interval),
        "tcp_keepalives_count": str(settings.tcp_keepalive_count),
        "tcp_user_timeout": str(int(settings.tcp_user_timeout * 1000)),
    }


def libpq_keepalives(settings: ListenerSettings) -> dict[str, str]:
    """The same keepalives for a libpq connection (the WAL capture's replication stream):
    libpq's parameters are the GUCs' names without ``tcp_``, except tcp_user_timeout."""
    values = server_settings(settings)
    found = {k.removeprefix("tcp_"): v for k, v in values.items() if k.startswith("tcp_keep")}
    return {"keepalives": "1", **found, "tcp_user_timeout": values["tcp_user_timeout"]}


def set_keepalive(sock: Any, settings: ListenerSettings) -> bool:
    """Enable keepalives (and TCP_USER_TIMEOUT) on ``sock``; False when not a TCP socket."""
    if getattr(sock, "family", None) not in (socket.AF_INET, socket.AF_INET6):
        return False
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    options = (
        ("TCP_KEEPIDLE", settings.tcp_keepalive_idle),
        ("TCP_KEEPINTVL", settings.tcp_keepalive_interval),
        ("TCP_KEEPCNT", settings.tcp_keepalive_count),
        ("TCP_USER_TIMEOUT", int(settings.tcp_user_timeout * 1000)),
    )
    for name, value in options:
        option = getattr(socket, name, None)  # Linux names; other systems keep defaults
        if option is not None and value > 0:
            sock.setsockopt(socket.IPPROTO_TCP, option, value)
    return True


async def connect(settings: ListenerSettings) -> asyncpg.Connection:
    """A new connection to DATABASE_URL with keepalives on both ends."""
    conn = await asyncpg.connect(
        settings.database_url,
        timeout=settings.connect_timeout,
        server_settings=server_settings(settings),
    )
    # asyncpg exposes no socket options; its transport's socket is the only handle.
    transport = getattr(conn, "_transport", None)
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is not None:
        try:
            set_keepalive(sock, settings)
        except OSError as exc:
            log.warning("could not set TCP keepalives on the Postgres socket: %s", exc)
    return conn


async def close(conn: asyncpg.Connection, close_timeout: float = 2.0) -> None:
    """Close gracefully (which releases the lock at once); abort when that fails."""
    if conn.is_closed():
        return
    try:
        await conn.close(timeout=close_timeout)
    except Exception:
        # A dead or partitioned connection: drop it; the server frees the lock when it notices.
        with contextlib.suppress(Exception):
            conn.terminate()
