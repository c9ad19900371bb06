// The streamq dashboard: plain JavaScript over the admin API, no build step.
// Everything from the server is shown through textContent, never as HTML.
"use strict";

const PRIORITIES = ["critical", "high", "medium", "low"];
const COLORS = { critical: "#c53030", high: "#dd6b20", medium: "#2b6cb0", low: "#2f855a" };
const REFRESH_MS = 5000;

// State the browser test reads: the last overview, partitions and charts.
const dashboard = { overview: null, partitions: null, history: null, charts: {}, refreshes: 0 };
window.dashboard = dashboard;

let previous = null; // the overview before the last one, for rates
let dlqAfter = null; // the page of dead letters shown (null: the first)
let dlqNext = null;

const $ = (id) => document.getElementById(id);

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  const { dataset, ...rest } = props || {};
  Object.assign(node, rest);
  Object.assign(node.dataset, dataset || {});
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function token() {
  return sessionStorage.getItem("streamq-token") || "";
}

async function api(method, path) {
  const headers = {};
  if (token()) headers.Authorization = "Bearer " + token();
  const response = await fetch(path, { method, headers });
  const text = await response.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (_) { body = { error: text }; }
  if (response.status === 401) {
    $("token-bar").hidden = false;
    throw new Error("this server needs a token");
  }
  if (!response.ok) throw new Error((body && body.error) || response.statusText);
  return body;
}

function showError(message) {
  const bar = $("error-bar");
  bar.textContent = message || "";
  bar.hidden = !message;
}

function notice(message) {
  const bar = $("notice-bar");
  bar.textContent = message;
  bar.hidden = false;
  clearTimeout(notice.timer);
  notice.timer = setTimeout(() => { bar.hidden = true; }, 6000);
}

function fmtNumber(n) {
  return n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US");
}

function fmtMs(ms) {
  if (ms === null || ms === undefined) return "–";
  if (ms < 1) return (ms * 1000).toFixed(0) + " µs";
  if (ms < 1000) return ms.toFixed(ms < 10 ? 1 : 0) + " ms";
  if (ms < 120000) return (ms / 1000).toFixed(1) + " s";
  return (ms / 60000).toFixed(1) + " min";
}

function fmtTime(ms) {
  if (!ms) return "–";
  const d = new Date(ms);
  const time = d.toLocaleTimeString("en-GB", { hour12: false });
  if (d.toDateString() === new Date().toDateString()) return time;
  return d.toLocaleDateString("en-GB") + " " + time;
}

function priorityCell(name) {
  return el("td", {}, el("span", { className: "prio", style: "background:" + COLORS[name] }), name);
}

// ---- overview ----

