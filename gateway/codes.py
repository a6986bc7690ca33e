"""Every code the gateway sends to a client, in one table, with the client's advice.

Handlers never write a literal code: they name a :class:`CloseCode` or an
:class:`ErrorCode`. The advice column is what the README's protocol section and
the client library tell users to do on each.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


class CloseCode(IntEnum):
    """WebSocket close codes (RFC 6455 §7.4 and the 4000-4999 private range)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002  # sent by aiohttp's frame parser (bad opcode, RSV bits, ...)
    INVALID_DATA = 1007  # sent by aiohttp's frame parser (text frame not UTF-8)
    TOO_LARGE = 1009
    SERVER_ERROR = 1011
    SHUTTING_DOWN = 1012
    TRY_AGAIN_LATER = 1013
    TOKEN_INVALID = 4001
    DISCONNECTED = 4003
    SLOW_CONSUMER = 4008

    @property
    def advice(self) -> str:
        return CLOSE_ADVICE[self]

    @property
    def label(self) -> str:
        return self.name.lower()


CLOSE_ADVICE: dict[CloseCode, str] = {
    CloseCode.NORMAL: "closed on request; reconnect only if you still need the stream",
    CloseCode.GOING_AWAY: "the peer went away; reconnect with backoff and resume",
    CloseCode.PROTOCOL_ERROR: "the client broke the WebSocket protocol; fix the client",
    CloseCode.INVALID_DATA: "a text frame was not valid UTF-8; fix the client",
    CloseCode.TOO_LARGE: "a frame exceeded the size limit; do not resend it",
    CloseCode.SERVER_ERROR: "unexpected server error; reconnect with backoff and resume",
    CloseCode.SHUTTING_DOWN: "the gateway is draining; reconnect (elsewhere) now and resume",
    CloseCode.TRY_AGAIN_LATER: "Redis is unreachable right now; reconnect with backoff",
    CloseCode.TOKEN_INVALID: "token invalid or expired; get a new token, then reconnect",
    CloseCode.DISCONNECTED: "the application closed this user's connections (pgcast.disconnect); "
    "do not reconnect on your own, the reason says why",
    CloseCode.SLOW_CONSUMER: "you fell behind; reconnect and resume from your last offset",
}


class ErrorCode(StrEnum):
    """``code`` of an ``error`` frame; the connection stays open after each."""

    BAD_REQUEST = "bad_request"
    UNKNOWN_TYPE = "unknown_type"
    FORBIDDEN = "forbidden"
    TOO_MANY_SUBSCRIPTIONS = "too_many_subscriptions"
    RATE_LIMITED = "rate_limited"
    ALREADY_SUBSCRIBED = "already_subscribed"
    INVALID_TOKEN = "invalid_token"  # noqa: S105 - an error code, not a secret
    UNAVAILABLE = "unavailable"
    TOO_LARGE = "too_large"
    PRESENCE_FULL = "presence_full"

    @property
    def advice(self) -> str:
        return ERROR_ADVICE[self]


ERROR_ADVICE: dict[ErrorCode, str] = {
    ErrorCode.BAD_REQUEST: "the request is malformed; fix it, do not retry as is",
    ErrorCode.UNKNOWN_TYPE: "the request type is not part of the protocol",
    ErrorCode.FORBIDDEN: "your token does not grant this channel",
    ErrorCode.TOO_MANY_SUBSCRIPTIONS: "unsubscribe from something first",
    ErrorCode.RATE_LIMITED: "slow down; the request was dropped",
    ErrorCode.ALREADY_SUBSCRIBED: "this connection already receives the channel",
    ErrorCode.INVALID_TOKEN: "the refresh token was refused; the current one still holds",
    ErrorCode.TOO_LARGE: "the presence meta or message data is over its size limit",
    ErrorCode.PRESENCE_FULL: "the channel's presence has its maximum of members; retry later",
    ErrorCode.UNAVAILABLE: "Redis is unreachable right now; retry the request with backoff",
}
