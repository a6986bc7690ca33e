"""What flows from the hub to sessions: a message (built once, shared) or a resync mark.

A :class:`Message` carries the publisher's ready ``message`` frame and the same
frame with its WebSocket header, built once per message and written as is to
every WebSocket of the channel; the SSE form is built on first use, also once.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.wire import text_frame
from pgcast.keys import decode_live


class Message:
    """One channel message at ``offset`` in history ``epoch``; immutable by convention."""

    __slots__ = ("_sse", "channel", "epoch", "frame", "offset", "wire")

    def __init__(self, channel: str, offset: int, epoch: str, frame: bytes) -> None:
        self.channel = channel
        self.offset = offset
        self.epoch = epoch
        self.frame = frame
        self.wire = text_frame(frame)
        self._sse: bytes | None = None

    @classmethod
    def from_live(cls, channel: str, payload: bytes) -> Message:
        """From a pub/sub payload ``<offset>:<epoch>:<frame>``; ValueError if malformed."""
        live = decode_live(payload)
        return cls(channel, live.offset, live.epoch, live.frame)

    def sse_data(self) -> bytes:
        """The ``data:`` lines and blank line of an SSE event carrying the frame."""
        if self._sse is None:
            # A JSON frame has no raw newline outside strings; split anyway so a
            # stray one cannot end the event early (SSE joins data lines with \n).
            lines = self.frame.split(b"\n")
            self._sse = b"".join(b"data: " + line + b"\n" for line in lines) + b"\n"
        return self._sse

    def __repr__(self) -> str:
        return f"Message({self.channel!r}, {self.offset}, {self.epoch!r})"


@dataclass(frozen=True, slots=True)
class Resync:
    """Continuity of a channel was lost: from here on, history ``epoch`` at ``offset``."""

    epoch: str
    offset: int


Entry = Message | Resync