function renderOverview(o) {
  $("queue-name").textContent = o.queue;
  const health = $("health");
  health.textContent = o.health.status;
  health.className = "badge " + o.health.status;
  health.title = o.health.reasons.join("; ") || "within every threshold";
  $("paused").hidden = !o.paused;
  $("pause-btn").hidden = o.paused;
  $("resume-btn").hidden = !o.paused;
  for (const id of ["pause-btn", "resume-btn", "recover-btn", "dlq-retry-all", "dlq-purge"]) {
    $(id).disabled = o.read_only;
  }
  $("server").textContent = o.server.kind + " " + o.server.version;
  $("updated").textContent = "updated " + new Date(o.now_ms).toLocaleTimeString("en-GB");

  const byPriority = o.metrics.by_priority;
  const rows = o.priorities.map((p) => {
    const c = byPriority[p.priority] || {};
    return el("tr", { id: "row-" + p.priority },
      priorityCell(p.priority),
      el("td", { className: "num waiting" }, fmtNumber(p.waiting)),
      el("td", { className: "num in-flight" }, fmtNumber(p.in_flight)),
      el("td", { className: "num" }, p.waiting ? fmtMs(p.oldest_waiting_ms) : "–"),
      el("td", { className: "num" }, fmtNumber(c.enqueued)),
      el("td", { className: "num" }, fmtNumber(c.completed)),
      el("td", { className: "num dead" }, fmtNumber(c.dead_lettered)));
  });
  $("priorities").tBodies[0].replaceChildren(...rows);

  const total = o.metrics.total;
  $("total-delayed").textContent = fmtNumber(o.delayed);
  $("total-dead").textContent = fmtNumber(o.dead_letters);
  $("total-consumers").textContent = fmtNumber(o.consumers.length);
  $("total-failed").textContent = fmtNumber(total.failed);
  $("total-retried").textContent = fmtNumber(total.retried);
  if (previous && o.now_ms > previous.now_ms) {
    const seconds = (o.now_ms - previous.now_ms) / 1000;
    const rate = (now, before) => Math.max(0, now - before) / seconds;
    $("rate-enqueued").textContent =
      fmtNumber(Math.round(rate(total.enqueued, previous.metrics.total.enqueued)));
    $("rate-completed").textContent =
      fmtNumber(Math.round(rate(total.completed, previous.metrics.total.completed)));
  }

  const names = o.metrics.latency.map((l) => {
    const counts = o.metrics.by_name[l.name] || {};
    return el("tr", {},
      el("td", {}, l.name || "(unnamed)"),
      el("td", { className: "num" }, fmtNumber(counts.completed)),
      el("td", { className: "num" }, fmtNumber(counts.failed)),
      el("td", { className: "num" }, fmtMs(l.wait.p50_ms)),
      el("td", { className: "num" }, fmtMs(l.wait.p99_ms)),
      el("td", { className: "num" }, fmtMs(l.run.p50_ms)),
      el("td", { className: "num" }, fmtMs(l.run.p99_ms)));
  });
  if (!names.length) {
    names.push(el("tr", {}, el("td", { colSpan: 7, className: "muted" }, "no completed jobs yet")));
  }
  $("latency").tBodies[0].replaceChildren(...names);
}

// ---- history charts ----

function chartWidth(id) {
  return Math.max(300, $(id).clientWidth || 500);
}

function makeChart(id, series, data) {
  const opts = {
    width: chartWidth(id),
    height: 240,
    series: [{}].concat(series.map((s) => ({
      label: s.label, stroke: s.color, width: 2, points: { show: data[0].length < 60 },
    }))),
    axes: [{}, { size: 60 }],
    scales: { x: { time: true } },
    legend: { live: true },
  };
  const chart = new uPlot(opts, data, $(id));
  return chart;
}

function renderHistory(h) {
  const points = h.points;
  const xs = points.map((p) => p.at_ms / 1000);
  const lengths = [xs].concat(PRIORITIES.map((p) => points.map((pt) => pt.waiting[p])));
  const through = (field) => points.map((pt) => (pt.throughput ? pt.throughput[field] : null));
  const throughput = [xs, through("enqueued"), through("completed"), through("failed"),
    through("dead_lettered")];
  const step = h.step_ms ? " (a point every " + fmtMs(h.step_ms) + ")" : "";
  $("history-note").textContent = points.length ? step : "(no history recorded yet)";
  for (const [name, id, data, series] of [
    ["lengths", "chart-lengths", lengths,
      PRIORITIES.map((p) => ({ label: p, color: COLORS[p] }))],
    ["throughput", "chart-throughput", throughput, [
      { label: "enqueued", color: "#2b6cb0" }, { label: "completed", color: "#2f855a" },
      { label: "failed", color: "#dd6b20" }, { label: "dead-lettered", color: "#c53030" }]],
  ]) {
    if (dashboard.charts[name]) dashboard.charts[name].destroy();
    dashboard.charts[name] = makeChart(id, series, data);
  }
}

async function refreshHistory() {
  const hours = Number($("history-range").value);
  const since = Date.now() - hours * 3600 * 1000;
  const h = await api("GET", "/api/admin/history?since_ms=" + since);
  dashboard.history = h;
  renderHistory(h);
}

// ---- dead letters ----

