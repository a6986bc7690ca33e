"""Presence and client messages across gateways, on a real Redis.

Two gateway apps in this process share one Redis, as two replicas do; the SIGKILL test
runs real gateway processes. Every wait is bounded (tests.gateway_support.WAIT).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlparse

import aiohttp
from aiohttp.test_utils import TestClient

from gateway.app import create_app
from gateway.services import SERVICES
from tests.gateway_support import Client, Events, gateway_env, settings, token, wait_until
from tests.processes import Service
from tests.servers import free_port
from tests.tcpproxy import TcpProxy

MakeClient = Callable[..., Awaitable[TestClient[Any, Any]]]


async def connect(http: TestClient[Any, Any], sub: str, **claims: Any) -> Client:
    tok = token(sub, **claims)
    ws = await http.ws_connect("/ws", params={"token": tok})  # type: ignore[arg-type]
    return Client(ws)


async def next_of(client: Client, kind: str) -> dict[str, Any]:
    """The next frame of ``kind``, skipping pongs and acks of other requests."""
    while True:
        frame = await client.recv()
        if frame["type"] == kind:
            return frame
        assert frame["type"] in {"tracked", "published", "pong"}, frame


async def two_gateways(
    aiohttp_client: MakeClient, redis_url: str, **env: str
) -> tuple[TestClient[Any, Any], TestClient[Any, Any]]:
    return (
        await aiohttp_client(create_app(settings(redis_url, **env))),
        await aiohttp_client(create_app(settings(redis_url, **env))),
    )


async def test_members_join_update_and_leave_across_gateways(
    aiohttp_client: MakeClient, redis_url: str
) -> None:
    """A watcher on one gateway sees a member of another join, change its meta, leave
    (untrack) and leave again by closing; a snapshot on request lists who is there."""
    gw1, gw2 = await two_gateways(aiohttp_client, redis_url)
    watcher = await connect(gw1, "1", channels=["board:*"])
    subscribed = await watcher.subscribe("board:7", presence=True, id="w")
    assert subscribed["type"] == "subscribed"
    assert await watcher.expect("presence") == {
        "type": "presence",
        "channel": "board:7",
        "members": [],
    }

    member = await connect(gw2, "2", channels=["board:*"])
    await member.send(type="track", channel="board:7", meta={"name": "Bo"}, id=1)
    assert await member.expect("tracked") == {"type": "tracked", "channel": "board:7", "id": 1}
    join = await watcher.expect("join")
    assert join["member"]["sub"] == "2"
    assert join["member"]["meta"] == {"name": "Bo"}
    conn = join["member"]["conn"]

    await member.send(type="presence", channel="board:7", id=2)
    snapshot = await member.expect("presence")
    assert snapshot["id"] == 2
    assert snapshot["members"] == [{"sub": "2", "conn": conn, "meta": {"name": "Bo"}}]

    await member.send(type="track", channel="board:7", meta={"name": "Bo", "typing": True})
    update = await next_of(watcher, "join")
    assert update["member"] == {"sub": "2", "conn": conn, "meta": {"name": "Bo", "typing": True}}
    await member.send(type="track", channel="board:7", meta={"name": "Bo", "typing": True})
    await member.expect("tracked")  # the same meta again announces nothing (checked below)

    await member.send(type="untrack", channel="board:7", id=3)
    assert await next_of(member, "untracked") == {
        "type": "untracked",
        "channel": "board:7",
        "id": 3,
    }
    assert (await watcher.expect("leave"))["member"]["conn"] == conn

    await member.send(type="track", channel="board:7", meta={})
    await member.expect("tracked")
    assert (await watcher.expect("join"))["member"]["meta"] == {}
    await member.ws.close()
    assert (await watcher.expect("leave"))["member"]["sub"] == "2"


async def test_presence_grants_limits_and_bad_input(
    aiohttp_client: MakeClient, redis_url: str
) -> None:
    """The presence claim (or the channel grant) decides; oversized meta, a full channel,
    a non-object meta and binary frames are refused with the documented codes, and the
    connection goes on working."""
    gw, _ = await two_gateways(
        aiohttp_client, redis_url, PGCAST_PRESENCE_META_BYTES="64", PGCAST_PRESENCE_MAX_MEMBERS="2"
    )
    only_lobby = await connect(gw, "1", channels=["room:*"], presence=["lobby"])
    await only_lobby.send(type="track", channel="room:1", meta={}, id=1)
    assert (await only_lobby.expect("error"))["code"] == "forbidden"
    await only_lobby.send(type="subscribe", channel="room:1", presence=True, id=2)
    assert (await only_lobby.expect("error"))["code"] == "forbidden"
    await only_lobby.send(type="track", channel="lobby", meta={"n": "x" * 100}, id=3)
    assert (await only_lobby.expect("error"))["code"] == "too_large"
    await only_lobby.send(type="track", channel="lobby", meta=[1], id=4)
    assert (await only_lobby.expect("error"))["code"] == "bad_request"
    await only_lobby.ws.send_bytes(b'{"type":"track","channel":"lobby","meta":{}}')
    assert (await only_lobby.expect("error"))["code"] == "bad_request"
    await only_lobby.send(type="track", channel="lobby", meta={}, id=5)
    assert (await only_lobby.expect("tracked"))["id"] == 5

    no_grant = await connect(gw, "2")
    await no_grant.send(type="presence", channel="lobby", id=6)
    assert (await no_grant.expect("error"))["code"] == "forbidden"

    second = await connect(gw, "3", channels=["lobby"])
    await second.send(type="track", channel="lobby", meta={}, id=7)
    await second.expect("tracked")
    third = await connect(gw, "4", channels=["lobby"])
    await third.send(type="track", channel="lobby", meta={}, id=8)
    assert (await third.expect("error"))["code"] == "presence_full"
    await third.send(type="presence", channel="lobby", id=9)
    assert len((await third.expect("presence"))["members"]) == 2


async def test_client_messages_reach_every_other_subscriber_and_nothing_else(
    aiohttp_client: MakeClient, redis_url: str
) -> None:
    """A publish reaches subscribers on both gateways with the sender's sub from the token,
    not its own connection, not another channel's subscribers, and never a resume."""
    gw1, gw2 = await two_gateways(aiohttp_client, redis_url)
    sender = await connect(gw1, "5", channels=["chat:*"], publish=["chat:*"])
    near = await connect(gw1, "6", channels=["chat:*"])
    far = await connect(gw2, "7", channels=["chat:*"])
    other = await connect(gw2, "8", channels=["chat:*"])
    for client in (sender, near, far):
        assert (await client.subscribe("chat:1"))["type"] == "subscribed"
    epoch = (await other.subscribe("chat:2"))["epoch"]

    await sender.send(type="publish", channel="chat:1", data={"text": "hi", "from": "forged"}, id=1)
    assert await sender.expect("published") == {"type": "published", "channel": "chat:1", "id": 1}
    for client in (near, far):
        assert await client.expect("broadcast") == {
            "type": "broadcast",
            "channel": "chat:1",
            "from": "5",
            "data": {"text": "hi", "from": "forged"},
        }
    # Nothing else arrives for the sender (its own message) or the other channel.
    for client in (sender, other):
        await client.send(type="ping", id="after")
        assert await client.expect("pong") == {"type": "pong", "id": "after"}

    # Ephemeral: a resume of the channel replays events, never client messages.
    await Events(gw1.app[SERVICES].hub.redis).publish("chat:2", {"n": 1})
    assert (await other.expect("message"))["data"] == {"n": 1}
    late = await connect(gw2, "8", channels=["chat:*"])
    resumed = await late.subscribe("chat:1", since="0", epoch=epoch)
    assert resumed["replayed"] == 0


