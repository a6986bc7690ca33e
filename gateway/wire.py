"""RFC 6455 framing of server-to-client text frames, built once per message.

The gateway writes the same bytes to every WebSocket of a channel: header and
payload are concatenated once per message (not per client) and written straight
to each transport when no compression was negotiated. Server frames are never
masked (§5.1); every message fits one final frame (FIN set, opcode 0x1).
"""

from __future__ import annotations

import struct

OP_TEXT = 0x1
_FIN_TEXT = 0x80 | OP_TEXT
_SHORT = struct.Struct("!BB")
_MEDIUM = struct.Struct("!BBH")
_LONG = struct.Struct("!BBQ")


def text_header(length: int) -> bytes:
    """The header of one unmasked, final text frame carrying ``length`` payload bytes."""
    if length < 126:
        return _SHORT.pack(_FIN_TEXT, length)
    if length < 1 << 16:
        return _MEDIUM.pack(_FIN_TEXT, 126, length)
    return _LONG.pack(_FIN_TEXT, 127, length)


def text_frame(payload: bytes) -> bytes:
    """Header and payload, ready for ``transport.write`` (payload must be UTF-8 text)."""
    return text_header(len(payload)) + payload
