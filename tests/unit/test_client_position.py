"""The Python client's pure parts: channel position (resume + de-duplication) and tokens."""

from __future__ import annotations

import base64
import random

import orjson
import pytest

from pgcast.backoff import Backoff
from pgcast_client.codes import CloseCode, Outcome, reconnect_plan
from pgcast_client.position import Position, offset_key
from pgcast_client.tokens import NoTokenError, TokenSource, refresh_delay, token_expiry


def fake_jwt(claims: dict[str, object]) -> str:
    body = base64.urlsafe_b64encode(orjson.dumps(claims)).rstrip(b"=").decode()
    return f"eyJhbGciOiJIUzI1NiJ9.{body}.sig"


def test_fresh_subscription_starts_at_the_latest_offset() -> None:
    """A first subscribe resumes later from the offset the gateway reported."""
    pos = Position()
    assert pos.resume_fields() == {}
    lost = pos.subscribed("e1", "7", recovered=False, resumed=False, active=False)
    assert not lost
    assert pos.resume_fields() == {"since": "7", "epoch": "e1"}


def test_messages_advance_and_duplicates_are_refused() -> None:
    """Each offset is delivered once; a repeat or an older one is dropped."""
    pos = Position()
    pos.subscribed("e1", "7", recovered=False, resumed=False, active=False)
    assert pos.accept("8")
    assert pos.accept("9")
    assert not pos.accept("9")
    assert not pos.accept("8")
    assert pos.accept("10")  # numeric, not lexicographic: "10" > "9"
    assert pos.resume_fields() == {"since": "10", "epoch": "e1"}


def test_recovered_resume_keeps_the_position_for_the_replay() -> None:
    """recovered:true after a resume: replayed messages continue from ``since``."""
    pos = Position("e1", "10")
    fields = pos.resume_fields()
    assert fields == {"since": "10", "epoch": "e1"}
    assert not pos.subscribed("e1", "12", recovered=True, resumed=True, active=False)
    assert pos.accept("11")
    assert pos.accept("12")
    assert pos.offset == "12"


def test_recovered_false_on_resume_reports_lost_continuity() -> None:
    """History did not cover the gap: the app must refetch, the position restarts."""
    pos = Position("e1", "10")
    pos.accept("10")
    assert pos.subscribed("e2", "3", recovered=False, resumed=True, active=False)
    assert pos.resume_fields() == {"since": "3", "epoch": "e2"}
    assert pos.accept("1")  # new epoch: offsets start over, nothing is a duplicate


def test_unsolicited_subscribed_reports_lost_continuity() -> None:
    """A live subscription told recovered:false (e.g. Redis restarted) is a gap."""
    pos = Position()
    pos.subscribed("e1", "0", recovered=False, resumed=False, active=False)
    pos.accept("1")
    assert pos.subscribed("e9", "0", recovered=False, resumed=False, active=True)
    assert pos.epoch == "e9"


def test_opaque_offsets_only_compare_for_equality() -> None:
    """Offsets are opaque in the contract: non-decimal ones are de-duplicated by equality."""
    assert offset_key("42") == 42
    assert offset_key("a1") is None
    assert offset_key("٣") is None  # a non-ASCII digit is not an offset
    pos = Position()
    assert pos.accept("x1")
    assert not pos.accept("x1")
    assert pos.accept("x0")


def test_token_expiry_reads_exp_without_verifying() -> None:
    """exp is read from the payload; anything unreadable means 'no expiry known'."""
    assert token_expiry(fake_jwt({"sub": "1", "exp": 1000})) == 1000.0
    assert token_expiry(fake_jwt({"sub": "1"})) is None
    assert token_expiry("not-a-jwt") is None
    assert token_expiry("a.!!!.c") is None


def test_refresh_delay_leaves_a_margin_of_at_most_a_fifth() -> None:
    """Long tokens refresh ``margin`` before expiry; short ones at 80% of their life."""
    assert refresh_delay(fake_jwt({"exp": 4600}), now=1000, margin=30) == pytest.approx(3570)
    assert refresh_delay(fake_jwt({"exp": 1010}), now=1000, margin=30) == pytest.approx(8)
    assert refresh_delay(fake_jwt({"exp": 900}), now=1000, margin=30) == 0.0
    assert refresh_delay("opaque", now=1000, margin=30) is None


async def test_token_source_needs_exactly_one_way() -> None:
    """A fixed token or a factory, not both, not neither; an empty answer is an error."""
    with pytest.raises(NoTokenError):
        TokenSource(None, None)

    async def empty() -> str:
        return ""

    with pytest.raises(NoTokenError):
        TokenSource("t", empty)
    assert await TokenSource("t", None).get() == "t"
    assert "t" not in repr(TokenSource("secret-token", None))
    with pytest.raises(NoTokenError):
        await TokenSource(None, empty).get()


def plan(code: int, attempt: int = 0, refreshable: bool = True) -> tuple[bool, float, Backoff]:
    backoff = Backoff(0.5, 8.0)
    backoff.attempt = attempt
    result = reconnect_plan(
        Outcome(True, code, ""),
        backoff,
        refreshable=refreshable,
        restart_jitter=1.0,
        rand=random.Random(7),
    )
    return result.stop, result.delay, backoff


def test_reconnect_plan_follows_the_close_code_table() -> None:
    """1012 promptly with jitter; 4001 stops without a factory; others back off, capped."""
    stop, delay, _ = plan(CloseCode.SERVICE_RESTART, attempt=9)
    assert not stop
    assert 0 <= delay <= 1.0
    stop, _, _ = plan(CloseCode.UNAUTHORIZED, refreshable=False)
    assert stop
    stop, delay, backoff = plan(CloseCode.SLOW_CONSUMER)
    assert not stop
    assert delay <= 0.5
    assert backoff.attempt == 1
    delays = [plan(0, attempt=n)[1] for n in range(12)]
    assert all(0 <= d <= 8.0 for d in delays)
    assert CloseCode.UNAUTHORIZED.advice.startswith("token")
