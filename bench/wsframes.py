"""Minimal WebSocket client framing for the load generator (RFC 6455), pure functions.

The handshake request, the server's accept key, masked client frames, and an
incremental parser of unmasked server frames that keeps per-connection state
small: a bytearray and an offset. permessage-deflate frames (RSV1) are
inflated by the caller with one ``zlib.decompressobj`` per connection.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
import zlib

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
DEFLATE_TAIL = b"\x00\x00\xff\xff"


def new_key() -> bytes:
    """A fresh ``Sec-WebSocket-Key``."""
    return base64.b64encode(os.urandom(16))


def accept_for(key: bytes) -> bytes:
    """The ``Sec-WebSocket-Accept`` a server must answer to ``key``."""
    return base64.b64encode(hashlib.sha1(key + GUID, usedforsecurity=False).digest())


def upgrade_request(
    host: str,
    path: str,
    key: bytes,
    *,
    headers: dict[str, str] | None = None,
    deflate: bool = False,
) -> bytes:
    """The HTTP/1.1 upgrade request of a client."""
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key.decode()}",
        "Sec-WebSocket-Version: 13",
    ]
    if deflate:
        lines.append("Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits")
    lines.extend(f"{name}: {value}" for name, value in (headers or {}).items())
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class HandshakeError(Exception):
    """The server refused or botched the upgrade."""


def parse_upgrade_response(head: bytes, key: bytes) -> bool:
    """Check a server's ``101`` answer; returns whether permessage-deflate was agreed."""
    status, _, rest = head.partition(b"\r\n")
    parts = status.split(b" ", 2)
    if len(parts) < 2 or parts[1] != b"101":
        raise HandshakeError(status.decode(errors="replace"))
    fields: dict[bytes, bytes] = {}
    for line in rest.split(b"\r\n"):
        name, _, value = line.partition(b":")
        fields[name.strip().lower()] = value.strip()
    if fields.get(b"sec-websocket-accept") != accept_for(key):
        raise HandshakeError("bad Sec-WebSocket-Accept")
    return b"permessage-deflate" in fields.get(b"sec-websocket-extensions", b"")


def client_frame(payload: bytes, opcode: int = OP_TEXT) -> bytes:
    """One final, masked client frame (clients must mask, RFC 6455 §5.3)."""
    mask = os.urandom(4)
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
    elif length < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
    repeated = (mask * (length // 4 + 1))[:length]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(
        length, "big"
    )
    return header + mask + masked


def server_frame(payload: bytes, opcode: int = OP_TEXT) -> bytes:
    """One final, unmasked server frame (used by the ceiling program and the tests)."""
    length = len(payload)
    if length < 126:
        return struct.pack("!BB", 0x80 | opcode, length) + payload
    if length < 65536:
        return struct.pack("!BBH", 0x80 | opcode, 126, length) + payload
    return struct.pack("!BBQ", 0x80 | opcode, 127, length) + payload


def close_code(payload: bytes) -> int:
    """The status code of a close frame's payload (1005 when it carries none)."""
    return int(struct.unpack("!H", payload[:2])[0]) if len(payload) >= 2 else 1005


def split_frames(buf: bytearray) -> tuple[list[tuple[int, bool, bytes]], int]:
    """Complete frames at the start of ``buf`` as ``(opcode, rsv1, payload)``.

    Returns the frames and the number of bytes they used; the caller drops those
    bytes. Fragmented messages come back as their fragments (opcode 0 for the
    continuations); the servers measured here never fragment.
    """
    frames: list[tuple[int, bool, bytes]] = []
    pos, end = 0, len(buf)
    while end - pos >= 2:
        b0, b1 = buf[pos], buf[pos + 1]
        length = b1 & 0x7F
        head = 2
        if length == 126:
            if end - pos < 4:
                break
            length = (buf[pos + 2] << 8) | buf[pos + 3]
            head = 4
        elif length == 127:
            if end - pos < 10:
                break
            length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
            head = 10
        if end - pos < head + length:
            break
        start = pos + head
        frames.append((b0 & 0x0F, bool(b0 & 0x40), bytes(buf[start : start + length])))
        pos = start + length
    return frames, pos


def inflater() -> zlib._Decompress:
    """A raw-deflate decompressor for one connection's permessage-deflate stream."""
    return zlib.decompressobj(-zlib.MAX_WBITS)


def inflate(decompressor: zlib._Decompress, payload: bytes) -> bytes:
    """Inflate one compressed message (RFC 7692 §7.2.2: append the stripped tail)."""
    return decompressor.decompress(payload + DEFLATE_TAIL)
