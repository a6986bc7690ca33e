"""The logical replication protocol's pure parts (listener/replication.py drives the
connection): LSN text, the frames' layouts, START_REPLICATION, standby status updates,
and which kind of failure an error is."""

from __future__ import annotations

import struct
import time
from collections.abc import Sequence
from typing import Literal, NamedTuple

_PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01 in Unix microseconds
XLOGDATA = struct.Struct("!QQq")  # 'w': wal_start, wal_end, server clock
KEEPALIVE = struct.Struct("!QqB")  # 'k': wal_end, server clock, reply requested
_STATUS = struct.Struct("!cQQQqB")  # 'r': write, flush, apply, client clock, reply

ErrorKind = Literal[
    "wal_level",
    "privilege",
    "slot_in_use",
    "slot_missing",
    "slot_invalidated",
    "connection",
    "other",
]


class ReplicationError(Exception):
    """The server refused or ended the stream; ``kind`` says what the operator must fix."""

    def __init__(self, kind: ErrorKind, message: str, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.kind: ErrorKind = kind
        self.sqlstate = sqlstate


class XLogData(NamedTuple):
    wal_start: int
    wal_end: int
    payload: bytes


def format_lsn(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def parse_lsn(text: str) -> int:
    high, _, low = text.partition("/")
    if not low:
        raise ValueError(f"not an LSN: {text!r}")
    return (int(high, 16) << 32) | int(low, 16)


def classify(sqlstate: str | None, message: str) -> ErrorKind:
    """The kind of a server error, by SQLSTATE and (where one code means several) text."""
    if sqlstate is None or sqlstate.startswith(("08", "57P")):
        # No SQLSTATE: libpq's own (connection) error, or a refused walsender start.
        # PG 15: "must be superuser or replication role to start walsender"; PG 16+:
        # "permission denied to start WAL sender" (the REPLICATION attribute).
        if "replication role" in message or "start WAL sender" in message:
            return "privilege"
        return "connection"
    if sqlstate == "42501":
        return "privilege"
    if sqlstate == "55006":
        return "slot_in_use"
    if sqlstate == "42704" and "replication slot" in message:
        return "slot_missing"
    if sqlstate == "55000":
        if "wal_level" in message:
            return "wal_level"
        if "can no longer get changes" in message or "has been invalidated" in message:
            return "slot_invalidated"
    return "other"


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def start_command(slot: str, publications: Sequence[str], start_lsn: int) -> bytes:
    """START_REPLICATION for pgoutput; pgoutput splits publication_names as identifiers."""
    names = ",".join(_quote_ident(name) for name in publications)
    return (
        f"START_REPLICATION SLOT {_quote_ident(slot)} LOGICAL {format_lsn(start_lsn)} "
        f"(proto_version '1', publication_names {_quote_literal(names)}, messages 'true')"
    ).encode()


def status_update(flush_lsn: int, reply: bool = False) -> bytes:
    """A standby status update reporting ``flush_lsn`` as written, flushed and applied."""
    clock = time.time_ns() // 1000 - _PG_EPOCH_US
    return _STATUS.pack(b"r", flush_lsn, flush_lsn, flush_lsn, clock, int(reply))
