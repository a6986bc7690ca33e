"""The publisher on a Redis Cluster layout: per-partition fence and names, SPUBLISH, and
controls cut the batch into segments so they keep their place (no servers: a fake pipe)."""

from __future__ import annotations

from typing import Any

from listener.publisher import CONTROL_SHA, PUBLISH_SHA, Event, Publisher, _segments
from pgcast.keys import CONTROL_MARKER, FENCE_KEY, Layout, key_slot


class FakePipe:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def evalsha(self, sha: str, numkeys: int, *args: Any) -> None:
        self.calls.append((sha, numkeys, *args))


def _runs(*channels: str) -> list[list[Event]]:
    return [[Event(channel, b"{}", index + 1)] for index, channel in enumerate(channels)]


def test_segments_put_each_control_alone_between_the_events_around_it() -> None:
    """Events before a control, the control, the events after it: one segment each."""
    assert _segments(_runs("a", "b")) == [(0, 2)]
    assert _segments(_runs("a", CONTROL_MARKER, "b", "c")) == [(0, 1), (1, 2), (2, 4)]
    assert _segments(_runs(CONTROL_MARKER, CONTROL_MARKER)) == [(0, 1), (1, 2)]
    assert _segments(_runs("a", CONTROL_MARKER)) == [(0, 1), (1, 2)]


def _queued(layout: Layout) -> list[tuple[Any, ...]]:
    publisher = Publisher(object(), layout=layout)  # type: ignore[arg-type]
    pipe = FakePipe()
    batch = _runs("orders:1", CONTROL_MARKER)
    publisher._queue(pipe, 7, batch, [None, None], [False, False], keep=1000)
    return pipe.calls


def test_one_redis_keeps_the_classic_names_and_publish() -> None:
    """Layout(): the global fence, pgcast:{c}:... names, PUBLISH, the classic control keys."""
    event, control = _queued(Layout())
    assert event[:2] == (PUBLISH_SHA, 4)
    assert event[2:6] == (
        "pgcast:{orders:1}:meta",
        "pgcast:{orders:1}:hist",
        "pgcast:{orders:1}:ids",
        FENCE_KEY,
    )
    assert event[-1] == "PUBLISH"
    assert control[:5] == (CONTROL_SHA, 3, FENCE_KEY, "pgcast:control", "pgcast:control:ids")
    assert control[-2:] == ("pgcast:control:live", "PUBLISH")


def test_cluster_run_touches_one_slot_and_spublishes() -> None:
    """Layout(64): the run's keys, its fence copy and its live channel share one slot;
    the control's keys and fence copy share the control slot; both SPUBLISH."""
    layout = Layout(64)
    event, control = _queued(layout)
    keys = event[2:6]
    live = event[6 + 5]  # ARGV[6]
    assert live == layout.live_channel("orders:1")
    assert keys[3] == layout.fence_key("orders:1")
    assert len({key_slot(name) for name in (*keys, live)}) == 1
    assert event[-1] == "SPUBLISH"
    stream, ids, control_live = layout.control_keys()
    assert control[2:5] == (layout.control_fence_key(), stream, ids)
    assert control[-2:] == (control_live, "SPUBLISH")
    assert len({key_slot(name) for name in (*control[2:5], control_live)}) == 1
