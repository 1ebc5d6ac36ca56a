// drove dashboard: polls the /v1 API (signed in by the HttpOnly
// `drove_token` cookie, which the browser sends by itself) and renders it.
// Vanilla JS, no build step, no outside resources. All data is inserted as
// text (textContent), never as HTML.
//
// When the controller or the database is unavailable the page keeps the
// last numbers it had, dims them and says so in a banner.
"use strict";

const POLL_MS = 2000;
// The charts show the last 2, 5 or 10 minutes: the shortest span that
// holds the history the controller has (it keeps 15 minutes).
const CHART_SPANS_S = [120, 300, 600];
const HISTORY_KEEP_S = 660;

const state = {
  clockOffsetMs: 0, // server time minus browser time, from /v1/stats
  points: [], // /v1/history points, oldest first
  lastOk: null, // Date of the last fully successful refresh
  problemSince: null,
  timer: null,
  busy: false,
};

// ---------- small helpers ----------

const $ = (sel) => document.querySelector(sel);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") e.className = v;
    else if (k.startsWith("data-")) e.setAttribute(k, v);
    else if (k === "title") e.title = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function serverNow() {
  return Date.now() + state.clockOffsetMs;
}

// "0.4 s", "12 s", "3 min 5 s", "2 h 3 min"
function duration(seconds) {
  if (seconds === null || seconds === undefined || !isFinite(seconds)) return "–";
  const s = Math.max(0, seconds);
  if (s < 10) return s.toFixed(1) + " s";
  if (s < 60) return Math.round(s) + " s";
  if (s < 3600) {
    const m = Math.floor(s / 60);
    const r = Math.round(s - m * 60);
    return r ? `${m} min ${r} s` : `${m} min`;
  }
  const h = Math.floor(s / 3600);
  const m = Math.round((s - h * 3600) / 60);
  return m ? `${h} h ${m} min` : `${h} h`;
}

function ago(iso) {
  if (!iso) return "–";
  return duration((serverNow() - Date.parse(iso)) / 1000) + " ago";
}

function until(iso) {
  const s = (Date.parse(iso) - serverNow()) / 1000;
  return s > 0 ? "in " + duration(s) : "now";
}

function num(n) {
  return n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US");
}

function lastError(job) {
  const errs = Array.isArray(job.errors) ? job.errors : [];
  if (!errs.length) return "";
  const e = errs[errs.length - 1];
  return typeof e === "object" && e ? String(e.error ?? JSON.stringify(e)) : String(e);
}

function replaceRows(table, rows, emptyText, cols) {
  const body = table.tBodies[0];
  body.replaceChildren(
    ...(rows.length ? rows : [el("tr", {}, el("td", { colspan: cols, class: "muted" }, emptyText))]),
  );
}

function setCard(id, value, hint) {
  $(`#${id} .value`).textContent = value;
  if (hint !== undefined) $(`#${id}-hint`).textContent = hint;
}

// ---------- API ----------

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function api(path, options) {
  let resp;
  try {
    resp = await fetch("/v1" + path, { credentials: "same-origin", cache: "no-store", ...options });
  } catch (e) {
    throw new ApiError(0, "unreachable", "cannot reach the controller");
  }
  let body = null;
  try {
    body = await resp.json();
  } catch (e) {
    body = null;
  }
  if (!resp.ok) {
    const err = body && body.error ? body.error : {};
    throw new ApiError(resp.status, err.code || "http_" + resp.status, err.message || resp.statusText);
  }
  return body;
}

// Every action is a POST with a JSON body and Content-Type: application/json.
// With the SameSite=Strict cookie this is the CSRF protection: a form on
// another site cannot send this content type, and a script on another
// origin cannot without a CORS preflight, which the controller never grants.
function post(path, body) {
  return api(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body || {}),
  });
}

// ---------- rendering ----------

