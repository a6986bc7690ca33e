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
def _compile(pattern: str) -> re.Pattern[str]:
    parts = []
    for ch in pattern:
        if ch == "*":
            parts.append(".*")
        elif ch == "?":
            parts.append(".")
        else:
            parts.append(re.escape(ch))
    return re.compile("".join(parts), re.DOTALL)


def matches(pattern: str, channel: str) -> bool:
    """Whether ``channel`` matches the grant ``pattern`` (whole-string match)."""
    if "*" not in pattern and "?" not in pattern:
        return pattern == channel
    return _compile(pattern).fullmatch(channel) is not None


def user_channel(sub: str) -> str:
    """The implicit per-user channel of subject ``sub``."""
    return f"user:{sub}"
