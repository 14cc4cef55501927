// /profiles and /profiles/{id}: search by identifier, then one profile with its traits,
// consents, identity graph (with "why is X with Y?" and, for admin keys, "undo this merge"), identity decisions and events (paged with next_cursor,
// new ones live from the stream). Shows nothing of a tenant until a tenant key is stored; every request carries it as Bearer.

import { ApiError, apiFetch, bindKeyForm, clear, el, formatTime, getKey, shortId, showMessage } from "./common.js";
import { highlightPath, renderGraph } from "./graph.js";

const EVENTS_PAGE = 25;
const pageMessage = document.getElementById("page-message");
const searchMessage = document.getElementById("search-message");
const tenantView = document.getElementById("tenant-view");
const profileView = document.getElementById("profile");
const moreButton = document.getElementById("more-events");
const moreDecisions = document.getElementById("more-decisions");
const explainMessage = document.getElementById("explain-message");
let nextCursor = null;
let decisionsCursor = null;
let currentId = null;
let pickNext = "a"; // which of X and Y a click on a node fills

function profileIdFromPath() {
  const m = location.pathname.match(/^\/profiles\/([^/]+)\/?$/);
  return m ? decodeURIComponent(m[1]) : null;
}

function describeError(err, what) {
  if (err instanceof ApiError && err.status === 404) return `No ${what} for this key's tenant.`;
  return `${err.message}${err.status ? ` (HTTP ${err.status})` : ""}`;
}

function valueText(value) {
  return value !== null && typeof value === "object" ? JSON.stringify(value) : String(value);
}

function row(...cells) {
  return el("tr", {}, cells.map((c) => (c instanceof Node && c.tagName === "TD" ? c : el("td", {}, c))));
}

function renderProfile(p) {
  document.getElementById("profile-id").textContent = p.id;
  const badge = document.getElementById("profile-lifecycle");
  badge.textContent = p.lifecycle;
  badge.className = `badge lifecycle-${p.lifecycle}`;
  const merged = document.getElementById("profile-merged");
  merged.hidden = !p.merged_from;
  merged.textContent = p.merged_from ? `${p.merged_from} was merged into this profile.` : "";
  const summary = clear(document.getElementById("profile-summary"));
  for (const [label, value] of [["events", p.counters.events], ["purchases", p.counters.purchases],
    ["revenue", p.counters.revenue.toLocaleString("en-US")], ["first seen", formatTime(p.first_seen)],
    ["last seen", formatTime(p.last_seen)]]) {
    summary.append(el("dt", {}, label), el("dd", {}, value));
  }
  const traits = clear(document.querySelector("#traits tbody"));
  const entries = Object.entries(p.traits).sort(([a], [b]) => a.localeCompare(b));
  if (!entries.length) traits.append(row(el("td", { class: "muted" }, "no traits")));
  for (const [k, v] of entries) traits.append(row(el("td", { class: "key" }, k), valueText(v)));
  // Computed traits (CONTRACT 8) follow, marked so they are not taken for sent traits.
  for (const [k, v] of Object.entries(p.computed || {}).sort(([a], [b]) => a.localeCompare(b))) {
    traits.append(row(el("td", { class: "key", title: "computed trait" }, `${k} (computed)`), valueText(v)));
  }
  const ids = clear(document.querySelector("#identifiers tbody"));
  for (const i of p.identifiers) {
    ids.append(row(i.type, el("td", { class: "mono" }, i.hash), formatTime(i.first_seen), formatTime(i.last_seen)));
  }
}

function renderConsents(c) {
  const body = clear(document.querySelector("#consents tbody"));
  const types = Object.keys(c.consents).sort();
  if (!types.length) body.append(row(el("td", { colspan: 3, class: "muted" }, "no consent recorded")));
  for (const t of types) {
    const s = c.consents[t];
    body.append(row(t, el("td", { class: s.granted ? "yes" : "no" }, s.granted ? "granted" : "denied"), formatTime(s.updated_at)));
  }
  const history = clear(document.querySelector("#consent-history tbody"));
  for (const h of c.history) {
    history.append(row(formatTime(h.recorded_at), h.consent_type, h.granted ? "granted" : "denied",
      el("td", { class: "mono", title: h.event_id || "" }, shortId(h.event_id))));
  }
}

// Whether the stored key may change data (asked once per key): an unmerge without a merge id
// is refused after the key check, 400 for an admin key and 403 for a read key; it changes nothing.
let adminFor = null; // [key, is admin]

async function keyIsAdmin(profileId) {
  const key = getKey("tenant");
  if (adminFor && adminFor[0] === key) return adminFor[1];
  let admin = false;
  try {
    await apiFetch("tenant", `/api/v1/cdp/profiles/${encodeURIComponent(profileId)}/unmerge`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ merge_id: "" }) });
  } catch (err) {
    admin = err instanceof ApiError && err.status === 400;
  }
  adminFor = [key, admin];
  return admin;
}