function renderStats(s) {
  const st = s.stats;
  if (st && st.at) state.clockOffsetMs = Date.parse(st.at) + (s.age_s || 0) * 1000 - Date.now();
  if (!st) return;
  const queues = st.queues || [];
  const sum = (f) => queues.reduce((a, q) => a + (f(q) || 0), 0);
  const waiting = sum((q) => (q.paused ? 0 : q.available));
  const pausedWaiting = sum((q) => (q.paused ? q.available : 0));
  setCard("card-backlog", num(waiting));
  setCard("card-running", num(sum((q) => q.running)));
  const d = s.scaling && s.scaling.decision;
  const size = s.scaling && s.scaling.applied ? s.scaling.applied.size : null;
  setCard(
    "card-workers",
    num(st.fleet.workers),
    d
      ? `live worker processes; the scaler wants ${d.desired}` +
          (size !== null && size !== undefined ? `, ${size} started` : "")
      : "live worker processes (heartbeating)",
  );
  setCard("card-busy", `${num(st.fleet.busy)} / ${num(st.fleet.slots)}`,
    st.fleet.slots ? `slots running a job, of all live slots (${Math.round((100 * st.fleet.busy) / st.fleet.slots)}% used)` : "slots running a job, of all live slots");
  setCard("card-done", num(sum((q) => q.succeeded_1m)));
  setCard("card-dead", num(sum((q) => q.dead)));
  if (pausedWaiting) $("#card-backlog .hint").textContent = `jobs due now, waiting for a free slot (+${num(pausedWaiting)} in paused queues)`;
  else $("#card-backlog .hint").textContent = "jobs due now, waiting for a free slot: the backlog";

  const rows = queues.map((q) =>
    el("tr", { "data-queue": q.name, class: q.paused ? "paused" : "" },
      el("td", {}, q.name),
      el("td", {}, q.paused ? el("span", { class: "badge warn" }, "paused") : el("span", { class: "badge ok" }, "active")),
      el("td", { class: "num", "data-field": "available",
                 title: q.ordered_waiting ? `${num(q.ordered_waiting)} of them wait for an earlier job of their ordering key` : null },
        num(q.available) + (q.ordered_waiting ? ` (${num(q.ordered_waiting)} in key order)` : "")),
      el("td", { class: "num", "data-field": "scheduled" }, num(q.scheduled)),
      el("td", { class: "num", "data-field": "running",
                 title: q.max_running ? "running, of the queue's fleet-wide limit" : null },
        num(q.running) + (q.max_running ? ` / ${q.max_running}` : "") + (q.rate_per_sec ? ` · ≤${q.rate_per_sec}/s` : "")),
      el("td", { class: "num", "data-field": "dead" }, num(q.dead)),
      el("td", { class: "num", "data-field": "oldest" }, q.available ? duration(q.oldest_wait_s) : "–"),
      el("td", { class: "num", "data-field": "done" }, num(q.succeeded_1m)),
      el("td", { class: "num", "data-field": "failed" }, num(q.failed_1m)),
      el("td", { class: "num" }, q.run_avg_1m_s === null || q.run_avg_1m_s === undefined ? "–" : duration(q.run_avg_1m_s)),
      el("td", {},
        q.paused
          ? el("button", { type: "button", "data-action": "resume", "data-queue": q.name }, "Resume")
          : el("button", { type: "button", "data-action": "pause", "data-queue": q.name }, "Pause")),
    ));
  replaceRows($("#queues"), rows, "no queues", 11);

  const sc = s.scaling || {};
  let text = "";
  if (sc.backend && sc.backend !== "none") {
    text = `Scaler (${sc.backend}): `;
    if (d) {
      text += `wants ${d.desired} worker${d.desired === 1 ? "" : "s"}; it last saw ${num(d.backlog)} waiting and ${num(d.running)} running jobs`;
      const slots = st.fleet.workers ? st.fleet.slots / st.fleet.workers : 1;
      if (d.desired * slots > d.backlog + d.running && d.desired > 0)
        text += " (idle workers are removed only after the work has stayed low for the scale-in window)";
    } else text += "no decision yet";
    if (sc.applied && sc.applied.action) text += `; last action: ${sc.applied.action}`;
    if (sc.decided_at) text += ` (${ago(sc.decided_at)})`;
    if (sc.error) text += `; error: ${sc.error}`;
  } else {
    text = s.leader ? "No scaler configured on this controller." : "Scaling runs on the leader controller.";
  }
  $("#scaling").textContent = text;
}

