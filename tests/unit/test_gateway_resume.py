"""Resume decisions: exact coverage of the gap, relative to the hub's last dispatched offset."""

from __future__ import annotations

from gateway.message import Message, Resync
from gateway.resume import Snapshot, plan_subscribe


def _entries(first: int, last: int) -> tuple[tuple[int, bytes], ...]:
    return tuple((o, b'{"o":%d}' % o) for o in range(first, last + 1))


def _msg(offset: int, epoch: str = "E") -> Message:
    return Message("c", offset, epoch, b'{"o":%d}' % offset)


def test_snapshot_continues_only_without_holes() -> None:
    """continues(): every offset after the point up to the top is present."""
    assert Snapshot("E", 10, _entries(6, 10)).continues(5)
    assert Snapshot("E", 5).continues(5)
    assert not Snapshot("E", 10, _entries(7, 10)).continues(5)  # trimmed
    assert not Snapshot("E", 10, _entries(6, 9)).continues(5)  # short
    assert not Snapshot("E", 3).continues(5)  # behind the point


def plan(**kw: object) -> object:
    args: dict[str, object] = {
        "since": None,
        "client_epoch": None,
        "hub_epoch": "E",
        "hub_offset": 10,
        "snapshot": None,
        "backlog": [],
    }
    args.update(kw)
    return plan_subscribe("c", **args)  # type: ignore[arg-type]


def test_fresh_subscribe_reports_latest_and_replays_nothing() -> None:
    """No since: the latest offset, recovered false, nothing replayed."""
    result = plan()
    assert (result.epoch, result.offset, result.recovered, result.replay) == ("E", 10, False, ())  # type: ignore[attr-defined]


def test_resume_replays_exactly_the_gap_from_history_and_backlog() -> None:
    """History up to where it was read, the backlog after: together exactly (since, hub]."""
    snap = Snapshot("E", 8, _entries(4, 8))
    result = plan(
        since=3, client_epoch="E", hub_offset=10, snapshot=snap, backlog=[_msg(9), _msg(10)]
    )
    assert result.recovered  # type: ignore[attr-defined]
    assert [m.offset for m in result.replay] == [4, 5, 6, 7, 8, 9, 10]  # type: ignore[attr-defined]


def test_history_read_ahead_of_the_hub_is_cut_at_the_hub() -> None:
    """Entries the hub has not dispatched yet will come live: they are not replayed."""
    snap = Snapshot("E", 15, _entries(4, 15))
    result = plan(since=3, client_epoch="E", hub_offset=10, snapshot=snap)
    assert [m.offset for m in result.replay] == list(range(4, 11))  # type: ignore[attr-defined]
    assert result.offset == 10  # type: ignore[attr-defined]


def test_caught_up_client_is_recovered_with_nothing_to_replay() -> None:
    result = plan(since=10, client_epoch="E")
    assert result.recovered
    assert result.replay == ()


def test_wrong_epoch_trimmed_history_resync_or_future_offset_is_not_recovered() -> None:
    """Every way history cannot cover the gap answers recovered:false with the hub's position."""
    trimmed = Snapshot("E", 10, _entries(6, 10))
    cases = [
        plan(since=3, client_epoch="OTHER", snapshot=Snapshot("E", 10, _entries(4, 10))),
        plan(since=3, client_epoch="E", snapshot=trimmed),
        plan(since=3, client_epoch="E", snapshot=None),
        plan(since=3, client_epoch="E", snapshot=Snapshot("F", 10, _entries(4, 10))),
        plan(since=12, client_epoch="E"),
        plan(since=10, client_epoch="E", backlog=[Resync("F", 0)]),
    ]
    for result in cases:
        assert not result.recovered  # type: ignore[attr-defined]
        assert result.replay == ()  # type: ignore[attr-defined]
        assert (result.epoch, result.offset) == ("E", 10)  # type: ignore[attr-defined]
