"""Presence and client-message events: what a subscription's callbacks receive.

A channel's presence is a set of members, one per connection (a user with two
processes is two members), each with the ``meta`` its connection tracked. A
``PresenceSnapshot`` replaces the whole set (after subscribing, after every
reconnect, after a gateway resynchronised); ``Join`` adds a member or updates its
meta, ``Leave`` removes one. ``Broadcast`` is a client message: ephemeral, no offset,
never replayed. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Member:
    """One connection in a channel's presence: its user (``sub``), ``conn`` id and ``meta``."""

    sub: str
    conn: str
    meta: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_frame(cls, raw: Mapping[str, Any]) -> Member:
        meta = raw.get("meta")
        return cls(str(raw.get("sub", "")), str(raw.get("conn", "")), meta if meta else {})


@dataclass(frozen=True, slots=True)
class PresenceSnapshot:
    """The channel's whole member set: it replaces what was held."""

    channel: str
    members: tuple[Member, ...]


@dataclass(frozen=True, slots=True)
class Join:
    """A member joined, or (``update``) an existing connection changed its meta."""

    channel: str
    member: Member
    update: bool = False


@dataclass(frozen=True, slots=True)
class Leave:
    """A member left (its connection untracked, closed, or was dropped)."""

    channel: str
    member: Member


@dataclass(frozen=True, slots=True)
class Broadcast:
    """A client message another connection published: ``data`` from user ``sender``."""

    channel: str
    sender: str
    data: Any


PresenceEvent = PresenceSnapshot | Join | Leave
PresenceHandler = Callable[[PresenceEvent], Awaitable[None] | None]
BroadcastHandler = Callable[[Broadcast], Awaitable[None] | None]


def apply(members: dict[str, Member], frame: Mapping[str, Any]) -> PresenceEvent | None:
    """Apply a ``presence``/``join``/``leave`` frame to ``members`` (conn -> Member), in
    place; the event to report, or None when it changes nothing (a leave of a stranger)."""
    channel = str(frame.get("channel", ""))
    kind = frame.get("type")
    if kind == "presence":
        fresh = [Member.from_frame(m) for m in frame.get("members") or ()]
        members.clear()
        members.update((m.conn, m) for m in fresh)
        return PresenceSnapshot(channel, tuple(fresh))
    raw = frame.get("member")
    if not isinstance(raw, Mapping):
        return None
    member = Member.from_frame(raw)
    if kind == "join":
        update = member.conn in members
        members[member.conn] = member
        return Join(channel, member, update)
    held = members.pop(member.conn, None) if kind == "leave" else None
    return None if held is None else Leave(channel, held)
