"""Decode pgoutput protocol version 1 messages: the payload of one XLogData frame.

Pure and allocation-light (struct over the payload); it owns no state: the relation
cache and what the changes mean belong to listener.wal_events. Column values stay as
the walsender sent them: text-format bytes, None for NULL, or UNCHANGED for an
unchanged TOASTed value. Anything not in version 1 raises DecodeError.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

_I16 = struct.Struct("!h")
_I32 = struct.Struct("!i")
_U32 = struct.Struct("!I")
_U64 = struct.Struct("!Q")
_BEGIN = struct.Struct("!QqI")  # final lsn, commit timestamp, xid
_COMMIT = struct.Struct("!BQQq")  # flags, commit lsn, end lsn, commit timestamp
_COLUMN_TAIL = struct.Struct("!Ii")  # type oid, typmod


class DecodeError(ValueError):
    """A payload that is not a well-formed pgoutput v1 message."""


class Unchanged(enum.Enum):
    """An unchanged TOASTed value ('u'): the walsender did not send it."""

    TOAST = "u"


UNCHANGED = Unchanged.TOAST

Value = bytes | None | Unchanged
Tuple = tuple[Value, ...]


@dataclass(frozen=True, slots=True)
class Begin:
    final_lsn: int
    commit_ts: int  # microseconds since 2000-01-01 00:00 UTC
    xid: int


@dataclass(frozen=True, slots=True)
class Commit:
    flags: int
    commit_lsn: int
    end_lsn: int
    commit_ts: int


@dataclass(frozen=True, slots=True)
class Origin:
    lsn: int
    name: str


@dataclass(frozen=True, slots=True)
class Column:
    flags: int  # bit 1: part of the replica identity (every column under FULL)
    name: str
    type_oid: int
    typmod: int

    @property
    def is_key(self) -> bool:
        return bool(self.flags & 1)


@dataclass(frozen=True, slots=True)
class Relation:
    oid: int
    namespace: str  # '' for pg_catalog
    name: str
    replica_identity: str  # 'd' default, 'n' nothing, 'f' full, 'i' index
    columns: tuple[Column, ...]


@dataclass(frozen=True, slots=True)
class Type:
    oid: int
    namespace: str
    name: str


@dataclass(frozen=True, slots=True)
class Insert:
    relation: int
    new: Tuple


@dataclass(frozen=True, slots=True)
class Update:
    relation: int
    old_kind: str  # 'K' key columns only, 'O' the whole old row, '' not sent
    old: Tuple | None
    new: Tuple


@dataclass(frozen=True, slots=True)
class Delete:
    relation: int
    old_kind: str  # 'K' or 'O'
    old: Tuple


@dataclass(frozen=True, slots=True)
class Truncate:
    options: int  # bit 1: CASCADE, bit 2: RESTART IDENTITY
    relations: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class LogicalMessage:
    transactional: bool
    lsn: int
    prefix: str
    content: bytes


Message = (
    Begin | Commit | Origin | Relation | Type | Insert | Update | Delete | Truncate | LogicalMessage
)


def decode(payload: bytes | bytearray | memoryview) -> Message:
    """One pgoutput v1 message; DecodeError for an unknown type or a malformed body."""
    buf = bytes(payload)
    if not buf:
        raise DecodeError("empty pgoutput message")
    decoder = _DECODERS.get(buf[0])
    if decoder is None:
        raise DecodeError(f"unknown pgoutput message type {chr(buf[0])!r}")
    try:
        message, end = decoder(buf)
    except DecodeError:
        raise
    except (struct.error, IndexError, ValueError) as exc:  # ValueError: no NUL, bad UTF-8
        raise DecodeError(f"malformed pgoutput {chr(buf[0])!r} message: {exc}") from exc
    if end != len(buf):
        raise DecodeError(f"pgoutput {chr(buf[0])!r} message has {len(buf) - end} extra bytes")
    return message


def _string(buf: bytes, pos: int) -> tuple[str, int]:
    end = buf.index(0, pos)
    return buf[pos:end].decode(), end + 1


def _begin(buf: bytes) -> tuple[Message, int]:
    lsn, ts, xid = _BEGIN.unpack_from(buf, 1)
    return Begin(lsn, ts, xid), 1 + _BEGIN.size


def _commit(buf: bytes) -> tuple[Message, int]:
    flags, lsn, end_lsn, ts = _COMMIT.unpack_from(buf, 1)
    return Commit(flags, lsn, end_lsn, ts), 1 + _COMMIT.size


def _origin(buf: bytes) -> tuple[Message, int]:
    (lsn,) = _U64.unpack_from(buf, 1)
    name, pos = _string(buf, 9)
    return Origin(lsn, name), pos


def _relation(buf: bytes) -> tuple[Message, int]:
    (oid,) = _U32.unpack_from(buf, 1)
    namespace, pos = _string(buf, 5)
    name, pos = _string(buf, pos)
    identity = chr(buf[pos])
    (count,) = _I16.unpack_from(buf, pos + 1)
    pos += 3
    columns = []
    for _ in range(count):
        flags = buf[pos]
        column, pos = _string(buf, pos + 1)
        type_oid, typmod = _COLUMN_TAIL.unpack_from(buf, pos)
        pos += _COLUMN_TAIL.size
        columns.append(Column(flags, column, type_oid, typmod))
    return Relation(oid, namespace, name, identity, tuple(columns)), pos


def _type(buf: bytes) -> tuple[Message, int]:
    (oid,) = _U32.unpack_from(buf, 1)
    namespace, pos = _string(buf, 5)
    name, pos = _string(buf, pos)
    return Type(oid, namespace, name), pos


def _tuple(buf: bytes, pos: int) -> tuple[Tuple, int]:
    (count,) = _I16.unpack_from(buf, pos)
    pos += 2
    values: list[Value] = []
    append = values.append
    for _ in range(count):
        kind = buf[pos]
        if kind == 0x74:  # 't'
            (length,) = _I32.unpack_from(buf, pos + 1)
            start = pos + 5
            pos = start + length
            if length < 0 or pos > len(buf):
                raise DecodeError(f"text value of {length} bytes overruns the message")
            append(buf[start:pos])
        elif kind == 0x6E:  # 'n'
            append(None)
            pos += 1
        elif kind == 0x75:  # 'u'
            append(UNCHANGED)
            pos += 1
        else:  # 'b' (binary) only exists when the binary option is on: not requested
            raise DecodeError(f"unsupported tuple column kind {chr(kind)!r}")
    return tuple(values), pos


def _expect(buf: bytes, pos: int, marker: int) -> None:
    if buf[pos] != marker:
        raise DecodeError(f"expected {chr(marker)!r} at byte {pos}, got {chr(buf[pos])!r}")


def _insert(buf: bytes) -> tuple[Message, int]:
    (oid,) = _U32.unpack_from(buf, 1)
    _expect(buf, 5, 0x4E)  # 'N'
    new, pos = _tuple(buf, 6)
    return Insert(oid, new), pos


def _update(buf: bytes) -> tuple[Message, int]:
    (oid,) = _U32.unpack_from(buf, 1)
    kind = chr(buf[5])
    old: Tuple | None = None
    pos = 5
    if kind in ("K", "O"):
        old, pos = _tuple(buf, 6)
    else:
        kind = ""
    _expect(buf, pos, 0x4E)  # 'N'
    new, pos = _tuple(buf, pos + 1)
    return Update(oid, kind, old, new), pos


def _delete(buf: bytes) -> tuple[Message, int]:
    (oid,) = _U32.unpack_from(buf, 1)
    kind = chr(buf[5])
    if kind not in ("K", "O"):
        raise DecodeError(f"delete without an old tuple (got {kind!r})")
    old, pos = _tuple(buf, 6)
    return Delete(oid, kind, old), pos


def _truncate(buf: bytes) -> tuple[Message, int]:
    (count,) = _I32.unpack_from(buf, 1)
    options = buf[5]
    oids = struct.unpack_from(f"!{count}I", buf, 6)
    return Truncate(options, oids), 6 + 4 * count


def _message(buf: bytes) -> tuple[Message, int]:
    flags = buf[1]
    (lsn,) = _U64.unpack_from(buf, 2)
    prefix, pos = _string(buf, 10)
    (length,) = _I32.unpack_from(buf, pos)
    start = pos + 4
    end = start + length
    if length < 0 or end > len(buf):
        raise DecodeError(f"message content of {length} bytes overruns the message")
    return LogicalMessage(bool(flags & 1), lsn, prefix, buf[start:end]), end


_DECODERS = {
    ord("B"): _begin,
    ord("C"): _commit,
    ord("O"): _origin,
    ord("R"): _relation,
    ord("Y"): _type,
    ord("I"): _insert,
    ord("U"): _update,
    ord("D"): _delete,
    ord("T"): _truncate,
    ord("M"): _message,
}