async function refreshDeadLetters() {
  const query = "/api/admin/dead-letters?count=20" + (dlqAfter ? "&after=" + encodeURIComponent(dlqAfter) : "");
  const page = await api("GET", query);
  dlqNext = page.next;
  $("dlq-next").disabled = !page.next;
  $("dlq-first").disabled = !dlqAfter;
  $("dlq-count").textContent = "(" + fmtNumber(page.total) + ")";
  const readOnly = dashboard.overview && dashboard.overview.read_only;
  const rows = page.letters.map((l) => {
    const retry = el("button", { type: "button", className: "dlq-retry", disabled: readOnly }, "Retry");
    retry.onclick = () => act("Retry this job now?", "POST",
      "/api/admin/dead-letters/" + encodeURIComponent(l.id) + "/retry", "requeued");
    const remove = el("button", { type: "button", className: "dlq-delete danger", disabled: readOnly }, "Delete");
    remove.onclick = () => act("Delete this dead letter for good?", "DELETE",
      "/api/admin/dead-letters/" + encodeURIComponent(l.id), "deleted");
    const job = el("a", { href: "#", className: "job-link", title: "look this job up" }, l.job_id);
    job.onclick = (e) => { e.preventDefault(); $("job-id").value = l.job_id; lookup(); };
    return el("tr", { className: "letter", dataset: { id: l.id } },
      el("td", {}, fmtTime(l.failed_ms)),
      el("td", {}, el("div", {}, l.name || "(unnamed)"), job),
      priorityCell(l.priority),
      el("td", { className: "num" }, l.attempts),
      el("td", { className: "error-text" }, l.error),
      el("td", {}, el("div", { className: "preview", title: l.payload_preview }, l.payload_preview)),
      el("td", {}, el("div", { className: "actions" }, retry, remove)));
  });
  if (!rows.length) {
    rows.push(el("tr", {}, el("td", { colSpan: 7, className: "muted" }, "no dead letters")));
  }
  $("dead-letters").tBodies[0].replaceChildren(...rows);
}

// ---- job lookup ----

async function lookup() {
  const id = $("job-id").value.trim();
  const out = $("job-result");
  if (!id) return;
  try {
    const job = await api("GET", "/api/admin/jobs/" + encodeURIComponent(id));
    const wait = job.started_ms && job.enqueued_ms ? job.started_ms - job.enqueued_ms : null;
    const run = job.finished_ms && job.started_ms ? job.finished_ms - job.started_ms : null;
    const detail = Object.entries(job.detail || {})
      .map(([k, v]) => k + ": " + (k.endsWith("_ms") && k !== "idle_ms" ? fmtTime(v) : v)).join(", ");
    const progress = job.progress === null ? null : el("div", {},
      el("span", { className: "muted" }, "progress " + job.progress + "%"),
      el("div", { className: "progress" }, el("div", { style: "width:" + job.progress + "%" })));
    out.replaceChildren(
      el("p", { id: "job-state" },
        el("strong", {}, job.name || "(unnamed)"), " — ",
        el("span", { className: "badge " + (job.state === "dead_lettered" ? "errors" : "healthy") }, job.state),
        detail ? " " + detail : "",
        " — attempts " + job.attempts),
      el("div", { className: "timeline" },
        el("div", {}, el("span", { className: "muted" }, "enqueued"), fmtTime(job.enqueued_ms)),
        el("div", {}, el("span", { className: "muted" }, "started"), fmtTime(job.started_ms)),
        el("div", {}, el("span", { className: "muted" }, "finished"), fmtTime(job.finished_ms)),
        el("div", {}, el("span", { className: "muted" }, "waited"), fmtMs(wait)),
        el("div", {}, el("span", { className: "muted" }, "ran"), fmtMs(run))),
      progress,
      job.error ? el("p", { className: "error-text" }, "last error: " + job.error) : null,
      job.logs.length ? el("pre", { className: "logs" }, job.logs.join("\n")) : null);
  } catch (e) {
    out.replaceChildren(el("p", { id: "job-state", className: "error-text" }, e.message));
  }
}

// ---- actions, each confirmed ----

function confirmAction(text) {
  const dialog = $("confirm");
  $("confirm-text").textContent = text;
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
  });
}

