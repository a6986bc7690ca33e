"""The channel-name and glob rules of the contract, as pure functions."""

from __future__ import annotations

import pytest

from pgcast.channels import channel_error, is_valid_channel, matches, pattern_error, user_channel


@pytest.mark.parametrize(
    "name",
    ["user:42", "articles", "a", "x" * 255, "orders:eu/1", "ünïcødé", "with space", "{tag}"],
)
def test_valid_names_are_accepted(name: str) -> None:
    """Any printable text of 1..255 characters without glob characters is a name."""
    assert channel_error(name) is None


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "empty"),
        ("x" * 256, "longer"),
        ("a*", "glob"),
        ("a?", "glob"),
        ("a[b]", "glob"),
        ("a\x00b", "control"),
        ("a\nb", "control"),
        ("a\x7fb", "control"),
        ("a\x85b", "control"),
        (42, "string"),
    ],
)
def test_invalid_names_say_why(name: object, reason: str) -> None:
    """Each refused name gets a reason naming the rule it breaks."""
    error = channel_error(name)
    assert error is not None
    assert reason in error
    assert not is_valid_channel(name)


@pytest.mark.parametrize(
    ("pattern", "channel", "expected"),
    [
        ("articles", "articles", True),
        ("articles", "articles2", False),
        ("orders:*", "orders:1", True),
        ("orders:*", "orders:eu:1", True),
        ("orders:*", "orders", False),
        ("orders:*", "xorders:1", False),
        ("room:?", "room:1", True),
        ("room:?", "room:12", False),
        ("*", "anything:at:all", True),
        ("a.b", "axb", False),
        ("a+", "aa", False),
    ],
)
def test_glob_matching(pattern: str, channel: str, expected: bool) -> None:
    """`*` matches any run (colons included), `?` one character, nothing else is special."""
    assert matches(pattern, channel) is expected


def test_patterns_refuse_brackets_and_controls() -> None:
    """Grant patterns may use * and ? only."""
    assert pattern_error("orders:*") is None
    assert pattern_error("a[bc]") is not None
    assert pattern_error("a\x01") is not None
    assert pattern_error("") is not None


def test_user_channel() -> None:
    """The implicit per-user channel is user:<sub>."""
    assert user_channel("42") == "user:42"
