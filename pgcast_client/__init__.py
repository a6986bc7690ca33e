"""pgcast's asyncio client: ``async for`` over a channel, with reconnect and gapless resume.

async with Client("wss://rt.example.com/ws", token_factory=get_token) as client:
    async for msg in client.channel("jobs"):
        handle(msg.data)
"""

from pgcast_client.client import Client, Unauthorized
from pgcast_client.codes import CloseCode
from pgcast_client.subscription import Gap, Message, Subscription, SubscriptionError
from pgcast_client.tokens import NoTokenError

__all__ = [
    "Client",
    "CloseCode",
    "Gap",
    "Message",
    "NoTokenError",
    "Subscription",
    "SubscriptionError",
    "Unauthorized",
]
