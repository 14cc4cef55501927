// /segments: the segment builder. Compose rules (CONTRACT 8) with pickers fed by the tenant's
// trait keys, event names and computed traits; see the live count as you edit (preview);
// save; browse members (linked to /profiles/{id}); see the size over time.

import { apiFetch, bindKeyForm, clear, el, formatTime, getKey, showMessage } from "./common.js";

const KINDS = ["trait", "computed", "counter", "lifecycle", "consent", "identifier", "event"];
const ALL_OPS = ["eq", "neq", "gt", "gte", "lt", "lte", "between", "in", "not_in", "contains", "not_contains",
  "starts_with", "ends_with", "exists", "not_exists", "before", "after", "within_last_days"];
const NUMERIC_OPS = ["eq", "neq", "gt", "gte", "lt", "lte", "between", "in", "not_in"];
const OPS = { trait: ALL_OPS, computed: ALL_OPS, counter: NUMERIC_OPS, event: NUMERIC_OPS,
  consent: ["eq", "neq", "exists", "not_exists"], identifier: ["exists", "not_exists"], lifecycle: [] };
const LISTS = { trait: "trait-keys", computed: "computed-names", event: "event-names" };
const PLACEHOLDER = { trait: "trait key", computed: "computed trait", counter: "events | purchases | revenue",
  consent: "analytics | ads | email | sms | all", identifier: "email | phone | external_id | ...",
  event: "event name", lifecycle: "" };
const MEMBERS_PAGE = 50;

const $ = (id) => document.getElementById(id);
const conditions = $("conditions");
let editingId = null;
let membersCursor = null;
let previewTimer = null;
let previewSeq = 0;

function parseValue(text) {
  try { return JSON.parse(text); } catch { return text; }
}

function conditionRow(cond = { trait: "", op: "eq", value: "" }) {
  const kind = KINDS.find((k) => k in cond) || "trait";
  const kindSel = el("select", { class: "cond-kind", "aria-label": "condition kind" }, KINDS.map((k) => el("option", { value: k }, k)));
  const name = el("input", { class: "cond-name", "aria-label": "name" });
  const opSel = el("select", { class: "cond-op", "aria-label": "operator" });
  const value = el("input", { class: "cond-value", "aria-label": "value", placeholder: "value (JSON or text)" });
  const days = el("input", { class: "cond-days", type: "number", min: "1", "aria-label": "within days", placeholder: "within days" });
  const remove = el("button", { type: "button", class: "remove", title: "remove" }, "×");
  const row = el("div", { class: "condition" }, kindSel, name, opSel, value, days, remove);
  const shape = () => {
    const k = kindSel.value;
    clear(opSel).append(...OPS[k].map((o) => el("option", { value: o }, o)));
    opSel.hidden = k === "lifecycle";
    name.hidden = k === "lifecycle";
    days.hidden = k !== "event";
    name.placeholder = PLACEHOLDER[k];
    if (LISTS[k]) name.setAttribute("list", LISTS[k]); else name.removeAttribute("list");
    value.placeholder = k === "lifecycle" ? "anonymous, known, customer, churned" : "value (JSON or text)";
  };
  kindSel.value = kind;
  shape();
  if (kind === "lifecycle") value.value = [].concat(cond.lifecycle).join(", ");
  else if (kind === "event") {
    name.value = cond.event; days.value = cond.within_days ?? 30;
    opSel.value = cond.count?.op ?? "gte"; value.value = JSON.stringify(cond.count?.value ?? 1);
  } else {
    name.value = cond[kind]; opSel.value = cond.op;
    value.value = cond.value === undefined ? "" : typeof cond.value === "string" ? cond.value : JSON.stringify(cond.value);
  }
  kindSel.addEventListener("change", () => { shape(); changed(); });
  remove.addEventListener("click", () => { row.remove(); changed(); });
  row.addEventListener("input", changed);
  row.addEventListener("change", changed);
  return row;
}

