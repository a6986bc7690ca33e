"""The client protocol as pure functions: parse client frames, encode server frames.

No I/O here. A malformed request raises :class:`RequestError` carrying its
:class:`ErrorCode` and the request's ``id`` when one could be read, so the edge
answers with one ``error`` frame and keeps the connection open. ``message``
frames are not built here: the publisher builds them once (pgcast.keys).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import orjson

from gateway.codes import ErrorCode
from pgcast.channels import channel_error

RequestId = str | int | None
MAX_ID_LENGTH = 128
MAX_OFFSET_DIGITS = 20


class RequestError(Exception):
    """A request the gateway refuses; the connection stays open."""

    def __init__(self, code: ErrorCode, message: str, request_id: RequestId = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id


@dataclass(frozen=True, slots=True)
class Subscribe:
    channel: str
    since: int | None = None
    epoch: str | None = None
    id: RequestId = None
    presence: bool = False  # also receive the channel's presence (snapshot, join, leave)


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    channel: str
    id: RequestId = None


@dataclass(frozen=True, slots=True)
class Refresh:
    token: str
    id: RequestId = None


@dataclass(frozen=True, slots=True)
class Ping:
    id: RequestId = None


@dataclass(frozen=True, slots=True)
class Track:
    """Join (or update) this connection's presence in ``channel`` with ``meta``."""

    channel: str
    meta: bytes  # the meta object, JSON-encoded (its size is what the limit bounds)
    id: RequestId = None


@dataclass(frozen=True, slots=True)
class Untrack:
    channel: str
    id: RequestId = None


@dataclass(frozen=True, slots=True)
class PresenceQuery:
    channel: str
    id: RequestId = None


@dataclass(frozen=True, slots=True)
class Publish:
    """A client message: ``data`` JSON-encoded, fanned out to the channel's subscribers."""

    channel: str
    data: bytes
    id: RequestId = None


Request = Subscribe | Unsubscribe | Refresh | Ping | Track | Untrack | PresenceQuery | Publish


def parse_request(raw: str | bytes) -> Request:
    """Parse one client text frame; raises RequestError on anything malformed."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise RequestError(ErrorCode.BAD_REQUEST, "frame is not valid JSON") from None
    if not isinstance(obj, dict):
        raise RequestError(ErrorCode.BAD_REQUEST, "frame must be a JSON object")
    request_id = _request_id(obj)
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise RequestError(ErrorCode.BAD_REQUEST, "missing string field 'type'", request_id)
    parse = _PARSERS.get(kind)
    if parse is None:
        raise RequestError(ErrorCode.UNKNOWN_TYPE, f"unknown type {kind[:40]!r}", request_id)
    return parse(obj, request_id)


def _refresh(obj: dict[str, Any], request_id: RequestId) -> Refresh:
    token = obj.get("token")
    if not isinstance(token, str) or not token:
        raise RequestError(ErrorCode.BAD_REQUEST, "missing string field 'token'", request_id)
    return Refresh(token, request_id)


def _track(obj: dict[str, Any], request_id: RequestId) -> Track:
    meta = obj.get("meta", {})
    if not isinstance(meta, dict):
        raise RequestError(ErrorCode.BAD_REQUEST, "'meta' must be a JSON object", request_id)
    return Track(_channel(obj, request_id), _encode(meta, "meta", request_id), request_id)


def _publish(obj: dict[str, Any], request_id: RequestId) -> Publish:
    channel = _channel(obj, request_id)
    if "data" not in obj:
        raise RequestError(ErrorCode.BAD_REQUEST, "missing field 'data'", request_id)
    return Publish(channel, _encode(obj["data"], "data", request_id), request_id)


def _encode(value: Any, field: str, request_id: RequestId) -> bytes:
    """A client's JSON value encoded again (what we store and forward, never its raw text)."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:  # orjson nests at most 254 levels deep
        raise RequestError(
            ErrorCode.BAD_REQUEST, f"'{field}' is nested too deeply", request_id
        ) from None


def _request_id(obj: dict[str, Any]) -> RequestId:
    value = obj.get("id")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise RequestError(ErrorCode.BAD_REQUEST, "'id' must be a string or an integer")
    if isinstance(value, str) and len(value) > MAX_ID_LENGTH:
        raise RequestError(ErrorCode.BAD_REQUEST, f"'id' longer than {MAX_ID_LENGTH}")
    if isinstance(value, int) and abs(value) >= 1 << 53:
        raise RequestError(ErrorCode.BAD_REQUEST, "'id' out of the safe integer range")
    return value


def _channel(obj: dict[str, Any], request_id: RequestId) -> str:
    channel = obj.get("channel")
    problem = channel_error(channel)
    if problem is not None:
        raise RequestError(ErrorCode.BAD_REQUEST, problem, request_id)
    return cast(str, channel)  # channel_error returned None: it is a str


def _subscribe(obj: dict[str, Any], request_id: RequestId) -> Subscribe:
    channel = _channel(obj, request_id)
    presence = obj.get("presence", False)
    if not isinstance(presence, bool):
        raise RequestError(ErrorCode.BAD_REQUEST, "'presence' must be true or false", request_id)
    since_raw, epoch = obj.get("since"), obj.get("epoch")
    if since_raw is None and epoch is None:
        return Subscribe(channel, id=request_id, presence=presence)
    if since_raw is None or epoch is None:
        raise RequestError(
            ErrorCode.BAD_REQUEST, "'since' and 'epoch' go together (resume)", request_id
        )
    since = parse_offset(since_raw)
    if since is None:
        raise RequestError(ErrorCode.BAD_REQUEST, "'since' is not an offset", request_id)
    if not isinstance(epoch, str) or len(epoch) > MAX_ID_LENGTH:
        raise RequestError(ErrorCode.BAD_REQUEST, "'epoch' must be a short string", request_id)
    return Subscribe(channel, since, epoch, request_id, presence)


