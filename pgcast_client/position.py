"""A channel's position: where to resume (epoch + offset) and what was already delivered.

The gateway numbers each channel's messages with increasing offsets; resuming sends
``since`` + ``epoch``. ``accept`` refuses an offset at or below the last delivered one,
so a message reaches the application at most once even if a gateway repeats it.
Offsets are opaque strings: decimal ones compare as numbers, others only for equality.
"""

from __future__ import annotations


def offset_key(offset: str) -> int | None:
    """The number of a decimal offset (pgcast's own), or None for an opaque one."""
    return int(offset) if offset.isascii() and offset.isdecimal() else None


class Position:
    """Resume point and de-duplication state of one subscribed channel (pure, no I/O)."""

    __slots__ = ("_delivered", "_delivered_key", "epoch", "offset")

    def __init__(self, epoch: str | None = None, offset: str | None = None) -> None:
        self.epoch = epoch
        self.offset = offset
        self._delivered: str | None = None
        self._delivered_key: int | None = None

    def resume_fields(self) -> dict[str, str]:
        """``since``/``epoch`` for a subscribe request, or nothing to resume from."""
        if self.epoch is None or self.offset is None:
            return {}
        return {"since": self.offset, "epoch": self.epoch}

    def subscribed(
        self, epoch: str, offset: str, *, recovered: bool, resumed: bool, active: bool
    ) -> bool:
        """Apply a ``subscribed`` frame; True when continuity was lost (refetch state).

        ``resumed``: the request carried ``since``; ``active``: the frame arrived
        unsolicited on a live subscription (the gateway lost continuity).
        """
        if recovered and resumed and not active and epoch == self.epoch:
            return False  # the missed messages follow; they advance the position
        lost = resumed or active or (self.epoch is not None and epoch != self.epoch)
        self.epoch = epoch
        self.offset = offset
        self._delivered = None
        self._delivered_key = None
        return lost

    def accept(self, offset: str) -> bool:
        """Whether to deliver the message at ``offset``; advances the position if so."""
        key = offset_key(offset)
        if self._delivered is not None:
            if key is not None and self._delivered_key is not None:
                if key <= self._delivered_key:
                    return False
            elif offset == self._delivered:
                return False
        self._delivered = offset
        self._delivered_key = key
        current = self.offset
        if current is None or key is None or (k := offset_key(current)) is None or key > k:
            self.offset = offset
        return True
