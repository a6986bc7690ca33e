"""Pure listener logic: script replies, keepalive options, retrying and fencing decisions."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Collection, Mapping, Sequence

import asyncpg
import pytest

from listener.config import load_settings
from listener.leader import Elector, is_postgres_failure, jittered
from listener.metrics import ListenerMetrics
from listener.pgconn import server_settings, set_keepalive
from listener.publisher import (
    PUBLISH_SCRIPT,
    RUN_MAX,
    Event,
    Mark,
    PublishResult,
    RunReply,
    parse_result,
    runs,
)
from listener.relay import Fenced, RetryingPublisher
from listener.session import first_leaf


def test_parse_result_of_each_status() -> None:
    """A run's reply becomes one PublishResult per event; fenced covers the run; garbage fails."""
    reply = [b"ab", 4, b"pdp", b""]  # published offsets run up to 4: 3 and 4
    assert parse_result(reply, 3) == RunReply(
        [
            PublishResult("published", 3, "ab"),
            PublishResult("duplicate", None, "ab"),
            PublishResult("published", 4, "ab"),
        ],
        Mark("ab", 4),
        "",
    )
    dups = parse_result([b"ab", 0, b"dd", b"zz:9"], 2)
    assert dups.results == [PublishResult("duplicate", None, "ab")] * 2
    assert dups.behind == "zz:9"  # Redis had gone back to epoch zz, offset 9
    fenced = parse_result([None, b"fenced"], 3)
    assert fenced == RunReply([PublishResult("fenced", None, None)] * 3, None, "")
    for garbage, count in (
        ([b"ab", 1, b"x", b""], 1),
        ([b"ab", 1, b"p", b""], 2),
        ([b"ab", b"published", 1, b""], 1),
        ([b"ab", 1, b"p"], 1),
    ):
        with pytest.raises(ValueError, match="unexpected"):
            parse_result(garbage, count)


def test_runs_group_by_channel_keep_order_within_and_cap_their_length() -> None:
    """Events are grouped per channel, in order within each, no run longer than RUN_MAX."""
    events = [Event("a", b"1"), Event("b", b"2"), Event("a", b"3"), Event("c", b"4")]
    assert runs(events) == [[0, 2], [1], [3]]
    many = [Event("c", b"x", i) for i in range(RUN_MAX * 2 + 1)]
    assert [len(run) for run in runs(many)] == [RUN_MAX, RUN_MAX, 1]
    assert runs(many)[1][0] == RUN_MAX
    assert runs([]) == []


def test_script_builds_the_kernel_frame_layout() -> None:
    """The Lua source splices the same literal pieces as pgcast.keys.message_frame."""
    for piece in ('{"type":"message","channel":', ',"offset":"', '","data":'):
        assert piece in PUBLISH_SCRIPT


def test_keepalive_options_are_set_on_a_tcp_socket() -> None:
    """Keepalives and TCP_USER_TIMEOUT land on the socket; a Unix socket is left alone."""
    settings = load_settings({"PGCAST_TCP_KEEPALIVE_IDLE": "7", "PGCAST_TCP_USER_TIMEOUT": "4"})
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        assert set_keepalive(sock, settings)
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        if hasattr(socket, "TCP_KEEPIDLE"):
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 7
        if hasattr(socket, "TCP_USER_TIMEOUT"):
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 4000
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as unix:
        assert not set_keepalive(unix, settings)
    gucs = server_settings(settings)
    assert (gucs["tcp_keepalives_idle"], gucs["tcp_user_timeout"]) == ("7", "4000")


def test_elector_accepts_the_smallest_backoff_cap() -> None:
    """PGCAST_BACKOFF_MAX at its minimum still builds a valid backoff."""

    async def lead(conn: object, epoch: int) -> None:
        return None

    elector = Elector(load_settings({"PGCAST_BACKOFF_MAX": "0.01"}), ListenerMetrics(), lead)
    assert elector.backoff.next() <= 0.01


def test_jitter_stays_within_half_the_interval() -> None:
    """Standby retries spread over [0.5, 1.5] x the interval."""
    delays = [jittered(2.0) for _ in range(500)]
    assert all(1.0 <= d <= 3.0 for d in delays)
    assert max(delays) - min(delays) > 1.0


def test_first_leaf_unwraps_nested_groups() -> None:
    """A TaskGroup failure is reported by its first real exception."""
    inner = ValueError("boom")
    group = ExceptionGroup("outer", [ExceptionGroup("inner", [inner]), KeyError("x")])
    assert first_leaf(group) is inner


class FlakyPublisher:
    """Fails ``failures`` times, then answers with ``status`` for every event."""

    def __init__(self, failures: int, status: str = "published") -> None:
        self.failures = failures
        self.status = status
        self.calls = 0

    async def claim_fence(self, leader_epoch: int) -> bool:
        self.calls += 1
        if self.failures:
            self.failures -= 1
            raise ConnectionError("redis down")
        return self.status != "fenced"

    async def publish(
        self,
        leader_epoch: int,
        events: Sequence[Event],
        watermarks: Mapping[str, Mark] | None = None,
        renew: Collection[str] = (),
    ) -> list[PublishResult]:
        self.calls += 1
        if self.failures:
            self.failures -= 1
            raise ConnectionError("redis down")
        return [PublishResult(self.status, 1, "e") for _ in events]  # type: ignore[arg-type]

    def mark(self, channel: str) -> Mark | None:
        return None

    async def identity(self) -> str | None:
        return None


async def test_retrying_publisher_retries_until_redis_answers() -> None:
    """Failed publishes are retried with backoff and counted; the events are kept."""
    metrics = ListenerMetrics()
    flaky = FlakyPublisher(failures=3)
    retrying = RetryingPublisher(flaky, 1, metrics, backoff_max=0.01)
    async with asyncio.timeout(5):
        results = await retrying.publish([Event("c", b"1", 1)])
    assert [r.status for r in results] == ["published"]
    assert flaky.calls == 4
    assert metrics.errors.labels("redis")._value.get() == 3
    assert not retrying.failing


async def test_claim_against_a_newer_fence_raises_fenced() -> None:
    """A leader whose epoch is below the Redis fence must not lead."""
    retrying = RetryingPublisher(FlakyPublisher(1, "fenced"), 1, ListenerMetrics(), 0.01)
    async with asyncio.timeout(5):
        with pytest.raises(Fenced):
            await retrying.claim()


def test_a_session_ended_mid_statement_is_a_known_postgres_failure() -> None:
    """asyncpg's InternalClientError (server gone mid-statement) is logged without traceback."""
    assert is_postgres_failure(asyncpg.InternalClientError("protocol state"))
    assert is_postgres_failure(ConnectionResetError())
    assert not is_postgres_failure(ValueError("a bug"))
