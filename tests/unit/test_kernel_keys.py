"""The Redis layout shared by listener and gateway."""

from __future__ import annotations

import orjson

from pgcast import keys


def test_keys_of_a_channel_share_one_hash_tag() -> None:
    """Every key of a channel carries the same {channel} tag, so they share a cluster slot."""
    ck = keys.Layout().channel_keys("user:42")
    names = (ck.meta, ck.history, ck.ids, ck.live)
    assert all("{user:42}" in name for name in names)
    assert len(set(names)) == 4


def test_one_redis_keeps_the_names_it_always_had() -> None:
    """Layout() is the single-Redis (and Sentinel) layout of every earlier version."""
    layout = keys.Layout()
    ck = layout.channel_keys("a")
    assert (ck.meta, ck.history, ck.ids, ck.live) == (
        "pgcast:{a}:meta",
        "pgcast:{a}:hist",
        "pgcast:{a}:ids",
        "pgcast:{a}:live",
    )
    assert layout.fence_keys() == ("pgcast:fence",)
    assert layout.control_keys() == ("pgcast:control", "pgcast:control:ids", "pgcast:control:live")
    assert layout.heartbeat_channel("g1") == "pgcast:hb:g1"
    assert layout.publish_command == "PUBLISH"


def test_partitions_spread_evenly_over_the_slots() -> None:
    """Partition i's tag hashes into the i-th of N equal slot ranges."""
    layout = keys.Layout(64)
    width = keys.CLUSTER_SLOTS / 64
    slots = [keys.key_slot("{" + layout.partition_tag(i) + "}") for i in range(64)]
    assert [int(slot // width) for slot in slots] == list(range(64))
    assert layout.publish_command == "SPUBLISH"


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
