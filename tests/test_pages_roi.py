"""The ROI calculator's formulas (core/roi.py), the same numbers the page shows."""

from __future__ import annotations

import pytest

from core.roi import INPUT_RANGES, InvalidRoiInput, RoiInputs, describe_payback, project_roi


def test_defaults():
    r = project_roi(RoiInputs())
    assert r.conversions == 2_500
    assert r.current_attributed == 875
    assert r.projected_match_rate_pct == 75
    assert r.projected_attributed == 1_875
    assert r.incremental_conversions == 1_000
    assert r.incremental_revenue == 500_000
    assert r.incremental_gross_profit == 200_000
    assert r.monthly_net == 198_000
    assert r.monthly_roi == 99  # 9,900 %
    assert r.payback_months == pytest.approx(2_000 / 198_000)
    assert describe_payback(r.payback_months) == "<1"
    assert r.twelve_month_net == 2_376_000


def test_one_changed_input():
    r = project_roi(RoiInputs(monthly_sessions=50_000))
    assert (r.current_attributed, r.projected_attributed, r.incremental_conversions) == (437.5, 937.5, 500)
    assert (r.incremental_revenue, r.incremental_gross_profit) == (250_000, 100_000)
    assert r.monthly_roi == 49


def test_projected_match_rate_is_capped_at_100_percent():
    r = project_roi(RoiInputs(current_match_rate_pct=70, match_rate_improvement_pts=60))
    assert r.projected_match_rate_pct == 100
    assert r.projected_attributed == r.conversions == 2_500
    assert r.incremental_conversions == 2_500 - 1_750


def test_payback_never_when_the_cdp_costs_more_than_it_earns():
    # 10,000 x 0.5 % = 50 conversions; +10 points = 5 more; x 50 x 10 % = 25 profit < 10,000 cost.
    r = project_roi(RoiInputs(monthly_sessions=10_000, conversion_rate_pct=0.5, average_order_value=50,
                              gross_margin_pct=10, match_rate_improvement_pts=10, monthly_cdp_cost=10_000))
    assert r.incremental_gross_profit == pytest.approx(25)
    assert r.monthly_net < 0 and r.monthly_roi < 0
    assert r.payback_months is None and describe_payback(None) == "never"


def test_payback_over_a_month_is_shown_to_one_decimal():
    # profit 15,000 against cost 10,000: net 5,000, payback 2 months.
    r = project_roi(RoiInputs(monthly_sessions=10_000, conversion_rate_pct=1, average_order_value=500,
                              gross_margin_pct=30, current_match_rate_pct=10, match_rate_improvement_pts=10,
                              monthly_cdp_cost=1_500))
    assert r.incremental_gross_profit == 1_500 and r.monthly_net == 0 and r.payback_months is None
    r = project_roi(RoiInputs(monthly_sessions=30_000, conversion_rate_pct=1, average_order_value=500,
                              gross_margin_pct=20, current_match_rate_pct=10, match_rate_improvement_pts=10,
                              monthly_cdp_cost=2_000))
    assert r.incremental_gross_profit == 3_000 and r.payback_months == 2
    assert describe_payback(r.payback_months) == "2.0"
    assert describe_payback(1.25) == "1.3"  # half up, as JavaScript's toFixed


@pytest.mark.parametrize("name", sorted(INPUT_RANGES))
def test_out_of_range_inputs_are_refused(name):
    rng = INPUT_RANGES[name]
    for value in (rng.minimum - 0.01, rng.maximum + 1):
        with pytest.raises(InvalidRoiInput) as err:
            project_roi(RoiInputs(**{name: value}))
        assert err.value.field == name
    project_roi(RoiInputs(**{name: rng.minimum}))
    project_roi(RoiInputs(**{name: rng.maximum}))
