"""The Redis layout: THE contract between the listener (writer) and the gateway (reader).

Per pgcast channel ``c`` (every key carries the hash tag ``{c}``, so one channel's
keys share a Redis Cluster slot):

- ``pgcast:{c}:meta``  hash: ``e`` = epoch (hex token, new whenever history is
  created afresh), ``s`` = top offset (contiguous integer counter, 1, 2, 3 ...).
- ``pgcast:{c}:hist``  stream: entry id ``<offset>-0``, field ``f`` = the client's
  ``message`` frame, built once by the publisher.
- ``pgcast:{c}:ids``   sorted set of recently published outbox ids (score = id),
  so a re-published outbox row is recognised and skipped.
- ``pgcast:{c}:live``  pub/sub channel: payload ``<offset>:<epoch>:<frame>``.

All three keys expire together after the history TTL; an expired meta hash means
a new epoch, which tells resuming clients ``recovered:false``.

Ephemeral traffic (client messages, presence join/leave) rides the same ``live``
pub/sub channel, never history: its payload starts with ``!`` (a history payload
starts with its offset's first digit), then a kind byte:

- ``!b<conn> <frame>``  a client message (``broadcast`` frame) sent by connection
  ``<conn>``, which does not get it back;
- ``!p<seq>:<frame>``   a presence ``join``/``leave`` frame, ``<seq>`` the channel's
  presence sequence after that change (see :class:`PresenceKeys`).

Presence of ``c`` (same hash tag): ``pgcast:{c}:pm`` hash conn -> member JSON
``{"sub":..,"conn":..,"meta":{..}}``; ``pgcast:{c}:px`` sorted set conn -> expiry
(Redis ms time; a member whose gateway stopped refreshing it is swept after that);
``pgcast:{c}:ps`` the presence sequence, incremented by every join and leave.

Global: ``pgcast:fence`` holds the newest leader epoch; the publish script refuses
a publish from an older leader. ``pgcast:hb:<gateway-id>`` is a gateway's own
heartbeat pub/sub channel. Server-side control (``pgcast.disconnect``,
``pgcast.unsubscribe``) travels the outbox as rows whose channel is
:data:`CONTROL_MARKER` (never a valid channel name); the leader appends each to the
stream ``pgcast:control`` (an id Redis assigns, so in publish order whatever order the
transactions committed in; field ``f`` = the control JSON), remembers its outbox id in
the sorted set ``pgcast:control:ids`` (a retried batch is not appended twice) and
publishes ``<stream id>:<json>`` on ``pgcast:control:live``. Gateways read the stream
after every (re)connect from the last entry they applied, so each control is
applied once, in order.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

FENCE_KEY = "pgcast:fence"
HEARTBEAT_PREFIX = "pgcast:hb:"
FRAME_FIELD = b"f"
EPHEMERAL_MARK = ord("!")
BROADCAST_KIND = ord("b")
PRESENCE_KIND = ord("p")
CONTROL_MARKER = "[control]"
CONTROL_STREAM = "pgcast:control"
CONTROL_LIVE = "pgcast:control:live"
CONTROL_IDS = "pgcast:control:ids"
CONTROL_STREAM_MAXLEN = 10_000
META_EPOCH = "e"
META_TOP = "s"


@dataclass(frozen=True, slots=True)
class ChannelKeys:
    """The Redis names of one pgcast channel."""

    meta: str
    history: str
    ids: str
    live: str


def channel_keys(channel: str) -> ChannelKeys:
    """Names of the keys and the live pub/sub channel of ``channel``."""
    tag = "{" + channel + "}"
    return ChannelKeys(
        meta=f"pgcast:{tag}:meta",
        history=f"pgcast:{tag}:hist",
        ids=f"pgcast:{tag}:ids",
        live=f"pgcast:{tag}:live",
    )


def live_channel(channel: str) -> str:
    """The pub/sub channel that carries ``channel``'s live messages."""
    return channel_keys(channel).live


def channel_of_live(live: str) -> str:
    """Inverse of :func:`live_channel`."""
    if not (live.startswith("pgcast:{") and live.endswith("}:live")):
        raise ValueError(f"not a pgcast live channel: {live!r}")
    return live[len("pgcast:{") : -len("}:live")]


def heartbeat_channel(gateway_id: str) -> str:
    """The pub/sub channel a gateway publishes its own heartbeat to."""
    return HEARTBEAT_PREFIX + gateway_id


def stream_id(offset: int) -> str:
    """Stream entry id of a history entry: the offset is the id's first part."""
    return f"{offset}-0"


def offset_of_stream_id(entry_id: bytes | str) -> int:
    """Offset of a stream entry id (``b"17-0"`` -> 17)."""
    raw = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(raw.split("-", 1)[0])


def channel_json(channel: str) -> bytes:
    """The channel name as a JSON string, spliced into frames by the publish script."""
    return orjson.dumps(channel)


def message_frame(channel: str, offset: int, data_json: bytes) -> bytes:
    """The client ``message`` frame; the publish script builds exactly these bytes.

    ``data_json`` is already-encoded JSON (the outbox's jsonb text), spliced in
    without re-encoding.
    """
    return (
        b'{"type":"message","channel":'
        + channel_json(channel)
        + b',"offset":"'
        + str(offset).encode()
        + b'","data":'
        + data_json
        + b"}"
    )


@dataclass(frozen=True, slots=True)
class LiveMessage:
    """A decoded pub/sub payload."""

    offset: int
    epoch: str
    frame: bytes


def encode_live(offset: int, epoch: str, frame: bytes) -> bytes:
    """Pub/sub payload: the offset and epoch up front so readers need no JSON parse."""
    return f"{offset}:{epoch}:".encode() + frame


def decode_live(payload: bytes) -> LiveMessage:
    """Inverse of :func:`encode_live`; raises ValueError on a malformed payload."""
    offset, epoch, frame = payload.split(b":", 2)
    return LiveMessage(int(offset), epoch.decode(), frame)


@dataclass(frozen=True, slots=True)
class PresenceKeys:
    """The Redis names of one channel's presence (same slot as its history)."""

    members: str
    expiry: str
    seq: str
    live: str


def presence_keys(channel: str) -> PresenceKeys:
    tag = "{" + channel + "}"
    return PresenceKeys(
        members=f"pgcast:{tag}:pm",
        expiry=f"pgcast:{tag}:px",
        seq=f"pgcast:{tag}:ps",
        live=f"pgcast:{tag}:live",
    )


def encode_broadcast(conn: str, frame: bytes) -> bytes:
    """Live payload of a client message sent by connection ``conn``."""
    return b"!b" + conn.encode() + b" " + frame


StreamId = tuple[int, int]


def parse_stream_id(raw: bytes | str) -> StreamId:
    """A Redis stream entry id ``<ms>-<seq>`` as a comparable pair; ValueError if malformed."""
    text = raw.decode() if isinstance(raw, bytes) else raw
    ms, sep, seq = text.partition("-")
    if not sep or not ms.isdigit() or not seq.isdigit():
        raise ValueError(f"not a stream id: {text[:40]!r}")
    return int(ms), int(seq)


def encode_control(stream_id: str, control_json: bytes) -> bytes:
    """``pgcast:control:live`` payload: the stream entry id up front, then the control JSON."""
    return stream_id.encode() + b":" + control_json


def decode_control(payload: bytes) -> tuple[StreamId, bytes]:
    """Inverse of :func:`encode_control`; raises ValueError on a malformed payload."""
    head, _, body = payload.partition(b":")
    return parse_stream_id(head), body
