"""The gateway's close codes, the advice beside each, and the reconnect decision.

One table, as in the contract: 4001 token invalid or expired (fetch a new one),
4003 the application disconnected this user (stop: no reconnect), 4008 slow
consumer (reconnect and resume), 1009 frame too large, 1012 gateway shutting down
(reconnect promptly, with jitter, elsewhere). Pure: no I/O.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass

from pgcast.backoff import Backoff


class CloseCode(enum.IntEnum):
    """Close codes the gateway sends, with what a client should do."""

    NORMAL = 1000
    MESSAGE_TOO_BIG = 1009
    SERVICE_RESTART = 1012
    UNAUTHORIZED = 4001
    DISCONNECTED = 4003
    SLOW_CONSUMER = 4008

    @property
    def advice(self) -> str:
        return _ADVICE[self]


_ADVICE = {
    CloseCode.NORMAL: "closed normally: reconnect with backoff if still wanted",
    CloseCode.MESSAGE_TOO_BIG: "a frame was too large: reconnect with backoff",
    CloseCode.SERVICE_RESTART: "gateway draining: reconnect promptly with jitter, resume",
    CloseCode.UNAUTHORIZED: "token invalid or expired: fetch a new one, reconnect, resume",
    CloseCode.DISCONNECTED: "the application disconnected this user (pgcast.disconnect): stop",
    CloseCode.SLOW_CONSUMER: "fell behind: reconnect and resume from the last offset",
}


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one connection attempt ended (code 0: no close frame, e.g. refused or reset)."""

    opened: bool
    code: int
    reason: str
    lived: float = 0.0


@dataclass(frozen=True, slots=True)
class Plan:
    """What to do next: stop for good, or reconnect after ``delay`` seconds."""

    stop: bool
    delay: float
    reason: str = ""


def reconnect_plan(
    outcome: Outcome,
    backoff: Backoff,
    *,
    refreshable: bool,
    restart_jitter: float,
    rand: random.Random | None = None,
) -> Plan:
    """The reconnect decision after ``outcome`` (advances ``backoff`` on failures)."""
    uniform = (rand or random).uniform
    if outcome.code == CloseCode.UNAUTHORIZED and not refreshable:
        return Plan(True, 0.0, "token rejected and no token_factory to get another")
    if outcome.code == CloseCode.DISCONNECTED:
        return Plan(True, 0.0, outcome.reason)  # the application's reason; never retried
    if outcome.code == CloseCode.SERVICE_RESTART:
        return Plan(False, uniform(0.0, restart_jitter))
    if outcome.code in (CloseCode.UNAUTHORIZED, CloseCode.SLOW_CONSUMER) and backoff.attempt == 0:
        backoff.attempt = 1  # a second failure in a row backs off for real
        return Plan(False, uniform(0.0, backoff.base))
    return Plan(False, backoff.next())
