"""Server-side control rows (sql/005_control.sql): check one, encode it for ``control.lua``.

An outbox row whose channel is :data:`~pgcast.keys.CONTROL_MARKER` carries
``{"op":"disconnect","sub":..,"reason":..}`` or ``{"op":"unsubscribe","sub":..,"pattern":..}``.
SQL checks the arguments; a row written by hand is checked again here, so a gateway
only ever reads a control it can apply. Pure: no I/O.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import orjson

from pgcast.channels import pattern_error

OPS = ("disconnect", "unsubscribe")
MAX_SUB_LENGTH = 250
# A WebSocket close frame holds 123 bytes of reason; sql/005_control.sql allows 120.
MAX_REASON_BYTES = 120


class Control(NamedTuple):
    """A checked control: its op and the compact JSON the gateways read."""

    op: str
    json: bytes


class InvalidControl(ValueError):
    """A control row that no gateway could apply (logged, counted and dropped)."""


def _string(control: dict[str, Any], field: str, default: str | None = None) -> str:
    value = control.get(field, default)
    if not isinstance(value, str):
        raise InvalidControl(f'"{field}" must be a string')
    return value


def _sub(control: dict[str, Any]) -> str:
    sub = _string(control, "sub")
    if not sub or len(sub) > MAX_SUB_LENGTH:
        raise InvalidControl(f'"sub" must be 1..{MAX_SUB_LENGTH} characters')
    return sub


def parse_control(data: str) -> Control:
    """The control in a row's data (jsonb text); raises InvalidControl when it is none.

    Fields other than the op's are dropped; a disconnect without ``reason`` has ``""``.
    """
    try:
        control = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidControl(f"not JSON: {exc}") from None
    if not isinstance(control, dict):
        raise InvalidControl("not a JSON object")
    op = control.get("op")
    if op == "disconnect":
        reason = _string(control, "reason", "")
        if len(reason.encode()) > MAX_REASON_BYTES:
            raise InvalidControl(f'"reason" longer than {MAX_REASON_BYTES} bytes')
        body = {"op": op, "sub": _sub(control), "reason": reason}
    elif op == "unsubscribe":
        pattern = _string(control, "pattern")
        error = pattern_error(pattern)
        if error is not None:
            raise InvalidControl(f'"pattern": {error}')
        body = {"op": op, "sub": _sub(control), "pattern": pattern}
    else:
        raise InvalidControl(f'unknown "op" {str(op)[:50]!r} (known: {", ".join(OPS)})')
    return Control(op, orjson.dumps(body))
