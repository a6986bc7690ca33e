"""Smoke: a subscriber receives what the real publish script publishes."""

from __future__ import annotations

from aiohttp.test_utils import TestClient

from gateway.app import create_app
from tests.gateway_support import Client, Events, offsets, settings, token


async def test_subscribe_then_receive(aiohttp_client, redis_url: str) -> None:
    """A client subscribed to its own channel gets every message in order."""
    http: TestClient = await aiohttp_client(create_app(settings(redis_url)))
    ws = await http.ws_connect("/ws", headers={"Authorization": f"Bearer {token('42')}"})
    client = Client(ws)
    sub = await client.subscribe("user:42")
    assert sub["type"] == "subscribed", sub
    events = Events.for_url(redis_url)  # the listener's client and Layout for this URL
    try:
        await events.numbered("user:42", 1, 5)
    finally:
        await events.aclose()
    got = await client.messages(5)
    assert offsets(got) == [1, 2, 3, 4, 5]
    await ws.close()