async function act(question, method, path, field) {
  if (!(await confirmAction(question))) return;
  try {
    const result = await api(method, path);
    const count = field && result ? result[field] : null;
    notice(count === null || count === undefined ? "done" : field + ": " + count);
    if (result && result.recovered_alerts !== undefined) {
      notice("recovered " + result.recovered_alerts + " stalled jobs");
    }
    await refresh();
  } catch (e) {
    showError(e.message);
  }
}

// ---- partitions (a partitioned queue only) ----

async function refreshPartitions(o) {
  $("partitions-card").hidden = o.partitions <= 1;
  if (o.partitions <= 1) return;
  const stats = await api("GET", "/api/admin/stats");
  dashboard.partitions = stats.partitions;
  $("partitions-note").textContent = "(" + stats.partitions.length + ", the sums are above)";
  const sum = (p, field) => p.priorities.reduce((n, q) => n + q[field], 0);
  const rows = stats.partitions.map((p, i) => el("tr", { id: "partition-" + i },
    el("td", {}, String(i)),
    el("td", { className: "num waiting" }, fmtNumber(p.waiting)),
    el("td", { className: "num in-flight" }, fmtNumber(p.in_flight)),
    el("td", { className: "num delayed" }, fmtNumber(p.delayed)),
    el("td", { className: "num dead" }, fmtNumber(p.dead_letters)),
    el("td", { className: "num" }, fmtNumber(sum(p, "enqueued"))),
    el("td", { className: "num" }, fmtNumber(sum(p, "completed")))));
  $("partitions").tBodies[0].replaceChildren(...rows);
}

// ---- the refresh loop ----

async function refresh() {
  try {
    const o = await api("GET", "/api/admin/overview");
    previous = dashboard.overview;
    dashboard.overview = o;
    renderOverview(o);
    await refreshPartitions(o);
    await refreshDeadLetters();
    showError("");
    dashboard.refreshes += 1;
  } catch (e) {
    showError("cannot refresh: " + e.message);
    $("health").textContent = "unavailable";
    $("health").className = "badge unavailable";
  }
}

let historyTimer = null;
async function historyLoop() {
  try { await refreshHistory(); } catch (e) { showError("cannot read history: " + e.message); }
  clearTimeout(historyTimer);
  historyTimer = setTimeout(historyLoop, 30000);
}

async function loop() {
  await refresh();
  setTimeout(loop, REFRESH_MS);
}

$("pause-btn").onclick = () => act("Pause the queue? Workers stop taking jobs; enqueueing goes on.",
  "POST", "/api/admin/pause", "paused");
$("resume-btn").onclick = () => act("Resume the queue?", "POST", "/api/admin/resume", "paused");
$("recover-btn").onclick = () => act("Put jobs stalled without a heartbeat back in line now?",
  "POST", "/api/admin/queue/recover-stalled", "recovered_alerts");
$("dlq-retry-all").onclick = () => act("Retry every dead letter?", "POST",
  "/api/admin/dead-letters/retry-all", "requeued");
$("dlq-purge").onclick = () => act("Delete every dead letter for good?", "POST",
  "/api/admin/dead-letters/purge", "deleted");
$("dlq-next").onclick = () => { dlqAfter = dlqNext; refreshDeadLetters().catch((e) => showError(e.message)); };
$("dlq-first").onclick = () => { dlqAfter = null; refreshDeadLetters().catch((e) => showError(e.message)); };
$("job-form").onsubmit = (e) => { e.preventDefault(); lookup(); };
$("history-range").onchange = () => historyLoop();
$("token-form").onsubmit = (e) => {
  e.preventDefault();
  sessionStorage.setItem("streamq-token", $("token-input").value);
  $("token-bar").hidden = true;
  refresh();
  historyLoop();
};
window.addEventListener("resize", () => {
  for (const [name, id] of [["lengths", "chart-lengths"], ["throughput", "chart-throughput"]]) {
    const chart = dashboard.charts[name];
    if (chart) chart.setSize({ width: chartWidth(id), height: 240 });
  }
});

loop();
historyLoop();
