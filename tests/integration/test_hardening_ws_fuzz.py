"""Fuzz the real WebSocket handler over raw sockets: random, broken and truncated frames.

An in-process gateway (real Redis) takes a few hundred hostile connections built
by a seeded generator: text (JSON and not), binary, invalid UTF-8, oversized,
fragmented, control frames, lying lengths, RSV bits, truncation. Every reply must
be a documented frame or close code; afterwards the process holds no extra task,
session, channel or Redis subscription, logged no error, and still serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import struct
from collections.abc import AsyncIterator

import orjson
import pytest
from aiohttp import web

from gateway.app import create_app
from gateway.codes import CloseCode, ErrorCode
from gateway.services import SERVICES
from pgcast.cancellation import raise_if_cancelled
from tests.soak.harness import (
    Events,
    RedisClient,
    eventually,
    gateway_settings,
    http_get_async,
    mint,
)
from tests.soak.wsraw import (
    BINARY,
    CLOSE,
    CONTINUATION,
    PING,
    PONG,
    TEXT,
    Frame,
    RawWebSocket,
    close_payload,
    encode_frame,
)

SEED = 20240607
CONNECTIONS = 400
REPLY_TYPES = {"pong", "error", "subscribed", "unsubscribed", "message", "refreshed"}
ERROR_CODES = {code.value for code in ErrorCode}
# The contract's close codes, plus the two RFC 6455 codes aiohttp's frame parser sends on
# a broken frame (1002 protocol error, 1007 invalid UTF-8): reported for gateway/codes.py.
CLOSE_CODES = {int(code) for code in CloseCode}
CHANNELS = ["user:7", "user:8", "news", "room:1", "a*", "x" * 300, "ctl\x07", "ünï", "{t}:x"]


def request(rng: random.Random) -> bytes:
    """A JSON request: half well-formed (granted channels), half hostile in some field."""
    if rng.random() < 0.5:
        good = rng.choice(["subscribe", "subscribe", "unsubscribe", "ping"])
        channel = rng.choice(["news", "user:7", f"room:{rng.randrange(20)}"])
        return orjson.dumps({"type": good, "channel": channel, "id": rng.randrange(100)})
    kind: object = rng.choice(["subscribe", "unsubscribe", "ping", "refresh", "publish", None, 7])
    frame: dict[str, object] = {"type": kind}
    if rng.random() < 0.8:
        frame["channel"] = rng.choice([*CHANNELS, rng.randbytes(8).hex(), None, 5, ["x"]])
    if rng.random() < 0.3:
        frame["since"] = rng.choice(["0", "3", "-1", "99999999999999999999", 2**64 - 1, "x", 1.5])
        frame["epoch"] = rng.choice(["e", "", None, "z" * 300])
    if rng.random() < 0.3:
        frame["id"] = rng.choice([1, "a", 2**60, True, None, {"x": 1}, "i" * 200])
    if kind == "refresh":
        frame["token"] = rng.choice([mint("7", ["*"]), mint("8"), "junk", ""])
    return orjson.dumps(frame)


def random_text(rng: random.Random) -> bytes:
    choice = rng.randrange(6)
    if choice == 0:
        return rng.randbytes(rng.randrange(40))  # usually invalid UTF-8
    if choice == 1:
        return "".join(chr(rng.randrange(0x20, 0x3000)) for _ in range(20)).encode()
    if choice == 2:
        return request(rng)[: rng.randrange(1, 30)]  # a truncated JSON document
    if choice == 3:
        return b"[" * rng.randrange(500, 3000)  # deep nesting
    return request(rng)


def one_frame(rng: random.Random) -> bytes:
    """One client frame; about one in five is a protocol violation."""
    roll = rng.random()
    if roll < 0.55:
        return encode_frame(TEXT, random_text(rng))
    if roll < 0.62:
        return encode_frame(BINARY, rng.randbytes(rng.randrange(64)))
    if roll < 0.70:
        return encode_frame(rng.choice([PING, PONG]), rng.randbytes(rng.randrange(126)))
    if roll < 0.78:  # a fragmented text message, maybe with a ping in between
        body = request(rng)
        cut = rng.randrange(1, max(2, len(body)))
        middle = encode_frame(PING, b"p") if rng.random() < 0.5 else b""
        return (
            encode_frame(TEXT, body[:cut], fin=False)
            + middle
            + encode_frame(CONTINUATION, body[cut:])
        )
    if roll < 0.82:
        return encode_frame(TEXT, b"x" * rng.choice([65 * 1024, 200 * 1024]))
    if roll < 0.86:
        return encode_frame(TEXT, b"{}", declared_length=rng.choice([2**16 + 1, 2**40, 2**63]))
    if roll < 0.90:
        return encode_frame(TEXT, b'{"type":"ping"}', rsv=rng.randrange(1, 8))
    if roll < 0.94:
        return encode_frame(rng.choice([0x3, 0x7, 0xB, 0xF, CONTINUATION]), b"x")
    if roll < 0.97:
        code = rng.choice([0, 999, 1005, 1006, 1015, 2999, 5000, 65535])
        return encode_frame(CLOSE, struct.pack("!H", code) + rng.randbytes(3))
    return encode_frame(PING, b"x" * 126)  # control frames may carry 125 bytes at most


def assert_documented(frames: list[Frame]) -> None:
    """Only documented text frames, pongs, and one close frame with a documented code."""
    for frame in frames:
        if frame.opcode == TEXT:
            reply = orjson.loads(frame.payload)
            assert reply["type"] in REPLY_TYPES, reply
            if reply["type"] == "error":
                assert reply["code"] in ERROR_CODES, reply
        elif frame.opcode == CLOSE:
            assert frame.close_code in CLOSE_CODES, frame
        else:
            assert frame.opcode == PONG, frame


async def fuzz_one(port: int, rng: random.Random) -> None:
    ws = await RawWebSocket.connect(
        "127.0.0.1", port, headers={"Authorization": f"Bearer {mint('7', ['news', 'room:*'])}"}
    )
    assert ws.status == 101
    try:
        data = b"".join(one_frame(rng) for _ in range(rng.randrange(1, 8)))
        if rng.random() < 0.15:
            ws.send_raw(data[: rng.randrange(1, len(data))])  # then vanish mid-frame
            return
        ws.send_raw(data)
        if rng.random() < 0.3:
            await asyncio.sleep(0.1)  # dwell: let live messages race with what follows
        ws.send_raw(encode_frame(CLOSE, close_payload(1000)))
        assert_documented(await ws.frames_until_closed(within=10))
    finally:
        ws.close()


@contextlib.asynccontextmanager
async def publishing(redis: RedisClient) -> AsyncIterator[None]:
    """Messages keep flowing to the fuzzed channels, so deliveries race with the chaos."""
    events = Events(redis)

    async def loop() -> None:
        n = 0
        while True:
            raise_if_cancelled()  # redis-py may swallow the cancel (pgcast.cancellation)
            await events.publish(rng_channel(n), {"n": n})
            n += 1
            await asyncio.sleep(0.005)  # pacing: a steady trickle

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def rng_channel(n: int) -> str:
    return "news" if n % 2 else f"room:{n % 20}"


@pytest.mark.slow
async def test_hostile_frames_get_documented_answers_and_leak_nothing(
    redis_url: str, redis_client: RedisClient, caplog: pytest.LogCaptureFixture
) -> None:
    """400 fuzzed connections while messages flow: documented replies only, nothing leaks."""
    caplog.set_level(logging.WARNING)
    app = create_app(gateway_settings(redis_url))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        services = app[SERVICES]
        await eventually(lambda: services.hub.ready, 10, "hub linked to Redis")
        await fuzz_one(port, random.Random(0))  # warm-up: lazily started hub tasks
        baseline = len(asyncio.all_tasks())
        rng = random.Random(SEED)
        async with publishing(redis_client):
            for start in range(0, CONNECTIONS, 10):
                batch = [random.Random(rng.random()) for _ in range(min(10, CONNECTIONS - start))]
                await asyncio.gather(*(fuzz_one(port, r) for r in batch))
        await eventually(lambda: not services.sessions.live, 15, "every session gone")
        await eventually(lambda: not services.hub.channels, 10, "every channel released")
        await eventually(lambda: len(asyncio.all_tasks()) <= baseline, 10, "tasks back to baseline")
        assert not services.sessions.by_user
        assert (await http_get_async(f"http://127.0.0.1:{port}/readyz"))[0] == 200
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert not errors, [r.getMessage() for r in errors]
    finally:
        await runner.cleanup()
