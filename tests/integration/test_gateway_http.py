"""Compression on request, probes, metrics, the static client, SSE's close event, gunicorn."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import create_app
from gateway.services import SERVICES
from tests.gateway_support import (
    GUNICORN_APP,
    Client,
    Events,
    SseReader,
    gateway_env,
    masked_text,
    offsets,
    raw_ws,
    server_frames,
    settings,
    start_gunicorn,
    token,
    wait_until,
)
from tests.integration.test_gateway_failover import status
from tests.servers import free_port

MakeClient = Callable[..., Awaitable[TestClient]]
ROOT = Path(__file__).resolve().parents[2]
CLIENT_JS_SHIPPED = (ROOT / "gateway" / "static" / "client.js").is_file()


async def test_permessage_deflate_only_when_enabled(
    aiohttp_client: MakeClient, redis_url: str, redis_client: aioredis.Redis
) -> None:
    """Off by default even when the client offers it; on with PGCAST_WS_COMPRESSION=true."""
    plain = await aiohttp_client(create_app(settings(redis_url)))
    ws = await plain.ws_connect("/ws", params={"token": token()}, compress=15)
    assert ws.compress == 0
    await ws.close()
    deflating = await aiohttp_client(create_app(settings(redis_url, PGCAST_WS_COMPRESSION="true")))
    ws = await deflating.ws_connect("/ws", params={"token": token()}, compress=15)
    assert ws.compress == 15
    client = Client(ws)
    assert (await client.subscribe("user:42"))["type"] == "subscribed"
    await Events(redis_client).publish("user:42", *({"text": "y" * 500, "n": n} for n in range(50)))
    assert offsets(await client.messages(50)) == list(range(1, 51))
    await ws.close()


async def test_probes_metrics_and_the_client_script(
    aiohttp_client: MakeClient, redis_url: str
) -> None:
    """/healthz, /readyz (heartbeat proven), /metrics gauges, /client.js when shipped."""
    app = create_app(settings(redis_url))
    http = await aiohttp_client(app)
    assert (await http.get("/healthz")).status == 200

    async def ready() -> bool:
        return (await http.get("/readyz")).status == 200

    await wait_until(ready, what="ready")
    ws = await http.ws_connect("/ws", params={"token": token()})
    await Client(ws).subscribe("user:42")
    metrics = await (await http.get("/metrics")).text()
    for line in (
        "pgcast_gateway_connections 1.0",
        "pgcast_gateway_subscriptions 1.0",
        "pgcast_gateway_channels 1.0",
        "pgcast_gateway_ready 1.0",
        'pgcast_gateway_connections_opened_total{transport="ws"} 1.0',
    ):
        assert line in metrics, line
    if CLIENT_JS_SHIPPED:
        script = await http.get("/client.js")
        assert script.status == 200
        assert "javascript" in script.headers["Content-Type"]
    drain = asyncio.create_task(app[SERVICES].sessions.drain(0))
    closing = await ws.receive(timeout=5)
    assert (closing.type, closing.data) == (aiohttp.WSMsgType.CLOSE, 1012)
    await drain
    assert (await http.get("/readyz")).status == 503


async def test_sse_stream_announces_the_drain(aiohttp_client: MakeClient, redis_url: str) -> None:
    """An SSE stream ends with a close event carrying 1012 when the gateway drains."""
    app = create_app(settings(redis_url))
    http = await aiohttp_client(app)
    resp = await http.get("/sse", params={"channel": "user:42", "token": token()})
    reader = SseReader(resp)
    assert (await reader.event())["type"] == "subscribed"
    drain = asyncio.create_task(app[SERVICES].sessions.drain(0))
    assert await reader.event() == {
        "type": "close",
        "code": 1012,
        "reason": "gateway shutting down",
    }
    await drain
    resp.close()


async def test_gunicorn_production_command_serves_and_drains(
    redis_url: str, tmp_path: Path
) -> None:
    """The README's gunicorn command: uvloop workers serve, SIGTERM drains with 1012, exit 0."""
    port = free_port()
    log = tmp_path / "gunicorn.log"
    out = log.open("wb")
    proc = await start_gunicorn(
        *GUNICORN_APP,
        *("-w", "2", "-b", f"127.0.0.1:{port}", "--graceful-timeout", "10"),
        env=gateway_env(redis_url, port),
        out=out,
    )
    try:
        # Both workers up (a SIGTERM that lands while gunicorn forks a worker is lost to it).
        await wait_until(
            lambda: log.read_text().count("redis pub/sub connected") == 2, what="workers up"
        )
        await wait_until(lambda: status(f"http://127.0.0.1:{port}/readyz") == 200, what="ready")
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(f"ws://127.0.0.1:{port}/ws", params={"token": token()})
            await ws.send_json({"type": "subscribe", "channel": "user:42"})
            assert (await ws.receive_json(timeout=10))["type"] == "subscribed"
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            msg = await ws.receive(timeout=15)
            assert msg.type is aiohttp.WSMsgType.CLOSE
            assert ws.close_code == 1012
            await ws.close()
        assert await asyncio.wait_for(proc.wait(), 15) == 0
        assert time.monotonic() - started < 10, log.read_text()
    finally:
        if proc.returncode is None:
            proc.kill()
            await asyncio.wait_for(proc.wait(), 10)
        out.close()


async def test_compressed_slow_consumer_is_closed_4008(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    redis_url: str,
    redis_client: aioredis.Redis,
) -> None:
    """With permessage-deflate (a queue and a writer task) the send queue is bounded too."""
    app = create_app(
        settings(redis_url, PGCAST_WS_COMPRESSION="true", PGCAST_SEND_QUEUE_BYTES="262144")
    )
    server = await aiohttp_server(app)
    raw_reader, raw_writer = await raw_ws(server.port, token(), rcvbuf=4096, deflate=True)
    raw_writer.write(masked_text(b'{"type":"subscribe","channel":"user:42"}'))
    await asyncio.wait_for(raw_reader.read(4096), 10)  # its subscribed frame; then silence
    metrics = app[SERVICES].metrics
    events = Events(redis_client)
    sent = 0
    while not metrics.slow_consumer_closes._value.get() and sent < 3000:
        # Incompressible ~16 KiB payloads: the kernel's buffers fill after ~2.5 MiB.
        await events.publish("user:42", {"n": sent, "blob": os.urandom(8192).hex()})
        sent += 1
    assert metrics.slow_consumer_closes._value.get() == 1, f"not closed after {sent}"
    pending, code = b"", None
    async with asyncio.timeout(15):
        while code is None and (chunk := await raw_reader.read(1 << 20)):
            frames, pending = server_frames(pending + chunk)
            code = next((int.from_bytes(p[:2], "big") for op, p in frames if op == 0x8), None)
    assert code == 4008
    raw_writer.close()
