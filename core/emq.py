"""Event Match Quality: how useful an event is for matching a person (0..100).

Seed weights (CONTRACT 4.1): identifier quality 40 (an email or phone is present),
completeness 25 (non-empty properties), timeliness 20 (event time within 5 minutes of
receipt), context richness 15 split across campaign, user agent and IP.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

TIMELINESS_WINDOW_S = 300.0
BANDS = ("excellent", "good", "fair", "poor")


def emq_score(
    identifier_types: Iterable[str],
    properties: Mapping[str, object] | None,
    context: Mapping[str, object] | None,
    event_time: datetime,
    received_at: datetime,
) -> int:
    """Score one event; the inputs are the event as accepted (identifiers after blocking)."""
    score = 0.0
    if any(t == "email" or t == "phone" for t in identifier_types):
        score += 40
    if properties:
        score += 25
    if abs((received_at - event_time).total_seconds()) <= TIMELINESS_WINDOW_S:
        score += 20
    if context:
        rich = 0
        if context.get("campaign"):
            rich += 1
        if context.get("user_agent") or context.get("userAgent"):
            rich += 1
        if context.get("ip"):
            rich += 1
        score += 15 * rich / 3
    return round(score)


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
