// /cdp-calculator: inputs -> roi.js -> formatted outputs, recomputed on every keystroke.
// Works without a key; "Use my data" reads the tenant's /api/v1/cdp/stats with the stored key.

import { apiFetch, bindKeyForm, el, showMessage } from "./common.js";
import { INPUTS, describePayback, projectRoi, validateInputs } from "./roi.js";

const fields = document.getElementById("fields");
const currency = document.getElementById("currency");
const locale = document.getElementById("locale");
const calcError = document.getElementById("calc-error");
const OUTPUT_IDS = ["out-conversions", "out-current", "out-projected", "out-incremental", "out-revenue",
  "out-profit", "out-roi", "out-payback", "out-net12"];

function buildFields() {
  for (const [name, spec] of Object.entries(INPUTS)) {
    const input = el("input", {
      id: `in-${name}`, name, type: "number", inputmode: "decimal", required: true,
      min: spec.min, max: spec.max, step: spec.step, value: spec.default,
      "aria-describedby": `err-${name}`,
    });
    input.addEventListener("input", recompute);
    fields.append(el("div", { class: "row" },
      el("label", { for: `in-${name}` }, spec.label),
      input,
      el("span", { class: "range" }, `${spec.min.toLocaleString("en-US")} – ${spec.max.toLocaleString("en-US")}`),
      el("span", { id: `err-${name}`, class: "field-error", role: "alert" })));
  }
}

function readInputs() {
  const values = {};
  for (const name of Object.keys(INPUTS)) {
    const raw = document.getElementById(`in-${name}`).value.trim();
    values[name] = raw === "" ? NaN : Number(raw);
  }
  return values;
}

function formatters() {
  const loc = locale.value;
  return {
    count: new Intl.NumberFormat(loc, { maximumFractionDigits: 1 }),
    signed: new Intl.NumberFormat(loc, { maximumFractionDigits: 1, signDisplay: "exceptZero" }),
    money: new Intl.NumberFormat(loc, { style: "currency", currency: currency.value, maximumFractionDigits: 0 }),
    percent: new Intl.NumberFormat(loc, { style: "percent", maximumFractionDigits: 0 }),
    months: new Intl.NumberFormat(loc, { minimumFractionDigits: 1, maximumFractionDigits: 1 }),
  };
}

function setOut(id, text) {
  document.getElementById(id).textContent = text;
}

function recompute() {
  const inputs = readInputs();
  const errors = validateInputs(inputs);
  for (const name of Object.keys(INPUTS)) {
    const input = document.getElementById(`in-${name}`);
    document.getElementById(`err-${name}`).textContent = errors[name] || "";
    input.setAttribute("aria-invalid", errors[name] ? "true" : "false");
  }
  if (Object.keys(errors).length) {
    for (const id of OUTPUT_IDS) setOut(id, "—");
    setOut("out-projected-rate", "");
    showMessage(calcError, "Fix the highlighted inputs to see the projection.");
    return;
  }
  showMessage(calcError, "");
  const r = projectRoi(inputs);
  const f = formatters();
  setOut("out-conversions", f.count.format(r.conversions));
  setOut("out-current", f.count.format(r.currentAttributed));
  setOut("out-projected", f.count.format(r.projectedAttributed));
  setOut("out-projected-rate", `(match rate ${f.count.format(r.projectedMatchRatePct)} %)`);
  setOut("out-incremental", f.signed.format(r.incrementalConversions));
  setOut("out-revenue", f.money.format(r.incrementalRevenue));
  setOut("out-profit", f.money.format(r.incrementalGrossProfit));
  setOut("out-roi", f.percent.format(r.monthlyRoi));
  const payback = describePayback(r.paybackMonths);
  setOut("out-payback", r.paybackMonths !== null && r.paybackMonths >= 1 ? f.months.format(r.paybackMonths) : payback);
  setOut("out-net12", f.money.format(r.twelveMonthNet));
}

function setInput(name, value) {
  document.getElementById(`in-${name}`).value = String(value);
}

function clampTo(name, value) {
  const spec = INPUTS[name];
  return Math.min(spec.max, Math.max(spec.min, value));
}

async function useMyData() {
  const message = document.getElementById("my-data-message");
  showMessage(message, "Reading your stats…", "info");
  try {
    const stats = await apiFetch("tenant", "/api/v1/cdp/stats");
    const monthly = (stats.volume?.daily || []).reduce((sum, d) => sum + d.events, 0);
    const matchPct = Math.round(stats.identity_match_rate * 1000) / 10;
    const sessions = clampTo("monthly_sessions", monthly);
    const match = clampTo("current_match_rate_pct", matchPct);
    setInput("monthly_sessions", sessions);
    setInput("current_match_rate_pct", match);
    recompute();
    const notes = [`${monthly.toLocaleString("en-US")} events in the last 30 days`, `identity match rate ${matchPct} %`];
    if (sessions !== monthly || match !== matchPct) notes.push("clamped to the calculator's ranges");
    showMessage(message, `Filled in from your data: ${notes.join("; ")}.`, "ok");
  } catch (err) {
    showMessage(message, `Could not read your stats: ${err.message}`);
  }
}

buildFields();
currency.addEventListener("change", recompute);
locale.addEventListener("change", recompute);
document.getElementById("reset").addEventListener("click", () => {
  for (const [name, spec] of Object.entries(INPUTS)) setInput(name, spec.default);
  recompute();
});
document.getElementById("use-my-data").addEventListener("click", useMyData);
bindKeyForm("tenant", () => showMessage(document.getElementById("my-data-message"), ""));
recompute();
