"""Property tests of the channel rules: names, patterns and glob matching vs reference matchers."""

from __future__ import annotations

import fnmatch
import time
import unicodedata

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pgcast.channels import (
    MAX_CHANNEL_LENGTH,
    channel_error,
    is_valid_channel,
    matches,
    pattern_error,
    user_channel,
)

# Everything a JSON frame can carry: any code point but lone surrogates.
ANY_CHAR = st.characters(codec="utf-8")
CONTROL = st.one_of(
    st.characters(min_codepoint=0x00, max_codepoint=0x1F),
    st.just("\x7f"),
    st.characters(min_codepoint=0x80, max_codepoint=0x9F),
)
NAME_CHAR = st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="*?[]")
VALID_NAME = st.text(NAME_CHAR, min_size=1, max_size=MAX_CHANNEL_LENGTH)


def reference_error(name: str) -> bool:
    """The contract's rule, written independently: True when ``name`` is refused."""
    if not 1 <= len(name) <= MAX_CHANNEL_LENGTH:
        return True
    return any(unicodedata.category(ch) == "Cc" or ch in "*?[]" for ch in name)


def reference_match(pattern: str, channel: str) -> bool:
    """Textbook dynamic programming: ``reach[j]`` = the pattern so far matches ``channel[:j]``."""
    reach = [True] + [False] * len(channel)
    for p in pattern:
        if p == "*":
            seen = False
            reach = [seen := seen or r for r in reach]
        else:
            reach = [False] + [reach[j] and p in ("?", channel[j]) for j in range(len(channel))]
    return reach[-1]


@given(st.text(ANY_CHAR, max_size=300))
@example("")
@example("x" * 255)
@example("x" * 256)
@example("a\u0085b")  # NEL, a C1 control
@example("a\u2028b")  # LINE SEPARATOR: not C0/C1, so a valid name per the contract
def test_channel_rule_agrees_with_the_contract(name: str) -> None:
    """channel_error refuses exactly: empty, > 255, a C0/DEL/C1 control, a glob character."""
    assert (channel_error(name) is not None) == reference_error(name)
    assert is_valid_channel(name) == (channel_error(name) is None)


@given(VALID_NAME, st.data())
def test_one_control_character_anywhere_is_refused(name: str, data: st.DataObject) -> None:
    """Inserting a single control character at any position makes a valid name invalid."""
    where = data.draw(st.integers(0, len(name)))
    bad = name[:where] + data.draw(CONTROL) + name[where:]
    error = channel_error(bad[:MAX_CHANNEL_LENGTH])
    assert error is not None


@given(VALID_NAME, st.sampled_from("*?[]"), st.data())
def test_one_glob_character_anywhere_is_refused(name: str, glob: str, data: st.DataObject) -> None:
    """A wildcard in a requested name is refused (it must never act as a pattern)."""
    where = data.draw(st.integers(0, len(name) - 1))
    bad = name[:where] + glob + name[where + 1 :]
    assert channel_error(bad) == "channel contains a glob character (* ? [ ])"


@given(st.integers(MAX_CHANNEL_LENGTH + 1, 10 * 1024), NAME_CHAR)
@settings(max_examples=50)
def test_long_names_up_to_10kb_are_refused_fast(length: int, ch: str) -> None:
    """Names past 255 characters, up to 10 KB, are refused by length, cheaply."""
    start = time.thread_time()  # CPU time: a loaded machine's preemption does not count
    assert channel_error(ch * length) == "channel longer than 255 characters"
    assert pattern_error("*" * length) == "pattern longer than 255 characters"
    assert time.thread_time() - start < 0.05


@given(st.one_of(st.none(), st.integers(), st.binary(), st.lists(st.text())))
def test_non_strings_are_refused(value: object) -> None:
    """A JSON frame may carry any type where a channel belongs: only str is a name."""
    assert channel_error(value) == "channel must be a string"
    assert pattern_error(value) is not None


@given(st.text(alphabet="ab:*?", max_size=12), st.text(alphabet="ab:", max_size=16))
@settings(max_examples=2000)
@example("a*a*b", "aaab")
@example("*:*", ":")
@example("?*?", "ab")
@example("*?", "")
def test_matching_agrees_with_references_small_alphabet(pattern: str, channel: str) -> None:
    """On a dense alphabet, matches() equals a recursive matcher and fnmatchcase."""
    expected = reference_match(pattern, channel)
    assert matches(pattern, channel) is expected
    assert fnmatch.fnmatchcase(channel, pattern) is expected


@given(st.text(st.characters(codec="utf-8", blacklist_characters="[]"), max_size=40))
def test_matching_agrees_with_reference_any_text(pattern: str) -> None:
    """Regex metacharacters, newlines and unicode in patterns are literal except * and ?."""
    for channel in (pattern, pattern.replace("*", "").replace("?", "x"), pattern + "\n"):
        assert matches(pattern, channel) is reference_match(pattern, channel)


@given(VALID_NAME)
def test_a_name_matches_itself_and_the_star(name: str) -> None:
    """A name (no wildcards) is a pattern that matches exactly itself; `*` matches all."""
    assert matches(name, name)
    assert matches("*", name)
    assert not matches(name, name + "x")
    assert pattern_error(name) is None


@given(VALID_NAME, VALID_NAME)
def test_prefix_grants_do_not_leak(sub: str, other: str) -> None:
    """A grant ``user:<sub>`` (no wildcard) matches no other user's channel."""
    if sub != other:
        assert not matches(user_channel(sub), user_channel(other))


@pytest.mark.parametrize(
    ("pattern", "channel"),
    [
        ("*a" * 10 + "*b", "a" * 255),
        ("*:*:*:*:*:*:x", ":" * 255),
        ("*" + "?*" * 120, "a" * 254),
        ("?" * 254 + "*x", "y" * 255),
    ],
)
def test_adversarial_patterns_match_in_linear_time(pattern: str, channel: str) -> None:
    """Star-heavy grants against crafted names finish in well under a millisecond's scale.

    A single regex with several ``.*`` backtracks exponentially here (seconds to
    hours of event-loop time per subscribe): matches() must not.
    """
    start = time.thread_time()
    result = matches(pattern[:255], channel)
    assert time.thread_time() - start < 0.05
    assert result is reference_match(pattern[:255], channel)
