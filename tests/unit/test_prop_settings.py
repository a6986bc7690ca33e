"""Property tests of the settings readers: any text gives a value in bounds or a ConfigError."""

from __future__ import annotations

import math
from urllib.parse import quote, urlsplit

from hypothesis import example, given
from hypothesis import strategies as st

from pgcast.settings import ConfigError, EnvReader, redact_url

ENV_TEXT = st.text(st.characters(codec="utf-8", blacklist_characters="\x00"))


def read(env_value: str, method: str, *args: object, **kwargs: object) -> object:
    """The reader's value, or the ConfigError it raised (returned, to inspect both outcomes)."""
    reader = EnvReader({"PGCAST_X": env_value})
    try:
        value: object = getattr(reader, method)("PGCAST_X", *args, **kwargs)
    except ConfigError as exc:
        return exc
    return value


@given(ENV_TEXT)
@example("1_000")
@example(" 7 ")
@example("-1")
@example("1e3")
@example("99999999999999999999999")
def test_integer_is_in_bounds_or_a_config_error(value: str) -> None:
    """integer() returns an int within [minimum, maximum] or raises ConfigError naming it."""
    got = read(value, "integer", 5, minimum=1, maximum=1000)
    if isinstance(got, ConfigError):
        assert "PGCAST_X" in str(got)
        assert "\n" not in str(got)  # one line, whatever the value holds
        return
    assert isinstance(got, int)
    assert 1 <= got <= 1000


@given(ENV_TEXT)
@example("nan")
@example("inf")
@example("-inf")
@example("1e309")
@example("0.5")
def test_number_is_finite_and_in_bounds_or_a_config_error(value: str) -> None:
    """number() never yields NaN or infinity, even with no maximum."""
    got = read(value, "number", 1.0, minimum=0.0)
    if isinstance(got, ConfigError):
        assert "PGCAST_X" in str(got)
        return
    assert isinstance(got, float)
    assert math.isfinite(got)
    assert got >= 0.0


@given(ENV_TEXT)
@example("TRUE")
@example(" off ")
@example("2")
def test_flag_is_a_bool_or_a_config_error(value: str) -> None:
    """flag() accepts the usual spellings, case-insensitive, and refuses anything else."""
    got = read(value, "flag", False)
    if isinstance(got, ConfigError):
        assert value.strip().lower() not in ("1", "true", "yes", "on", "0", "false", "no", "off")
        return
    # An empty value means the default (False here).
    assert got is (value.strip().lower() in ("1", "true", "yes", "on"))


@given(ENV_TEXT)
def test_choice_returns_one_of_the_choices(value: str) -> None:
    """choice() returns a listed choice (or the default) or raises ConfigError."""
    got = read(value, "choice", "json", ("json", "text"))
    assert isinstance(got, ConfigError) or got in ("json", "text")


@given(st.lists(st.text(st.characters(blacklist_categories=("Cs", "Zs", "Cc")), min_size=1)))
def test_csv_round_trips_clean_items(items: list[str]) -> None:
    """csv() splits on commas, strips, drops empties: clean items come back as given."""
    clean = [item for item in items if "," not in item and item.strip() == item]
    assert read(" , ".join(clean), "csv") == tuple(clean)


@given(ENV_TEXT)
def test_csv_items_are_stripped_and_non_empty(value: str) -> None:
    """Whatever the text, csv() yields stripped, non-empty items without commas."""
    got = read(value, "csv")
    assert isinstance(got, tuple)
    for item in got:
        assert item
        assert item == item.strip()
        assert "," not in item


@given(ENV_TEXT)
@example("http://[::1")
@example("redis://")
@example("rediss://u:p@h:99999/0")
def test_url_is_accepted_or_a_config_error(value: str) -> None:
    """url() returns a URL with an allowed scheme or raises ConfigError, never ValueError."""
    got = read(value, "url", "redis://localhost/0", ("redis", "rediss"))
    if isinstance(got, ConfigError):
        return
    assert isinstance(got, str)
    assert urlsplit(got).scheme in ("redis", "rediss")


SECRET = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=20)


@given(SECRET, st.sampled_from(["redis", "rediss", "postgresql", "postgres"]))
@example("p@ss:word", "redis")
@example("%41", "postgresql")
def test_redact_url_hides_userinfo_passwords(secret: str, scheme: str) -> None:
    """The userinfo password, however encoded, is not in the redacted URL."""
    encoded = quote(secret, safe="")
    url = f"{scheme}://user:{encoded}@db.example:5432/app?sslmode=require"
    assert redact_url(url) == f"{scheme}://user:***@db.example:5432/app?sslmode=require"


@given(SECRET)
@example("s3cret")
def test_redact_url_hides_query_passwords(secret: str) -> None:
    """``?password=`` (accepted by asyncpg and redis-py) is redacted as well."""
    encoded = quote(secret, safe="")
    redacted = redact_url(f"postgresql://u@h/db?sslmode=require&password={encoded}")
    assert redacted == "postgresql://u@h/db?sslmode=require&password=***"


@given(ENV_TEXT)
def test_redact_url_never_raises(value: str) -> None:
    """Any text, even an unparseable URL, yields a printable string."""
    assert isinstance(redact_url(value), str)


@given(st.sets(st.from_regex(r"PGCAST_[A-Z_]{1,12}", fullmatch=True), max_size=6))
def test_unknown_reports_exactly_the_unread_names(names: set[str]) -> None:
    """unknown() lists every PGCAST_ variable nothing read, and only those."""
    reader = EnvReader(dict.fromkeys(names, "1") | {"OTHER": "x"})
    read_ones = sorted(names)[: len(names) // 2]
    for name in read_ones:
        reader.optional(name)
    assert reader.unknown() == sorted(names - set(read_ones))
