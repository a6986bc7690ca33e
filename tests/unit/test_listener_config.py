"""The listener's settings: defaults, validation, secrets kept out of repr, unknown names."""

from __future__ import annotations

import pytest

from listener.config import DEFAULT_LOCK_KEY, load_settings
from listener.migrate import MIGRATION_LOCK_KEY, database_url, migrations
from pgcast.settings import ConfigError


def test_defaults_follow_the_contract() -> None:
    """No environment: contract defaults (port 8081, local servers, auto wake-up mode)."""
    settings = load_settings({})
    assert settings.port == 8081
    assert settings.database_url == "postgresql://localhost:5432/postgres"
    assert settings.redis_url == "redis://localhost:6379/0"
    assert settings.notify_mode == "auto"
    assert (settings.awake_poll, settings.awake_linger, settings.wake_gap) == (0.001, 0.2, 0.002)
    assert settings.relay_channels == ()
    assert settings.lock_key == DEFAULT_LOCK_KEY != MIGRATION_LOCK_KEY


def test_values_are_parsed() -> None:
    """Every kind of value is read from its variable."""
    settings = load_settings(
        {
            "PGCAST_LISTENER_PORT": "9000",
            "PGCAST_NOTIFY_MODE": "POLL",
            "PGCAST_POLL_INTERVAL": "0.25",
            "PGCAST_RELAY_CHANNELS": " legacy , orders:new ",
            "PGCAST_HISTORY_SIZE": "50",
            "PGCAST_LOCK_KEY": "-5",
            "PGCAST_TCP_USER_TIMEOUT": "0",
            "PGCAST_AWAKE_POLL": "0.001",
            "PGCAST_AWAKE_LINGER": "0",
            "PGCAST_WAKE_GAP": "0.5",
            "PGCAST_VACUUM_EVERY": "0",
        }
    )
    assert settings.vacuum_every == 0
    assert (settings.awake_poll, settings.awake_linger, settings.wake_gap) == (0.001, 0.0, 0.5)
    assert (settings.port, settings.notify_mode, settings.poll_interval) == (9000, "poll", 0.25)
    assert settings.relay_channels == ("legacy", "orders:new")
    assert (settings.history_size, settings.lock_key, settings.tcp_user_timeout) == (50, -5, 0)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PGCAST_RELAY_CHANNELS", "pgcast"),
        ("PGCAST_RELAY_CHANNELS", "x" * 64),
        ("PGCAST_RELAY_CHANNELS", "a?b"),
        ("PGCAST_HISTORY_TTL", "0"),
        ("PGCAST_STANDBY_RETRY", "nan"),
        ("PGCAST_LOG_LEVEL", "loud"),
        ("PGCAST_NOTIFY_MODE", "sometimes"),
        ("PGCAST_AWAKE_POLL", "0"),
        ("PGCAST_AWAKE_POLL", "2"),
        ("PGCAST_AWAKE_LINGER", "-1"),
        ("PGCAST_WAKE_GAP", "soon"),
        ("PGCAST_VACUUM_EVERY", "-1"),
        ("REDIS_URL", "localhost:6379"),
    ],
)
def test_bad_values_raise_config_error_naming_the_variable(name: str, value: str) -> None:
    """Each bad value is a ConfigError whose one-line message names the variable."""
    with pytest.raises(ConfigError, match=name) as info:
        load_settings({name: value})
    assert "\n" not in str(info.value)


def test_repr_hides_urls_and_redacted_forms_hide_passwords() -> None:
    """Settings can be logged: no DSN in repr, passwords redacted in the safe forms."""
    settings = load_settings(
        {
            "DATABASE_URL": "postgresql://app:s3cret@db:5432/app",
            "REDIS_URL": "redis://:r3dis@cache:6379/0",
        }
    )
    assert "s3cret" not in repr(settings)
    assert "r3dis" not in repr(settings)
    assert "s3cret" not in settings.safe_database_url
    assert "r3dis" not in settings.safe_redis_url


def test_unknown_pgcast_variables_are_collected_not_refused() -> None:
    """Names the listener does not read (a typo, or the gateway's) are listed, not fatal."""
    settings = load_settings({"PGCAST_HISTORY_SIZ": "5", "PGCAST_JWT_SECRET": "x", "HOME": "/"})
    assert settings.unknown == ("PGCAST_HISTORY_SIZ", "PGCAST_JWT_SECRET")


def test_migrations_are_ordered_and_dsn_checked() -> None:
    """Shipped SQL files sort by their NNN_ prefix; migrate's DSN is validated."""
    names = [m.name for m in migrations()]
    assert names == sorted(names)
    assert names[0].startswith("001_")
    assert database_url({"DATABASE_URL": "postgres://h/db"}) == "postgres://h/db"
    with pytest.raises(ConfigError):
        database_url({"DATABASE_URL": "mysql://h/db"})
