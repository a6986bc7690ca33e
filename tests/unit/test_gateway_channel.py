"""A channel dispatches each offset once, in order, and notices gaps and new epochs."""

from __future__ import annotations

import asyncio

from gateway.channel import Backlog, Channel
from gateway.message import Message
from gateway.resume import Snapshot


class Fake:
    def __init__(self) -> None:
        self.got: list[int] = []
        self.resyncs: list[tuple[str, int]] = []

    def deliver(self, message: Message) -> None:
        self.got.append(message.offset)

    def resync(self, channel: str, epoch: str, offset: int) -> None:
        self.resyncs.append((epoch, offset))


def _msg(offset: int, epoch: str = "E") -> Message:
    return Message("c", offset, epoch, b"{}")


def _live(top: int = 0, epoch: str = "E") -> tuple[Channel, Fake]:
    channel = Channel("c", b"live:c", backlog_limit=1 << 20)
    member = Fake()
    channel.add_pending(member)
    assert not channel.finish_sync(Snapshot(epoch, top))
    channel.activate(member)
    return channel, member


def test_messages_before_the_first_sync_wait_and_duplicates_drop() -> None:
    """Live messages held while syncing; those the snapshot already counts are dropped."""
    channel = Channel("c", b"live:c", backlog_limit=1 << 20)
    member = Fake()
    channel.add_pending(member)
    for offset in (4, 5, 6):
        assert not channel.on_live(_msg(offset))
    assert not channel.ready
    assert not channel.finish_sync(Snapshot("E", 5))
    assert channel.ready
    backlog = channel.activate(member)
    assert [e.offset for e in backlog.entries if isinstance(e, Message)] == [6]
    assert channel.offset == 6


def test_in_order_delivery_and_duplicate_drop() -> None:
    channel, member = _live()
    for offset in (1, 2, 2, 3, 1):
        assert not channel.on_live(_msg(offset))
    assert member.got == [1, 2, 3]


def test_gap_holds_live_messages_until_history_fills_it() -> None:
    """A jump in offsets asks for a history read; the read fills the hole, then the rest flows."""
    channel, member = _live()
    channel.on_live(_msg(1))
    assert channel.on_live(_msg(4))  # 2 and 3 missing
    assert not channel.on_live(_msg(5))  # held
    assert member.got == [1]
    assert not channel.finish_sync(Snapshot("E", 4, ((2, b"{}"), (3, b"{}"), (4, b"{}"))))
    assert member.got == [1, 2, 3, 4, 5]
    assert channel.ready


def test_reconnect_backfill_and_trimmed_history() -> None:
    """After a reconnect: history covers the hole (delivered) or not (resync, recovered:false)."""
    channel, member = _live()
    channel.on_live(_msg(1))
    channel.begin_sync()
    assert not channel.finish_sync(Snapshot("E", 3, ((2, b"{}"), (3, b"{}"))))
    assert member.got == [1, 2, 3]
    channel.begin_sync()
    assert not channel.finish_sync(Snapshot("E", 9, ((8, b"{}"), (9, b"{}"))))  # 4..7 trimmed
    assert member.resyncs == [("E", 9)]
    assert member.got == [1, 2, 3]
    channel.on_live(_msg(10))
    assert member.got == [1, 2, 3, 10]


def test_new_epoch_live_or_after_reconnect_resyncs() -> None:
    """A new epoch (Redis lost history) tells live members once, then delivery goes on."""
    channel, member = _live(top=5)
    channel.on_live(_msg(1, "NEW"))
    assert member.resyncs == [("NEW", 0)]
    assert member.got == [1]
    channel.begin_sync()
    channel.finish_sync(Snapshot("NEWER", 0))
    assert member.resyncs == [("NEW", 0), ("NEWER", 0)]


def test_pending_members_collect_a_bounded_backlog_with_resync_marks() -> None:
    """Pending members get the dispatched stream, a resync mark, and overflow past the bound."""
    channel, _ = _live()
    late = Fake()
    backlog = channel.add_pending(late)
    channel.on_live(_msg(1))
    channel.on_live(_msg(1, "F"))
    seen = [(type(e).__name__, e.epoch, e.offset) for e in backlog.entries]
    assert seen == [("Message", "E", 1), ("Resync", "F", 0), ("Message", "F", 1)]
    small = Backlog(limit=10)
    small.add(_msg(1))
    small.add(Message("c", 2, "E", b"x" * 20))
    assert small.overflowed
    assert small.entries == []


