"""Session rules without a network: closing stops everything, refusals become error frames."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson

from gateway.auth import Claims, Verifier
from gateway.codes import CloseCode
from gateway.control import ControlFeed, Disconnect, Revoke
from gateway.history import History
from gateway.hub import Hub, HubOptions
from gateway.message import Message
from gateway.metrics import Metrics
from gateway.presence import Presence
from gateway.presence_store import PresenceStore
from gateway.services import Services
from gateway.session import Session
from gateway.sessions import Sessions
from gateway.topology import Topology
from pgcast.keys import Layout
from tests.gateway_support import settings


class FakeTransport:
    kind = "ws"

    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []
        self.closed: list[int] = []
        self.on_overflow: Callable[[], None] = lambda: None

    def bind(self, on_overflow: Callable[[], None]) -> None:
        self.on_overflow = on_overflow

    def send(self, frame: bytes) -> None:
        self.frames.append(orjson.loads(frame))

    def deliver(self, message: Message) -> None:
        self.frames.append(orjson.loads(message.frame))

    def position(self, channel: str, epoch: str, offset: int) -> None:
        """Not tracked."""

    def forget(self, channel: str) -> None:
        """Not tracked."""

    async def close(self, code: CloseCode, reason: str) -> None:
        self.closed.append(int(code))


def services(**env: str) -> Services:
    s = settings("redis://127.0.0.1:1/0", **env)
    metrics = Metrics()
    sessions = Sessions(s, metrics)
    layout = Layout()
    control = ControlFeed(None, sessions.apply, layout)  # type: ignore[arg-type]
    topology = Topology(s.redis, layout, None)  # type: ignore[arg-type]
    history = History(None, 60, layout)  # type: ignore[arg-type]
    hub = Hub(HubOptions(s.gateway_id), None, history, metrics, control, topology)  # type: ignore[arg-type]
    presence = Presence(PresenceStore(None, 10, 5, layout), hub, metrics, 10)  # type: ignore[arg-type]
    return Services(s, Verifier(s), metrics, hub, sessions, presence)


def session(svc: Services, **claims: Any) -> tuple[Session, FakeTransport]:
    transport = FakeTransport()
    base = {"sub": "42", "exp": time.time() + 60, "channels": ()}
    return Session(svc, transport, Claims(**{**base, **claims})), transport


async def test_a_closed_session_joins_nothing_and_answers_nothing() -> None:
    svc = services()
    s, transport = session(svc)
    s.close(CloseCode.SHUTTING_DOWN, "bye")
    await s.subscribe("user:42", None, None)
    await s.handle('{"type":"subscribe","channel":"user:42"}')
    await s.handle("not json")
    assert svc.hub.channels == {}
    assert transport.frames == []
    await svc.sessions.wait_closed(within=1)
    assert transport.closed == [1012]


async def test_overflow_closes_4008_once_and_counts() -> None:
    svc = services()
    _, transport = session(svc)
    transport.on_overflow()
    transport.on_overflow()
    await svc.sessions.wait_closed(within=1)
    assert transport.closed == [4008]
    assert svc.metrics.slow_consumer_closes._value.get() == 1


async def test_requests_refused_before_any_redis_work() -> None:
    """Forbidden, too many subscriptions and rate limits answer without touching the hub."""
    svc = services(PGCAST_RATE_LIMIT="0.1", PGCAST_RATE_BURST="3")
    s, transport = session(svc)
    await s.handle('{"type":"subscribe","channel":"user:43","id":1}')
    await s.handle('{"type":"ping","id":2}')
    await s.handle('{"type":"bogus","id":3}')
    await s.handle('{"type":"ping","id":4}')
    assert [(f["type"], f.get("code"), f.get("id")) for f in transport.frames] == [
        ("error", "forbidden", 1),
        ("pong", None, 2),
        ("error", "unknown_type", 3),
        ("error", "rate_limited", None),
    ]
    assert svc.hub.channels == {}


async def test_resync_tells_the_client_to_refetch() -> None:
    svc = services()
    s, transport = session(svc)
    s.resync("user:42", "NEW", 7)
    assert transport.frames == [
        {
            "type": "subscribed",
            "channel": "user:42",
            "epoch": "NEW",
            "offset": "7",
            "recovered": False,
            "replayed": 0,
        }
    ]


async def test_a_subscriber_that_overflows_while_pending_is_a_slow_consumer() -> None:
    """Falling past the backlog bound during a resume is reported as overflow (the session
    closes 4008 and the client resumes), not as a lost history."""
    from gateway.channel import Channel
    from gateway.resume import Snapshot

    svc = services(PGCAST_SEND_QUEUE_BYTES="65536")
    s, _ = session(svc)
    hub = svc.hub
    channel = hub.channels["user:42"] = Channel("user:42", b"live", backlog_limit=1000)
    channel.add_pending(s)
    assert not channel.finish_sync(Snapshot("E", 10))
    for offset in range(11, 31):
        channel.on_live(Message("user:42", offset, "E", b'{"data":"' + b"x" * 100 + b'"}'))
    plan = hub.activate("user:42", s, 10, "E", None)
    assert plan.overflowed
    assert not plan.replay
    assert plan.recovered is False


async def test_client_messages_and_presence_refused_before_any_redis_work() -> None:
    """No claim, too large, over the publish rate: error frames, the connection stays."""
    svc = services(
        PGCAST_CLIENT_MESSAGE_BYTES="16",
        PGCAST_PRESENCE_META_BYTES="16",
        PGCAST_CLIENT_PUBLISH_RATE="0.1",
        PGCAST_CLIENT_PUBLISH_BURST="1",
    )
    s, transport = session(svc, channels=("room:*",), publish=(), presence=("lobby",))
    await s.handle('{"type":"publish","channel":"room:1","data":{},"id":1}')
    await s.handle('{"type":"track","channel":"room:1","meta":{},"id":2}')
    await s.handle('{"type":"presence","channel":"room:1","id":3}')
    await s.handle('{"type":"subscribe","channel":"room:1","presence":true,"id":4}')
    await s.handle('{"type":"track","channel":"lobby","meta":{"name":"x' + "y" * 20 + '"},"id":5}')
    s2, transport2 = session(svc, publish=("room:*",))
    await s2.handle('{"type":"publish","channel":"room:1","data":"' + "z" * 20 + '","id":6}')
    assert s2.claims.may_publish("room:1")
    assert not s2.claims.may_publish("room")
    codes = [(f["id"], f["code"]) for f in transport.frames + transport2.frames]
    assert codes == [
        (1, "forbidden"),
        (2, "forbidden"),
        (3, "forbidden"),
        (4, "forbidden"),
        (5, "too_large"),
        (6, "too_large"),
    ]
    assert svc.hub.channels == {}
    assert not s.closing
    assert not s2.closing


async def test_controls_reach_only_the_named_users_sessions() -> None:
    """Disconnect closes every session of the sub with 4003; a revoke refuses later
    subscribes to the matching channels on that connection."""
    svc = services()
    a1, t1 = session(svc, sub="7", channels=("orders:*",))
    a2, t2 = session(svc, sub="7")
    b, tb = session(svc, sub="8")
    for s in (a1, a2, b):
        svc.sessions.add(s)
    svc.sessions.apply(Revoke("7", "orders:*"))
    await a1.handle('{"type":"subscribe","channel":"orders:1","id":1}')
    assert t1.frames == [
        {"type": "error", "code": "forbidden", "message": "orders:1 was revoked", "id": 1}
    ]
    svc.sessions.apply(Disconnect("7", "banned"))
    await svc.sessions.wait_closed(within=1)
    assert t1.closed == [4003]
    assert t2.closed == [4003]
    assert tb.closed == []
    assert not b.closing
