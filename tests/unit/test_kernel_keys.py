"""The Redis layout shared by listener and gateway."""

from __future__ import annotations

import orjson
import pytest

from pgcast import keys


def test_keys_of_a_channel_share_one_hash_tag() -> None:
    """Every key of a channel carries the same {channel} tag, so they share a cluster slot."""
    ck = keys.channel_keys("user:42")
    names = (ck.meta, ck.history, ck.ids, ck.live)
    assert all("{user:42}" in name for name in names)
    assert len(set(names)) == 4


@pytest.mark.parametrize("channel", ["a", "user:42", "we{ird}:ch}an", "ü"])
def test_live_channel_round_trip(channel: str) -> None:
    """The channel is recovered from its live pub/sub name, even with braces in it."""
    assert keys.channel_of_live(keys.live_channel(channel)) == channel


def test_channel_of_live_rejects_foreign_names() -> None:
    """A pub/sub name outside the layout is an error, not a guess."""
    with pytest.raises(ValueError, match="not a pgcast live channel"):
        keys.channel_of_live("other:channel")


def test_message_frame_is_the_contract_frame() -> None:
    """The pre-built frame parses to the contract's message object."""
    frame = keys.message_frame('q"uote', 17, b'{"id": 1}')
    assert orjson.loads(frame) == {
        "type": "message",
        "channel": 'q"uote',
        "offset": "17",
        "data": {"id": 1},
    }


def test_live_payload_round_trip() -> None:
    """Offset and epoch ride in front of the frame; the frame may contain colons."""
    frame = b'{"type":"message","channel":"a:b","offset":"3","data":{}}'
    payload = keys.encode_live(3, "abc123", frame)
    decoded = keys.decode_live(payload)
    assert (decoded.offset, decoded.epoch, decoded.frame) == (3, "abc123", frame)


def test_stream_ids_carry_the_offset() -> None:
    """The stream entry id's first part is the offset."""
    assert keys.offset_of_stream_id(keys.stream_id(99).encode()) == 99
