"""Gateway settings from the environment: refusals with one-line reasons, secrets hidden."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import GatewaySettings
from pgcast.settings import ConfigError
from tests.gateway_support import SECRET


def test_no_key_refuses_to_start_with_a_clear_message() -> None:
    with pytest.raises(ConfigError, match=r"PGCAST_JWT_SECRET.*PGCAST_JWT_PUBLIC_KEY.*JWKS"):
        GatewaySettings.from_env({})


@pytest.mark.parametrize(
    ("env", "match"),
    [
        ({"PGCAST_JWT_SECRET": "short"}, "at least 32 bytes"),
        ({"PGCAST_JWT_SECRET": SECRET, "PGCAST_JWT_ALGORITHMS": "none"}, "'none' never is"),
        ({"PGCAST_JWT_SECRET": SECRET, "PGCAST_JWT_ALGORITHMS": "RS256"}, "not usable"),
        ({"PGCAST_JWT_PUBLIC_KEY": "/nonexistent/key.pem"}, "neither PEM"),
        ({"PGCAST_JWT_JWKS_URL": "file:///etc/passwd"}, "http"),
        ({"PGCAST_JWT_SECRET": SECRET, "PGCAST_PORT": "x"}, "not an integer"),
        ({"PGCAST_JWT_SECRET": SECRET, "REDIS_URL": "http://x"}, "redis://"),
        (
            {"PGCAST_JWT_SECRET": SECRET, "PGCAST_REDIS_HEARTBEAT": "5"},
            "HEARTBEAT_TIMEOUT must be longer",
        ),
    ],
)
def test_bad_values_are_refused(env: dict[str, str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        GatewaySettings.from_env(env)


def test_repr_hides_the_secret_and_the_redis_password() -> None:
    s = GatewaySettings.from_env(
        {"PGCAST_JWT_SECRET": SECRET, "REDIS_URL": "redis://u:hunter2@h:1/0"}
    )
    text = repr(s)
    assert SECRET not in text
    assert "hunter2" not in text
    assert s.jwt_algorithms == ("HS256",)


def test_public_key_from_a_file_and_unused_variables(tmp_path: Path) -> None:
    from tests.unit.test_gateway_auth import RSA_KEY, pem

    path = tmp_path / "key.pem"
    path.write_text(pem(RSA_KEY))
    s = GatewaySettings.from_env({"PGCAST_JWT_PUBLIC_KEY": str(path), "PGCAST_TYPO": "1"})
    assert s.jwt_public_key is not None
    assert s.jwt_public_key.startswith("-----BEGIN")
    assert s.jwt_algorithms == ("RS256", "ES256")
    assert s.unused_env == ("PGCAST_TYPO",)
