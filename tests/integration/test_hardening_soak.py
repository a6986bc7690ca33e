"""The bounded soak: a few hundred churned connections in ~20 s must leave nothing behind.

The same harness as ``make soak`` (tests/soak/soak.py), scaled down to fit the
test suite: a gateway process, a private Redis, events flowing, 100 client slots
reconnecting about once a second with resume. Its verdict: no gap, no duplicate,
fds and asyncio tasks back to baseline after each round, RSS flat from one
round to the next, no error in the gateway's log.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import pytest

from tests.servers import RedisInstance
from tests.soak.soak import SoakConfig, run_soak


@pytest.mark.slow
@pytest.mark.timeout(
    300
)  # ~20 s normally; each wait inside is bounded, a loaded box stretches them
async def test_bounded_soak_leaves_no_trace(private_redis: Callable[..., RedisInstance]) -> None:
    """~1,500 connections through 100 slots over 16 s: every check of the soak verdict holds."""
    redis = private_redis()
    # Clean closes only here: aborted clients are covered by a test of their own (see the
    # hardening report); `make soak` mixes in 10% of aborts.
    config = SoakConfig(
        connections=100, seconds=16, lifetime=1.0, channels=40, rate=60, abort_ratio=0.0
    )
    out = io.StringIO()
    summary = await run_soak(config, redis.url, out=out)
    assert summary["ok"], out.getvalue() + str(summary)
    assert summary["stats"]["connects"] >= 800
    assert summary["stats"]["resumes"] * 2 >= summary["stats"]["subscribes"], "mostly resumes"
    assert summary["stats"]["messages"] > 0
