"""When a domain is due for consolidation: enough new records, and enough time since the last try.

Both conditions must hold, so a steady trickle of records does not retrain every few minutes and a
quiet domain is not retrained for nothing. `--force` bypasses the policy (the caller's business).
"""

from __future__ import annotations

from datetime import UTC, datetime

from kupdate.config import ConsolidationConfig, parse_duration
from kupdate.errors import KupdateError


def due(pending: int, last_attempt_at: str | None, cfg: ConsolidationConfig,
        now: datetime | None = None) -> tuple[bool, str]:
    """(due?, why in words) for a domain with `pending` records not yet consolidated, whose last
    consolidation attempt (promoted or rejected) finished at `last_attempt_at` (ISO time, None: never).

    >>> due(12, None, ConsolidationConfig(min_new_records=20))
    (False, '12 new records, needs 20')
    """
    records = f"{pending} new record{'' if pending == 1 else 's'}"
    if pending < cfg.min_new_records:
        return False, f"{records}, needs {cfg.min_new_records}"
    if last_attempt_at is None:
        return True, f"due: {records}"
    interval = parse_duration(cfg.min_interval, where="consolidation.min_interval")
    elapsed = max(0.0, (_aware(now or datetime.now(UTC)) - _parse(last_attempt_at)).total_seconds())
    if elapsed < interval:
        return False, f"last consolidation {humanize(elapsed)} ago, interval {cfg.min_interval}"
    return True, f"due: {records}, last consolidation {humanize(elapsed)} ago"


def humanize(seconds: float) -> str:
    """A duration the way a person says it: '45s', '12m', '2h', '3h 20m', '2d'."""
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 2 * 86400:
        h, m = divmod(s // 60, 60)
        return f"{h}h {m}m" if m and h < 10 else f"{h}h"
    return f"{s // 86400}d"


def _parse(text: str) -> datetime:
    try:
        return _aware(datetime.fromisoformat(text))
    except (TypeError, ValueError):
        raise KupdateError(f"last consolidation time {text!r} is not an ISO time; fix its report.json") from None


def _aware(t: datetime) -> datetime:
    # Reports are written in UTC; a naive time (hand-written) is taken as UTC too.
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)
