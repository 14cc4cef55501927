"""Unit tests for core.emq (CONTRACT section 4.1: Event Match Quality)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from core.emq import emq_band, emq_score, emq_summary
from core.identifiers import IdentifierType

RECEIVED = datetime(2024, 6, 1, 12, 0, 0, tzinfo=UTC)
STALE = RECEIVED - timedelta(hours=1)
FULL_CONTEXT = {"campaign": {"name": "spring"}, "user_agent": "Mozilla/5.0", "ip": "203.0.113.7"}


def score(
    identifier_types=(),
    properties=None,
    context=None,
    event_time: datetime = STALE,
    received_at: datetime = RECEIVED,
) -> int:
    return emq_score(identifier_types, properties, context, event_time, received_at)


# --------------------------------------------------------------------------- components alone


class TestComponentsAlone:
    def test_nothing_scores_zero(self) -> None:
        assert score() == 0

    @pytest.mark.parametrize(
        "id_type", ["email", "phone", IdentifierType.EMAIL, IdentifierType.PHONE]
    )
    def test_identifier_quality(self, id_type: str) -> None:
        assert score([id_type]) == 40

    @pytest.mark.parametrize("id_type", ["external_id", "device_id", "anonymous_id"])
    def test_other_identifiers_score_nothing(self, id_type: str) -> None:
        assert score([id_type]) == 0

    def test_email_and_phone_count_once(self) -> None:
        assert score(["email", "phone", "email"]) == 40

    def test_identifier_types_may_be_an_iterator(self) -> None:
        assert score(iter(["device_id", "phone"])) == 40

    def test_completeness(self) -> None:
        assert score(properties={"value": 10}) == 25

    @pytest.mark.parametrize("props", [None, {}])
    def test_empty_properties(self, props) -> None:
        assert score(properties=props) == 0

    def test_timeliness(self) -> None:
        assert score(event_time=RECEIVED) == 20

    def test_full_context(self) -> None:
        assert score(context=FULL_CONTEXT) == 15

    @pytest.mark.parametrize("ctx", [None, {}, {"library": {"name": "x"}}, {"locale": "en-US"}])
    def test_context_without_rich_keys(self, ctx) -> None:
        assert score(context=ctx) == 0


# --------------------------------------------------------------------------- timeliness boundary


class TestTimeliness:
    @pytest.mark.parametrize(
        ("delta_s", "expected"),
        [
            (0, 20),
            (1, 20),
            (299, 20),
            (299.999, 20),
            (300, 20),  # exactly 5 minutes: in
            (300.001, 0),
            (301, 0),  # out
            (3600, 0),
        ],
    )
    def test_past(self, delta_s: float, expected: int) -> None:
        assert score(event_time=RECEIVED - timedelta(seconds=delta_s)) == expected

    @pytest.mark.parametrize(
        ("delta_s", "expected"),
        [(1, 20), (300, 20), (301, 0), (86400, 0)],
    )
    def test_future(self, delta_s: float, expected: int) -> None:
        assert score(event_time=RECEIVED + timedelta(seconds=delta_s)) == expected

    def test_timezones_compared_as_instants(self) -> None:
        same_instant = RECEIVED.astimezone(timezone(timedelta(hours=2)))
        assert score(event_time=same_instant) == 20
        assert score(event_time=same_instant - timedelta(seconds=301)) == 0


# --------------------------------------------------------------------------- context richness


class TestContextRichness:
    @pytest.mark.parametrize(
        "ctx",
        [
            {"campaign": {"source": "google"}},
            {"user_agent": "Mozilla/5.0"},
            {"userAgent": "Mozilla/5.0"},
            {"ip": "203.0.113.7"},
        ],
    )
    def test_one_third(self, ctx) -> None:
        assert score(context=ctx) == 5

    @pytest.mark.parametrize(
        "ctx",
        [
            {"campaign": {"source": "google"}, "ip": "203.0.113.7"},
            {"campaign": {"source": "google"}, "user_agent": "UA"},
            {"userAgent": "UA", "ip": "203.0.113.7"},
            {"user_agent": "UA", "ip": "203.0.113.7"},
        ],
    )
    def test_two_thirds(self, ctx) -> None:
        assert score(context=ctx) == 10

    @pytest.mark.parametrize(
        "ctx",
        [
            FULL_CONTEXT,
            {"campaign": "spring", "userAgent": "UA", "ip": "203.0.113.7"},
        ],
    )
    def test_all_three(self, ctx) -> None:
        assert score(context=ctx) == 15

    def test_user_agent_both_spellings_count_once(self) -> None:
        assert score(context={"user_agent": "UA", "userAgent": "UA"}) == 5
        assert score(context={"user_agent": "UA", "userAgent": "UA", "ip": "1.2.3.4"}) == 10

    @pytest.mark.parametrize(
        "ctx",
        [
            {"campaign": None},
            {"campaign": {}},
            {"user_agent": ""},
            {"userAgent": None},
            {"ip": ""},
        ],
    )
    def test_empty_values_not_counted(self, ctx) -> None:
        assert score(context=ctx) == 0

    def test_other_keys_ignored(self) -> None:
        ctx = {"ip": "1.2.3.4", "page": {"url": "https://x"}, "locale": "en"}
        assert score(context=ctx) == 5


# --------------------------------------------------------------------------- combinations


class TestCombinations:
    def test_everything_is_100(self) -> None:
        assert score(["email"], {"value": 1}, FULL_CONTEXT, RECEIVED) == 100

    @pytest.mark.parametrize(
        ("ids", "props", "ctx", "timely", "expected"),
        [
            (["email"], {"a": 1}, None, False, 65),
            (["phone"], None, None, True, 60),
            (["email"], None, {"ip": "1.2.3.4"}, False, 45),
            (["email"], None, {"ip": "1.2.3.4", "campaign": "c"}, False, 50),
            ([], {"a": 1}, None, True, 45),
            ([], {"a": 1}, FULL_CONTEXT, True, 60),
            (["device_id"], {"a": 1}, {"userAgent": "UA"}, True, 50),
            (["email"], {"a": 1}, None, True, 85),
            (["email"], {"a": 1}, {"ip": "1.2.3.4"}, True, 90),
            (["phone"], {"a": 1}, {"ip": "1.2.3.4", "user_agent": "UA"}, True, 95),
            (["anonymous_id"], None, {"campaign": "c"}, True, 25),
            (["email"], {"a": 1}, FULL_CONTEXT, False, 80),
        ],
    )
    def test_combinations(self, ids, props, ctx, timely, expected) -> None:
        event_time = RECEIVED if timely else STALE
        result = score(ids, props, ctx, event_time)
        assert result == expected
        assert isinstance(result, int)

    def test_score_range(self) -> None:
        for ids in ([], ["email"]):
            for props in (None, {"a": 1}):
                for ctx in (None, {"ip": "x"}, FULL_CONTEXT):
                    for t in (RECEIVED, STALE):
                        assert 0 <= score(ids, props, ctx, t) <= 100


# --------------------------------------------------------------------------- bands


class TestBands:
    @pytest.mark.parametrize(
        ("value", "band"),
        [
            (100, "excellent"),
            (80, "excellent"),
            (80.0, "excellent"),
            (79.9, "good"),
            (79, "good"),
            (60, "good"),
            (59.9, "fair"),
            (59, "fair"),
            (40, "fair"),
            (39.9, "poor"),
            (39, "poor"),
            (0, "poor"),
        ],
    )
    def test_band_thresholds(self, value: float, band: str) -> None:
        assert emq_band(value) == band


# --------------------------------------------------------------------------- summary


class TestSummary:
    def test_empty(self) -> None:
        assert emq_summary([]) == {
            "mean": 0.0,
            "bands": {"excellent": 0, "good": 0, "fair": 0, "poor": 0},
        }

    def test_contract_example(self) -> None:
        # CONTRACT 4.1 example: two accepted events scoring 85 and 58.
        assert emq_summary([85, 58]) == {
            "mean": 71.5,
            "bands": {"excellent": 1, "good": 0, "fair": 1, "poor": 0},
        }

    def test_band_counts(self) -> None:
        result = emq_summary([100, 80, 79, 60, 59, 40, 39, 0])
        assert result["bands"] == {"excellent": 2, "good": 2, "fair": 2, "poor": 2}
        assert result["mean"] == 57.1  # 457 / 8 = 57.125

    def test_mean_rounded_to_one_decimal(self) -> None:
        assert emq_summary([100, 0, 0])["mean"] == 33.3
        assert emq_summary([100, 100, 0])["mean"] == 66.7

    def test_single(self) -> None:
        assert emq_summary([45]) == {
            "mean": 45.0,
            "bands": {"excellent": 0, "good": 0, "fair": 1, "poor": 0},
        }

    def test_all_bands_always_present_and_ordered(self) -> None:
        result = emq_summary([90, 95])
        assert list(result["bands"]) == ["excellent", "good", "fair", "poor"]
        assert result["bands"] == {"excellent": 2, "good": 0, "fair": 0, "poor": 0}
        assert result["mean"] == 92.5

    def test_counts_sum_to_length(self) -> None:
        scores = [5, 15, 45, 65, 85, 100, 20, 60]
        result = emq_summary(scores)
        assert sum(result["bands"].values()) == len(scores)

    def test_summary_matches_emq_band(self) -> None:
        scores = list(range(0, 101, 5))
        result = emq_summary(scores)
        for band in ("excellent", "good", "fair", "poor"):
            assert result["bands"][band] == sum(1 for s in scores if emq_band(s) == band)
        assert result["mean"] == 50.0


def _float_formula(types, properties, context, event_time, received_at) -> int:
    """The seed weights as first written: float seconds and a float context share."""
    score = 0.0
    if any(t in ("email", "phone") for t in types):
        score += 40
    if properties:
        score += 25
    if abs((received_at - event_time).total_seconds()) <= 300.0:
        score += 20
    if context:
        rich = sum(1 for k in ("campaign", "ip") if context.get(k)) + bool(context.get("user_agent")
                                                                           or context.get("userAgent"))
        score += 15 * rich / 3
    return round(score)


def test_score_equals_the_float_formula_at_every_boundary():
    now = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    deltas = [timedelta(seconds=s, microseconds=us) for s in (0, 299, 300, 301, -300, -301, 86_400 * 400)
              for us in (0, 1, 999_999)]
    contexts = [None, {}, {"ip": "1.2.3.4"}, {"campaign": {"n": 1}, "userAgent": "x"},
                {"campaign": "c", "user_agent": "u", "ip": "i"}, {"ip": ""}]
    for types in ([], ["anonymous_id"], ["phone"], ["device_id", "email"]):
        for properties in (None, {}, {"a": 1}):
            for context in contexts:
                for delta in deltas:
                    args = (types, properties, context, now - delta, now)
                    assert emq_score(*args) == _float_formula(*args), args
