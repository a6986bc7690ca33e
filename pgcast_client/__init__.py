"""pgcast's asyncio client: ``async for`` over a channel, with reconnect and gapless resume.

async with Client("wss://rt.example.com/ws", token_factory=get_token) as client:
    async for msg in client.channel("jobs"):
        handle(msg.data)

Presence and client messages: ``await client.track("doc:7", {"name": "bot"})``,
``client.channel("doc:7", on_presence=..., on_broadcast=...)``,
``await client.publish("doc:7", {...})``, ``await client.presence("doc:7")``.
"""

from pgcast_client.client import Client, Disconnected, Unauthorized
from pgcast_client.codes import CloseCode
from pgcast_client.presence import Broadcast, Join, Leave, Member, PresenceSnapshot
from pgcast_client.requests import RequestError
from pgcast_client.subscription import (
    Gap,
    Message,
    Subscription,
    SubscriptionError,
    SubscriptionRevoked,
)
from pgcast_client.tokens import NoTokenError

__all__ = [
    "Broadcast",
    "Client",
    "CloseCode",
    "Disconnected",
    "Gap",
    "Join",
    "Leave",
    "Member",
    "Message",
    "NoTokenError",
    "PresenceSnapshot",
    "RequestError",
    "Subscription",
    "SubscriptionError",
    "SubscriptionRevoked",
    "Unauthorized",
]
