"""The client protocol's pure parsing and encoding, and the SSE event id codec."""

from __future__ import annotations

import orjson
import pytest

from gateway import protocol
from gateway.codes import CLOSE_ADVICE, ERROR_ADVICE, CloseCode, ErrorCode
from gateway.protocol import Ping, Refresh, RequestError, Subscribe, Unsubscribe, parse_request


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('{"type":"subscribe","channel":"user:42"}', Subscribe("user:42")),
        (
            '{"type":"subscribe","channel":"a","since":"17","epoch":"ab","id":3}',
            Subscribe("a", 17, "ab", 3),
        ),
        ('{"type":"subscribe","channel":"a","since":5,"epoch":"e"}', Subscribe("a", 5, "e")),
        ('{"type":"unsubscribe","channel":"a","id":"x"}', Unsubscribe("a", "x")),
        ('{"type":"refresh","token":"t.t.t"}', Refresh("t.t.t")),
        (b'{"type":"ping","id":1}', Ping(1)),
    ],
)
def test_valid_requests_parse(raw: str | bytes, expected: protocol.Request) -> None:
    """Every request type of the contract parses, with its optional id."""
    assert parse_request(raw) == expected


@pytest.mark.parametrize(
    ("raw", "code", "request_id"),
    [
        ("not json", ErrorCode.BAD_REQUEST, None),
        ("[1,2]", ErrorCode.BAD_REQUEST, None),
        ('{"channel":"a"}', ErrorCode.BAD_REQUEST, None),
        ('{"type":7,"id":"q"}', ErrorCode.BAD_REQUEST, "q"),
        ('{"type":"publsh","id":9}', ErrorCode.UNKNOWN_TYPE, 9),
        ('{"type":"publish","id":9}', ErrorCode.BAD_REQUEST, 9),
        ('{"type":"publish","channel":"a"}', ErrorCode.BAD_REQUEST, None),
        ('{"type":"track","channel":"a","meta":[1]}', ErrorCode.BAD_REQUEST, None),
        ('{"type":"subscribe","channel":"a","presence":1}', ErrorCode.BAD_REQUEST, None),
        ('{"type":"subscribe","id":1}', ErrorCode.BAD_REQUEST, 1),
        ('{"type":"subscribe","channel":""}', ErrorCode.BAD_REQUEST, None),
        ('{"type":"subscribe","channel":"a*"}', ErrorCode.BAD_REQUEST, None),
        ('{"type":"subscribe","channel":"a\\u0000b"}', ErrorCode.BAD_REQUEST, None),
        ('{"type":"subscribe","channel":"a","since":"3"}', ErrorCode.BAD_REQUEST, None),
        ('{"type":"subscribe","channel":"a","epoch":"e"}', ErrorCode.BAD_REQUEST, None),
        (
            '{"type":"subscribe","channel":"a","since":"-1","epoch":"e"}',
            ErrorCode.BAD_REQUEST,
            None,
        ),
        ('{"type":"subscribe","channel":"a","since":"x","epoch":"e"}', ErrorCode.BAD_REQUEST, None),
        (
            '{"type":"subscribe","channel":"a","since":true,"epoch":"e"}',
            ErrorCode.BAD_REQUEST,
            None,
        ),
        ('{"type":"subscribe","channel":"a","since":"1","epoch":5}', ErrorCode.BAD_REQUEST, None),
        ('{"type":"refresh"}', ErrorCode.BAD_REQUEST, None),
        ('{"type":"ping","id":{"a":1}}', ErrorCode.BAD_REQUEST, None),
        ('{"type":"ping","id":true}', ErrorCode.BAD_REQUEST, None),
        ('{"type":"ping","id":9007199254740993}', ErrorCode.BAD_REQUEST, None),
    ],
)
def test_malformed_requests_name_their_code(
    raw: str, code: ErrorCode, request_id: protocol.RequestId
) -> None:
    """A malformed request is a RequestError with the contract's code and the id if readable."""
    with pytest.raises(RequestError) as info:
        parse_request(raw)
    assert info.value.code is code
    assert info.value.request_id == request_id


def test_channel_longer_than_255_is_refused() -> None:
    """The 255-character bound of channel names holds at the parser."""
    parse_request(orjson.dumps({"type": "unsubscribe", "channel": "c" * 255}))
    with pytest.raises(RequestError):
        parse_request(orjson.dumps({"type": "unsubscribe", "channel": "c" * 256}))


def test_server_frames_are_compact_json_with_the_contract_fields() -> None:
    """subscribed / unsubscribed / pong / error frames carry exactly the contract's fields."""
    frame = orjson.loads(
        protocol.subscribed("c", "ep", 12, recovered=True, replayed=3, request_id="r")
    )
    assert frame == {
        "type": "subscribed",
        "channel": "c",
        "epoch": "ep",
        "offset": "12",
        "recovered": True,
        "replayed": 3,
        "id": "r",
    }
    assert orjson.loads(protocol.unsubscribed("c")) == {"type": "unsubscribed", "channel": "c"}
    assert orjson.loads(protocol.pong(4)) == {"type": "pong", "id": 4}
    assert orjson.loads(protocol.error(ErrorCode.FORBIDDEN, "no")) == {
        "type": "error",
        "code": "forbidden",
        "message": "no",
    }


def test_event_id_round_trips_positions_of_several_channels() -> None:
    """An SSE id carries every channel's (epoch, offset), whatever the channel's characters."""
    positions = {"user:42": ("abc", 7), 'odd ,;="name': ("e2", 0), "ü": ("x", 10**12)}
    text = protocol.encode_event_id(positions)
    assert "\n" not in text
    assert "\r" not in text
    assert protocol.decode_event_id(text) == positions


@pytest.mark.parametrize(
    "text", [None, "", "!!!", "bm90IGpzb24", "WzFd", "eyJhIjoxfQ", "x" * 20000]
)
def test_unreadable_event_ids_mean_no_position(text: str | None) -> None:
    """A garbled Last-Event-ID is no position (a fresh subscribe), never an error."""
    assert protocol.decode_event_id(text) == {}


def test_every_code_has_advice() -> None:
    """The code table gives the client advice for every close and error code."""
    assert set(CLOSE_ADVICE) == set(CloseCode)
    assert set(ERROR_ADVICE) == set(ErrorCode)
    assert all(code.advice for code in CloseCode)
    assert all(code.advice for code in ErrorCode)
