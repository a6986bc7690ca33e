"""Control rows without servers: what the listener accepts, and where a control runs."""

from __future__ import annotations

import orjson
import pytest

from listener.control import MAX_REASON_BYTES, InvalidControl, parse_control
from listener.publisher import RUN_MAX, Event, runs
from pgcast.keys import CONTROL_MARKER


def test_disconnect_and_unsubscribe_are_reencoded_compactly_with_their_fields_only() -> None:
    """The jsonb text becomes compact JSON of op, sub and the op's own field."""
    disconnect = parse_control('{"op": "disconnect", "sub": "42", "reason": "bye", "x": 1}')
    assert disconnect.op == "disconnect"
    assert disconnect.json == b'{"op":"disconnect","sub":"42","reason":"bye"}'
    unsubscribe = parse_control('{"op": "unsubscribe", "sub": "é", "pattern": "orders:*"}')
    assert unsubscribe.op == "unsubscribe"
    assert orjson.loads(unsubscribe.json) == {
        "op": "unsubscribe",
        "sub": "é",
        "pattern": "orders:*",
    }


def test_disconnect_without_reason_has_an_empty_one() -> None:
    """A hand-written disconnect without "reason" closes with an empty reason."""
    assert orjson.loads(parse_control('{"op": "disconnect", "sub": "1"}').json)["reason"] == ""


@pytest.mark.parametrize(
    ("data", "why"),
    [
        ("not json", "not JSON"),
        ("[1]", "not a JSON object"),
        ('"disconnect"', "not a JSON object"),
        ('{"sub": "1"}', 'unknown "op"'),
        ('{"op": "explode", "sub": "1"}', 'unknown "op"'),
        ('{"op": "disconnect"}', '"sub" must be a string'),
        ('{"op": "disconnect", "sub": 42}', '"sub" must be a string'),
        ('{"op": "disconnect", "sub": ""}', '"sub" must be 1..250'),
        ('{"op": "disconnect", "sub": "' + "x" * 251 + '"}', '"sub" must be 1..250'),
        ('{"op": "disconnect", "sub": "1", "reason": null}', '"reason" must be a string'),
        (
            '{"op": "disconnect", "sub": "1", "reason": "' + "é" * 61 + '"}',
            f'"reason" longer than {MAX_REASON_BYTES} bytes',
        ),
        ('{"op": "unsubscribe", "sub": "1"}', '"pattern" must be a string'),
        ('{"op": "unsubscribe", "sub": "1", "pattern": ""}', '"pattern": pattern must be'),
        ('{"op": "unsubscribe", "sub": "1", "pattern": "a[b"}', "control character or [ ]"),
        ('{"op": "unsubscribe", "sub": "1", "pattern": "a\\u0001"}', "control character"),
    ],
)
def test_invalid_controls_are_refused_with_a_reason(data: str, why: str) -> None:
    """Anything a gateway could not apply raises InvalidControl saying why."""
    with pytest.raises(InvalidControl) as raised:
        parse_control(data)
    assert why in str(raised.value)


def test_reason_of_exactly_120_bytes_is_accepted() -> None:
    """The limit is in UTF-8 bytes: 60 two-byte characters fit."""
    assert parse_control('{"op": "disconnect", "sub": "1", "reason": "' + "é" * 60 + '"}')


def _control(dedupe_id: int) -> Event:
    return Event(CONTROL_MARKER, b'{"op":"disconnect","sub":"1","reason":""}', dedupe_id)


def test_a_control_runs_after_the_events_before_it_and_before_those_after_it() -> None:
    """Runs are grouped by channel only between controls; each control runs alone in place."""
    events = [
        Event("a", b"1", 1),
        Event("b", b"2", 2),
        Event("a", b"3", 3),
        _control(4),
        Event("a", b"5", 5),
        Event("b", b"6", 6),
        _control(7),
        _control(8),
    ]
    assert runs(events) == [[0, 2], [1], [3], [4], [5], [6], [7]]


def test_without_controls_runs_are_unchanged() -> None:
    """A batch without controls is grouped over the whole batch, as before."""
    events = [Event("a", b"1", 1), Event("b", b"2", 2), Event("a", b"3", 3)]
    assert runs(events) == [[0, 2], [1]]


def test_runs_between_controls_keep_the_run_size_limit() -> None:
    """A long stretch of one channel before a control is still cut at RUN_MAX."""
    events = [Event("a", b"1", i) for i in range(RUN_MAX + 1)] + [_control(RUN_MAX + 1)]
    assert [len(run) for run in runs(events)] == [RUN_MAX, 1, 1]
    assert runs(events)[-1] == [RUN_MAX + 1]
