// /ops: polls /api/v1/ops/status and /api/v1/ops/failed every REFRESH_MS with the operator
// key; replay buttons POST to the replay endpoints. Stops polling on 401/403.

import { ApiError, apiFetch, bindKeyForm, clear, el, formatTime, getKey, showMessage } from "./common.js";

const REFRESH_MS = 2000;
const message = document.getElementById("ops-message");
const board = document.getElementById("ops");
let timer = null;
let generation = 0; // a newer refresh (key change, replay) supersedes one in flight

function card(label, value, id) {
  return el("div", { class: "card", id }, el("div", { class: "card-value" }, value), el("div", { class: "card-label" }, label));
}

function rate(value) {
  return value === null || value === undefined ? "–" : value.toLocaleString("en-US", { maximumFractionDigits: 1 });
}

function renderStatus(status) {
  const cards = clear(document.getElementById("cards"));
  for (const [name, q] of Object.entries(status.queues)) {
    cards.append(
      card(`queued (${name})`, q.queued.toLocaleString("en-US"), "card-queued"),
      card("oldest queued job age (s)", q.oldest_queued_age_s.toLocaleString("en-US"), "card-oldest"),
      card("running", q.started.toLocaleString("en-US"), "card-started"),
      card("failed", q.failed.toLocaleString("en-US"), "card-failed"));
  }
  cards.append(
    card(`events/s in (last ${status.throughput.window_s} s)`, rate(status.throughput.events_in_per_s), "card-in"),
    card("events/s out (stored)", rate(status.throughput.events_out_per_s), "card-out"));

  document.getElementById("worker-count").textContent = `(${status.workers.length})`;
  const workers = clear(document.querySelector("#workers tbody"));
  if (!status.workers.length) workers.append(el("tr", {}, el("td", { colspan: 7, class: "muted" }, "no workers running")));
  for (const w of status.workers) {
    workers.append(el("tr", { class: "worker-row" },
      el("td", {}, w.name), el("td", {}, w.state), el("td", {}, w.alive ? "yes" : "no"),
      el("td", { class: "mono" }, w.current_job_id || ""),
      el("td", { class: "num" }, w.successful_jobs), el("td", { class: "num" }, w.failed_jobs),
      el("td", {}, formatTime(w.last_heartbeat))));
  }

  const letters = clear(document.querySelector("#dead-letters tbody"));
  if (!status.dead_letters.length) letters.append(el("tr", {}, el("td", { colspan: 3, class: "muted" }, "none")));
  for (const d of status.dead_letters) {
    letters.append(el("tr", {}, el("td", { title: d.tenant_id }, d.tenant_name),
      el("td", { class: "num" }, d.count.toLocaleString("en-US")), el("td", {}, formatTime(d.latest_at))));
  }
  document.getElementById("updated-at").textContent = formatTime(status.at);
}

function renderFailed(failed) {
  document.getElementById("failed-count").textContent = `(${failed.total})`;
  document.getElementById("replay-all").disabled = failed.total === 0;
  const body = clear(document.querySelector("#failed tbody"));
  if (!failed.failed.length) body.append(el("tr", {}, el("td", { colspan: 4, class: "muted" }, "no failed jobs")));
  for (const job of failed.failed) {
    body.append(el("tr", { class: "failed-job", "data-job-id": job.job_id },
      el("td", { class: "mono" }, job.job_id), el("td", { class: "reason" }, job.reason),
      el("td", {}, formatTime(job.ended_at)),
      el("td", {}, el("button", { type: "button", class: "replay", onclick: () => replay(job.job_id) }, "Replay"))));
  }
}

async function replay(jobId) {
  const note = document.getElementById("replay-message");
  const path = jobId ? `/api/v1/ops/failed/${encodeURIComponent(jobId)}/replay` : "/api/v1/ops/failed/replay-all";
  try {
    const result = await apiFetch("operator", path, { method: "POST" });
    showMessage(note, `Re-enqueued ${result.replayed} job(s).`, "ok");
  } catch (err) {
    showMessage(note, `Replay failed: ${err.message}`);
  }
  refresh();
}

async function refresh() {
  const gen = ++generation;
  clearTimeout(timer);
  if (!getKey("operator")) {
    board.hidden = true;
    showMessage(message, "Enter an operator key (stratum operator create NAME) to see the pipeline.", "info");
    return;
  }
  try {
    const [status, failed] = await Promise.all([
      apiFetch("operator", "/api/v1/ops/status"), apiFetch("operator", "/api/v1/ops/failed")]);
    if (gen !== generation) return;
    renderStatus(status);
    renderFailed(failed);
    board.hidden = false;
    showMessage(message, "");
  } catch (err) {
    if (gen !== generation) return;
    if (err instanceof ApiError && (err.status === 401 || err.status === 403)) {
      board.hidden = true;
      showMessage(message, `${err.message} (HTTP ${err.status})`);
      return;
    }
    showMessage(message, `Refresh failed, retrying: ${err.message}`);
  }
  timer = setTimeout(refresh, REFRESH_MS);
}

document.getElementById("replay-all").addEventListener("click", () => replay(null));
bindKeyForm("operator", refresh);
refresh();
