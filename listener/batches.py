"""A publish batch's shape and its replies: events cut into runs, controls in their place.

A batch is cut into runs, one script call each: the events of one channel (at most
RUN_MAX), in order within a channel. A control (an event of channel CONTROL_MARKER,
listener/control.py) is a run of its own, placed by outbox id: after every event
before it, before every event after it; on a cluster the batch is sent in segments
around its controls. The replies of ``publish.lua`` and ``control.lua`` are parsed
into a result per event. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, NamedTuple

from pgcast.keys import CONTROL_MARKER

PublishStatus = Literal["published", "duplicate", "fenced"]

# Events per script call: bounds how long one call holds Redis (about 5 µs an event).
RUN_MAX = 100
_CONTROL_STATUS: dict[str, PublishStatus] = {"p": "published", "d": "duplicate", "fenced": "fenced"}


# NamedTuples, not frozen dataclasses: one of each is built per event, and a frozen
# dataclass' __init__ (object.__setattr__ per field) costs several times a tuple's.
class Event(NamedTuple):
    """One event to publish: ``data_json`` is already-encoded JSON (the jsonb text).

    ``dedupe_id``: Redis publishes an id once per channel (a retried batch, a successor's
    replay): the outbox row's id, or ``"<commit lsn>.<n>"`` (fixed width) for the n-th
    event of a transaction decoded from the WAL (listener/wal_capture.py, publish.lua).
    None: never de-duplicated.
    """

    channel: str
    data_json: bytes
    dedupe_id: int | str | None = None


class PublishResult(NamedTuple):
    status: PublishStatus
    offset: int | None
    epoch: str | None


class Mark(NamedTuple):
    """A channel's state in Redis after a publish: its epoch and top offset."""

    epoch: str
    top: int


class RunReply(NamedTuple):
    """One script call's reply: a result per event, the channel's mark after it, and
    the state Redis had gone back to ('' when it had not)."""

    results: list[PublishResult]
    mark: Mark | None
    behind: str


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def parse_result(reply: Sequence[Any], count: int) -> RunReply:
    """The script's ``{epoch, last offset, statuses, behind}`` reply for ``count`` events."""
    if len(reply) == 2 and _text(reply[1]) == "fenced":
        return RunReply([PublishResult("fenced", None, None)] * count, None, "")
    if len(reply) != 4 or not isinstance(reply[1], int):
        raise ValueError(f"unexpected publish script reply: {reply!r}")
    epoch, statuses = _text(reply[0]), _text(reply[2]) or ""
    if len(statuses) != count or statuses.strip("pd") or epoch is None:
        raise ValueError(f"unexpected publish script reply: {reply!r}")
    offset = reply[1] - statuses.count("p")  # the offset before the first published event
    results = []
    duplicate = PublishResult("duplicate", None, epoch)
    for status in statuses:
        if status == "p":
            offset += 1
            results.append(PublishResult("published", offset, epoch))
        else:
            results.append(duplicate)
    return RunReply(results, Mark(epoch, reply[1]), _text(reply[3]) or "")


def parse_control_result(reply: Any) -> RunReply:
    """``control.lua``'s reply: 'p', 'd' or 'fenced'."""
    status = _CONTROL_STATUS.get(_text(reply) or "")
    if status is None:
        raise ValueError(f"unexpected control script reply: {reply!r}")
    return RunReply([PublishResult(status, None, None)], None, "")


def _chunked(by_channel: dict[str, list[int]]) -> list[list[int]]:
    return [
        indexes[start : start + RUN_MAX]
        for indexes in by_channel.values()
        for start in range(0, len(indexes), RUN_MAX)
    ]


def runs(events: Sequence[Event]) -> list[list[int]]:
    """Indexes of ``events`` grouped by channel, at most RUN_MAX per run: in order within
    a channel (offsets follow it); across channels there is no order to keep, except
    around a control (see _runs_around_controls)."""
    by_channel: dict[str, list[int]] = {}
    for index, event in enumerate(events):
        by_channel.setdefault(event.channel, []).append(index)
    if CONTROL_MARKER in by_channel:  # one look-up per batch: events pay nothing for controls
        return _runs_around_controls(events)
    return _chunked(by_channel)


def _runs_around_controls(events: Sequence[Event]) -> list[list[int]]:
    """Each control a run of its own, in its place: the events before it, grouped by
    channel, run before it, and those after it after it (a gateway must deliver the
    events of a transaction that come before its control first)."""
    result: list[list[int]] = []
    by_channel: dict[str, list[int]] = {}
    for index, event in enumerate(events):
        if event.channel == CONTROL_MARKER:
            result += _chunked(by_channel)
            result.append([index])
            by_channel = {}
        else:
            by_channel.setdefault(event.channel, []).append(index)
    return result + _chunked(by_channel)


def _segments(batch: list[list[Event]]) -> list[tuple[int, int]]:
    """``batch`` cut around its controls: (start, stop) of the events before the first
    control, the control alone, the events up to the next, ... (no empty segment)."""
    segments: list[tuple[int, int]] = []
    start = 0
    for index, run in enumerate(batch):
        if run[0].channel == CONTROL_MARKER:
            if index > start:
                segments.append((start, index))
            segments.append((index, index + 1))
            start = index + 1
    if start < len(batch):
        segments.append((start, len(batch)))
    return segments
