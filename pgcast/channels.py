"""Channel names and glob patterns: the rules of the contract, as pure functions.

A name is 1..255 characters, none a control character (C0, DEL, C1) nor a glob
character ``* ? [ ]``. In a pattern ``*`` matches any run of characters (``:``
included) and ``?`` exactly one; nothing else is special.
"""

from __future__ import annotations

import re
from functools import lru_cache

MAX_CHANNEL_LENGTH = 255
_GLOB_CHARS = frozenset("*?[]")


def _is_control(ch: str) -> bool:
    code = ord(ch)
    return code < 0x20 or 0x7F <= code <= 0x9F


def channel_error(name: object) -> str | None:
    """Why ``name`` is not a valid channel name, or None when it is."""
    if not isinstance(name, str):
        return "channel must be a string"
    if not name:
        return "channel must not be empty"
    if len(name) > MAX_CHANNEL_LENGTH:
        return f"channel longer than {MAX_CHANNEL_LENGTH} characters"
    for ch in name:
        if _is_control(ch):
            return "channel contains a control character"
        if ch in _GLOB_CHARS:
            return "channel contains a glob character (* ? [ ])"
    return None


def is_valid_channel(name: object) -> bool:
    return channel_error(name) is None


def pattern_error(pattern: object) -> str | None:
    """Why ``pattern`` is not a valid grant pattern, or None (``[``/``]`` are refused)."""
    if not isinstance(pattern, str) or not pattern:
        return "pattern must be a non-empty string"
    if len(pattern) > MAX_CHANNEL_LENGTH:
        return f"pattern longer than {MAX_CHANNEL_LENGTH} characters"
    if any(_is_control(ch) or ch in "[]" for ch in pattern):
        return "pattern contains a control character or [ ]"
    return None


@lru_cache(maxsize=4096)
def _segments(pattern: str) -> tuple[re.Pattern[str], ...]:
    """The pattern's ``*``-separated pieces; each has a fixed length (``?`` is one char)."""
    return tuple(
        re.compile("".join("." if ch == "?" else re.escape(ch) for ch in piece), re.DOTALL)
        for piece in pattern.split("*")
    )


def matches(pattern: str, channel: str) -> bool:
    """Whether ``channel`` matches the grant ``pattern`` (whole-string match).

    The pieces between stars are matched left to right, each at its earliest
    position: O(len(pattern) * len(channel)), never the exponential backtracking
    that one regex with several ``.*`` shows on a crafted channel name.
    """
    if "*" not in pattern and "?" not in pattern:
        return pattern == channel
    pieces = _segments(pattern)
    if len(pieces) == 1:
        return pieces[0].fullmatch(channel) is not None
    first, *middle, last = pieces
    head = first.match(channel)
    if head is None:
        return False
    tail_start = len(channel) - len(pattern.rsplit("*", 1)[1])
    if tail_start < head.end() or last.fullmatch(channel, tail_start) is None:
        return False
    pos = head.end()
    for piece in middle:
        found = piece.search(channel, pos, tail_start)
        if found is None:
            return False
        pos = found.end()
    return True


def user_channel(sub: str) -> str:
    """The implicit per-user channel of subject ``sub``."""
    return f"user:{sub}"
