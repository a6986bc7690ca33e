"""Values of pgoutput's text output rendered as ``to_jsonb(value)::text`` would, by type oid.

The WAL capture builds the trigger path's events from these (listener/wal_events.py):
jsonb's text form is what the outbox path publishes, so every number, string, array and
json value must come out byte for byte the same. The replication session renders with
DateStyle ISO and the server's default TimeZone (listener/replication.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from decimal import Decimal

Render = Callable[[str], str]


def json_string(text: str) -> str:
    # json.dumps escapes exactly as Postgres' escape_json: \" \\ \b \f \n \r \t, other
    # controls as \u00xx (lowercase), everything else as is.
    return json.dumps(text, ensure_ascii=False)


def _number_text(text: str) -> str:
    """numeric_out(numeric_in(text)): exponents expanded, no negative zero."""
    value = Decimal(text)
    out = format(value, "f")
    return out[1:] if value.is_zero() and out.startswith("-") else out


def _numeric(text: str) -> str:
    return json_string(text) if "N" in text or "n" in text else text  # NaN, Infinity


def _float(text: str) -> str:
    if "N" in text or "n" in text:
        return json_string(text)
    return _number_text(text) if "e" in text or text.startswith("-0") else text


def _bool(text: str) -> str:
    return "true" if text == "t" else "false"


def _timestamp(text: str) -> str:
    return json_string(text.replace(" ", "T", 1) if text[0].isdigit() else text)


def _timestamptz(text: str) -> str:
    """ISO '2024-01-02 03:04:05+05' -> XSD '2024-01-02T03:04:05+05:00'."""
    if not text[0].isdigit():  # infinity
        return json_string(text)
    date, _, rest = text.partition(" ")
    time, bc, era = rest.partition(" ")  # ' BC' follows the offset
    cut = max(time.rfind("+"), time.rfind("-"))
    offset = time[cut:]
    if len(offset) == 3:
        offset += ":00"
    return json_string(f"{date}T{time[:cut]}{offset}{bc}{era}")


class _Number(str):
    """A JSON number's jsonb text, kept apart from strings while re-rendering."""


def _jsonb_text(value: object) -> str:
    if isinstance(value, str):
        return value if isinstance(value, _Number) else json_string(value)
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, list):
        return "[" + ", ".join(_jsonb_text(v) for v in value) + "]"
    if not isinstance(value, dict):
        raise TypeError(f"not a parsed JSON value: {value!r}")
    keys = sorted(value, key=lambda k: (len(k.encode()), k.encode()))
    return "{" + ", ".join(f"{json_string(k)}: {_jsonb_text(value[k])}" for k in keys) + "}"


def _json(text: str) -> str:
    """A json value as jsonb prints it: keys by length then bytes, the last duplicate
    wins, numbers as numeric_out, ', ' and ': ' separators."""
    parsed = json.loads(text, parse_float=_parse_number, parse_int=_parse_number)
    return _jsonb_text(parsed)


def _parse_number(text: str) -> _Number:
    return _Number(_number_text(text))


def _jsonb(text: str) -> str:
    return text  # jsonb_out already prints what to_jsonb gives


_SCALARS: dict[int, Render] = {
    16: _bool,
    20: str,
    21: str,
    23: str,
    700: _float,
    701: _float,
    1700: _numeric,
    114: _json,
    3802: _jsonb,
    1082: json_string,  # date: ISO text = XSD form, incl. 'infinity' and ' BC'
    1114: _timestamp,
    1184: _timestamptz,
}
# builtin array oid -> element oid
_ARRAYS = {
    1000: 16, 1016: 20, 1005: 21, 1007: 23, 1021: 700, 1022: 701, 1231: 1700, 199: 114,
    3807: 3802, 1182: 1082, 1115: 1114, 1185: 1184, 1009: 25, 1015: 1043, 1014: 1042,
    2951: 2950, 1028: 26, 1183: 1083, 1270: 1266, 1001: 17, 1002: 18, 1003: 19,
}  # fmt: skip


def renderer(type_oid: int, aliases: Mapping[int, int]) -> Render:
    """The function rendering a column's text output as to_jsonb(value)::text."""
    oid = aliases.get(type_oid, type_oid)
    element = _ARRAYS.get(oid)
    if element is not None:
        render = _SCALARS.get(element, json_string)
        return lambda text: _array(text, render)
    return _SCALARS.get(oid, json_string)


def _array(text: str, render: Render) -> str:
    """array_out's text ('[0:1]={{1,2},{"a b",NULL}}') as to_jsonb's nested JSON array."""
    pos = text.index("{") if text.startswith("[") else 0
    out: list[str] = []
    end = _array_level(text, pos, render, out)
    if end != len(text):
        raise ValueError(f"trailing text in array {text!r}")
    return "".join(out)


def _array_level(text: str, pos: int, render: Render, out: list[str]) -> int:
    out.append("[")
    pos += 1  # '{'
    first = True
    while text[pos] != "}":
        if not first:
            out.append(", ")
        first = False
        if text[pos] == "{":
            pos = _array_level(text, pos, render, out)
        elif text[pos] == '"':
            chars: list[str] = []
            pos += 1
            while text[pos] != '"':
                if text[pos] == "\\":
                    pos += 1
                chars.append(text[pos])
                pos += 1
            out.append(render("".join(chars)))
            pos += 1
        else:
            end = pos
            while text[end] not in ",}":
                end += 1
            item = text[pos:end]
            out.append("null" if item == "NULL" else render(item))
            pos = end
        if text[pos] == ",":
            pos += 1
    out.append("]")
    return pos + 1


def same_json(a: str, b: str) -> bool:
    """jsonb equality of two rendered values: numbers compare as numerics (1.0 = 1.00)."""
    if a == b:
        return True
    if a[0] in '"tfn' or b[0] in '"tfn':  # a string, bool or null: equal only as text
        return False
    load = json.loads
    return _canon(load(a, parse_float=Decimal, parse_int=Decimal)) == _canon(
        load(b, parse_float=Decimal, parse_int=Decimal)
    )


def _canon(value: object) -> object:
    if isinstance(value, bool):  # True == Decimal(1) in Python, not in jsonb
        return ("bool", value)
    if isinstance(value, list):
        return tuple(_canon(v) for v in value)
    if isinstance(value, dict):
        return {k: _canon(v) for k, v in value.items()}
    return value


def template_text(rendered: str) -> str | None:
    """to_jsonb(row) ->> col from the rendered value."""
    if rendered == "null":
        return None
    return str(json.loads(rendered)) if rendered[0] == '"' else rendered
