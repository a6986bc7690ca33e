"""Turn decoded pgoutput changes into the events the pgcast trigger path makes.

Owns the relation cache and the watch declarations; for each committed change it returns
(channel, data) exactly as pgcast.watch / notify_trigger would insert them into
pgcast.outbox (same channels, same order, same jsonb text), plus the events carried by
logical messages (prefix 'pgcast') and by rows inserted into pgcast.outbox itself.

Values arrive in their types' text output and are rendered as to_jsonb would, by type
oid. Limits (the trigger path differs, or the text form does not say enough):
- the replication session must render like the writers' sessions: DateStyle ISO,
  the writers' TimeZone (timestamptz) and extra_float_digits >= 1 (floats), and the
  defaults for IntervalStyle, bytea_output, lc_monetary (types rendered as strings);
- composite columns, user types with a cast to json(b) and arrays of user types render
  as a JSON string of their text; a domain renders as its base type only when the caller
  passes it in `aliases` (domain oid -> base oid);
- generated columns are not sent by pgoutput v1, nor columns left out of a publication's
  column list: serving_problem() refuses a declaration that needs them;
- a column added after the declarations were loaded sorts into "changed" by code point.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from listener.jsonb_text import Render, json_string, renderer, same_json, template_text
from listener.pgoutput import (
    UNCHANGED,
    Delete,
    Insert,
    LogicalMessage,
    Message,
    Relation,
    Tuple,
    Update,
)

OPS = frozenset({"INSERT", "UPDATE", "DELETE"})
MESSAGE_PREFIX = "pgcast"
OUTBOX = ("pgcast", "outbox")

# Declarations as the WAL leader needs them, one row per table and per leaf partition (a
# partitioned table's trigger fires on its partitions, with the parent's key; so the
# publication must not publish_via_partition_root): the primary key in key order, and
# every column sorted like notify_trigger's "changed" (the database's collation).
WATCHED_SQL = """
SELECT pt.relid::oid AS rel, w.channels, w.events,
    ARRAY(SELECT a.attname::text FROM pg_index AS i
          CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
          JOIN pg_attribute AS a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
          WHERE i.indrelid = w.rel AND i.indisprimary ORDER BY k.ord) AS key,
    ARRAY(SELECT a.attname::text FROM pg_attribute AS a
          WHERE a.attrelid = pt.relid AND a.attnum > 0 AND NOT a.attisdropped
          ORDER BY a.attname::text) AS columns
FROM pgcast.watched AS w CROSS JOIN LATERAL (
    SELECT w.rel::regclass AS relid
    UNION SELECT p.relid FROM pg_partition_tree(w.rel) AS p WHERE p.isleaf) AS pt
"""


@dataclass(frozen=True, slots=True)
class Watch:
    channels: tuple[str, ...]  # templates as given to pgcast.watch; () = the table's name
    events: frozenset[str]  # some of OPS
    key: tuple[str, ...]  # the primary key's columns in key order; () = none
    columns: tuple[str, ...]  # all columns, in the order of "changed"


@dataclass(frozen=True, slots=True)
class Event:
    channel: str
    data: bytes  # jsonb text, UTF-8
    outbox_id: int | None = None  # set for a row of pgcast.outbox: the caller deletes it


@dataclass(frozen=True, slots=True)
class Invalid:
    """Something that should have been an event but cannot be: count it, log it."""

    reason: str
    content: bytes = b""


Item = Event | Invalid


def load_watches(rows: Iterable[Sequence[object]]) -> dict[int, Watch]:
    """The declarations by relation oid from WATCHED_SQL's rows (rel, channels, events,
    key, columns)."""
    watches: dict[int, Watch] = {}
    for rel, channels, events, key, columns in rows:
        if not isinstance(rel, int):
            raise TypeError(f"expected a relation oid, got {rel!r}")
        watches[rel] = Watch(
            tuple(_strings(channels)),
            frozenset(e.upper() for e in _strings(events)),
            tuple(_strings(key)),
            tuple(_strings(columns)),
        )
    return watches


def _strings(value: object) -> list[str]:
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"expected a text array, got {value!r}")
    return list(value)


def serving_problem(relation: Relation, watch: Watch) -> str | None:
    """Why the WAL cannot give this declaration's events exactly (None when it can)."""
    sent = {c.name for c in relation.columns}
    needed = set(watch.key) | {c for t in watch.channels for c in template_columns(t)}
    missing = sorted(needed - sent)
    if missing:
        return f"columns {missing} are not published (generated, or a publication column list)"
    if "UPDATE" in watch.events:
        unsent = sorted(set(watch.columns) - sent)
        if unsent:
            return f'UPDATE events need every column for "changed"; {unsent} are not published'
        if relation.replica_identity != "f":
            return 'UPDATE events need REPLICA IDENTITY FULL ("changed" reads the old row)'
    if "DELETE" in watch.events and relation.replica_identity != "f":
        identity = {c.name for c in relation.columns if c.is_key}
        if relation.replica_identity == "n" or not identity:
            return "DELETE events need a replica identity; set REPLICA IDENTITY FULL"
        outside = sorted(needed - identity)
        if outside:
            return f"DELETE events read {outside}, outside the replica identity: set it FULL"
    return None


