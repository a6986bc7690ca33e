"""Typed readers of ``PGCAST_*`` environment variables, and the error they raise.

Each process builds ONE frozen settings object from a mapping (``os.environ`` in
the entry point, a dict in tests) before anything starts. A bad value raises
:class:`ConfigError`, whose message is the one line printed before exiting non-zero.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit

_N = TypeVar("_N", int, float)

DEFAULT_DATABASE_URL = "postgresql://localhost:5432/postgres"
DEFAULT_REDIS_URL = "redis://localhost:6379/0"


class ConfigError(Exception):
    """Bad configuration: the message names the variable and what is wrong."""


class EnvReader:
    """Reads typed values from an environment mapping; records every name it reads."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.read: set[str] = set()

    def _raw(self, name: str) -> str | None:
        self.read.add(name)
        value = self.env.get(name)
        if value is None or value.strip() == "":
            return None
        return value.strip()

    def text(self, name: str, default: str) -> str:
        value = self._raw(name)
        return default if value is None else value

    def optional(self, name: str) -> str | None:
        return self._raw(name)

    def integer(
        self, name: str, default: int, *, minimum: int = 0, maximum: int | None = None
    ) -> int:
        value = self._raw(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            raise ConfigError(f"{name}={value!r} is not an integer") from None
        return self._bounded(name, number, minimum, maximum)

    def number(
        self, name: str, default: float, *, minimum: float = 0.0, maximum: float | None = None
    ) -> float:
        value = self._raw(name)
        if value is None:
            return default
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(f"{name}={value!r} is not a number") from None
        if not math.isfinite(number):  # nan, inf: no setting means "unbounded" this way
            raise ConfigError(f"{name}={value!r} is not a number: use a finite value")
        return self._bounded(name, number, minimum, maximum)

    def flag(self, name: str, default: bool) -> bool:
        value = self._raw(name)
        if value is None:
            return default
        lowered = value.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name}={value!r} is not a boolean (use true or false)")

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.text(name, default).lower()
        if value not in choices:
            raise ConfigError(f"{name}={value!r} must be one of: {', '.join(choices)}")
        return value

    def csv(self, name: str) -> tuple[str, ...]:
        value = self._raw(name)
        if value is None:
            return ()
        return tuple(part.strip() for part in value.split(",") if part.strip())

    def url(self, name: str, default: str, schemes: tuple[str, ...]) -> str:
        value = self.text(name, default)
        try:
            parts = urlsplit(value)
        except ValueError as exc:
            raise ConfigError(f"{name} is not a valid URL: {exc}") from None
        if parts.scheme not in schemes:
            raise ConfigError(
                f"{name} must start with {' or '.join(s + '://' for s in schemes)}"
                f" (got {parts.scheme or 'no scheme'}://...)"
            )
        return value

    @staticmethod
    def _bounded(name: str, number: _N, minimum: _N, maximum: _N | None) -> _N:
        if number < minimum or (maximum is not None and number > maximum):
            upper = "" if maximum is None else f" and <= {maximum}"
            raise ConfigError(f"{name}={number} must be >= {minimum}{upper}")
        return number

    def unknown(self, prefix: str = "PGCAST_") -> list[str]:
        """``prefix`` variables present in the environment that nothing read (typos)."""
        return sorted(k for k in self.env if k.startswith(prefix) and k not in self.read)


def redact_url(url: str) -> str:
    """The URL with any password (userinfo or ``?password=``) replaced, safe to log."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if parts.password is not None:
        netloc = parts.netloc.replace(":" + parts.password + "@", ":***@", 1)
        parts = parts._replace(netloc=netloc)
    # asyncpg and redis-py both accept the password as a query parameter too.
    query = parse_qsl(parts.query, keep_blank_values=True)
    if any(key.lower() == "password" for key, _ in query):
        safe = [(k, "***" if k.lower() == "password" else v) for k, v in query]
        parts = parts._replace(query=urlencode(safe, safe="*"))
    return parts.geturl()
