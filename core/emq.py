"""Event Match Quality: how useful an event is for matching a person (0..100).

Seed weights (CONTRACT 4.1): identifier quality 40 (an email or phone is present),
completeness 25 (non-empty properties), timeliness 20 (event time within 5 minutes of
receipt), context richness 15 split across campaign, user agent and IP.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta

TIMELINESS_WINDOW_S = 300.0
_LATEST_TIMELY = timedelta(seconds=TIMELINESS_WINDOW_S)
_EARLIEST_TIMELY = -_LATEST_TIMELY
BANDS = ("excellent", "good", "fair", "poor")


def emq_score(
    identifier_types: Iterable[str],
    properties: Mapping[str, object] | None,
    context: Mapping[str, object] | None,
    event_time: datetime,
    received_at: datetime,
) -> int:
    """Score one event; the inputs are the event as accepted (identifiers after blocking).

    Per-event hot path: integer arithmetic (the context share, 15 * rich / 3, is a whole
    number) and a timedelta comparison instead of float seconds give the same scores."""
    score = 0
    for t in identifier_types:
        if t == "email" or t == "phone":
            score = 40
            break
    if properties:
        score += 25
    if _EARLIEST_TIMELY <= received_at - event_time <= _LATEST_TIMELY:
        score += 20
    if context:
        get = context.get
        score += 5 * ((1 if get("campaign") else 0) + (1 if get("user_agent") or get("userAgent") else 0)
                      + (1 if get("ip") else 0))
    return score


def emq_band(score: float) -> str:
    if score >= 80:
        return "excellent"
    if score >= 60:
        return "good"
    if score >= 40:
        return "fair"
    return "poor"


def emq_summary(scores: list[int]) -> dict[str, object]:
    """The batch summary of CONTRACT 4.1: mean (one decimal) and a count per band."""
    bands = dict.fromkeys(BANDS, 0)
    for s in scores:
        bands[emq_band(s)] += 1
    mean = round(sum(scores) / len(scores), 1) if scores else 0.0
    return {"mean": mean, "bands": bands}
