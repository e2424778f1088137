"""The consolidation policy: due only with enough new records and enough time since the last try."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from kupdate.adapters.policy import due, humanize
from kupdate.config import ConsolidationConfig
from kupdate.errors import ConfigError, KupdateError

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
CFG = ConsolidationConfig(min_new_records=20, min_interval="6h")


def ago(**kw) -> str:
    return (NOW - timedelta(**kw)).isoformat(timespec="seconds")


@pytest.mark.parametrize("pending, last, expected", [
    (12, None, (False, "12 new records, needs 20")),
    (1, None, (False, "1 new record, needs 20")),
    (0, ago(days=30), (False, "0 new records, needs 20")),
    (25, None, (True, "due: 25 new records")),
    (20, ago(hours=2), (False, "last consolidation 2h ago, interval 6h")),
    (99, ago(minutes=5), (False, "last consolidation 5m ago, interval 6h")),
    (25, ago(hours=6), (True, "due: 25 new records, last consolidation 6h ago")),
    (25, ago(days=3, hours=1), (True, "due: 25 new records, last consolidation 3d ago")),
])
def test_due_by_count_and_interval(pending, last, expected):
    assert due(pending, last, CFG, now=NOW) == expected


def test_interval_comes_from_config():
    quick = ConsolidationConfig(min_new_records=1, min_interval="30m")
    assert due(1, ago(minutes=29), quick, now=NOW) == (False, "last consolidation 29m ago, interval 30m")
    assert due(1, ago(minutes=31), quick, now=NOW)[0]


def test_times_without_zone_are_utc_and_clock_skew_is_not_due():
    naive = (NOW - timedelta(hours=7)).replace(tzinfo=None).isoformat()
    assert due(25, naive, CFG, now=NOW)[0]
    future = (NOW + timedelta(hours=1)).isoformat()
    assert due(25, future, CFG, now=NOW) == (False, "last consolidation 0s ago, interval 6h")


def test_default_now_is_the_clock():
    recent = datetime.now(UTC).isoformat()
    assert due(25, recent, CFG) == (False, "last consolidation 0s ago, interval 6h")


def test_bad_times_and_durations_are_one_clear_error():
    with pytest.raises(KupdateError, match="'yesterday' is not an ISO time"):
        due(25, "yesterday", CFG, now=NOW)
    with pytest.raises(ConfigError, match="consolidation.min_interval: 'soon' is not a duration"):
        ConsolidationConfig(min_interval="soon")


def test_humanize():
    assert [humanize(s) for s in (5, 90, 3600, 3600 * 3 + 1200, 3600 * 30, 86400 * 4)] == [
        "5s", "1m", "1h", "3h 20m", "30h", "4d"]