function renderWorkers(body) {
  const ws = body.workers || [];
  const rows = ws.map((w) =>
    el("tr", { "data-worker": w.id },
      el("td", { title: w.id }, w.host),
      el("td", { class: "num" }, w.pid),
      el("td", { class: "num" }, num(w.slots)),
      el("td", { class: "num" }, num(w.busy)),
      el("td", { class: "num" }, ago(w.heartbeat_at)),
      el("td", { class: "num" }, duration((serverNow() - Date.parse(w.started_at)) / 1000)),
      el("td", {}, w.version),
      el("td", {}, (w.queues || []).join(", ")),
    ));
  replaceRows($("#workers"), rows, "no live workers (the scaler starts them when jobs are waiting)", 8);
}

function jobActions(j) {
  if (j.state === "dead" || j.state === "cancelled")
    return el("button", { type: "button", "data-action": "retry", "data-job": j.id }, "Retry");
  if (j.state === "available" || j.state === "running")
    return j.cancel_requested
      ? el("span", { class: "muted" }, "cancelling…")
      : el("button", { type: "button", "data-action": "cancel", "data-job": j.id }, "Cancel");
  return "";
}

function stateLabel(j) {
  if (j.state === "available") return Date.parse(j.run_at) > serverNow() ? "scheduled" : "waiting";
  return j.state;
}

function errorCell(j) {
  const e = lastError(j);
  return el("td", { class: "error", title: e }, e);
}

function attempts(j) {
  return `${j.attempt} / ${j.max_attempts}`;
}

function renderDead(body) {
  const rows = (body.jobs || []).map((j) =>
    el("tr", { "data-job": j.id },
      el("td", { class: "num" }, j.id), el("td", {}, j.queue), el("td", {}, j.kind),
      el("td", { class: "num" }, attempts(j)), el("td", {}, ago(j.finished_at)),
      errorCell(j), el("td", {}, jobActions(j))));
  replaceRows($("#dead"), rows, "no dead jobs", 7);
  $("#retry-all-dead").disabled = rows.length === 0;
}

function renderFailing(body) {
  const rows = (body.jobs || []).map((j) =>
    el("tr", { "data-job": j.id },
      el("td", { class: "num" }, j.id), el("td", {}, j.queue), el("td", {}, j.kind),
      el("td", { class: "num" }, attempts(j)), el("td", {}, until(j.run_at)),
      errorCell(j), el("td", {}, jobActions(j))));
  replaceRows($("#failing"), rows, "no failing jobs", 7);
}

function renderRecent(body) {
  const rows = (body.jobs || []).map((j) => {
    const when = j.finished_at ? "finished " + ago(j.finished_at)
      : j.started_at && j.state === "running" ? "started " + ago(j.started_at)
      : j.state === "available" && Date.parse(j.run_at) > serverNow() ? "runs " + until(j.run_at)
      : "enqueued " + ago(j.created_at);
    return el("tr", { "data-job": j.id },
      el("td", { class: "num" }, j.id), el("td", {}, j.queue), el("td", {}, j.kind),
      el("td", {}, el("span", { class: "state state-" + stateLabel(j) }, stateLabel(j))),
      el("td", { class: "num" }, attempts(j)), el("td", {}, when),
      errorCell(j), el("td", {}, jobActions(j)));
  });
  replaceRows($("#recent"), rows, "no jobs", 8);
}

// ---------- charts (SVG, drawn with DOM calls) ----------

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
}

