"""The gateway's own layering: pure modules, Redis-side modules, HTTP-side modules."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.test_import_rules import imported_roots

GATEWAY = Path(__file__).resolve().parents[2] / "gateway"
PURE = [
    "auth", "batch", "channel", "codes", "config", "handshake", "limits",
    "message", "protocol", "resume", "session", "token_cli", "wire",
]  # fmt: skip
REDIS_SIDE = [
    "control", "history", "hub", "presence", "presence_store", "pubsub", "shard_link", "topology",
]  # fmt: skip
HTTP_SIDE = ["admission", "probes", "sse", "ws"]


@pytest.mark.parametrize("name", PURE)
def test_pure_modules_import_no_io_library(name: str) -> None:
    """Protocol logic, codes, claims, resume plans: no aiohttp, no redis."""
    assert not imported_roots(GATEWAY / f"{name}.py") & {"aiohttp", "redis", "asyncpg"}


@pytest.mark.parametrize("name", REDIS_SIDE)
def test_redis_side_knows_no_http(name: str) -> None:
    assert "aiohttp" not in imported_roots(GATEWAY / f"{name}.py")


@pytest.mark.parametrize("name", HTTP_SIDE)
def test_http_side_knows_no_redis(name: str) -> None:
    assert "redis" not in imported_roots(GATEWAY / f"{name}.py")
