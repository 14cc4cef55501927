"""core/event_time.py: the retention cut-off, the door bounds and state time. Pure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from core.event_time import (
    EARLIEST_EVENT_TIME,
    check_event_time,
    oldest_event_time,
    retention_cutoff,
    state_time,
)


@pytest.mark.parametrize("now, months, expected", [
    (datetime(2026, 11, 30, 22, 0, tzinfo=UTC), 13, datetime(2025, 11, 1, tzinfo=UTC)),
    (datetime(2026, 1, 1, 0, 0, tzinfo=UTC), 13, datetime(2025, 1, 1, tzinfo=UTC)),
    (datetime(2026, 12, 31, 23, 59, tzinfo=UTC), 12, datetime(2026, 1, 1, tzinfo=UTC)),
    (datetime(2026, 3, 15, tzinfo=UTC), 1, datetime(2026, 3, 1, tzinfo=UTC)),
    (datetime(2026, 3, 15, tzinfo=UTC), 27, datetime(2024, 1, 1, tzinfo=UTC)),
    # 00:30 on the 1st in UTC+2 is still the previous month in UTC
    (datetime(2026, 3, 1, 0, 30, tzinfo=timezone(timedelta(hours=2))), 13, datetime(2025, 2, 1, tzinfo=UTC)),
])
def test_retention_cutoff_is_the_first_of_the_oldest_retained_month(now, months, expected):
    assert retention_cutoff(now, months) == expected


def test_retention_off_keeps_the_2000_floor():
    now = datetime(2026, 5, 5, tzinfo=UTC)
    assert retention_cutoff(now, 0) is None
    assert oldest_event_time(now, 0) == EARLIEST_EVENT_TIME
    assert oldest_event_time(now, 13) == datetime(2025, 5, 1, tzinfo=UTC)
    assert oldest_event_time(now, 1200) == EARLIEST_EVENT_TIME


def test_bounds_and_codes():
    now = datetime(2026, 5, 5, 12, tzinfo=UTC)
    oldest = oldest_event_time(now, 13)
    day = 24 * 3600
    assert check_event_time(oldest, now, day, oldest) is None
    assert check_event_time(now + timedelta(seconds=day), now, day, oldest) is None
    old = check_event_time(oldest - timedelta(microseconds=1), now, day, oldest)
    assert old is not None and old.code == "event_too_old" and "2025-05-01" in old.message
    ahead = check_event_time(now + timedelta(seconds=day + 1), now, day, oldest, name="timestamp")
    assert ahead is not None and ahead.code == "event_in_future" and ahead.message.startswith("timestamp ")


def test_state_time_is_the_earlier_of_event_time_and_receipt():
    received = datetime(2026, 5, 5, 12, tzinfo=UTC)
    assert state_time(received + timedelta(hours=23), received) == received
    assert state_time(received - timedelta(days=30), received) == received - timedelta(days=30)
