"""Pending (gateway-redis-pool.diff): a reconnect herd of resuming clients on one gateway.

After a deploy or a network blip, hundreds of clients reconnect to one gateway at
once, each resuming (a history read). redis-py's default pool holds at most 100
connections and fails beyond them: every resume past the 100th concurrent one is
answered ``unavailable`` and must come back later. A bounded pool whose callers
wait serves them all, with fewer Redis connections.
"""

from __future__ import annotations

import asyncio

import orjson
import pytest

from tests.soak.harness import Events, Gateway, RedisClient, mint
from tests.soak.wsraw import TEXT, RawWebSocket

HERD = 600


async def resume(port: int, channel: str, epoch: str) -> dict[str, object]:
    # One user per client (the channel's name): a herd of users, each within
    # PGCAST_MAX_USER_CONNECTIONS.
    ws = await RawWebSocket.connect(
        "127.0.0.1", port, headers={"Authorization": f"Bearer {mint(channel, ['*'])}"}
    )
    try:
        request = {"type": "subscribe", "channel": channel, "since": "1", "epoch": epoch}
        ws.send(TEXT, orjson.dumps(request))
        frame = await asyncio.wait_for(ws.read_frame(), 20)
        assert frame is not None, "the connection dropped without a reply"
        reply: dict[str, object] = orjson.loads(frame.payload)
        return reply
    finally:
        ws.close()


@pytest.mark.slow
async def test_a_resume_herd_is_served_without_errors(
    redis_url: str, redis_client: RedisClient
) -> None:
    """600 clients resume 600 channels at once: every one recovered, bounded Redis
    connections, no ERROR in the gateway's log."""
    gateway = Gateway(redis_url).start()
    try:
        events = Events(redis_client)
        epochs = {}
        for i in range(HERD):
            await events.publish(f"herd:{i}", *({"n": n} for n in range(3)))
            epoch = await redis_client.hget(f"pgcast:{{herd:{i}}}:meta", "e")
            epochs[f"herd:{i}"] = epoch.decode()
        replies = await asyncio.gather(*(resume(gateway.port, c, e) for c, e in epochs.items()))
        assert [r.get("recovered") for r in replies] == [True] * HERD
        clients = (await redis_client.info("clients"))["connected_clients"]
        assert clients <= 64 + 2, f"{clients} Redis connections"
    finally:
        gateway.stop()
    assert " ERROR " not in gateway.log()
