"""Resume decisions as pure functions: does history cover a gap, and what to replay.

Offsets are contiguous per channel (pgcast.keys), so "covered" has an exact
answer: every offset after the client's position up to the hub's latest is
present, in the same epoch. Everything is relative to the hub's last
*dispatched* offset, which is what makes replay + live gapless and duplicate-free.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gateway.message import Entry, Message, Resync


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A channel's history as read atomically: epoch, top offset, entries after a point."""

    epoch: str
    top: int
    entries: tuple[tuple[int, bytes], ...] = ()  # (offset, frame), ascending

    def continues(self, after: int) -> bool:
        """Whether the entries hold every offset from ``after + 1`` to ``top``."""
        if self.top < after:
            return False
        expected = after + 1
        for offset, _ in self.entries:
            if offset != expected:
                return False
            expected += 1
        return expected == self.top + 1

    def messages(self, channel: str, after: int, upto: int | None = None) -> list[Message]:
        """Entries in ``(after, upto]`` as messages (``upto`` defaults to the top)."""
        limit = self.top if upto is None else upto
        return [
            Message(channel, offset, self.epoch, frame)
            for offset, frame in self.entries
            if after < offset <= limit
        ]


@dataclass(frozen=True, slots=True)
class Plan:
    """What a subscriber is told and sent before it goes live."""

    epoch: str
    offset: int
    recovered: bool
    replay: tuple[Message, ...] = ()
    # The subscriber fell more than its send-queue bound behind while pending: it is
    # a slow consumer (close 4008, the client resumes), not a lost history.
    overflowed: bool = False


def plan_subscribe(
    channel: str,
    *,
    since: int | None,
    client_epoch: str | None,
    hub_epoch: str,
    hub_offset: int,
    snapshot: Snapshot | None,
    backlog: Sequence[Entry],
) -> Plan:
    """Decide a subscribe: ``backlog`` is what the hub dispatched while it was pending.

    ``hub_offset`` is the last offset the hub dispatched: the subscriber goes live
    right after it, so the replay must be exactly ``(since, hub_offset]``.
    """
    lost = Plan(hub_epoch, hub_offset, recovered=False)
    if since is None or client_epoch != hub_epoch:
        return lost
    if any(isinstance(entry, Resync) for entry in backlog):
        return lost  # the channel's history changed under the subscribe
    if since == hub_offset:
        return Plan(hub_epoch, hub_offset, recovered=True)
    if since > hub_offset:
        return lost  # a position this channel never reached: not a real resume point
    replay = _gap(channel, since, hub_epoch, hub_offset, snapshot, backlog)
    if replay is None:
        return lost
    return Plan(hub_epoch, hub_offset, recovered=True, replay=replay)


def _gap(
    channel: str,
    since: int,
    epoch: str,
    upto: int,
    snapshot: Snapshot | None,
    backlog: Sequence[Entry],
) -> tuple[Message, ...] | None:
    """Every message in ``(since, upto]`` of ``epoch`` from history and backlog, or None."""
    found: dict[int, Message] = {}
    if snapshot is not None and snapshot.epoch == epoch:
        for message in snapshot.messages(channel, since, upto):
            found[message.offset] = message
    for entry in backlog:
        if isinstance(entry, Message) and entry.epoch == epoch and since < entry.offset <= upto:
            found.setdefault(entry.offset, entry)
    if len(found) != upto - since:
        return None
    return tuple(found[offset] for offset in range(since + 1, upto + 1))
