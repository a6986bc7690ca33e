"""Session rules on a real socket: request errors keep the connection; limits; token expiry."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient

from gateway.app import create_app
from gateway.services import SERVICES
from tests.gateway_support import Client, Events, offsets, settings, token, wait_until

MakeClient = Callable[..., Awaitable[TestClient]]


async def connect(http: TestClient, tok: str | None = None, **kw: object) -> Client:
    ws = await http.ws_connect("/ws", params={"token": tok or token()}, **kw)  # type: ignore[arg-type]
    return Client(ws)


async def test_request_errors_answer_and_the_connection_survives(
    aiohttp_client: MakeClient, redis_url: str
) -> None:
    """Malformed JSON, unknown types, missing fields, binary frames: an error frame each."""
    http = await aiohttp_client(create_app(settings(redis_url)))
    client = await connect(http)
    bad = [
        ("{nope", "bad_request"),
        ('"just a string"', "bad_request"),
        ('{"type":"publsh","id":5}', "unknown_type"),
        ('{"type":"publish","id":5}', "bad_request"),
        ('{"type":"subscribe"}', "bad_request"),
        ('{"type":"subscribe","channel":"a*b"}', "bad_request"),
        ('{"type":"subscribe","channel":"user:42","since":"1"}', "bad_request"),
        ('{"type":"refresh"}', "bad_request"),
    ]
    for raw, code in bad:
        await client.ws.send_str(raw)
        frame = await client.expect("error")
        assert frame["code"] == code, (raw, frame)
    await client.ws.send_bytes(b'{"type":"ping"}')
    assert (await client.expect("error"))["code"] == "bad_request"
    await client.send(type="ping", id="still-here")
    assert await client.recv() == {"type": "pong", "id": "still-here"}
    await client.ws.close()


async def test_oversized_frame_closes_1009_and_is_counted(
    aiohttp_client: MakeClient, redis_url: str
) -> None:
    http = await aiohttp_client(create_app(settings(redis_url, PGCAST_MAX_FRAME_BYTES="1024")))
    client = await connect(http)
    await client.ws.send_str('{"type":"ping","id":"' + "x" * 2000 + '"}')
    assert await client.closed() == 1009

    async def counted() -> bool:
        metrics = await (await http.get("/metrics")).text()
        return 'pgcast_gateway_limit_breaches_total{limit="frame_size"} 1.0' in metrics

    await wait_until(counted, what="frame_size breach counted")


async def test_subscription_and_rate_limits(aiohttp_client: MakeClient, redis_url: str) -> None:
    """Past the subscription limit: too_many_subscriptions; past the rate: rate_limited."""
    http = await aiohttp_client(
        create_app(
            settings(
                redis_url,
                PGCAST_MAX_SUBSCRIPTIONS="2",
                PGCAST_RATE_LIMIT="0.1",
                PGCAST_RATE_BURST="5",
            )
        )
    )
    client = await connect(http, token("42", channels=["*"]))
    assert (await client.subscribe("a"))["type"] == "subscribed"
    assert (await client.subscribe("a"))["code"] == "already_subscribed"
    assert (await client.subscribe("b"))["type"] == "subscribed"
    assert (await client.subscribe("c"))["code"] == "too_many_subscriptions"
    await client.send(type="unsubscribe", channel="a", id=1)
    assert await client.recv() == {"type": "unsubscribed", "channel": "a", "id": 1}
    assert (await client.subscribe("c"))["code"] == "rate_limited"  # the burst of 5 is spent
    metrics = await (await http.get("/metrics")).text()
    assert 'limit_breaches_total{limit="subscriptions"} 1.0' in metrics
    assert 'limit_breaches_total{limit="rate"} 1.0' in metrics


async def test_connection_limits_refuse_before_the_upgrade(
    aiohttp_client: MakeClient, redis_url: str
) -> None:
    """Per process: 503; per user: 429 — both before the upgrade."""
    http = await aiohttp_client(
        create_app(settings(redis_url, PGCAST_MAX_CONNECTIONS="2", PGCAST_MAX_USER_CONNECTIONS="1"))
    )
    first = await connect(http, token("1"))
    with pytest.raises(aiohttp.WSServerHandshakeError) as per_user:
        await http.ws_connect("/ws", params={"token": token("1")})
    assert per_user.value.status == 429
    second = await connect(http, token("2"))
    with pytest.raises(aiohttp.WSServerHandshakeError) as per_process:
        await http.ws_connect("/ws", params={"token": token("3")})
    assert per_process.value.status == 503
    await first.ws.close()
    await second.ws.close()


async def test_expiry_closes_4001_unless_refreshed(
    aiohttp_client: MakeClient, redis_url: str, redis_client: aioredis.Redis
) -> None:
    """A refresh (same sub) before exp keeps the connection; otherwise it closes 4001."""
    http = await aiohttp_client(create_app(settings(redis_url, PGCAST_JWT_LEEWAY="0")))
    kept = await connect(http, token("42", ttl=2))
    dropped = await connect(http, token("42", ttl=2))
    await kept.send(type="refresh", token=token("43"), id="r0")
    refused = await kept.expect("error")
    assert (refused["code"], refused["id"]) == ("invalid_token", "r0")
    await kept.send(type="refresh", token=token("42", ttl=60), id="r1")
    assert (await kept.expect("refreshed"))["id"] == "r1"
    assert await dropped.closed(wait=5) == 4001
    assert (await kept.subscribe("user:42"))["type"] == "subscribed"
    await Events(redis_client).numbered("user:42", 1, 1)
    assert offsets(await kept.messages(1)) == [1]
    await kept.ws.close()


async def test_refresh_with_fewer_grants_unsubscribes_what_is_no_longer_allowed(
    aiohttp_client: MakeClient, redis_url: str
) -> None:
    http = await aiohttp_client(create_app(settings(redis_url)))
    client = await connect(http, token("42", channels=["news"]))
    assert (await client.subscribe("news"))["type"] == "subscribed"
    await client.send(type="refresh", token=token("42"))
    assert await client.recv() == {"type": "unsubscribed", "channel": "news", "reason": "forbidden"}
    assert (await client.recv())["type"] == "refreshed"


async def test_heartbeat_drops_a_peer_that_never_answers_pings(
    aiohttp_client: MakeClient, redis_url: str
) -> None:
    """A client that stops answering WebSocket pings is dropped by the server."""
    app = create_app(settings(redis_url, PGCAST_WS_HEARTBEAT="0.2"))
    http = await aiohttp_client(app)
    ws = await http.ws_connect("/ws", params={"token": token()}, autoping=False)
    # With autoping off and no reads, pings go unanswered: the server must give up.
    sessions = app[SERVICES].sessions
    await wait_until(lambda: len(sessions.live) == 1, what="session registered")
    await wait_until(lambda: not sessions.live, wait=5, what="dead peer dropped")
    msg = await ws.receive(timeout=5)
    while msg.type is aiohttp.WSMsgType.PING:
        msg = await ws.receive(timeout=5)
    assert msg.type in (
        aiohttp.WSMsgType.CLOSE,
        aiohttp.WSMsgType.CLOSED,
        aiohttp.WSMsgType.CLOSING,
    )
