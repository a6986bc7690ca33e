"""Typed environment readers and their one-line errors."""

from __future__ import annotations

import pytest

from pgcast.backoff import Backoff
from pgcast.settings import ConfigError, EnvReader, redact_url


def test_defaults_and_values() -> None:
    """Unset or blank variables take the default; set ones are parsed."""
    env = EnvReader({"PGCAST_A": "5", "PGCAST_B": " ", "PGCAST_C": "off", "PGCAST_D": "x, y,,z"})
    assert env.integer("PGCAST_A", 1) == 5
    assert env.integer("PGCAST_B", 7) == 7
    assert env.flag("PGCAST_C", True) is False
    assert env.csv("PGCAST_D") == ("x", "y", "z")
    assert env.number("PGCAST_E", 0.5) == 0.5


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda e: e.integer("PGCAST_N", 1), "is not an integer"),
        (lambda e: e.integer("PGCAST_NEG", 1), "must be >= 0"),
        (lambda e: e.number("PGCAST_NAN", 1.0), "is not a number"),
        (lambda e: e.flag("PGCAST_N", True), "is not a boolean"),
        (lambda e: e.choice("PGCAST_N", "a", ("a", "b")), "must be one of"),
        (lambda e: e.url("PGCAST_N", "", ("redis", "rediss")), "must start with"),
    ],
)
def test_bad_values_raise_one_line_errors(call: object, message: str) -> None:
    """A bad value names the variable and what is wrong, on one line."""
    env = EnvReader({"PGCAST_N": "nope", "PGCAST_NEG": "-1", "PGCAST_NAN": "nan"})
    with pytest.raises(ConfigError, match=message) as info:
        call(env)  # type: ignore[operator]
    assert "\n" not in str(info.value)


def test_unknown_variables_are_reported() -> None:
    """PGCAST_ variables nothing read are typos worth reporting."""
    env = EnvReader({"PGCAST_KNOWN": "1", "PGCAST_TYPO": "1", "HOME": "/"})
    env.integer("PGCAST_KNOWN", 0)
    assert env.unknown() == ["PGCAST_TYPO"]


def test_redact_url_hides_passwords() -> None:
    """Passwords never reach a log line."""
    assert redact_url("redis://:s3cret@host:6379/0") == "redis://:***@host:6379/0"
    assert "s3cret" not in redact_url("postgresql://u:s3cret@h/db")
    assert redact_url("redis://host") == "redis://host"


def test_backoff_grows_caps_and_resets() -> None:
    """Full-jitter delays stay under a doubling ceiling, capped, and reset on demand."""
    backoff = Backoff(base=0.1, cap=1.0)
    delays = [backoff.next() for _ in range(10)]
    assert all(0 <= d <= 1.0 for d in delays)
    assert delays[0] <= 0.1
    backoff.reset()
    assert backoff.next() <= 0.1
