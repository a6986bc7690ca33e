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


LAYOUTS = [keys.Layout(), keys.Layout(64)]
LAYOUT_IDS = ["single", "cluster"]


@pytest.mark.parametrize("layout", LAYOUTS, ids=LAYOUT_IDS)
@given(VALID_NAME)
@example("a}:live")
@example("{")
@example("}")
@example("pgcast:{x}:live")
def test_live_channel_is_the_channel_keys_live(layout: keys.Layout, channel: str) -> None:
    """One name for a channel's live messages, whichever way it is asked for."""
    assert layout.live_channel(channel) == layout.channel_keys(channel).live
    assert layout.presence_keys(channel).live == layout.live_channel(channel)


@pytest.mark.parametrize("layout", LAYOUTS, ids=LAYOUT_IDS)
@given(VALID_NAME, VALID_NAME)
def test_distinct_channels_never_share_a_key(layout: keys.Layout, one: str, other: str) -> None:
    """The layout is injective: two channels never read or write each other's keys."""
    if one != other:
        a, b = layout.channel_keys(one), layout.channel_keys(other)
        assert not {a.meta, a.history, a.ids, a.live} & {b.meta, b.history, b.ids, b.live}


@pytest.mark.parametrize("layout", LAYOUTS, ids=LAYOUT_IDS)
@given(VALID_NAME)
def test_keys_of_a_channel_never_collide_with_global_keys(
    layout: keys.Layout, channel: str
) -> None:
    """No channel key equals a fence, a control key or a heartbeat channel."""
    ck = layout.channel_keys(channel)
    pk = layout.presence_keys(channel)
    globals_ = {*layout.fence_keys(), *layout.control_keys()}
    for name in (ck.meta, ck.history, ck.ids, ck.live, pk.members, pk.expiry, pk.seq):
        assert name not in globals_
        assert not name.startswith(keys.HEARTBEAT_PREFIX)


@given(VALID_NAME.filter(lambda c: not c.startswith("}")))
@example("a}b")
@example("{{x}}")
def test_keys_of_a_channel_share_one_cluster_slot(channel: str) -> None:
    """Redis Cluster hashes all four names of a channel by the same tag (one slot).

    Excluded: a name starting with ``}`` makes the tag empty, so Redis hashes
    the whole key (harmless on a single Redis, which is the only layout using it).
    """
    ck = keys.Layout().channel_keys(channel)
    tags = {cluster_hash_tag(name) for name in (ck.meta, ck.history, ck.ids, ck.live)}
    assert len(tags) == 1


@given(VALID_NAME)
@example("}")
@example("a}b{c}")
def test_a_partitioned_channel_shares_its_partitions_slot_and_fence(channel: str) -> None:
    """On a cluster every key of a channel, its presence and its fence copy share one slot,
    whatever braces the name holds: the publish and presence scripts touch one slot."""
    layout = keys.Layout(64)
    ck, pk = layout.channel_keys(channel), layout.presence_keys(channel)
    names = (ck.meta, ck.history, ck.ids, ck.live, pk.members, pk.expiry, pk.seq)
    slots = {keys.key_slot(name) for name in (*names, layout.fence_key(channel))}
    assert len(slots) == 1


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