async def test_client_message_refusals_keep_the_connection(
    aiohttp_client: MakeClient, redis_url: str
) -> None:
    """No claim: forbidden; too large: too_large; a flood: rate_limited after the burst,
    and the connection stays usable; a subscriber gets exactly the accepted ones."""
    gw, _ = await two_gateways(
        aiohttp_client,
        redis_url,
        PGCAST_CLIENT_MESSAGE_BYTES="32",
        PGCAST_CLIENT_PUBLISH_RATE="1",
        PGCAST_CLIENT_PUBLISH_BURST="5",
    )
    listener = await connect(gw, "1", channels=["chat:1"])
    await listener.subscribe("chat:1")
    no_claim = await connect(gw, "2", channels=["chat:1"])
    await no_claim.send(type="publish", channel="chat:1", data={}, id=1)
    assert (await no_claim.expect("error"))["code"] == "forbidden"

    flooder = await connect(gw, "3", publish=["chat:1"])
    await flooder.send(type="publish", channel="chat:1", data="x" * 40, id="big")
    assert (await flooder.expect("error"))["code"] == "too_large"
    for n in range(20):
        await flooder.send(type="publish", channel="chat:1", data=n, id=n)
    replies = [await flooder.recv() for _ in range(20)]
    accepted = [r["id"] for r in replies if r["type"] == "published"]
    limited = [r for r in replies if r["type"] == "error"]
    assert 5 <= len(accepted) <= 6  # the burst, plus what refilled meanwhile
    assert {r["code"] for r in limited} == {"rate_limited"}
    got = [(await listener.expect("broadcast"))["data"] for _ in accepted]
    assert got == accepted
    await flooder.send(type="ping", id="alive")
    assert (await flooder.expect("pong"))["id"] == "alive"


