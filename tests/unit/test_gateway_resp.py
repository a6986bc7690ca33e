"""The incremental RESP2 parser: any split of the byte stream yields the same replies."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.resp import ProtocolError, RespError, RespParser, encode_command

STREAM = (
    b"+OK\r\n"
    b"*3\r\n$9\r\nsubscribe\r\n$21\r\npgcast:{user:42}:live\r\n:1\r\n"
    b'*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$13\r\n1:ep:{"a":\r\n}\r\n'
    b"-ERR wrong\r\n"
    b"$-1\r\n"
    b"*-1\r\n"
    b"*0\r\n"
)
EXPECTED = [
    b"OK",
    [b"subscribe", b"pgcast:{user:42}:live", 1],
    [b"message", b"c", b'1:ep:{"a":\r\n}'],
    RespError("ERR wrong"),
    None,
    None,
    [],
]


def test_whole_stream_parses() -> None:
    """Every RESP2 type, including a payload that itself contains CRLF."""
    assert RespParser().feed(STREAM) == EXPECTED


@pytest.mark.parametrize("split", range(1, len(STREAM)))
def test_any_two_way_split_gives_the_same_replies(split: int) -> None:
    """A reply cut anywhere by the socket is completed by the next read."""
    parser = RespParser()
    assert parser.feed(STREAM[:split]) + parser.feed(STREAM[split:]) == EXPECTED


def test_byte_by_byte() -> None:
    """Even one byte per read works."""
    parser = RespParser()
    out = []
    for i in range(len(STREAM)):
        out += parser.feed(STREAM[i : i + 1])
    assert out == EXPECTED


@given(st.lists(st.lists(st.binary(max_size=40), min_size=1, max_size=4), max_size=6), st.data())
def test_encoded_commands_parse_back(commands: list[list[bytes]], data: st.DataObject) -> None:
    """encode_command's output parses back to the same arrays, however it is chunked."""
    wire = b"".join(encode_command(*cmd) for cmd in commands)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=5)))
    parser = RespParser()
    out = []
    last = 0
    for cut in [*cuts, len(wire)]:
        out += parser.feed(wire[last:cut])
        last = cut
    assert out == commands


@pytest.mark.parametrize("garbage", [b"?what\r\n", b"$abc\r\n", b"$3\r\nabcXY", b":1x\r\n"])
def test_garbage_is_a_protocol_error(garbage: bytes) -> None:
    """Bytes that are not RESP2 raise, so the link is dropped instead of misread."""
    with pytest.raises(ProtocolError):
        RespParser().feed(garbage)
