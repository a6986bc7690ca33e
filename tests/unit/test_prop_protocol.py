"""Property tests of the frame parser: any input is a request or a documented error."""

from __future__ import annotations

import base64
import json

import orjson
from hypothesis import example, given
from hypothesis import strategies as st

from gateway.codes import ErrorCode
from gateway.protocol import (
    MAX_ID_LENGTH,
    Ping,
    Refresh,
    RequestError,
    Subscribe,
    Unsubscribe,
    decode_event_id,
    encode_event_id,
    error,
    parse_offset,
    parse_request,
    pong,
    subscribed,
    unsubscribed,
)
from pgcast.channels import MAX_CHANNEL_LENGTH, is_valid_channel

NAME_CHAR = st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="*?[]")
VALID_NAME = st.text(NAME_CHAR, min_size=1, max_size=MAX_CHANNEL_LENGTH)
SAFE_INT = st.integers(-(2**53) + 1, 2**53 - 1)
REQUEST_ID = st.none() | SAFE_INT | st.text(max_size=MAX_ID_LENGTH)
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(codec="utf-8"), max_size=300),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)
# Objects shaped like requests: the real field names, valid-looking and hostile values.
FIELD_VALUE = {
    "type": st.sampled_from(["subscribe", "unsubscribe", "refresh", "ping", "pub", ""]) | JSON,
    "channel": VALID_NAME | JSON,
    "since": st.integers(-5, 2**64).map(str) | st.integers(-5, 2**64) | JSON,
    "epoch": st.text(max_size=200) | JSON,
    "id": REQUEST_ID | JSON,
    "token": st.text(max_size=50) | JSON,
}
REQUEST_LIKE = st.fixed_dictionaries(
    {}, optional={name: strategy for name, strategy in FIELD_VALUE.items()}
)


def outcome(raw: str | bytes) -> object:
    """The parsed request, or the RequestError (returned so both can be inspected)."""
    try:
        return parse_request(raw)
    except RequestError as exc:
        return exc


def assert_documented_error(exc: RequestError) -> None:
    """A parse error is bad_request or unknown_type, and encodes to the contract's frame."""
    assert exc.code in (ErrorCode.BAD_REQUEST, ErrorCode.UNKNOWN_TYPE)
    frame = orjson.loads(error(exc.code, exc.message, exc.request_id))
    assert frame["type"] == "error"
    assert frame["code"] == exc.code.value
    assert isinstance(frame["message"], str)
    assert len(frame["message"]) < 200  # never echoes a 10 KB input back


@given(st.binary(max_size=300) | st.text(max_size=300))
@example(b"")
@example(b"\xff\xfe")
@example("[" * 2000)
@example('{"type":"subscribe","channel":"a"')  # truncated
@example('{"type":"subscribe","channel":"\\ud800"}')  # lone surrogate escape
def test_any_input_is_a_request_or_a_documented_error(raw: bytes | str) -> None:
    """Random bytes and text never raise anything but RequestError."""
    got = outcome(raw)
    if isinstance(got, RequestError):
        assert_documented_error(got)


@given(REQUEST_LIKE)
@example({"type": "subscribe", "channel": "a", "since": "1", "epoch": None})
@example({"type": "subscribe", "channel": "a*"})
@example({"type": "subscribe", "channel": "x" * 10240})
@example({"type": "subscribe", "channel": "a\x85b"})
@example({"type": "subscribe", "channel": "a", "since": "٣", "epoch": "e"})
@example({"type": "ping", "id": True})
@example({"type": "ping", "id": 2**53})
@example({"type": "subscribe", "channel": "a", "since": 2**64, "epoch": "e"})
def test_request_shaped_objects_parse_to_valid_requests(obj: dict[str, object]) -> None:
    """What parses is well-formed: valid channel, sane offset, short epoch and id."""
    # The stdlib encoder: a client may send integers past 64 bits, which orjson cannot write.
    got = outcome(json.dumps(obj, ensure_ascii=False).encode())
    if isinstance(got, RequestError):
        assert_documented_error(got)
        if got.request_id is not None:
            assert got.request_id == obj.get("id")
        return
    assert isinstance(got, Subscribe | Unsubscribe | Refresh | Ping)
    assert obj.get("id") == got.id
    if isinstance(got, Subscribe | Unsubscribe):
        assert is_valid_channel(got.channel)
    if isinstance(got, Subscribe) and got.since is not None:
        assert got.since >= 0
        assert isinstance(got.epoch, str)
        assert len(got.epoch) <= MAX_ID_LENGTH
    if isinstance(got, Refresh):
        assert got.token


