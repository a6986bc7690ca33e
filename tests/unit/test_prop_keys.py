"""Property tests of the Redis layout: key names, live payloads, frames, stream ids."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from pgcast import keys
from pgcast.channels import MAX_CHANNEL_LENGTH

NAME_CHAR = st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="*?[]")
# Valid channel names, with the layout's own separators over-represented.
VALID_NAME = st.text(
    st.one_of(NAME_CHAR, st.sampled_from("{}:-")), min_size=1, max_size=MAX_CHANNEL_LENGTH
)
EPOCH = st.text("0123456789abcdef", min_size=1, max_size=32)
OFFSET = st.integers(0, 2**63 - 1)
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(codec="utf-8")),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


def cluster_hash_tag(key: str) -> str:
    """What Redis Cluster hashes: the text inside the first ``{...}``, if non-empty."""
    start = key.find("{")
    if start == -1:
        return key
    end = key.find("}", start + 1)
    if end == -1 or end == start + 1:
        return key
    return key[start + 1 : end]


@given(VALID_NAME)
@example("a}:live")
@example("{")
@example("}")
@example("pgcast:{x}:live")
def test_live_channel_round_trips_for_every_valid_name(channel: str) -> None:
    """channel_of_live(live_channel(c)) == c, braces and colons included."""
    assert keys.channel_of_live(keys.live_channel(channel)) == channel


@given(VALID_NAME, VALID_NAME)
def test_distinct_channels_never_share_a_key(one: str, other: str) -> None:
    """The layout is injective: two channels never read or write each other's keys."""
    if one != other:
        a, b = keys.channel_keys(one), keys.channel_keys(other)
        assert not {a.meta, a.history, a.ids, a.live} & {b.meta, b.history, b.ids, b.live}


@given(VALID_NAME)
def test_keys_of_a_channel_never_collide_with_global_keys(channel: str) -> None:
    """No channel key equals the fence key or any heartbeat channel."""
    ck = keys.channel_keys(channel)
    for name in (ck.meta, ck.history, ck.ids, ck.live):
        assert name != keys.FENCE_KEY
        assert not name.startswith(keys.HEARTBEAT_PREFIX)


@given(VALID_NAME.filter(lambda c: not c.startswith("}")))
@example("a}b")
@example("{{x}}")
def test_keys_of_a_channel_share_one_cluster_slot(channel: str) -> None:
    """Redis Cluster hashes all four names of a channel by the same tag (one slot).

    Excluded: a name starting with ``}`` makes the tag empty, so Redis hashes
    the whole key (reported to the lead; harmless on a single Redis).
    """
    ck = keys.channel_keys(channel)
    tags = {cluster_hash_tag(name) for name in (ck.meta, ck.history, ck.ids, ck.live)}
    assert len(tags) == 1


@given(OFFSET, EPOCH, st.binary(max_size=512))
@example(0, "e", b"")
@example(7, "abc", b"1:2:3:")
def test_live_payload_round_trips(offset: int, epoch: str, frame: bytes) -> None:
    """decode_live(encode_live(o, e, f)) == (o, e, f) for any frame bytes, colons included."""
    decoded = keys.decode_live(keys.encode_live(offset, epoch, frame))
    assert (decoded.offset, decoded.epoch, decoded.frame) == (offset, epoch, frame)


@given(st.binary(max_size=64))
@example(b"")
@example(b"12")
@example(b"x:y:z")
@example(b"1:\xff:z")
def test_decode_live_raises_only_value_error(payload: bytes) -> None:
    """Any foreign bytes on a live channel decode or raise ValueError, nothing else."""
    try:
        decoded = keys.decode_live(payload)
    except ValueError:
        return
    assert payload.endswith(decoded.frame)
    assert isinstance(decoded.offset, int)


@given(VALID_NAME, st.integers(1, 2**53), JSON)
def test_message_frame_is_valid_json_of_the_contract(
    channel: str, offset: int, data: object
) -> None:
    """The pre-built frame parses to the contract's message for any name and payload."""
    frame = keys.message_frame(channel, offset, orjson.dumps(data))
    assert orjson.loads(frame) == {
        "type": "message",
        "channel": channel,
        "offset": str(offset),
        "data": data,
    }


@given(OFFSET)
def test_stream_ids_round_trip(offset: int) -> None:
    """The offset is recovered from its stream entry id, as str and as bytes."""
    entry = keys.stream_id(offset)
    assert keys.offset_of_stream_id(entry) == offset
    assert keys.offset_of_stream_id(entry.encode()) == offset


@given(st.text(max_size=40))
def test_channel_of_live_refuses_foreign_names(name: str) -> None:
    """A pub/sub name outside the layout is refused, never mistaken for a channel."""
    if name.startswith("pgcast:{") and name.endswith("}:live") and len(name) >= 14:
        assert keys.live_channel(keys.channel_of_live(name)) == name
    else:
        with pytest.raises(ValueError, match="not a pgcast live channel"):
            keys.channel_of_live(name)