async def test_a_killed_gateways_members_leave_everywhere_within_the_bound(redis_url: str) -> None:
    """SIGKILL a gateway holding 100 tracked members: a watcher on another gateway sees all
    100 leave within PGCAST_PRESENCE_TTL + 1 s (+ scheduling slack); their clients come back
    through the surviving gateway and join again."""
    ttl = 2.0
    ports = [free_port(), free_port()]
    env = {"PGCAST_PRESENCE_TTL": str(ttl)}
    gateways = [Service("gateway", gateway_env(redis_url, p, **env)).start() for p in ports]
    try:
        for port, gw in zip(ports, gateways, strict=True):
            gw.wait_http(f"http://127.0.0.1:{port}/readyz")
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:

            async def open_client(port: int, sub: str) -> Client:
                url = f"ws://127.0.0.1:{port}/ws"
                ws = await http.ws_connect(url, params={"token": token(sub, ["room"])})
                return Client(ws)

            watcher = await open_client(ports[0], "watcher")
            await watcher.subscribe("room", presence=True)
            assert (await watcher.expect("presence"))["members"] == []
            members = [await open_client(ports[1], f"m{n}") for n in range(100)]
            for n, client in enumerate(members):
                await client.send(type="track", channel="room", meta={"n": n})
                await client.expect("tracked")
            joined = {(await watcher.expect("join"))["member"]["sub"] for _ in members}
            assert len(joined) == 100

            gateways[1].signal(signal.SIGKILL)
            killed = time.monotonic()
            left = set()
            while len(left) < 100:
                left.add((await watcher.expect("leave", wait=ttl + 10))["member"]["sub"])
            took = time.monotonic() - killed
            assert left == joined
            assert took <= ttl + 1.0 + 1.5, f"members left {took:.1f}s after the kill"

            # Their clients reconnect to the surviving gateway and track again.
            back = [await open_client(ports[0], f"m{n}") for n in range(100)]
            for n, client in enumerate(back):
                await client.send(type="track", channel="room", meta={"n": n})
                await client.expect("tracked")
            rejoined = {(await watcher.expect("join"))["member"]["sub"] for _ in back}
            assert rejoined == joined
            await watcher.send(type="presence", channel="room")
            assert len((await watcher.expect("presence"))["members"]) == 100
            print(f"100 members of a SIGKILLed gateway left after {took:.2f}s (TTL {ttl}s)")
    finally:
        for gw in gateways:
            gw.stop()


async def test_watchers_get_a_fresh_snapshot_after_the_link_was_replaced(
    aiohttp_client: MakeClient, redis_url: str
) -> None:
    """Joins announced while a gateway's pub/sub link was down are lost to it: once the
    link is back, its watchers get the members again, unasked."""
    redis = urlparse(redis_url)
    assert redis.hostname is not None
    assert redis.port is not None
    with TcpProxy(redis.hostname, redis.port) as proxy:
        cut = await aiohttp_client(create_app(settings(proxy.url_for(redis_url))))
        other = await aiohttp_client(create_app(settings(redis_url)))
        hub = cut.app[SERVICES].hub
        watcher = await connect(cut, "1", channels=["room"])
        await watcher.subscribe("room", presence=True)
        assert (await watcher.expect("presence"))["members"] == []
        links = hub.links
        proxy.blackhole()
        await wait_until(lambda: not hub.ready, what="link dropped")
        member = await connect(other, "2", channels=["room"])
        await member.send(type="track", channel="room", meta={"while": "down"})
        await member.expect("tracked")
        proxy.heal()
        await wait_until(lambda: hub.links > links, what="link re-established")
        fresh = await next_of(watcher, "presence")
        assert [m["sub"] for m in fresh["members"]] == ["2"]


async def test_members_redis_lost_join_again_at_the_next_refresh(
    aiohttp_client: MakeClient, redis_url: str
) -> None:
    """Redis loses the presence keys (FLUSHALL, a restart without persistence): each
    gateway's next refresh puts its members back, announced as joins."""
    gw, _ = await two_gateways(aiohttp_client, redis_url, PGCAST_PRESENCE_TTL="1.5")
    watcher = await connect(gw, "1", channels=["room"])
    await watcher.subscribe("room", presence=True)
    await watcher.expect("presence")
    member = await connect(gw, "2", channels=["room"])
    await member.send(type="track", channel="room", meta={})
    await member.expect("tracked")
    assert (await watcher.expect("join"))["member"]["sub"] == "2"
    await gw.app[SERVICES].hub.redis.flushall()
    assert (await watcher.expect("join", wait=5))["member"]["sub"] == "2"
    await member.send(type="presence", channel="room")
    assert [m["sub"] for m in (await member.expect("presence"))["members"]] == ["2"]
