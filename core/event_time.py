"""Event time rules (CONTRACT 6, "Event time" and "Time for state"). Pure.

- Bounds: an event time (after the Segment skew correction) must lie within the retention
  window, which starts at 00:00 UTC on the 1st of the oldest retained month, and at most
  ``max_future_s`` after receipt. Outside it the event is refused (``event_too_old``,
  ``event_in_future``): nothing outside retention ever gets a partition, and nothing the
  retention job would drop is counted on a profile.
- State time: ``min(event_time, received_at)`` orders traits, consents and ``last_seen``,
  so a client clock set ahead cannot freeze a profile against later updates. Events keep
  their own ``event_time`` as stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

# With retention switched off (``retention_months <= 0``) this floor still applies: older
# times are clock errors, not history.
EARLIEST_EVENT_TIME = datetime(2000, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class TimeRejection:
    code: str  # event_too_old | event_in_future
    message: str


def retention_cutoff(now: datetime, retention_months: int) -> datetime | None:
    """00:00 UTC on the 1st of the oldest retained month (the current month counts as one),
    or None when retention is off. The scheduler drops partitions older than this."""
    if retention_months <= 0:
        return None
    now = now.astimezone(UTC)
    y, m = divmod(now.year * 12 + now.month - 1 - (retention_months - 1), 12)
    return datetime(y, m + 1, 1, tzinfo=UTC)


def oldest_event_time(now: datetime, retention_months: int) -> datetime:
    """The oldest event time accepted at ``now``: the retention cut-off, never before 2000."""
    cutoff = retention_cutoff(now, retention_months)
    return EARLIEST_EVENT_TIME if cutoff is None else max(cutoff, EARLIEST_EVENT_TIME)


def check_event_time(event_time: datetime, received_at: datetime, max_future_s: int,
                     oldest: datetime = EARLIEST_EVENT_TIME, *, name: str = "event_time") -> TimeRejection | None:
    """None if ``event_time`` is acceptable; else why not. ``oldest`` comes from
    ``oldest_event_time(received_at, retention_months)``; ``name`` is the field as the client
    calls it (messages never echo the submitted value)."""
    if event_time < oldest:
        return TimeRejection(
            "event_too_old",
            f"{name} is before {oldest.date().isoformat()}, the start of the retention window; send only "
            "events within retention (an import source is the lane for backfills)",
        )
    if event_time > received_at + timedelta(seconds=max_future_s):
        return TimeRejection(
            "event_in_future",
            f"{name} is more than {max_future_s // 3600} h in the future; check the client clock",
        )
    return None


def state_time(event_time: datetime, received_at: datetime) -> datetime:
    """The time an event's state changes (traits, consents, last_seen) are ordered by."""
    return event_time if event_time <= received_at else received_at
