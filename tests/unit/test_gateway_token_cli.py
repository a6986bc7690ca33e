"""pgcast-token: mints tokens the gateway accepts; a missing key is a one-line error."""

from __future__ import annotations

import pytest

from gateway.auth import Verifier
from gateway.config import GatewaySettings
from gateway.token_cli import main
from tests.gateway_support import SECRET


def test_mints_a_token_the_gateway_accepts(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGCAST_JWT_SECRET", SECRET)
    assert main(["--sub", "42", "--channels", "articles, orders:*", "--ttl", "60"]) == 0
    token = capsys.readouterr().out.strip()
    claims = Verifier(GatewaySettings.from_env({"PGCAST_JWT_SECRET": SECRET})).verify(token)
    assert claims.sub == "42"
    assert claims.channels == ("articles", "orders:*")


def test_no_secret_is_one_line_exit_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PGCAST_JWT_SECRET", raising=False)
    assert main(["--sub", "42"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "PGCAST_JWT_SECRET" in err


def test_bad_channel_pattern_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--sub", "1", "--secret", SECRET, "--channels", "a[b]"]) == 2
    assert "--channels" in capsys.readouterr().err
