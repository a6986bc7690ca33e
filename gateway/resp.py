"""An incremental RESP2 parser and command encoder: the bytes of a Redis pub/sub link.

Pure: :meth:`RespParser.feed` takes whatever the socket delivered and returns
every complete reply, keeping the incomplete tail for the next call. Replies are
``bytes`` (bulk and simple strings), ``int``, ``None`` (null bulk/array),
:class:`RespError` (``-ERR ...``) or lists of those. Garbage raises ProtocolError.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeAlias

_CRLF = b"\r\n"
MAX_BULK = 512 * 1024 * 1024  # Redis' own proto-max-bulk-len default


class ProtocolError(Exception):
    """The server sent something that is not RESP2: the link must be dropped."""


class RespError:
    """An error reply (``-ERR ...``); returned as a value, not raised."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message

    def __repr__(self) -> str:
        return f"RespError({self.message!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RespError) and other.message == self.message

    def __hash__(self) -> int:
        return hash(self.message)


Reply: TypeAlias = "bytes | int | RespError | list[Reply] | None"


class _Incomplete(Exception):
    """Not enough bytes yet for the reply at hand."""


def encode_command(*args: bytes | str | int) -> bytes:
    """A command as a RESP array of bulk strings."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def encode_commands(commands: Sequence[Sequence[bytes | str | int]]) -> bytes:
    """Several commands in one write (pipelined)."""
    return b"".join(encode_command(*cmd) for cmd in commands)


class RespParser:
    """Feed bytes in, get complete replies out, in order."""

    __slots__ = ("_buf", "_pos")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0

    def feed(self, data: bytes) -> list[Reply]:
        buf = self._buf
        buf += data
        replies: list[Reply] = []
        pos = self._pos
        try:
            while pos < len(buf):
                reply, pos = self._parse(pos)
                replies.append(reply)
        except _Incomplete:
            pass
        # Drop what was consumed; keep the partial reply for the next feed.
        if pos:
            del buf[:pos]
        self._pos = 0
        return replies

    def _line(self, pos: int) -> tuple[bytes, int]:
        end = self._buf.find(_CRLF, pos)
        if end < 0:
            raise _Incomplete
        return bytes(self._buf[pos + 1 : end]), end + 2

    def _parse(self, pos: int) -> tuple[Reply, int]:
        buf = self._buf
        kind = buf[pos]
        line, nxt = self._line(pos)
        if kind == 0x24:  # $ bulk string
            return self._bulk(_int(line), nxt)
        if kind == 0x2A:  # * array
            return self._array(_int(line), nxt)
        if kind == 0x2B:  # + simple string
            return line, nxt
        if kind == 0x3A:  # : integer
            return _int(line), nxt
        if kind == 0x2D:  # - error
            return RespError(line.decode(errors="replace")), nxt
        raise ProtocolError(f"unexpected RESP type byte {bytes([kind])!r}")

    def _bulk(self, length: int, pos: int) -> tuple[Reply, int]:
        if length < 0:
            return None, pos
        if length > MAX_BULK:
            raise ProtocolError(f"bulk string of {length} bytes")
        buf = self._buf
        end = pos + length
        if len(buf) < end + 2:
            raise _Incomplete
        if buf[end : end + 2] != _CRLF:
            raise ProtocolError("bulk string not terminated by CRLF")
        return bytes(buf[pos:end]), end + 2

    def _array(self, count: int, pos: int) -> tuple[Reply, int]:
        if count < 0:
            return None, pos
        items: list[Reply] = []
        for _ in range(count):
            item, pos = self._parse_at(pos)
            items.append(item)
        return items, pos

    def _parse_at(self, pos: int) -> tuple[Reply, int]:
        if pos >= len(self._buf):
            raise _Incomplete
        return self._parse(pos)


def _int(line: bytes) -> int:
    try:
        return int(line)
    except ValueError:
        raise ProtocolError(f"not an integer: {line[:20]!r}") from None
