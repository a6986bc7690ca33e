"""Where the token is found, the Origin rule, and the request rate limit."""

from __future__ import annotations

from gateway.handshake import TokenSource, find_token, origin_allowed
from gateway.limits import TokenBucket


def test_token_sources_in_order() -> None:
    """Authorization header first, then the bearer.<jwt> subprotocol, then ?token=."""
    q = {"token": "q.q.q"}
    assert find_token("Bearer h.h.h", "pgcast.v1, bearer.s.s.s", q) == TokenSource(
        "h.h.h", "header"
    )
    assert find_token("Basic abc", "pgcast.v1, bearer.s.s.s", q) == TokenSource(
        "s.s.s", "subprotocol"
    )
    assert find_token(None, "pgcast.v1", q) == TokenSource("q.q.q", "query")
    assert find_token("bearer   x.y.z ", None, {}) == TokenSource("x.y.z", "header")
    assert find_token(None, "bearer.", {}) is None
    assert find_token("Bearer ", None, {"token": ""}) is None


def test_origin_rules() -> None:
    """No Origin passes (not a browser); else exact match, case and trailing slash ignored."""
    allowed = ("https://app.example.com",)
    assert origin_allowed(None, ())
    assert not origin_allowed("https://app.example.com", ())
    assert origin_allowed("https://App.Example.com/", allowed)
    assert not origin_allowed("https://evil.example.com", allowed)
    assert not origin_allowed("http://app.example.com", allowed)
    assert origin_allowed("https://anything", ("*",))


def test_token_bucket_refills_at_its_rate() -> None:
    now = [0.0]
    bucket = TokenBucket(rate=2.0, burst=3, clock=lambda: now[0])
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    now[0] += 0.5  # one token back
    assert [bucket.take(), bucket.take()] == [True, False]
    now[0] += 100  # capped at burst
    assert sum(bucket.take() for _ in range(10)) == 3