function conditionOf(row) {
  const get = (cls) => row.querySelector(cls);
  const kind = get(".cond-kind").value;
  const raw = get(".cond-value").value.trim();
  if (kind === "lifecycle") {
    const stages = raw.split(",").map((s) => s.trim()).filter(Boolean);
    return { lifecycle: stages.length === 1 ? stages[0] : stages };
  }
  const name = get(".cond-name").value.trim();
  const op = get(".cond-op").value;
  if (kind === "event") {
    return { event: name, within_days: Number(get(".cond-days").value || 30), count: { op, value: parseValue(raw) } };
  }
  const cond = { [kind]: name, op };
  if (!["exists", "not_exists"].includes(op)) cond.value = parseValue(raw);
  return cond;
}

function rulesFromBuilder() {
  return { [$("combinator").value]: [...conditions.children].map(conditionOf) };
}

function loadRules(rules) {
  const comb = "any" in rules ? "any" : "all";
  const flat = rules[comb].every((c) => !("all" in c) && !("any" in c));
  $("combinator").value = comb;
  clear(conditions);
  if (flat) rules[comb].forEach((c) => conditions.append(conditionRow(c)));
  conditions.hidden = !flat;
  $("add-condition").hidden = !flat;
  $("rules-json").value = JSON.stringify(rules, null, 2);
  if (!flat) showMessage($("rule-message"), "These rules nest groups: edit them as JSON.", "info");
}

function currentRules() {
  return conditions.hidden ? JSON.parse($("rules-json").value) : rulesFromBuilder();
}

function changed() {
  if (!conditions.hidden) $("rules-json").value = JSON.stringify(rulesFromBuilder(), null, 2);
  clearTimeout(previewTimer);
  previewTimer = setTimeout(preview, 300);
}

async function preview() {
  const seq = ++previewSeq;
  $("live-status").textContent = "counting…";
  try {
    const out = await apiFetch("tenant", "/api/v1/cdp/segments/preview", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ rules: currentRules() }) });
    if (seq !== previewSeq) return;
    $("live-count").textContent = String(out.size);
    $("live-status").textContent = "profiles";
    showMessage($("rule-message"), "");
  } catch (err) {
    if (seq !== previewSeq) return;
    $("live-count").textContent = "–";
    $("live-status").textContent = "";
    showMessage($("rule-message"), err.message);
  }
}

