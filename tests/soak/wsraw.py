"""A WebSocket client over a raw socket, able to send what no library would: bad frames.

It performs the RFC 6455 handshake by hand, then writes frames built bit by bit
(any opcode, RSV bits, unmasked, lying lengths, fragments, truncated) and reads
the server's frames, so fuzz tests see exactly what a hostile client sees.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
from dataclasses import dataclass

TEXT, BINARY, CLOSE, PING, PONG, CONTINUATION = 0x1, 0x2, 0x8, 0x9, 0xA, 0x0


def encode_frame(
    opcode: int,
    payload: bytes,
    *,
    fin: bool = True,
    rsv: int = 0,
    masked: bool = True,
    declared_length: int | None = None,
) -> bytes:
    """One client frame; ``declared_length`` may lie about the payload's size."""
    length = len(payload) if declared_length is None else declared_length
    head = bytes([(0x80 if fin else 0) | (rsv & 0x7) << 4 | (opcode & 0xF)])
    mask_bit = 0x80 if masked else 0
    if length < 126:
        head += bytes([mask_bit | length])
    elif length < 1 << 16:
        head += bytes([mask_bit | 126]) + struct.pack("!H", length)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", length)
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


@dataclass(frozen=True)
class Frame:
    opcode: int
    payload: bytes

    @property
    def close_code(self) -> int | None:
        if self.opcode != CLOSE or len(self.payload) < 2:
            return None
        code: int = struct.unpack("!H", self.payload[:2])[0]
        return code


class RawWebSocket:
    """One connection: ``handshake()``, ``send_raw()``, ``read_frame()``."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.status = 0
        self.headers: dict[str, str] = {}

    @classmethod
    async def connect(
        cls, host: str, port: int, path: str = "/ws", headers: dict[str, str] | None = None
    ) -> RawWebSocket:
        reader, writer = await asyncio.open_connection(host, port)
        ws = cls(reader, writer)
        await ws.handshake(path, headers or {})
        return ws

    async def handshake(self, path: str, headers: dict[str, str]) -> None:
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {path} HTTP/1.1",
            "Host: 127.0.0.1",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
            *(f"{name}: {value}" for name, value in headers.items()),
        ]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        self.status = int(status_line.split()[1])
        for line in header_lines:
            if ":" in line:
                name, _, value = line.partition(":")
                self.headers[name.strip().lower()] = value.strip()

    def send_raw(self, data: bytes) -> None:
        self.writer.write(data)

    def send(self, opcode: int, payload: bytes, **options: object) -> None:
        self.writer.write(encode_frame(opcode, payload, **options))  # type: ignore[arg-type]

    async def read_frame(self) -> Frame | None:
        """The next server frame, or None at EOF/reset (fragments are not reassembled)."""
        try:
            head = await self.reader.readexactly(2)
            length = head[1] & 0x7F
            if length == 126:
                length = struct.unpack("!H", await self.reader.readexactly(2))[0]
            elif length == 127:
                length = struct.unpack("!Q", await self.reader.readexactly(8))[0]
            if head[1] & 0x80:
                await self.reader.readexactly(4)  # servers never mask; tolerate it anyway
            return Frame(head[0] & 0x0F, await self.reader.readexactly(length))
        except (asyncio.IncompleteReadError, ConnectionError):
            return None

    async def frames_until_closed(self, within: float) -> list[Frame]:
        """Every frame until the server closes the TCP connection (bounded)."""
        frames: list[Frame] = []
        async with asyncio.timeout(within):
            while (frame := await self.read_frame()) is not None:
                frames.append(frame)
                if frame.opcode == CLOSE:
                    # Answer the close handshake like a real client, then wait for EOF.
                    self.send(CLOSE, frame.payload[:2])
        return frames

    def close(self) -> None:
        self.writer.close()
