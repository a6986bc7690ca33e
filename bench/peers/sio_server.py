"""python-socketio peer server: aiohttp + AsyncRedisManager, JWT-checked, rooms per channel.

``python -m bench.peers.sio_server PORT REDIS_URL SECRET``. A client connects with
``Authorization: Bearer <jwt>`` (HS256, same claims as pgcast), then emits
``subscribe`` with a channel name; the server checks it against the claims as
pgcast does and joins the room, answering the ack with ``{"ok": true}``.
"""

from __future__ import annotations

import fnmatch
import sys
from typing import Any

import jwt
import socketio  # type: ignore[import-untyped]
import uvloop
from aiohttp import web


def allowed(claims: dict[str, Any], channel: str) -> bool:
    if channel == f"user:{claims['sub']}":
        return True
    return any(fnmatch.fnmatchcase(channel, p) for p in claims.get("channels", ()))


def build(redis_url: str, secret: str) -> web.Application:
    manager = socketio.AsyncRedisManager(redis_url)
    sio = socketio.AsyncServer(
        async_mode="aiohttp", client_manager=manager, cors_allowed_origins=None
    )
    app = web.Application()
    sio.attach(app)

    @sio.event  # type: ignore[untyped-decorator]
    async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> bool:
        header = environ.get("HTTP_AUTHORIZATION", "")
        try:
            claims = jwt.decode(
                header.removeprefix("Bearer "),
                secret,
                algorithms=["HS256"],
                options={"require": ["exp", "sub"]},
            )
        except jwt.PyJWTError:
            return False
        await sio.save_session(sid, {"claims": claims})
        return True

    @sio.event  # type: ignore[untyped-decorator]
    async def subscribe(sid: str, channel: str) -> dict[str, bool]:
        session = await sio.get_session(sid)
        if not isinstance(channel, str) or not allowed(session["claims"], channel):
            return {"ok": False}
        await sio.enter_room(sid, channel)
        return {"ok": True}

    return app


def main() -> None:
    port, redis_url, secret = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    uvloop.install()
    web.run_app(build(redis_url, secret), host="127.0.0.1", port=port, print=None)


if __name__ == "__main__":
    main()