function niceMax(v) {
  if (v <= 4) return 4;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function chartSpan() {
  const oldest = state.points.length ? Date.parse(state.points[0].at) : serverNow();
  const age = (serverNow() - oldest) / 1000;
  return CHART_SPANS_S.find((s) => s >= age) || CHART_SPANS_S[CHART_SPANS_S.length - 1];
}

function drawChart(node, series, span) {
  const W = 600, H = 170, L = 44, R = 8, T = 8, B = 22;
  const now = serverNow();
  const from = now - span * 1000;
  const pts = state.points.filter((p) => Date.parse(p.at) >= from);
  let max = 0;
  for (const s of series) for (const p of pts) max = Math.max(max, s.value(p) || 0);
  max = niceMax(max);
  const x = (t) => L + ((t - from) / (now - from)) * (W - L - R);
  const y = (v) => T + (1 - v / max) * (H - T - B);
  const kids = [];
  for (const f of [0, 0.5, 1]) {
    const v = max * f;
    kids.push(svg("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: "grid" }));
    const label = svg("text", { x: L - 6, y: y(v) + 4, class: "axis", "text-anchor": "end" });
    label.textContent = Number.isInteger(v) ? v : v.toFixed(1);
    kids.push(label);
  }
  const minutes = span / 60;
  for (const [t, text] of [[from, `−${minutes} min`], [from + span * 500, `−${minutes / 2} min`], [now, "now"]]) {
    const label = svg("text", { x: x(t), y: H - 6, class: "axis", "text-anchor": t === from ? "start" : t === now ? "end" : "middle" });
    label.textContent = text;
    kids.push(label);
  }
  for (const s of series) {
    const coords = pts.filter((p) => s.value(p) !== null && s.value(p) !== undefined)
      .map((p) => `${x(Date.parse(p.at)).toFixed(1)},${y(s.value(p)).toFixed(1)}`);
    if (coords.length) kids.push(svg("polyline", { points: coords.join(" "), class: "line " + s.cls, "data-series": s.cls }));
  }
  node.replaceChildren(...kids);
}

function renderCharts() {
  const span = chartSpan();
  for (const e of document.querySelectorAll(".chart-span")) e.textContent = `${span / 60} min`;
  drawChart($("#chart-jobs"), [
    { cls: "waiting", value: (p) => p.available },
    { cls: "running", value: (p) => p.running },
  ], span);
  drawChart($("#chart-workers"), [
    { cls: "desired", value: (p) => p.desired },
    { cls: "workers", value: (p) => p.workers },
  ], span);
}

// ---------- refresh loop ----------

function showBanner(kind, text) {
  const b = $("#banner");
  if (!kind) {
    b.className = "banner hidden";
    b.replaceChildren();
    document.body.classList.remove("stale");
    return;
  }
  b.className = "banner " + kind;
  b.replaceChildren(text);
  if (kind === "auth") {
    b.append(" ", el("a", { href: "/" }, "Sign in again"));
  }
  document.body.classList.add("stale");
}

async function refresh() {
  if (state.busy) return;
  state.busy = true;
  try {
    const last = state.points.length ? state.points[state.points.length - 1].at : null;
    const recentState = $("#recent-state").value;
    const [stats, history, workers, dead, failing, recent] = await Promise.allSettled([
      api("/stats"),
      api("/history" + (last ? "?since=" + encodeURIComponent(last) : "")),
      api("/workers"),
      api("/jobs?state=dead&limit=20"),
      api("/jobs?state=available&failed=true&limit=20"),
      api("/jobs?limit=15" + (recentState ? "&state=" + recentState : "")),
    ]);
    if (stats.status === "fulfilled") renderStats(stats.value);
    if (history.status === "fulfilled") {
      state.points.push(...(history.value.points || []));
      const horizon = serverNow() - HISTORY_KEEP_S * 1000;
      while (state.points.length && Date.parse(state.points[0].at) < horizon) state.points.shift();
    }
    renderCharts();
    if (workers.status === "fulfilled") renderWorkers(workers.value);
    if (dead.status === "fulfilled") renderDead(dead.value);
    if (failing.status === "fulfilled") renderFailing(failing.value);
    if (recent.status === "fulfilled") renderRecent(recent.value);

    const errors = [stats, history, workers, dead, failing, recent]
      .filter((r) => r.status === "rejected").map((r) => r.reason);
    const statsError = stats.status === "fulfilled" ? stats.value.error : null;
    const statsAge = stats.status === "fulfilled" ? stats.value.age_s : null;
    const sinceOk = state.lastOk ? duration((Date.now() - state.lastOk) / 1000) + " ago" : "never";
    if (!errors.length && !statsError) {
      state.lastOk = Date.now();
      state.problemSince = null;
      showBanner(null);
    } else {
      state.problemSince = state.problemSince || new Date();
      const since = state.problemSince.toLocaleTimeString();
      if (errors.some((e) => e.status === 401)) {
        showBanner("auth", "The controller no longer accepts this browser's token.");
      } else if (errors.some((e) => e.status === 0)) {
        showBanner("down", `Cannot reach the controller (since ${since}). Showing the last numbers, from ${sinceOk}; retrying every ${POLL_MS / 1000} s.`);
      } else {
        const age = statsAge !== null && statsAge !== undefined ? `the statistics are from ${duration(statsAge)} ago` : "no statistics yet";
        showBanner("down", `The database is unavailable (since ${since}): ${age}, job lists from ${sinceOk}. ` +
          "Workers keep running their jobs and reconnect by themselves; this page retries every " + POLL_MS / 1000 + " s.");
      }
    }
    const age = statsAge !== null && statsAge !== undefined ? ` (statistics ${duration(statsAge)} old)` : "";
    $("#updated").textContent = state.lastOk
      ? `updated ${new Date(state.lastOk).toLocaleTimeString()}${age}`
      : "not loaded yet";
  } finally {
    state.busy = false;
  }
}

function flash(text, isError) {
  const f = $("#flash");
  f.className = "flash " + (isError ? "error" : "ok");
  f.textContent = text;
  clearTimeout(flash.timer);
  flash.timer = setTimeout(() => { f.className = "flash hidden"; }, 6000);
}

async function act(button) {
  const a = button.dataset.action;
  const job = button.dataset.job;
  const queue = button.dataset.queue;
  const calls = {
    retry: () => post(`/jobs/${job}/retry`).then(() => `Job ${job} is queued again.`),
    cancel: () => post(`/jobs/${job}/cancel`).then((r) =>
      r.result === "cancelled" ? `Job ${job} is cancelled.` : `Job ${job} is running: asked its worker to stop it.`),
    pause: () => post(`/queues/${encodeURIComponent(queue)}/pause`).then(() => `Queue ${queue} is paused: its jobs wait until it is resumed.`),
    resume: () => post(`/queues/${encodeURIComponent(queue)}/resume`).then(() => `Queue ${queue} is running again.`),
    "retry-dead": () => post("/jobs/retry-dead").then((r) => `${(r.ids || []).length} dead job(s) queued again.`),
  };
  if (!calls[a]) return;
  button.disabled = true;
  try {
    flash(await calls[a](), false);
  } catch (e) {
    flash(`Could not ${a.replace("-", " ")}: ${e.message}`, true);
  } finally {
    button.disabled = false;
  }
  await refresh();
}

function schedule() {
  clearTimeout(state.timer);
  state.timer = setTimeout(async () => {
    if (!document.hidden) await refresh();
    schedule();
  }, POLL_MS);
}

document.addEventListener("DOMContentLoaded", () => {
  document.body.addEventListener("click", (ev) => {
    const b = ev.target.closest("button[data-action]");
    if (b) act(b);
  });
  $("#recent-state").addEventListener("change", refresh);
  document.addEventListener("visibilitychange", () => { if (!document.hidden) refresh(); });
  refresh().then(schedule, schedule);
});