@given(VALID_NAME, st.integers(0, 2**53), st.text("0123456789abcdef", max_size=32), REQUEST_ID)
def test_valid_requests_round_trip(channel: str, since: int, epoch: str, rid: object) -> None:
    """A well-formed subscribe/unsubscribe/ping is parsed back to exactly what was sent."""
    assert isinstance(rid, int | str | None)
    base = {} if rid is None else {"id": rid}
    resume = {"type": "subscribe", "channel": channel, "since": str(since), "epoch": epoch}
    assert parse_request(orjson.dumps(resume | base)) == Subscribe(channel, since, epoch, rid)
    assert parse_request(orjson.dumps({"type": "unsubscribe", "channel": channel} | base)) == (
        Unsubscribe(channel, rid)
    )
    assert parse_request(orjson.dumps({"type": "ping"} | base)) == Ping(rid)


@given(VALID_NAME, st.integers(0, 2**53), st.data())
def test_every_truncation_of_a_frame_is_handled(
    channel: str, since: int, data: st.DataObject
) -> None:
    """Cutting a valid frame anywhere (even inside a UTF-8 sequence) never crashes the parser."""
    frame = orjson.dumps(
        {"type": "subscribe", "channel": channel, "since": str(since), "epoch": "e"}
    )
    cut = data.draw(st.integers(0, len(frame) - 1))
    got = outcome(frame[:cut])
    assert isinstance(got, RequestError)
    assert got.code is ErrorCode.BAD_REQUEST


@given(JSON)
def test_parse_offset_accepts_only_non_negative_integers(value: object) -> None:
    """An offset is a non-negative int or a short ASCII decimal string; bools never."""
    got = parse_offset(value)
    if got is not None:
        assert isinstance(got, int)
        assert got >= 0
        assert not isinstance(value, bool)


@given(VALID_NAME, st.text(max_size=40), st.integers(0, 2**63), st.booleans(), REQUEST_ID)
def test_server_frames_are_valid_json(
    channel: str, epoch: str, offset: int, recovered: bool, rid: object
) -> None:
    """Every frame the gateway builds parses back, with the request id echoed."""
    assert isinstance(rid, int | str | None)
    sub = orjson.loads(
        subscribed(channel, epoch, offset, recovered=recovered, replayed=0, request_id=rid)
    )
    assert (sub["channel"], sub["offset"], sub["recovered"]) == (channel, str(offset), recovered)
    assert sub.get("id") == rid
    assert orjson.loads(unsubscribed(channel, request_id=rid)).get("id") == rid
    assert orjson.loads(pong(rid)) == ({"type": "pong"} | ({} if rid is None else {"id": rid}))


@given(
    st.text(max_size=200)
    | st.binary(max_size=150).map(lambda b: base64.urlsafe_b64encode(b).decode())
)
@example("e30")  # {}
@example(base64.urlsafe_b64encode(b'{"a":"e:1","b":5,"c":"::"}').decode())
def test_any_last_event_id_decodes_to_positions_or_nothing(text: str) -> None:
    """A hostile Last-Event-ID never raises: it yields valid-looking positions or none."""
    positions = decode_event_id(text)
    for epoch, offset in positions.values():
        assert epoch
        assert offset >= 0


@given(
    st.dictionaries(
        VALID_NAME, st.tuples(st.text(min_size=1, max_size=40), st.integers(0, 2**53)), max_size=5
    )
)
def test_event_ids_round_trip(positions: dict[str, tuple[str, int]]) -> None:
    """decode_event_id(encode_event_id(p)) == p, epochs with colons included."""
    assert decode_event_id(encode_event_id(positions)) == positions