async function undoMerge(m) {
  const message = document.getElementById("merge-message");
  if (!window.confirm(`Undo this merge? Profile ${m.absorbed} comes back with the identifiers and events that came through it.`)) return;
  try {
    await apiFetch("tenant", `/api/v1/cdp/profiles/${encodeURIComponent(currentId)}/unmerge`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ merge_id: m.id }) });
    showMessage(message, `Merge undone: ${m.absorbed} is a profile of its own again.`, "info");
    message.dataset.absorbed = m.absorbed;
    await loadProfile(currentId);
  } catch (err) {
    showMessage(message, describeError(err, "such merge"));
  }
}

function renderGraphSection(graph, admin) {
  clear(document.getElementById("graph")).append(renderGraph(graph));
  const merges = clear(document.querySelector("#merges tbody"));
  if (!graph.merges.length) merges.append(row(el("td", { colspan: 5, class: "muted" }, "no merges")));
  for (const m of graph.merges) {
    const undo = admin ? el("button", { type: "button", class: "undo-merge", "data-merge-id": m.id,
      onclick: () => undoMerge(m) }, "undo this merge") : "";
    merges.append(el("tr", { class: "merge", "data-merge-id": m.id }, el("td", {}, formatTime(m.at)),
      el("td", { class: "mono", title: m.survivor }, shortId(m.survivor)),
      el("td", { class: "mono", title: m.absorbed }, shortId(m.absorbed)),
      el("td", { class: "mono", title: m.trigger }, m.trigger.slice(0, m.trigger.indexOf(":") + 11)),
      el("td", {}, undo)));
  }
}

const refLabel = (ref) => ref.slice(0, ref.indexOf(":") + 11);

function renderExplainChoices(graph) {
  for (const id of ["explain-a", "explain-b"]) {
    const select = clear(document.getElementById(id));
    for (const n of graph.nodes) {
      const ref = `${n.type}:${n.hash}`;
      select.append(el("option", { value: ref }, refLabel(ref)));
    }
  }
  if (graph.nodes.length > 1) document.getElementById("explain-b").selectedIndex = 1;
  pickNext = "a";
  for (const node of document.querySelectorAll("#graph g.graph-node")) {
    node.addEventListener("click", () => {
      document.getElementById(`explain-${pickNext}`).value = node.dataset.ref;
      pickNext = pickNext === "a" ? "b" : "a";
    });
  }
}

async function explain(event) {
  event.preventDefault();
  const [a, b] = ["explain-a", "explain-b"].map((id) => document.getElementById(id).value);
  const list = clear(document.getElementById("explain-path"));
  highlightPath(document.querySelector("#graph svg"), []);
  if (!a || !b) return;
  const [aType, aHash] = [a.slice(0, a.indexOf(":")), a.slice(a.indexOf(":") + 1)];
  const [bType, bHash] = [b.slice(0, b.indexOf(":")), b.slice(b.indexOf(":") + 1)];
  const params = new URLSearchParams({ a_type: aType, a_hash: aHash, b_type: bType, b_hash: bHash });
  try {
    const answer = await apiFetch("tenant", `/api/v1/cdp/identity/explain?${params}`);
    for (const step of answer.path) {
      list.append(el("li", { class: "path-step" }, `${refLabel(step.from)} → ${refLabel(step.to)}: ${step.link_type}`,
        el("span", { class: "mono muted", title: step.event_id || "" }, ` event ${shortId(step.event_id)} · ${formatTime(step.at)}`)));
    }
    highlightPath(document.querySelector("#graph svg"), answer.path);
    if (!answer.same_profile) {
      showMessage(explainMessage, `Not on one profile: ${answer.blocking_decisions.length} decision(s) kept them apart.`, "info");
    } else {
      showMessage(explainMessage, a === b ? "The same identifier." : `Joined by ${answer.path.length} link(s).`, "info");
    }
  } catch (err) {
    showMessage(explainMessage, describeError(err, "profile holds one of them"));
  }
}

function decisionRow(d) {
  const ids = d.identifiers.map((i) => `${i.type}:${i.hash ? i.hash.slice(0, 10) : "—"}`).join(", ");
  return el("tr", { class: `decision kind-${d.kind}` }, el("td", {}, formatTime(d.at)), el("td", {}, d.kind),
    el("td", { class: "mono" }, ids), el("td", {}, d.rule || ""), el("td", {}, d.message),
    el("td", { class: "mono", title: d.event_id || "" }, shortId(d.event_id)));
}

async function loadDecisions(reset) {
  const body = document.querySelector("#decisions tbody");
  if (reset) {
    clear(body);
    decisionsCursor = null;
  }
  const params = new URLSearchParams({ limit: "50" });
  if (decisionsCursor) params.set("cursor", decisionsCursor);
  const page = await apiFetch("tenant", `/api/v1/cdp/profiles/${encodeURIComponent(currentId)}/decisions?${params}`);
  for (const d of page.decisions) body.append(decisionRow(d));
  if (reset && !page.decisions.length) body.append(row(el("td", { colspan: 6, class: "muted" }, "no decisions recorded")));
  decisionsCursor = page.next_cursor;
  moreDecisions.hidden = !decisionsCursor;
}

