"""The CDP ROI calculator's arithmetic, in pure Python.

This is the twin of ``read_api/pages/static/roi.js`` (the /cdp-calculator page): same
inputs, same ranges, same order of operations, so both give the same numbers and the
formulas are tested without a browser (tests/test_pages_roi.py; the browser test compares
the two). Percent inputs are in percent (``2.5`` means 2.5 %), as the page shows them.

    conversions          = sessions x conversion rate
    attributed (current) = conversions x current match rate
    projected match      = min(current match + improvement, 100 %)
    attributed (proj.)   = conversions x projected match
    incremental          = projected - current attributed conversions
    revenue              = incremental x average order value
    gross profit         = revenue x gross margin
    net                  = gross profit - monthly CDP cost
    monthly ROI          = net / cost
    payback (months)     = cost / net, or never when net <= 0
    12-month net value   = 12 x net
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from decimal import ROUND_HALF_UP, Decimal

from core.errors import StratumError


@dataclass(frozen=True)
class InputRange:
    minimum: float
    maximum: float
    default: float


# Ranges and defaults of the page's inputs (keep in step with INPUTS in roi.js).
INPUT_RANGES: dict[str, InputRange] = {
    "monthly_sessions": InputRange(10_000, 1_000_000, 100_000),
    "conversion_rate_pct": InputRange(0.5, 10, 2.5),
    "average_order_value": InputRange(50, 5_000, 500),
    "gross_margin_pct": InputRange(10, 80, 40),
    "current_match_rate_pct": InputRange(10, 70, 35),
    "match_rate_improvement_pts": InputRange(10, 60, 40),
    "monthly_cdp_cost": InputRange(500, 10_000, 2_000),
}


@dataclass(frozen=True)
class RoiInputs:
    monthly_sessions: float = INPUT_RANGES["monthly_sessions"].default
    conversion_rate_pct: float = INPUT_RANGES["conversion_rate_pct"].default
    average_order_value: float = INPUT_RANGES["average_order_value"].default
    gross_margin_pct: float = INPUT_RANGES["gross_margin_pct"].default
    current_match_rate_pct: float = INPUT_RANGES["current_match_rate_pct"].default
    match_rate_improvement_pts: float = INPUT_RANGES["match_rate_improvement_pts"].default
    monthly_cdp_cost: float = INPUT_RANGES["monthly_cdp_cost"].default


@dataclass(frozen=True)
class RoiProjection:
    conversions: float
    current_attributed: float
    projected_match_rate_pct: float
    projected_attributed: float
    incremental_conversions: float
    incremental_revenue: float
    incremental_gross_profit: float
    monthly_net: float
    monthly_roi: float  # a ratio: 99.0 is 9,900 %
    payback_months: float | None  # None: never pays back (net <= 0)
    twelve_month_net: float


class InvalidRoiInput(StratumError):
    code = "invalid_roi_input"


def validate_inputs(inputs: RoiInputs) -> None:
    """Raise InvalidRoiInput (``field`` set) for the first input outside its range."""
    for f in fields(inputs):
        value, rng = getattr(inputs, f.name), INPUT_RANGES[f.name]
        if not rng.minimum <= value <= rng.maximum:
            raise InvalidRoiInput(f"{f.name} must be between {rng.minimum:g} and {rng.maximum:g}",
                                  field=f.name)


def project_roi(inputs: RoiInputs) -> RoiProjection:
    """The monthly projection for valid ``inputs``; raises InvalidRoiInput otherwise.

    Percentages are divided by 100 after multiplying, so round inputs give exact results
    (100,000 x 2.5 / 100 is exactly 2,500; x 0.025 would not be).
    """
    validate_inputs(inputs)
    conversions = inputs.monthly_sessions * inputs.conversion_rate_pct / 100
    current = conversions * inputs.current_match_rate_pct / 100
    projected_match = min(inputs.current_match_rate_pct + inputs.match_rate_improvement_pts, 100)
    projected = conversions * projected_match / 100
    incremental = projected - current
    revenue = incremental * inputs.average_order_value
    profit = revenue * inputs.gross_margin_pct / 100
    cost = inputs.monthly_cdp_cost
    net = profit - cost
    return RoiProjection(
        conversions=conversions,
        current_attributed=current,
        projected_match_rate_pct=projected_match,
        projected_attributed=projected,
        incremental_conversions=incremental,
        incremental_revenue=revenue,
        incremental_gross_profit=profit,
        monthly_net=net,
        monthly_roi=net / cost,
        payback_months=cost / net if net > 0 else None,
        twelve_month_net=12 * net,
    )


def describe_payback(months: float | None) -> str:
    """How the page shows a payback period: ``"never"``, ``"<1"`` or months to one decimal."""
    if months is None:
        return "never"
    if months < 1:
        return "<1"
    # Half up on the exact binary value, as JavaScript's toFixed(1) rounds (Python's
    # format() would round 1.25 to even, "1.2"; the page shows "1.3").
    return str(Decimal(months).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))
