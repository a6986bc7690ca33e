"""The pre-built WebSocket frames are exactly what aiohttp's own server writer produces."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp._websocket.writer import WebSocketWriter
from aiohttp.http_websocket import WSMsgType

from gateway.wire import text_frame, text_header


class _Sink:
    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> None:
        self.data += data

    def is_closing(self) -> bool:
        return False


class _Protocol:
    _paused = False


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
async def test_frame_equals_aiohttp_server_frame(size: int) -> None:
    """Header and payload match aiohttp's unmasked server frame at every length boundary."""
    payload = b"x" * size
    sink = _Sink()
    writer = WebSocketWriter(_Protocol(), sink, use_mask=False)  # type: ignore[arg-type]
    await writer.send_frame(payload, WSMsgType.TEXT)
    assert text_frame(payload) == bytes(sink.data)


def _decode(frame: bytes) -> dict[str, Any]:
    """A by-the-book RFC 6455 §5.2 decoder of one frame."""
    fin, opcode = frame[0] >> 7, frame[0] & 0x0F
    masked, length = frame[1] >> 7, frame[1] & 0x7F
    pos = 2
    if length == 126:
        length, pos = int.from_bytes(frame[2:4], "big"), 4
    elif length == 127:
        length, pos = int.from_bytes(frame[2:10], "big"), 10
    return {"fin": fin, "opcode": opcode, "masked": masked, "payload": frame[pos : pos + length]}


def test_frame_is_final_unmasked_text() -> None:
    """FIN set, opcode 1 (text), no mask: what a server must send."""
    decoded = _decode(text_frame(b'{"a":1}'))
    assert decoded == {"fin": 1, "opcode": 1, "masked": 0, "payload": b'{"a":1}'}
    assert len(text_header(1 << 20)) == 10


def test_empty_frame() -> None:
    """An empty text frame is the two header bytes alone."""
    assert text_frame(b"") == b"\x81\x00"
