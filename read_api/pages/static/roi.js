// The CDP ROI calculator's arithmetic: pure functions, no DOM, importable on its own
// (the browser tests import this module and compare it with core/roi.py, its Python twin).
// Same inputs, ranges, and order of operations as core/roi.py; percent inputs are in percent.

export const INPUTS = Object.freeze({
  monthly_sessions: { min: 10000, max: 1000000, default: 100000, step: 1000, label: "Monthly sessions" },
  conversion_rate_pct: { min: 0.5, max: 10, default: 2.5, step: 0.1, label: "Conversion rate (%)" },
  average_order_value: { min: 50, max: 5000, default: 500, step: 10, label: "Average order value" },
  gross_margin_pct: { min: 10, max: 80, default: 40, step: 1, label: "Gross margin (%)" },
  current_match_rate_pct: { min: 10, max: 70, default: 35, step: 1, label: "Current identity match rate (%)" },
  match_rate_improvement_pts: { min: 10, max: 60, default: 40, step: 1, label: "Expected match-rate improvement (points)" },
  monthly_cdp_cost: { min: 500, max: 10000, default: 2000, step: 100, label: "Monthly CDP cost" },
});

export function defaultInputs() {
  return Object.fromEntries(Object.entries(INPUTS).map(([name, spec]) => [name, spec.default]));
}

// {name: message} for every input that is missing, not a number, or out of range.
export function validateInputs(inputs) {
  const errors = {};
  for (const [name, spec] of Object.entries(INPUTS)) {
    const value = inputs[name];
    if (typeof value !== "number" || !Number.isFinite(value)) {
      errors[name] = "enter a number";
    } else if (value < spec.min || value > spec.max) {
      errors[name] = `must be between ${spec.min} and ${spec.max}`;
    }
  }
  return errors;
}

// The monthly projection for valid inputs; throws an Error naming the first invalid input.
// Percentages are divided by 100 after multiplying, as in core/roi.py, so round inputs give
// exact results. monthlyRoi is a ratio (99 is 9,900 %); paybackMonths is null for never.
export function projectRoi(inputs) {
  const errors = validateInputs(inputs);
  const bad = Object.keys(errors);
  if (bad.length) throw new Error(`${bad[0]} ${errors[bad[0]]}`);
  const conversions = inputs.monthly_sessions * inputs.conversion_rate_pct / 100;
  const current = conversions * inputs.current_match_rate_pct / 100;
  const projectedMatch = Math.min(inputs.current_match_rate_pct + inputs.match_rate_improvement_pts, 100);
  const projected = conversions * projectedMatch / 100;
  const incremental = projected - current;
  const revenue = incremental * inputs.average_order_value;
  const profit = revenue * inputs.gross_margin_pct / 100;
  const cost = inputs.monthly_cdp_cost;
  const net = profit - cost;
  return {
    conversions,
    currentAttributed: current,
    projectedMatchRatePct: projectedMatch,
    projectedAttributed: projected,
    incrementalConversions: incremental,
    incrementalRevenue: revenue,
    incrementalGrossProfit: profit,
    monthlyNet: net,
    monthlyRoi: net / cost,
    paybackMonths: net > 0 ? cost / net : null,
    twelveMonthNet: 12 * net,
  };
}

// "never", "<1", or months to one decimal (core.roi.describe_payback).
export function describePayback(months) {
  if (months === null) return "never";
  if (months < 1) return "<1";
  return months.toFixed(1);
}