def template_columns(template: str) -> list[str]:
    return [part for literal, part in parse_template(template) if not literal]


def parse_template(template: str) -> tuple[tuple[bool, str], ...]:
    """(is_literal, text) parts, parsed as pgcast.fill_template does: '{' up to the first
    '}' after it names a column; an unmatched '{' stays literal."""
    parts: list[tuple[bool, str]] = []
    rest = template
    while True:
        open_at = rest.find("{")
        close_at = rest.find("}", open_at + 1) if open_at >= 0 else -1
        if close_at < 0:
            break
        if open_at > 0:
            parts.append((True, rest[:open_at]))
        parts.append((False, rest[open_at + 1 : close_at]))
        rest = rest[close_at + 1 :]
    if rest:
        parts.append((True, rest))
    return tuple(parts)


# ---- the event builder ------------------------------------------------------------------

Template = tuple[tuple[bool, str], ...]


@dataclass(frozen=True, slots=True)
class _Plan:
    relation: Relation
    watch: Watch | None
    problems: Mapping[str, str | None]  # per op: why it cannot be served
    index: Mapping[str, int]
    renders: tuple[Render, ...]
    templates: tuple[Template, ...]
    changed_order: tuple[int, ...]
    table_json: str
    outbox: bool


class EventBuilder:
    """Feed it every decoded message of a stream, in order; it returns the events (and
    the invalid items) each one makes. Only committed transactions reach a v1 stream."""

    def __init__(self, watches: Mapping[int, Watch], aliases: Mapping[int, int] = {}) -> None:
        self.relations: dict[int, Relation] = {}
        self._watches = dict(watches)
        self._aliases = dict(aliases)
        self._plans: dict[int, _Plan] = {}

    def set_watches(self, watches: Mapping[int, Watch]) -> None:
        """Replace the declarations (after pgcast.watched or a table changed)."""
        self._watches = dict(watches)
        self._plans.clear()

    def problem(self, relation_oid: int) -> str | None:
        """Why a watched relation's declaration cannot be served (None: it can, or the
        relation is not watched or not seen yet)."""
        plan = self._plan(relation_oid)
        if plan is None:
            return None
        return next((p for p in plan.problems.values() if p), None)

    def feed(self, message: Message) -> list[Item]:
        if isinstance(message, Relation):
            self.relations[message.oid] = message
            self._plans.pop(message.oid, None)
            return []
        if isinstance(message, Insert | Update | Delete):
            return self._change(message)
        if isinstance(message, LogicalMessage):
            return _logical_message(message)
        return []

    def _plan(self, oid: int) -> _Plan | None:
        plan = self._plans.get(oid)
        if plan is None and oid in self.relations:
            plan = self._plans[oid] = self._compile(self.relations[oid])
        return plan

    def _compile(self, relation: Relation) -> _Plan:
        watch = self._watches.get(relation.oid)
        index = {c.name: i for i, c in enumerate(relation.columns)}
        problems: dict[str, str | None] = {}
        templates: tuple[Template, ...] = ()
        order: list[str] = []
        if watch is not None:
            for op in watch.events & OPS:
                one = Watch(watch.channels, frozenset({op}), watch.key, watch.columns)
                problems[op] = serving_problem(relation, one)
            templates = tuple(parse_template(t) for t in watch.channels) or (
                ((True, relation.name),),
            )
            known = set(watch.columns)
            order = [c for c in watch.columns if c in index]
            order += sorted(c for c in index if c not in known)
        return _Plan(
            relation,
            watch,
            problems,
            index,
            tuple(renderer(c.type_oid, self._aliases) for c in relation.columns),
            templates,
            tuple(index[c] for c in order),
            json_string(relation.name),
            (relation.namespace, relation.name) == OUTBOX,
        )

    def _change(self, change: Insert | Update | Delete) -> list[Item]:
        plan = self._plan(change.relation)
        if plan is None:
            return [Invalid(f"change of relation {change.relation} before its Relation message")]
        if plan.outbox:
            return _outbox_row(plan, change.new) if isinstance(change, Insert) else []
        op = "INSERT" if isinstance(change, Insert) else "DELETE"
        if isinstance(change, Update):
            op = "UPDATE"
        if plan.watch is None or op not in plan.problems:
            return []
        problem = plan.problems[op]
        if problem is not None:
            return [Invalid(f"{plan.relation.namespace}.{plan.relation.name}: {problem}")]
        if isinstance(change, Insert):
            return _events(plan, plan.watch.key, op, _Row(plan, change.new), None)
        if isinstance(change, Delete):
            return _events(plan, plan.watch.key, op, _Row(plan, change.old), None)
        old = _Row(plan, change.old or ())
        return _events(plan, plan.watch.key, op, _Row(plan, change.new, old.values), old)