function eventItem(e) {
  const details = { properties: e.properties, context: e.context, identifiers: e.identifiers, decisions: e.decisions };
  return el("li", { class: "event", "data-event-id": e.event_id },
    el("div", { class: "event-head" },
      el("time", { datetime: e.event_time }, formatTime(e.event_time)),
      el("strong", {}, e.event_name), el("span", { class: "muted" }, e.event_type),
      el("span", { class: "emq", title: "event match quality" }, `EMQ ${e.emq}`)),
    el("details", {}, el("summary", {}, `event ${shortId(e.event_id)} · source ${shortId(e.source_id)}`),
      el("pre", {}, JSON.stringify(details, null, 2))));
}

async function loadEvents(reset) {
  const list = document.getElementById("events");
  if (reset) {
    clear(list);
    nextCursor = null;
  }
  const params = new URLSearchParams({ limit: String(EVENTS_PAGE) });
  if (nextCursor) params.set("cursor", nextCursor);
  const page = await apiFetch("tenant", `/api/v1/cdp/profiles/${encodeURIComponent(currentId)}/events?${params}`);
  for (const e of page.events) list.append(eventItem(e));
  if (reset && !page.events.length) list.append(el("li", { class: "muted" }, "no events"));
  nextCursor = page.next_cursor;
  moreButton.hidden = !nextCursor;
  document.getElementById("event-count").textContent = `(${list.querySelectorAll("li.event").length} shown)`;
}

// New events of the shown profile arrive live through the stream (/api/v1/cdp/stream); the
// key goes in the first message, as browsers cannot set headers on a WebSocket.
let live = null;

function watchLive(profileId) {
  if (live) live.close();
  live = null;
  const key = getKey("tenant");
  if (!key || !("WebSocket" in window)) return;
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const socket = new WebSocket(`${scheme}//${location.host}/api/v1/cdp/stream?topics=event.received`);
  socket.addEventListener("open", () => socket.send(JSON.stringify({ authorization: `Bearer ${key}` })));
  socket.addEventListener("message", (msg) => {
    const data = JSON.parse(msg.data).data;
    if (!data || data.profile_id !== profileId || currentId !== profileId) return;
    const list = document.getElementById("events");
    list.querySelector("li.muted")?.remove();
    list.prepend(eventItem({ ...data, decisions: [] }));
    document.getElementById("event-count").textContent = `(${list.querySelectorAll("li.event").length} shown, live)`;
  });
  live = socket;
}

async function loadProfile(id) {
  currentId = id;
  profileView.hidden = true;
  showMessage(searchMessage, "Loading…", "info");
  const base = `/api/v1/cdp/profiles/${encodeURIComponent(id)}`;
  try {
    const [profile, consents, graph] = await Promise.all([
      apiFetch("tenant", base), apiFetch("tenant", `${base}/consents`), apiFetch("tenant", `${base}/graph`)]);
    renderProfile(profile);
    renderConsents(consents);
    renderGraphSection(graph, graph.merges.length > 0 && await keyIsAdmin(id));
    renderExplainChoices(graph);
    await Promise.all([loadEvents(true), loadDecisions(true)]);
    watchLive(profile.id);
    profileView.hidden = false;
    showMessage(searchMessage, "");
  } catch (err) {
    showMessage(searchMessage, describeError(err, "such profile"));
  }
}

async function search(event) {
  event.preventDefault();
  const form = event.target;
  const params = new URLSearchParams({
    identifier_type: form.elements.identifier_type.value, identifier_value: form.elements.identifier_value.value.trim(),
  });
  showMessage(searchMessage, "Searching…", "info");
  try {
    const profile = await apiFetch("tenant", `/api/v1/cdp/profiles?${params}`);
    location.assign(`/profiles/${encodeURIComponent(profile.id)}`);
  } catch (err) {
    showMessage(searchMessage, describeError(err, "profile holds this identifier"));
  }
}

// Removes every rendered piece of tenant data (used when the key is forgotten).
function forgetProfile() {
  currentId = null;
  nextCursor = null;
  decisionsCursor = null;
  adminFor = null;
  for (const id of ["profile-id", "profile-lifecycle", "profile-merged", "profile-summary", "graph", "events", "event-count",
    "explain-a", "explain-b", "explain-path", "merge-message"]) {
    clear(document.getElementById(id));
  }
  for (const body of document.querySelectorAll("#profile tbody")) clear(body);
  showMessage(searchMessage, "");
}

function route() {
  profileView.hidden = true;
  if (!getKey("tenant")) {
    forgetProfile();
    tenantView.hidden = true;
    showMessage(pageMessage, "Enter a tenant API key (a read key is enough) to see this tenant's profiles.", "info");
    return;
  }
  tenantView.hidden = false;
  showMessage(pageMessage, "");
  const id = profileIdFromPath();
  if (id) loadProfile(id);
}

document.getElementById("search").addEventListener("submit", search);
moreButton.addEventListener("click", () => loadEvents(false).catch((err) => showMessage(searchMessage, describeError(err, "events"))));
moreDecisions.addEventListener("click", () => loadDecisions(false).catch((err) => showMessage(searchMessage, describeError(err, "decisions"))));
document.getElementById("explain").addEventListener("submit", explain);
bindKeyForm("tenant", route);
route();