def test_removed_members_stop_receiving_and_empty_reports() -> None:
    channel, member = _live()
    channel.remove(member)
    channel.on_live(_msg(1))
    assert member.got == []
    assert channel.empty


async def test_wait_offset_wakes_when_dispatched() -> None:
    """A client that resumed ahead of this hub waits until the hub reaches its offset."""
    channel, _ = _live()
    waiter = asyncio.ensure_future(channel.wait_offset(2))
    await asyncio.sleep(0)
    channel.on_live(_msg(1))
    await asyncio.sleep(0)
    assert not waiter.done()
    channel.on_live(_msg(2))
    await asyncio.wait_for(waiter, 1)


async def test_wait_ready_returns_once_history_is_applied() -> None:
    channel = Channel("c", b"live:c", backlog_limit=1 << 20)
    waiter = asyncio.ensure_future(channel.wait_ready())
    await asyncio.sleep(0)
    assert not waiter.done()
    channel.finish_sync(Snapshot("E", 0))
    await asyncio.wait_for(waiter, 1)
    channel.begin_sync()  # a reconnect: not ready again until the next read
    assert not channel.ready


def test_redis_behind_what_was_dispatched_holds_the_position_without_a_false_alarm() -> None:
    """After a failover to a replica that lacks offsets 4-5, the channel keeps offset 5: the
    listener's republish of the same events drops as duplicates, then 6 flows; a new epoch
    from the listener (Redis behind its watermark) still tells the client."""
    channel, member = _live()
    for offset in (1, 2, 3, 4, 5):
        channel.on_live(_msg(offset))
    channel.begin_sync()
    assert not channel.finish_sync(Snapshot("E", 3))
    assert (channel.epoch, channel.offset) == ("E", 5)
    assert member.resyncs == []
    for offset in (4, 5, 6):
        assert not channel.on_live(_msg(offset))
    assert member.got == [1, 2, 3, 4, 5, 6]
    channel.on_live(_msg(1, epoch="F"))
    assert member.resyncs == [("F", 0)]
    assert member.got[-1] == 1


async def test_a_resume_into_offsets_redis_lacks_waits_until_they_are_published_again() -> None:
    """While Redis lacks offsets 4-5 (a failover), a resume needing them waits; the
    leader's republish of 4-5 (dropped as duplicates) releases it, then history has them."""
    channel, member = _live()
    for offset in (1, 2, 3, 4, 5):
        channel.on_live(_msg(offset))
    channel.begin_sync()
    channel.finish_sync(Snapshot("E", 3))
    assert channel.redis_behind
    waiting = asyncio.ensure_future(channel.wait_offset(channel.offset))
    await asyncio.sleep(0)  # let the waiter register
    channel.on_live(_msg(4))
    await asyncio.sleep(0)  # one loop turn: a wake-up would have run by now
    assert not waiting.done()
    channel.on_live(_msg(5))
    await asyncio.wait_for(waiting, 1)
    assert not channel.redis_behind
    assert member.got == [1, 2, 3, 4, 5]
    channel.begin_sync()  # a later reconnect finds Redis whole again
    channel.finish_sync(Snapshot("E", 5, ((4, b"{}"), (5, b"{}"))))
    assert not channel.redis_behind


def test_a_reset_notice_resyncs_members_at_the_new_empty_epoch_once() -> None:
    """'!r<epoch>' (the listener replaced a lost replication slot): members are told at
    once, and the new epoch's first message continues from it."""
    channel, member = _live()
    assert not channel.on_live(_msg(1))
    channel.on_reset("F")
    channel.on_reset("F")  # a repeated notice changes nothing
    assert member.resyncs == [("F", 0)]
    assert not channel.on_live(_msg(1, "F"))
    assert member.got == [1, 1]
    assert member.resyncs == [("F", 0)]


def test_a_reset_notice_while_syncing_waits_for_the_history_read() -> None:
    channel = Channel("c", b"live:c", backlog_limit=1 << 20)
    channel.on_reset("F")
    assert not channel.ready
    assert not channel.finish_sync(Snapshot("F", 0))
    assert (channel.epoch, channel.offset) == ("F", 0)