class _Row:
    """One tuple's values, rendered on demand (an INSERT renders only what it uses)."""

    __slots__ = ("_json", "plan", "values")

    def __init__(self, plan: _Plan, values: Tuple, old: Tuple | None = None) -> None:
        if old is not None and UNCHANGED in values:  # unchanged TOAST: the old row has it
            values = tuple(o if v is UNCHANGED else v for v, o in zip(values, old, strict=True))
        self.plan = plan
        self.values = values
        self._json: dict[int, str] = {}

    def json(self, i: int) -> str:
        rendered = self._json.get(i)
        if rendered is None:
            value = self.values[i]
            if value is None:
                rendered = "null"
            elif isinstance(value, bytes):
                rendered = self.plan.renders[i](value.decode())
            else:
                raise ValueError("an unchanged TOAST value without the old row")
            self._json[i] = rendered
        return rendered

    def column(self, name: str) -> str:
        return self.json(self.plan.index[name])

    def channel(self, template: Template) -> str | None:
        parts = []
        for literal, text in template:
            if literal:
                parts.append(text)
            else:
                value = template_text(self.column(text))
                if value is None:
                    return None
                parts.append(value)
        return "".join(parts)


def _events(plan: _Plan, key: tuple[str, ...], op: str, row: _Row, old: _Row | None) -> list[Item]:
    if len(key) == 1:
        id_json = row.column(key[0])
    elif key:
        names = sorted(key, key=lambda k: (len(k.encode()), k.encode()))
        id_json = "{" + ", ".join(f"{json_string(k)}: {row.column(k)}" for k in names) + "}"
    else:
        id_json = "null"
    text = f'{{"id": {id_json}, "op": "{op}", "table": {plan.table_json}'
    if old is not None:
        names = [
            plan.relation.columns[i].name
            for i in plan.changed_order
            if not same_json(row.json(i), old.json(i))
        ]
        text += ', "changed": [' + ", ".join(json_string(n) for n in names) + "]"
    data = (text + "}").encode()
    items: list[Item] = []
    for template in plan.templates:
        channel = row.channel(template)
        if channel is not None:
            items.append(Event(channel, data))
        if old is not None and any(not literal for literal, _ in template):
            old_channel = old.channel(template)
            if old_channel is not None and old_channel != channel:
                items.append(Event(old_channel, data))
    return items


def _outbox_row(plan: _Plan, values: Tuple) -> list[Item]:
    index = plan.index
    row_id, channel, data = (values[index[c]] for c in ("id", "channel", "data"))
    if not (isinstance(row_id, bytes) and isinstance(channel, bytes) and isinstance(data, bytes)):
        return [Invalid("pgcast.outbox row without id, channel or data")]
    return [Event(channel.decode(), data, int(row_id))]


def _logical_message(message: LogicalMessage) -> list[Item]:
    if message.prefix != MESSAGE_PREFIX:
        return []  # another application's messages
    content = message.content
    if not message.transactional:
        return [Invalid("non-transactional pgcast message", content)]
    newline = content.rfind(b"\n")  # jsonb text has none; a channel may (refused later)
    if newline < 0:
        return [Invalid("pgcast message without a newline after the channel", content)]
    try:
        channel = content[:newline].decode()
        content[newline + 1 :].decode()
    except UnicodeDecodeError:
        return [Invalid("pgcast message is not UTF-8", content)]
    return [Event(channel, content[newline + 1 :])]
