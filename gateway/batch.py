"""Coalesced socket writes: what one Redis read brings for a socket leaves in one write.

While the pub/sub link hands a read's messages to the hub, :class:`WriteBatch` is
active and WebSocket transports only append the pre-built frames; at the end of
the read each touched transport writes its frames in one ``transport.write``
(one syscall per socket per read instead of one per message). Outside a read,
writes go straight out, so ordering is always the order of the calls.
"""

from __future__ import annotations

from typing import Protocol


class Flushable(Protocol):
    def flush(self) -> None: ...


class WriteBatch:
    __slots__ = ("active", "dirty")

    def __init__(self) -> None:
        self.active = False
        self.dirty: list[Flushable] = []

    def begin(self) -> None:
        self.active = True

    def end(self) -> None:
        """Flush every transport written to since :meth:`begin`, in first-touch order."""
        self.active = False
        dirty, self.dirty = self.dirty, []
        for transport in dirty:
            transport.flush()
