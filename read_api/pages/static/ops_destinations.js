// /ops destinations panel: polls /api/v1/ops/destinations every REFRESH_MS with the operator
// key; shows each destination's health and a bar chart of deliveries per minute (by the
// minute the message was created), with a retry button for a destination's dead deliveries.

import { apiFetch, clear, el, getKey, showMessage } from "./common.js";

const REFRESH_MS = 5000;
const SVG = "http://www.w3.org/2000/svg";
let timer = null;

function percent(value) {
  return value === null ? "–" : `${(value * 100).toFixed(1)} %`;
}

function renderTable(destinations) {
  const body = clear(document.querySelector("#destinations tbody"));
  if (!destinations.length) body.append(el("tr", {}, el("td", { colspan: 9, class: "muted" }, "no destinations")));
  for (const d of destinations) {
    body.append(el("tr", { class: "destination-row", "data-destination-id": d.id },
      el("td", { title: d.tenant_id }, d.tenant_name), el("td", { title: d.id }, d.name),
      el("td", {}, d.active ? "yes" : "no"), el("td", { class: "num" }, percent(d.success_rate_1h)),
      el("td", { class: "num" }, d.undelivered.toLocaleString("en-US")),
      el("td", { class: "num" }, d.lag_s === null ? "–" : d.lag_s.toLocaleString("en-US")),
      el("td", { class: `breaker breaker-${d.breaker}` }, d.breaker),
      el("td", { class: "num" }, d.dead.toLocaleString("en-US")),
      el("td", {}, el("button", { type: "button", class: "retry-dead", disabled: d.dead === 0 ? "" : null,
                                  onclick: () => retryDead(d.id) }, "Retry dead"))));
  }
}

function svg(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

function renderChart(perMinute) {
  const box = clear(document.getElementById("deliveries-chart"));
  const width = 600, height = 120, bars = 60;
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height + 16}`, role: "img",
                             "aria-label": "deliveries per minute, last 60 minutes" });
  const max = Math.max(1, ...perMinute.map((m) => m.delivered + m.failed + m.skipped));
  const step = width / bars;
  const now = Date.now();
  for (const m of perMinute) {
    const slot = bars - 1 - Math.floor((now - Date.parse(m.minute)) / 60000);
    if (slot < 0 || slot >= bars) continue;
    let y = height;
    for (const [count, cls] of [[m.delivered, "bar-delivered"], [m.failed, "bar-failed"], [m.skipped, "bar-skipped"]]) {
      const h = (count / max) * height;
      y -= h;
      const rect = svg("rect", { x: slot * step + 1, y, width: step - 2, height: h, class: cls });
      rect.append(Object.assign(document.createElementNS(SVG, "title"),
        { textContent: `${m.minute}: ${m.delivered} delivered, ${m.failed} failed, ${m.skipped} skipped` }));
      chart.append(rect);
    }
  }
  chart.append(Object.assign(svg("text", { x: 0, y: height + 14, class: "axis" }), { textContent: "-60 min" }),
    Object.assign(svg("text", { x: width, y: height + 14, "text-anchor": "end", class: "axis" }), { textContent: "now" }));
  box.append(chart);
}

async function retryDead(id) {
  const note = document.getElementById("destinations-message");
  try {
    const result = await apiFetch("operator", `/api/v1/ops/destinations/${encodeURIComponent(id)}/retry`, { method: "POST" });
    showMessage(note, `Re-queued ${result.requeued} dead deliver${result.requeued === 1 ? "y" : "ies"}.`, "ok");
  } catch (err) {
    showMessage(note, `Retry failed: ${err.message}`);
  }
  refresh();
}

async function refresh() {
  clearTimeout(timer);
  if (getKey("operator")) {
    try {
      const health = await apiFetch("operator", "/api/v1/ops/destinations");
      renderTable(health.destinations);
      renderChart(health.per_minute);
    } catch (err) {
      showMessage(document.getElementById("destinations-message"), `Destinations: ${err.message}`);
    }
  }
  timer = setTimeout(refresh, REFRESH_MS);
}

document.getElementById("key-form").addEventListener("submit", () => setTimeout(refresh, 0));
refresh();
