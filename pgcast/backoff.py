"""Capped exponential backoff with full jitter (AWS architecture blog's variant).

``next()`` returns the next sleep; ``reset()`` after a healthy stretch, which the
loop owner decides (see ``healthy_after``).
"""

from __future__ import annotations

import random
import time


class Backoff:
    def __init__(self, base: float = 0.1, cap: float = 10.0, healthy_after: float = 30.0) -> None:
        if base <= 0 or cap < base:
            raise ValueError("backoff needs 0 < base <= cap")
        self.base = base
        self.cap = cap
        self.healthy_after = healthy_after
        self.attempt = 0
        self._healthy_since: float | None = None

    def next(self) -> float:
        """The next delay: uniform in [0, min(cap, base * 2**attempt)]."""
        ceiling = min(self.cap, self.base * (2 ** min(self.attempt, 32)))
        self.attempt += 1
        self._healthy_since = None
        return random.uniform(0, ceiling)

    def reset(self) -> None:
        self.attempt = 0

    def mark_healthy(self) -> None:
        """Call while things work; resets once they have worked for ``healthy_after`` s."""
        now = time.monotonic()
        if self._healthy_since is None:
            self._healthy_since = now
        elif now - self._healthy_since >= self.healthy_after:
            self.reset()