async function save() {
  const body = { name: $("segment-name").value.trim(), kind: $("segment-kind").value, rules: currentRules() };
  try {
    const seg = await apiFetch("tenant", editingId ? `/api/v1/cdp/segments/${editingId}` : "/api/v1/cdp/segments", {
      method: editingId ? "PATCH" : "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    showMessage($("rule-message"), `Saved "${seg.name}": ${seg.size} profiles.`, "ok");
    await loadList();
    await openSegment(seg.id);
  } catch (err) {
    showMessage($("rule-message"), err.message);
  }
}

async function loadFields() {
  const fields = await apiFetch("tenant", "/api/v1/cdp/segments/fields");
  for (const [list, values] of [["trait-keys", fields.traits], ["event-names", fields.events], ["computed-names", fields.computed]]) {
    clear($(list)).append(...values.map((v) => el("option", { value: v })));
  }
}

async function loadList() {
  const { segments } = await apiFetch("tenant", "/api/v1/cdp/segments");
  const body = clear($("segments").tBodies[0]);
  for (const s of segments) {
    body.append(el("tr", { class: "selectable", "data-id": s.id, onclick: () => openSegment(s.id) },
      el("td", {}, s.name), el("td", {}, s.kind), el("td", { class: "num" }, String(s.size)), el("td", {}, formatTime(s.updated_at))));
  }
}

async function loadMembers(first) {
  if (first) { membersCursor = null; clear($("members")); }
  const params = new URLSearchParams({ limit: String(MEMBERS_PAGE) });
  if (membersCursor) params.set("cursor", membersCursor);
  const page = await apiFetch("tenant", `/api/v1/cdp/segments/${editingId}/members?${params}`);
  $("members").append(...page.profiles.map((id) => el("li", {}, el("a", { href: `/profiles/${encodeURIComponent(id)}`, class: "mono" }, id))));
  membersCursor = page.next_cursor;
  $("more-members").hidden = !membersCursor;
}

function renderChart(points) {
  const box = clear($("size-chart"));
  if (!points.length) { box.append(el("p", { class: "muted" }, "No entries or exits recorded yet.")); return; }
  // Sizes hold until the next change: carry the last one to now so a single point is a line.
  points = [...points, { at: new Date().toISOString(), size: points[points.length - 1].size }];
  const ns = "http://www.w3.org/2000/svg";
  const W = 700, H = 160, P = 30;
  const t0 = Date.parse(points[0].at), t1 = Math.max(Date.parse(points[points.length - 1].at), t0 + 3600e3);
  const max = Math.max(1, ...points.map((p) => p.size));
  const x = (at) => P + ((Date.parse(at) - t0) / (t1 - t0)) * (W - 2 * P);
  const y = (n) => H - P - (n / max) * (H - 2 * P);
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("class", "size-chart");
  const line = document.createElementNS(ns, "polyline");
  line.setAttribute("points", points.map((p) => `${x(p.at).toFixed(1)},${y(p.size).toFixed(1)}`).join(" "));
  const label = (tx, ty, text) => {
    const t = document.createElementNS(ns, "text");
    t.setAttribute("x", tx); t.setAttribute("y", ty); t.textContent = text;
    return t;
  };
  svg.append(line, label(2, y(max) + 4, String(max)), label(2, H - P + 4, "0"),
    label(P, H - 6, formatTime(points[0].at)), label(W - 170, H - 6, formatTime(new Date(t1).toISOString())));
  box.append(svg);
}

async function openSegment(id) {
  try {
    const seg = await apiFetch("tenant", `/api/v1/cdp/segments/${id}`);
    editingId = seg.id;
    $("builder-title").textContent = `Edit ${seg.name}`;
    $("segment-name").value = seg.name;
    $("segment-kind").value = seg.kind;
    loadRules(seg.rules);
    $("live-count").textContent = String(seg.size);
    $("detail-name").textContent = seg.name;
    $("detail-size").textContent = `${seg.size} profiles`;
    $("detail").hidden = false;
    await loadMembers(true);
    renderChart((await apiFetch("tenant", `/api/v1/cdp/segments/${id}/history`)).points);
  } catch (err) {
    showMessage($("page-message"), err.message);
  }
}

function newSegment() {
  editingId = null;
  $("builder-title").textContent = "New segment";
  $("segment-name").value = "";
  $("detail").hidden = true;
  showMessage($("rule-message"), "");
  loadRules({ all: [{ trait: "", op: "exists" }] });
  changed();
}

async function route() {
  const has = Boolean(getKey("tenant"));
  $("tenant-view").hidden = !has;
  if (!has) {
    clear($("segments").tBodies[0]); clear($("members")); clear($("size-chart"));
    showMessage($("page-message"), "Enter a tenant API key to build and browse this tenant's segments.", "info");
    return;
  }
  showMessage($("page-message"), "");
  try {
    await Promise.all([loadFields(), loadList()]);
    newSegment();
  } catch (err) {
    showMessage($("page-message"), err.message);
  }
}

$("add-condition").addEventListener("click", () => { conditions.append(conditionRow()); changed(); });
$("combinator").addEventListener("change", changed);
$("apply-json").addEventListener("click", () => {
  try { loadRules(JSON.parse($("rules-json").value)); changed(); } catch (err) { showMessage($("rule-message"), `JSON: ${err.message}`); }
});
$("save").addEventListener("click", save);
$("new-segment").addEventListener("click", newSegment);
$("more-members").addEventListener("click", () => loadMembers(false).catch((err) => showMessage($("rule-message"), err.message)));
bindKeyForm("tenant", route);
route();