_PARSERS: dict[str, Callable[[dict[str, Any], RequestId], Request]] = {
    "subscribe": _subscribe,
    "unsubscribe": lambda obj, rid: Unsubscribe(_channel(obj, rid), rid),
    "refresh": _refresh,
    "ping": lambda obj, rid: Ping(rid),
    "track": _track,
    "untrack": lambda obj, rid: Untrack(_channel(obj, rid), rid),
    "presence": lambda obj, rid: PresenceQuery(_channel(obj, rid), rid),
    "publish": _publish,
}


def parse_offset(value: object) -> int | None:
    """An offset as sent by a client (a decimal string; an integer is tolerated)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, str) and 0 < len(value) <= MAX_OFFSET_DIGITS and value.isdigit():
        return int(value) if value.isascii() else None
    return None


def _frame(obj: dict[str, Any], request_id: RequestId) -> bytes:
    if request_id is not None:
        obj["id"] = request_id
    return orjson.dumps(obj)


def subscribed(
    channel: str,
    epoch: str,
    offset: int,
    *,
    recovered: bool,
    replayed: int,
    request_id: RequestId = None,
) -> bytes:
    """The ``subscribed`` frame: ``offset`` is the channel's latest, before what follows."""
    obj = {
        "type": "subscribed",
        "channel": channel,
        "epoch": epoch,
        "offset": str(offset),
        "recovered": recovered,
        "replayed": replayed,
    }
    return _frame(obj, request_id)


def unsubscribed(channel: str, *, reason: str | None = None, request_id: RequestId = None) -> bytes:
    obj: dict[str, Any] = {"type": "unsubscribed", "channel": channel}
    if reason is not None:
        obj["reason"] = reason
    return _frame(obj, request_id)


def acknowledged(kind: str, channel: str, request_id: RequestId = None) -> bytes:
    """``tracked``, ``untracked``, ``published``: the request was carried out."""
    return _frame({"type": kind, "channel": channel}, request_id)


def member(sub: str, conn: str, meta: bytes) -> bytes:
    """A presence member as stored in Redis and sent to clients (``meta`` is JSON)."""
    return (
        b'{"sub":'
        + orjson.dumps(sub)
        + b',"conn":'
        + orjson.dumps(conn)
        + b',"meta":'
        + meta
        + b"}"
    )


def presence(channel: str, members: Sequence[bytes], request_id: RequestId = None) -> bytes:
    """The ``presence`` frame: every member (already-encoded JSON objects) of ``channel``."""
    head = b'{"type":"presence","channel":' + orjson.dumps(channel) + b',"members":['
    tail = b"]" if request_id is None else b'],"id":' + orjson.dumps(request_id)
    return head + b",".join(members) + tail + b"}"


def broadcast(channel: str, sender: str, data: bytes) -> bytes:
    """A client message as its channel's subscribers receive it (``data`` is JSON)."""
    return (
        b'{"type":"broadcast","channel":'
        + orjson.dumps(channel)
        + b',"from":'
        + orjson.dumps(sender)
        + b',"data":'
        + data
        + b"}"
    )


def untracked(channel: str, *, reason: str | None = None, request_id: RequestId = None) -> bytes:
    obj: dict[str, Any] = {"type": "untracked", "channel": channel}
    if reason is not None:
        obj["reason"] = reason
    return _frame(obj, request_id)


def pong(request_id: RequestId = None) -> bytes:
    return _frame({"type": "pong"}, request_id)


def refreshed(expires_at: int, request_id: RequestId = None) -> bytes:
    """Reply to a successful ``refresh``: the new token's expiry (Unix seconds)."""
    return _frame({"type": "refreshed", "exp": expires_at}, request_id)


def error(code: ErrorCode, message: str, request_id: RequestId = None) -> bytes:
    return _frame({"type": "error", "code": code.value, "message": message}, request_id)


Position = tuple[str, int]  # (epoch, offset)
MAX_EVENT_ID = 16 * 1024


def encode_event_id(positions: Mapping[str, Position]) -> str:
    """An SSE event id holding every channel's position (base64url of compact JSON)."""
    payload = orjson.dumps({channel: f"{e}:{o}" for channel, (e, o) in positions.items()})
    return base64.urlsafe_b64encode(payload).rstrip(b"=").decode()


def decode_event_id(text: str | None) -> dict[str, Position]:
    """Positions from a ``Last-Event-ID``; anything unreadable is simply no position."""
    if not text or len(text) > MAX_EVENT_ID:
        return {}
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        obj = orjson.loads(raw)
    except (binascii.Error, ValueError):
        return {}
    if not isinstance(obj, dict):
        return {}
    positions: dict[str, Position] = {}
    for channel, value in obj.items():
        if not isinstance(value, str):
            continue
        epoch, _, offset_text = value.rpartition(":")
        offset = parse_offset(offset_text)
        if epoch and offset is not None:
            positions[channel] = (epoch, offset)
    return positions
