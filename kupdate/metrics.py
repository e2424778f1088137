"""Metrics of DESIGN.md section 8 as small pure functions, with 95% Wilson confidence intervals."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from kupdate.text import hits


@dataclass
class Rate:
    """A share with its 95% confidence interval."""

    value: float
    low: float
    high: float
    n: int

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.value:.2f} [{self.low:.2f}, {self.high:.2f}]"


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval: sensible at 0 and 1 and for small n, unlike the normal approximation."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def rate(flags: Sequence[bool]) -> Rate:
    k, n = sum(bool(f) for f in flags), len(flags)
    low, high = wilson(k, n)
    return Rate(round(k / n, 4) if n else 0.0, round(low, 4), round(high, 4), n)


def fresh_recall(answers: Sequence[str], fresh: Sequence[str]) -> Rate:
    """Share of answers that hit the new value."""
    return rate([hits(a, f) for a, f in zip(answers, fresh, strict=True)])


def stale_rate(answers: Sequence[str], fresh: Sequence[str], stale: Sequence[str]) -> Rate:
    """Share of answers that hit the old value and not the new one."""
    return rate([hits(a, s) and not hits(a, f) for a, f, s in zip(answers, fresh, stale, strict=True)])


def locality(answers: Sequence[str], base_answers: Sequence[str]) -> Rate:
    """Share of unrelated prompts answered exactly as the base model answers them."""
    return rate([a.strip() == b.strip() for a, b in zip(answers, base_answers, strict=True)])


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)
