"""Small statistics for the results: percentiles and ratios, rounded for the table."""

from __future__ import annotations

PERCENTILES = (50, 90, 99, 99.9)


def percentiles(values: list[float]) -> dict[str, float]:
    """p50/p90/p99/p99.9/max of ``values`` (nearest rank), plus the count."""
    if not values:
        return {"count": 0}
    ordered = sorted(values)
    n = len(ordered)
    out: dict[str, float] = {"count": n}
    for p in PERCENTILES:
        rank = min(n - 1, max(0, round(p / 100 * n) - 1))
        out[f"p{p:g}"] = round(ordered[rank], 3)
    out["max"] = round(ordered[-1], 3)
    return out


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, 3)
