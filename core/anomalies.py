"""Event-volume anomalies (CONTRACT 8): an hour's volume against a seasonal baseline. Pure.

The baseline of an hour is the volume of the same hour of the week over the past weeks;
median and MAD (median absolute deviation) keep one odd week from moving it. The score is a
robust z-score, ``(observed - median) / scale`` with ``scale = 1.4826 * MAD`` (the MAD of a
normal distribution's sigma), floored so a perfectly regular history does not turn a
difference of one event into an anomaly: the floor is ``max(1, relative_floor * median)``.
A drop is a score at or below ``-threshold``, a spike at or above ``threshold``; an hour with
no events is an ordinary observation of 0, so a source that goes silent is a drop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from statistics import median

MAD_TO_SIGMA = 1.4826


@dataclass(frozen=True)
class AnomalyRules:
    threshold: float = 3.5  # |robust z| at which an hour is flagged
    min_weeks: int = 3  # past weeks of history needed before an hour is judged
    min_expected: float = 5.0  # a drop needs a baseline of at least this many events
    relative_floor: float = 0.1  # scale floor as a share of the baseline


@dataclass(frozen=True)
class Judgement:
    expected: float
    score: float
    kind: str | None  # "drop" | "spike" | None


def baseline(history: Sequence[float]) -> tuple[float, float]:
    """(median, MAD) of the past volumes of one hour of the week."""
    mid = median(history)
    return mid, median(abs(v - mid) for v in history)


def _expected_and_scale(history: Sequence[float], rules: AnomalyRules) -> tuple[float, float]:
    expected, mad = baseline(history)
    return expected, max(MAD_TO_SIGMA * mad, rules.relative_floor * expected, 1.0)


def normal_band(history: Sequence[float], rules: AnomalyRules) -> tuple[float, float, float] | None:
    """(expected, low, high): the volumes an hour can have without being flagged (low never
    below 0); None when the history is shorter than ``rules.min_weeks``."""
    if len(history) < rules.min_weeks:
        return None
    expected, scale = _expected_and_scale(history, rules)
    return expected, max(0.0, expected - rules.threshold * scale), expected + rules.threshold * scale


def judge_hour(observed: float, history: Sequence[float], rules: AnomalyRules) -> Judgement | None:
    """Judge one hour; None when the history is shorter than ``rules.min_weeks``."""
    if len(history) < rules.min_weeks:
        return None
    expected, scale = _expected_and_scale(history, rules)
    score = round((observed - expected) / scale, 3)
    kind = None
    if score >= rules.threshold:
        kind = "spike"
    elif score <= -rules.threshold and expected >= rules.min_expected:
        kind = "drop"
    return Judgement(expected, score, kind)


def weekly_ranges(start: datetime, end: datetime, weeks: int) -> list[tuple[datetime, datetime]]:
    """[start, end) and the same span 1..``weeks`` weeks earlier: the event times to count
    to judge the hours of [start, end) against their baselines."""
    return [(start - timedelta(weeks=k), end - timedelta(weeks=k)) for k in range(weeks + 1)]


def history_of(counts: dict, source_id: str, hour: datetime, weeks: int, first_hour: datetime) -> list[int]:
    """The same hour of the week over the past ``weeks`` weeks, from the source's first
    observed hour on (a source is not silent before it existed); ``counts`` maps
    (source_id, hour) to a volume, absent meaning 0."""
    return [counts.get((source_id, hour - timedelta(weeks=k)), 0) for k in range(1, weeks + 1)
            if hour - timedelta(weeks=k) >= first_hour]
