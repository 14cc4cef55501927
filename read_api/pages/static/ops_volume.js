// /ops: hourly event volume per source (GET /api/v1/ops/volume) with the seasonal baseline
// band and recorded anomalies marked. Refreshes every minute while an operator key is set.

import { apiFetch, clear, el, formatTime, getKey } from "./common.js";

const REFRESH_MS = 60_000;
const NS = "http://www.w3.org/2000/svg";
const W = 720, H = 150, PAD = 28;

function svgEl(tag, attrs) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  return node;
}

function chart(source) {
  const pts = source.points;
  const max = Math.max(1, ...pts.map((p) => Math.max(p.observed, p.high ?? 0)));
  const x = (i) => PAD + (i / Math.max(1, pts.length - 1)) * (W - 2 * PAD);
  const y = (v) => H - PAD - (v / max) * (H - 2 * PAD);
  const svg = svgEl("svg", { viewBox: `0 0 ${W} ${H}`, class: "volume-chart", role: "img",
    "aria-label": `hourly volume of ${source.name}` });
  // The band only where a baseline exists (enough weeks of history).
  const banded = pts.map((p, i) => [p, i]).filter(([p]) => p.high !== null);
  if (banded.length) {
    const upper = banded.map(([p, i]) => `${x(i).toFixed(1)},${y(p.high).toFixed(1)}`);
    const lower = banded.slice().reverse().map(([p, i]) => `${x(i).toFixed(1)},${y(p.low).toFixed(1)}`);
    svg.append(svgEl("polygon", { class: "band", points: [...upper, ...lower].join(" ") }));
  }
  svg.append(svgEl("polyline", { class: "observed", points: pts.map((p, i) => `${x(i).toFixed(1)},${y(p.observed).toFixed(1)}`).join(" ") }));
  const index = new Map(pts.map((p, i) => [p.hour, i]));
  for (const a of source.anomalies) {
    const i = index.get(a.hour);
    if (i === undefined) continue;
    const dot = svgEl("circle", { class: `anomaly ${a.kind}`, cx: x(i).toFixed(1), cy: y(a.observed).toFixed(1), r: 4 });
    const tip = svgEl("title", {});
    tip.textContent = `${a.kind} at ${formatTime(a.hour)}: ${a.observed} vs ${a.expected} expected (score ${a.score})`;
    dot.append(tip);
    svg.append(dot);
  }
  const label = (tx, ty, text) => { const t = svgEl("text", { x: tx, y: ty }); t.textContent = text; return t; };
  svg.append(label(2, y(max) + 4, String(Math.round(max))), label(2, H - PAD + 4, "0"),
    label(PAD, H - 6, formatTime(pts[0]?.hour)), label(W - 170, H - 6, formatTime(pts[pts.length - 1]?.hour)));
  return el("figure", { class: "volume", "data-source": source.source_id },
    el("figcaption", {}, `${source.name} `, el("span", { class: "muted mono" }, source.source_id),
      source.anomalies.length ? el("span", { class: "badge anomaly-count" }, `${source.anomalies.length} anomalies`) : ""),
    svg);
}

async function refresh() {
  const box = document.getElementById("volume-charts");
  if (!box || !getKey("operator")) { if (box) clear(box); return; }
  try {
    const data = await apiFetch("operator", "/api/v1/ops/volume?hours=48");
    clear(box).append(...(data.sources.length ? data.sources.map(chart) : [el("p", { class: "muted" }, "No events in the last 48 hours or their past weeks.")]));
  } catch (err) {
    clear(box).append(el("p", { class: "message error" }, err.message));
  }
}

document.getElementById("key-form")?.addEventListener("submit", () => setTimeout(refresh, 0));
document.getElementById("key-forget")?.addEventListener("click", () => setTimeout(refresh, 0));
refresh();
setInterval(refresh, REFRESH_MS);
