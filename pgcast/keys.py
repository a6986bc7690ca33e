"""The Redis layout: THE contract between the listener (writer) and the gateway (reader).

A :class:`Layout` names every key. With one Redis (or Sentinel) each channel ``c`` has
the hash tag ``{c}`` and live messages use classic pub/sub (``PUBLISH``/``SUBSCRIBE``).
With Redis Cluster (``Layout(partitions=N)``) the tag ``{c}`` below is instead the tag
of the channel's partition (``zlib.crc32(c) % N``; each partition's tag is chosen so
the N partitions fall on evenly spaced slots, hence evenly on the masters), the keys
read ``pgcast:{<partition tag>}:<c>:meta`` and so on, every partition has its own
copy of the leader fence (``pgcast:{<tag>}:fence``, so a publish script touches one
slot only), and pub/sub is sharded (``SPUBLISH``/``SSUBSCRIBE``): a message travels
inside the shard that owns its channel. The single-Redis names are unchanged.

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

import binascii
import zlib
from dataclasses import dataclass, field

import orjson

FENCE_KEY = "pgcast:fence"
HEARTBEAT_PREFIX = "pgcast:hb:"
FRAME_FIELD = b"f"
EPHEMERAL_MARK = ord("!")
BROADCAST_KIND = ord("b")
PRESENCE_KIND = ord("p")
RESET_KIND = ord("r")  # '!r<epoch>': the channel starts a new, empty epoch (listener/reset.lua)
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


def encode_broadcast(conn: str, frame: bytes) -> bytes:
    """Live payload of a client message sent by connection ``conn``."""
    return b"!b" + conn.encode() + b" " + frame


def encode_reset(epoch: str) -> bytes:
    """Live payload telling gateways the channel starts the new, empty ``epoch``."""
    return b"!r" + epoch.encode()


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


CLUSTER_SLOTS = 16384
DEFAULT_PARTITIONS = 64


def key_slot(key: str) -> int:
    """The Redis Cluster slot of ``key`` (CRC16-XMODEM of its hash tag, as Redis computes)."""
    raw = key.encode()
    start = raw.find(b"{")
    if start >= 0:
        end = raw.find(b"}", start + 1)
        if end > start + 1:
            raw = raw[start + 1 : end]
    return binascii.crc_hqx(raw, 0) % CLUSTER_SLOTS


def partition_tags(partitions: int) -> tuple[str, ...]:
    """One hash tag per partition, partition i's slot in the i-th of ``partitions`` equal
    slot ranges: the partitions spread evenly over the masters, however slots are split."""
    width = CLUSTER_SLOTS / partitions
    tags = []
    for index in range(partitions):
        n = 0
        while int(key_slot(f"{{p{index}.{n}}}") // width) != index:
            n += 1
        tags.append(f"p{index}.{n}")
    return tuple(tags)


@dataclass(frozen=True)
class Layout:
    """The key names of one deployment: ``partitions == 0`` one Redis or Sentinel;
    otherwise Redis Cluster with that many partitions (listener and gateways must agree)."""

    partitions: int = 0
    _tags: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "_tags", partition_tags(self.partitions) if self.partitions else ()
        )

    @property
    def sharded(self) -> bool:
        """Redis Cluster: sharded pub/sub, partition hash tags."""
        return self.partitions > 0

    @property
    def publish_command(self) -> str:
        return "SPUBLISH" if self.sharded else "PUBLISH"

    def partition(self, channel: str) -> int:
        """``channel``'s partition (0 with one Redis)."""
        return zlib.crc32(channel.encode()) % self.partitions if self.partitions else 0

    def partition_tag(self, index: int) -> str:
        return self._tags[index]

    def _prefix(self, channel: str) -> str:
        if not self.partitions:
            return "pgcast:{" + channel + "}"
        return "pgcast:{" + self._tags[self.partition(channel)] + "}:" + channel

    def channel_keys(self, channel: str) -> ChannelKeys:
        prefix = self._prefix(channel)
        return ChannelKeys(
            meta=prefix + ":meta",
            history=prefix + ":hist",
            ids=prefix + ":ids",
            live=prefix + ":live",
        )

    def live_channel(self, channel: str) -> str:
        """The (shard) pub/sub channel of ``channel``'s live messages."""
        return self._prefix(channel) + ":live"

    def presence_keys(self, channel: str) -> PresenceKeys:
        prefix = self._prefix(channel)
        return PresenceKeys(
            members=prefix + ":pm", expiry=prefix + ":px", seq=prefix + ":ps", live=prefix + ":live"
        )

    def fence_key(self, channel: str) -> str:
        """The leader fence a publish to ``channel`` checks (in its slot)."""
        if not self.partitions:
            return FENCE_KEY
        return "pgcast:{" + self._tags[self.partition(channel)] + "}:fence"

    def fence_keys(self) -> tuple[str, ...]:
        """Every copy of the fence (a new leader raises them all): one per partition and one
        in the control slot on a cluster."""
        if not self.partitions:
            return (FENCE_KEY,)
        return (*("pgcast:{" + tag + "}:fence" for tag in self._tags), self.control_fence_key())

    def control_fence_key(self) -> str:
        """The fence copy a control checks (in the control keys' slot on a cluster)."""
        return "pgcast:{control}:fence" if self.partitions else FENCE_KEY

    def layout_key(self) -> str | None:
        """Cluster only: the leader writes its partition count here at claim time, so a
        gateway with another count can refuse to start."""
        return "pgcast:{control}:layout" if self.partitions else None

    def control_keys(self) -> tuple[str, str, str]:
        """(stream, ids, live) of server-side control; one slot in a cluster."""
        if not self.partitions:
            return CONTROL_STREAM, CONTROL_IDS, CONTROL_LIVE
        return "pgcast:{control}:stream", "pgcast:{control}:ids", "pgcast:{control}:live"

    def heartbeat_channel(self, gateway_id: str, partition: int = 0) -> str:
        """A gateway's heartbeat; in a cluster one per node, through a partition it owns."""
        if not self.partitions:
            return HEARTBEAT_PREFIX + gateway_id
        return "pgcast:{" + self._tags[partition] + "}:hb:" + gateway_id
