"""pgoutput v1 decoding from hand-built payloads: every message type and the malformed ones."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from listener.pgoutput import (
    UNCHANGED,
    Begin,
    Column,
    Commit,
    DecodeError,
    Delete,
    Insert,
    LogicalMessage,
    Origin,
    Relation,
    Truncate,
    Type,
    Update,
    decode,
)


def cstr(text: str) -> bytes:
    return text.encode() + b"\0"


def tuple_data(*values: bytes | str | None) -> bytes:
    out = struct.pack("!h", len(values))
    for value in values:
        if value is None:
            out += b"n"
        elif value == "u":
            out += b"u"
        else:
            assert isinstance(value, bytes)
            out += b"t" + struct.pack("!i", len(value)) + value
    return out


def test_begin_and_commit() -> None:
    """Begin carries final lsn, commit time and xid; Commit flags, lsns and time."""
    assert decode(b"B" + struct.pack("!QqI", 0x16_0000_0028, 7, 4294967295)) == Begin(
        0x16_0000_0028, 7, 4294967295
    )
    assert decode(b"C" + struct.pack("!BQQq", 0, 10, 20, -5)) == Commit(0, 10, 20, -5)


def test_origin_and_type() -> None:
    """Origin names a replication origin; Type names a non-builtin type."""
    assert decode(b"O" + struct.pack("!Q", 99) + cstr("node1")) == Origin(99, "node1")
    assert decode(b"Y" + struct.pack("!I", 16500) + cstr("public") + cstr("mood")) == Type(
        16500, "public", "mood"
    )


def test_relation() -> None:
    """Relation: namespace, name, replica identity and every column's flags, type, typmod."""
    body = struct.pack("!I", 16384) + cstr("public") + cstr("Tablé") + b"f" + struct.pack("!h", 2)
    body += b"\x01" + cstr("id") + struct.pack("!Ii", 23, -1)
    body += b"\x00" + cstr("name") + struct.pack("!Ii", 1043, 14)
    relation = decode(b"R" + body)
    assert relation == Relation(
        16384,
        "public",
        "Tablé",
        "f",
        (Column(1, "id", 23, -1), Column(0, "name", 1043, 14)),
    )
    assert isinstance(relation, Relation)
    assert [c.is_key for c in relation.columns] == [True, False]


def test_insert_with_null_text_and_unchanged() -> None:
    """Tuple columns: 't' text bytes (UTF-8 as sent), 'n' NULL, 'u' unchanged TOAST."""
    payload = b"I" + struct.pack("!I", 5) + b"N" + tuple_data(b"1", None, "u", "é\n".encode(), b"")
    assert decode(payload) == Insert(5, (b"1", None, UNCHANGED, "é\n".encode(), b""))


@pytest.mark.parametrize("kind", ["K", "O"])
def test_update_with_old_tuple(kind: str) -> None:
    """An UPDATE may carry the old key ('K') or the whole old row ('O') before the new one."""
    payload = b"U" + struct.pack("!I", 5) + kind.encode() + tuple_data(b"1", None)
    payload += b"N" + tuple_data(b"2", "u")
    assert decode(payload) == Update(5, kind, (b"1", None), (b"2", UNCHANGED))


def test_update_without_old_tuple() -> None:
    """Without a key change under DEFAULT identity, only the new row comes."""
    payload = b"U" + struct.pack("!I", 5) + b"N" + tuple_data(b"x")
    assert decode(payload) == Update(5, "", None, (b"x",))


def test_delete() -> None:
    """A DELETE carries the old key or old row."""
    assert decode(b"D" + struct.pack("!I", 5) + b"K" + tuple_data(b"7", None)) == Delete(
        5, "K", (b"7", None)
    )
    with pytest.raises(DecodeError, match="delete without an old tuple"):
        decode(b"D" + struct.pack("!I", 5) + b"N" + tuple_data(b"7"))


def test_truncate() -> None:
    """Truncate lists its relations and the CASCADE / RESTART IDENTITY bits."""
    assert decode(b"T" + struct.pack("!iBII", 2, 3, 10, 11)) == Truncate(3, (10, 11))


def test_logical_message() -> None:
    """A logical message: transactional bit, lsn, prefix and raw content (even invalid UTF-8)."""
    content = b"chan\n\xff{}"
    payload = b"M\x01" + struct.pack("!Q", 42) + cstr("pgcast") + struct.pack("!i", len(content))
    assert decode(payload + content) == LogicalMessage(True, 42, "pgcast", content)
    payload = b"M\x00" + struct.pack("!Q", 1) + cstr("x") + struct.pack("!i", 0)
    assert decode(payload) == LogicalMessage(False, 1, "x", b"")


def test_large_message_from_memoryview() -> None:
    """A 1 MB content decodes from a memoryview of the frame."""
    content = b"c\n" + b"x" * 1_000_000
    payload = b"M\x01" + struct.pack("!Q", 1) + cstr("pgcast") + struct.pack("!i", len(content))
    message = decode(memoryview(payload + content))
    assert isinstance(message, LogicalMessage)
    assert message.content == content


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (b"", "empty"),
        (b"Z\x00", "unknown pgoutput message type 'Z'"),
        (b"S" + struct.pack("!IB", 1, 1), "unknown pgoutput message type 'S'"),  # v2 stream
        (b"B" + struct.pack("!Qq", 1, 2), "malformed"),
        (b"C" + struct.pack("!BQQq", 0, 1, 2, 3) + b"x", "1 extra bytes"),
        (b"I" + struct.pack("!I", 5) + b"X" + tuple_data(b"1"), "expected 'N'"),
        (
            b"I" + struct.pack("!I", 5) + b"N" + struct.pack("!hbi", 1, ord("t"), 9) + b"ab",
            "overruns",
        ),
        (b"I" + struct.pack("!I", 5) + b"N" + struct.pack("!hb", 1, ord("b")), "column kind 'b'"),
        (b"Y" + struct.pack("!I", 1) + b"no terminator", "malformed"),
        (b"R" + struct.pack("!I", 1) + cstr("p") + b"\xff\x00", "malformed"),
        (b"M\x01" + struct.pack("!Q", 1) + cstr("p") + struct.pack("!i", 5) + b"ab", "overruns"),
    ],
)
def test_malformed_payloads_raise_decode_error(payload: bytes, error: str) -> None:
    """Unknown types, truncated bodies and trailing bytes raise DecodeError, never IndexError."""
    with pytest.raises(DecodeError, match=error):
        decode(payload)


@given(st.binary(max_size=64))
def test_arbitrary_bytes_decode_or_raise_decode_error(payload: bytes) -> None:
    """Any byte string either decodes or raises DecodeError."""
    with contextlib.suppress(DecodeError):
        decode(payload)
