// The sluice dashboard: the run list, and one run — its history and
// summary (GET /v1/runs/{id}/history: every rate computed by the server),
// its live progress (server-sent events, one point per tick), its failures
// by cause with retries, its downloads. No framework: the page is a few
// files in the binary and works offline.
"use strict";

const { Chart, fmt, clock } = window.SluiceCharts;
const $ = (id) => document.getElementById(id);
const enc = encodeURIComponent;

function duration(secs) {
  if (secs === null || secs === undefined || !Number.isFinite(secs)) return "–";
  secs = Math.round(secs);
  if (secs < 60) return secs + " s";
  if (secs < 3600) return Math.floor(secs / 60) + " min " + (secs % 60) + " s";
  return Math.floor(secs / 3600) + " h " + Math.floor((secs % 3600) / 60) + " min";
}

const usd = (v) => (!Number.isFinite(v) ? "–" : v === 0 ? "$0" : "$" + (v >= 100 ? v.toFixed(0) : v.toFixed(v >= 1 ? 2 : 4)));
const ago = (ms) => duration((Date.now() - ms) / 1000) + " ago";

function text(el, value) { if (el.textContent !== value) el.textContent = value; }

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v; else if (k.startsWith("on")) e.addEventListener(k.slice(2), v); else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : String(c));
  return e;
}

function list(target, items, render, empty) {
  target.replaceChildren();
  if (!items.length) { target.append(el("li", { class: "muted" }, empty)); return; }
  for (const item of items) target.append(render(item));
}

function table(body, rows, numeric = []) {
  body.replaceChildren();
  for (const r of rows) {
    body.append(el("tr", {}, ...r.map((v, i) => el("td", numeric.includes(i) ? { class: "num" } : {}, String(v)))));
  }
}

async function api(method, path) {
  const r = await fetch(path, { method, headers: { accept: "application/json" } });
  // The token cookie is gone or stale (a restarted server has a new one):
  // the page itself then asks for the token.
  if (r.status === 401) { location.reload(); throw new Error("the server needs its token"); }
  const body = await r.json().catch(() => ({}));
  if (!r.ok) { const e = new Error((body.error && body.error.message) || r.statusText); e.status = r.status; throw e; }
  return body;
}

const state = { id: null, source: null, points: [], summary: null, budget: null, view: null, shownState: null, failuresFor: null };

const sum = (values) => { let t = null; for (const v of values) if (Number.isFinite(v)) t = (t || 0) + v; return t; };
const providers = () => {
  const live = state.view && state.view.live;
  return (live && live.stats && live.stats.providers) || (state.summary && state.summary.providers) || [];
};
const C = { wire: "#2a9bb0", rate: "#e0a030", place: "#8e5bd8", calls: "#3b6fd8", ok: "#2f9e6b", bad: "#d9534f", tokens: "#8e5bd8", p: "#3b6fd8" };
const charts = [
  new Chart($("ch-waits"), [
    { name: "on the wire", color: C.wire, get: (p) => p.on_wire },
    { name: "waiting for a slot", color: C.rate, get: (p) => p.waiting_rate },
    { name: "waiting for a place", color: C.place, get: (p) => p.waiting_place },
  ], { limit: () => sum(providers().map((x) => x.concurrency)), limitName: "concurrency" }),
  new Chart($("ch-calls"), [{ name: "calls/s", color: C.calls, get: (p) => p.calls_per_sec }],
    { unit: "/s", limit: () => sum(providers().map((x) => x.limits.rps ?? (x.limits.rpm ? x.limits.rpm / 60 : null))) }),
  new Chart($("ch-items"), [
    { name: "done/min", color: C.ok, get: (p) => p.done_per_min },
    { name: "failed/min", color: C.bad, get: (p) => p.failed_per_min },
  ], { unit: "/min" }),
  new Chart($("ch-success"), [{ name: "success %", color: C.ok, get: (p) => (p.success === null ? null : 100 * p.success) }], { unit: "%", max: 100 }),
  new Chart($("ch-throttled"), [
    { name: "429s/s", color: C.bad, get: (p) => p.throttled_per_sec },
    { name: "retries/s", color: C.rate, get: (p) => p.retries_per_sec },
  ], { unit: "/s" }),
  new Chart($("ch-tokens"), [{ name: "tokens/min", color: C.tokens, get: (p) => p.tokens_per_min }],
    { unit: "/min", limit: () => sum(providers().map((x) => x.limits.tpm)) }),
  new Chart($("ch-latency"), [{ name: "latency", color: C.p, get: (p) => p.latency_ms }], { unit: " ms" }),
  new Chart($("ch-spend"), [{ name: "spent USD", color: C.ok, get: (p) => p.spent_usd }],
    { limit: () => state.budget, limitName: "budget" }),
];
const redraw = () => charts.forEach((c) => c.set(state.points));

function showSummary(s, counts) {
  $("summary").hidden = !s;
  if (!s) return;
  const facts = [
    ["items done", fmt(counts ? counts.done : s.done)],
    ["items failed", fmt(counts ? counts.failed : s.failed)],
    ["worked for", duration(s.active_secs)],
    ["started", s.started_at ? new Date(s.started_at).toLocaleString() : "–"],
    ["calls", fmt(s.attempts)],
    ["retries", fmt(s.retries)],
    ["429s", fmt(s.throttled)],
    ["items/s", fmt(s.items_per_sec)],
    ["calls/s", fmt(s.calls_per_sec)],
    ["mean latency", s.latency_mean_ms === null ? "–" : fmt(s.latency_mean_ms) + " ms"],
    ["tokens", fmt(s.tokens)],
    ["spent", usd(s.spent_usd) + (state.budget ? " of " + usd(state.budget) : "")],
    ["cache hits", fmt(s.cache_hits)],
    ["breaker openings", fmt(s.breaker_openings)],
    ["sessions", `${s.sessions} (${s.workers.map((w) => w.host + ":" + w.pid).filter((v, i, a) => a.indexOf(v) === i).join(", ")})`],
  ];
  $("summary-list").replaceChildren(...facts.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
  if (!state.view || !state.view.live) showTables(s.steps, s.providers);
}

function showTables(steps, provs) {
  const slow = [...steps].sort((a, b) => (b.latency_ms.p50 || 0) - (a.latency_ms.p50 || 0));
  table($("steps"), slow.map((s) => [s.step, s.provider, fmt(s.attempts), fmt(s.retries), fmt(s.throttled), fmt(s.latency_ms.p50), fmt(s.latency_ms.p99), fmt(s.latency_ms.mean), fmt(s.tokens)]), [2, 3, 4, 5, 6, 7, 8]);
  table($("providers"), provs.map((x) => [
    x.name, fmt(x.on_wire || 0), fmt(Math.max(0, x.in_flight - (x.on_wire || 0))), x.concurrency ? fmt(x.concurrency) : "none",
    x.limits.rpm ? Math.round(100 * x.used_rpm / x.limits.rpm) + "% of " + fmt(x.limits.rpm) : fmt(x.used_rpm),
    x.limits.tpm ? Math.round(100 * x.used_tpm / x.limits.tpm) + "% of " + fmt(x.limits.tpm) : fmt(x.used_tpm),
    x.endpoints.map((e) => e.breaker + (e.openings ? ` (opened ${e.openings}×)` : "")).join(" "),
  ]), [1, 2, 3, 4, 5]);
}

function update(p) {
  state.view = p;
  const counts = p.counts || {}, live = p.live || null;
  const stats = (live && live.stats) || { steps: [], providers: [], recent_errors: [] };
  text($("run-state"), p.state); $("run-state").className = "state " + p.state.split(" ")[0];
  text($("c-done"), String(counts.done || 0));
  text($("c-failed"), String(counts.failed || 0));
  text($("c-pending"), counts.pending === null || counts.pending === undefined ? "?" : String(counts.pending));
  const total = counts.total || 0;
  $("bar-done").style.width = total ? (100 * (counts.done || 0) / total) + "%" : "0";
  $("bar-failed").style.width = total ? (100 * (counts.failed || 0) / total) + "%" : "0";
  const rates = (live && live.rates) || {};
  const wire = live && live.counters ? live.counters.in_flight : 0;
  const waiting = (stats.providers || []).reduce((n, x) => n + Math.max(0, x.in_flight - (x.on_wire || 0)), 0);
  text($("c-calls"), fmt(rates.calls_per_sec || 0));
  text($("c-tokens"), fmt(rates.tokens_per_min || 0));
  text($("c-inflight"), String(wire || 0));
  text($("c-waiting"), String(waiting));
  // A paused run's clock stands still: no ETA.
  text($("c-eta"), p.state === "paused" ? "paused" : live ? duration(live.eta_secs) : (p.state === "finished" ? "done" : "–"));
  $("btn-pause").disabled = p.state !== "running";
  const held = p.state === "paused" || p.state === "pausing";
  $("btn-resume").disabled = !(held || p.state.startsWith("interrupted"));
  $("btn-cancel").disabled = !(p.state === "running" || held);
  if (p.point && (!state.points.length || p.point.t > state.points[state.points.length - 1].t)) {
    state.points.push(p.point);
    if (state.points.length > 3600) state.points.shift();
  }
  if (p.summary) state.summary = p.summary;
  if (live) showTables(stats.steps || [], stats.providers || []);
  showSummary(live ? null : state.summary, counts);
  redraw();
  list($("advice"), p.recommendations || [], (a) => el("li", { class: a.level }, a.message), "nothing to recommend");
  const workers = p.workers || [];
  $("workers-box").hidden = !workers.length;
  table($("workers"), workers.map((w) => [w.host, w.pid, w.state, w.in_flight, ago(w.last_beat_at)]), [1, 3]);
  const errors = (stats.recent_errors || []).map((e) => `${clock(e.at)} ${e.unit} · ${e.step}: ${e.error}`);
  list($("errors"), errors.slice(0, 20), (t) => el("li", {}, t), "none");
  if ((counts.failed || 0) > 0 && !live) loadFailures(); else if (!(counts.failed > 0)) $("failures").hidden = true;
}

// The failures by cause: expand a row for its items, open an item for its
// step records; retry everything, one cause, or the retryable ones.
async function loadFailures(force) {
  const key = state.id + ":" + (state.view && state.view.counts.failed) + ":" + state.view.state;
  if (!force && state.failuresFor === key) return;
  state.failuresFor = key;
  const id = state.id;
  let f;
  try { f = await api("GET", `/v1/runs/${enc(id)}/failures`); } catch (e) { text($("conn"), e.message); return; }
  if (id !== state.id) return;
  $("failures").hidden = !f.groups.length;
  text($("f-count"), `${fmt(f.failed)} items, ${fmt(f.retryable)} retryable`);
  $("btn-retry-retryable").disabled = !f.retryable;
  const body = $("f-groups");
  body.replaceChildren();
  for (const g of f.groups) {
    const open = el("button", { type: "button", class: "link", "aria-expanded": "false" }, "▸ " + g.cause);
    const retry = el("button", { type: "button", class: "small", onclick: () => retryRun("group=" + enc(g.id), `the ${fmt(g.count)} items failed with “${g.cause}”`) }, "Retry these");
    const row = el("tr", { class: "group", "data-group": g.id },
      el("td", {}, open), el("td", {}, g.step || "–"), el("td", {}, g.code), el("td", { class: "num" }, fmt(g.count)),
      el("td", {}, el("span", { class: "badge " + (g.retryable ? "ok" : "bad") }, g.retryable ? "likely" : "no")), el("td", {}, retry));
    const items = el("tr", { class: "items", hidden: "" }, el("td", { colspan: "6" },
      el("div", { class: "chips" }, ...g.items.map((i) => el("button", { type: "button", class: "chip", "data-item": i.item, title: i.message, onclick: () => openItem(i.item) }, i.item)),
        g.count > g.items.length ? el("span", { class: "muted" }, ` and ${fmt(g.count - g.items.length)} more`) : "")));
    open.onclick = () => { const shut = items.hidden; items.hidden = !shut; open.setAttribute("aria-expanded", String(shut)); open.textContent = (shut ? "▾ " : "▸ ") + g.cause; };
    body.append(row, items);
  }
}

async function openItem(item) {
  const box = $("item");
  box.hidden = false;
  box.replaceChildren(el("p", { class: "muted" }, "loading " + item + "…"));
  let r;
  try { r = await api("GET", `/v1/runs/${enc(state.id)}/items/${enc(item)}`); } catch (e) { box.replaceChildren(el("p", {}, e.message)); return; }
  const close = el("button", { type: "button", class: "small", onclick: () => { box.hidden = true; } }, "Close");
  const steps = r.steps.length ? r.steps : [{ step: "(call)", part: -1, status: r.status, attempts: r.attempts, status_code: r.status_code, latency_ms: r.latency_ms, prompt_tokens: r.prompt_tokens, completion_tokens: r.completion_tokens, error: r.error, output: r.result }];
  const rows = steps.map((s) => el("tr", {},
    el("td", {}, s.step + (s.part >= 0 ? " #" + s.part : "")), el("td", {}, s.status), el("td", { class: "num" }, s.attempts),
    el("td", { class: "num" }, s.status_code ?? "–"), el("td", { class: "num" }, fmt(s.latency_ms)),
    el("td", { class: "num" }, fmt((s.prompt_tokens || 0) + (s.completion_tokens || 0))),
    el("td", { class: "out" }, s.error || (s.output === null || s.output === undefined ? "–" : JSON.stringify(s.output).slice(0, 300)))));
  box.replaceChildren(
    el("div", { class: "title" }, el("h4", {}, `Item ${r.item_id}`), el("span", { class: "state " + r.status }, r.status), el("span", { class: "actions" }, close)),
    el("div", { class: "scroll" }, el("table", { id: "item-steps" },
      el("thead", {}, el("tr", {}, ...["step", "status", "attempts", "HTTP", "latency ms", "tokens", "output or error"].map((h) => el("th", {}, h)))),
      el("tbody", {}, ...rows))));
  close.focus();
}

async function retryRun(query, what) {
  if (!confirm(`Retry ${what}?`)) return;
  try {
    const r = await api("POST", `/v1/runs/${enc(state.id)}/retry${query ? "?" + query : ""}`);
    text($("conn"), `re-queued ${r.requeued ?? "the"} items`);
    $("item").hidden = true;
    follow(state.id);
  } catch (e) { text($("conn"), e.message); }
}

async function loadHistory(id) {
  try {
    const h = await api("GET", `/v1/runs/${enc(id)}/history`);
    if (id !== state.id) return;
    // Points that came live meanwhile and are newer stay.
    const lastT = h.points.length ? h.points[h.points.length - 1].t : 0;
    state.points = h.points.concat(state.points.filter((p) => p.t > lastT));
    state.summary = h.summary && h.summary.sessions ? h.summary : null;
    state.budget = h.budget_usd ?? null;
    if (state.view) showSummary(state.view.live ? null : state.summary, state.view.counts);
    redraw();
  } catch (e) { text($("conn"), "cannot read the history: " + e.message); }
}

// (Re)opens the run's event stream and reloads its history: on selection,
// after a retry or resume, and when the run list shows it moving again.
function follow(id) {
  if (state.source) state.source.close();
  const source = new EventSource(`/v1/runs/${enc(id)}/events`);
  state.source = source;
  state.points = [];
  loadHistory(id);
  source.addEventListener("progress", (e) => { text($("conn"), "live"); update(JSON.parse(e.data)); });
  source.addEventListener("end", (e) => {
    source.close(); state.source = null;
    text($("conn"), "run ended");
    update(JSON.parse(e.data));
    loadHistory(id);
  });
  source.onerror = () => { if (source.readyState === EventSource.CLOSED) { state.source = null; } text($("conn"), "reconnecting…"); };
}

async function select(id) {
  state.id = id; state.view = null; state.summary = null; state.failuresFor = null;
  if (location.hash !== "#run=" + enc(id)) history.replaceState(null, "", "#run=" + enc(id));
  for (const b of document.querySelectorAll("#runs button")) b.setAttribute("aria-current", String(b.dataset.id === id));
  $("failures").hidden = true; $("item").hidden = true;
  try {
    const view = await api("GET", `/v1/runs/${enc(id)}`);
    if (id !== state.id) return;
    $("empty").hidden = true; $("run").hidden = false;
    text($("run-id"), view.name && view.name !== view.id ? `${view.name} · ${view.id}` : view.id);
    for (const f of ["jsonl", "csv", "parquet"]) $("dl-" + f).href = `/v1/runs/${enc(view.id)}/export?format=${f}`;
    state.shownState = view.state;
    update(view);
    follow(id);
  } catch (e) {
    // A deep link to a run that does not exist says so, and opens nothing else.
    $("run").hidden = true; $("empty").hidden = false;
    text($("empty-text"), e.status === 404 ? `There is no run “${id}”. Pick one from the list.` : `Cannot open run ${id}: ${e.message}`);
    state.id = null;
  }
}

async function refreshRuns() {
  let runs;
  try {
    ({ runs } = await api("GET", "/v1/runs"));
  } catch (e) { text($("conn"), "cannot list runs: " + e.message); return; }
  if (!state.source) text($("conn"), `connected · ${runs.length} run${runs.length === 1 ? "" : "s"}`);
  list($("runs"), runs, (r) => {
    const b = el("button", { type: "button", "data-id": r.id, "aria-current": String(r.id === state.id) },
      el("span", { class: "name" }, r.id), el("span", { class: "state " + r.state.split(" ")[0] }, r.state));
    b.onclick = () => select(r.id);
    return el("li", { "data-id": r.id }, b);
  }, "no runs yet");
  const current = runs.find((r) => r.id === state.id);
  // Retried or resumed elsewhere (the CLI, another page): follow it again.
  if (current && state.shownState !== current.state) {
    const wasIdle = state.shownState && !/running|paus/.test(state.shownState);
    state.shownState = current.state;
    if (wasIdle && /running|paus/.test(current.state) && !state.source) follow(current.id);
  }
}

async function start() {
  await refreshRuns();
  const want = decodeURIComponent((location.hash.match(/run=([^&]+)/) || [])[1] || "");
  if (want) return select(want);
  const first = document.querySelector("#runs button");
  const running = document.querySelector("#runs button .state.running");
  const pick = running ? running.closest("button") : first;
  if (pick) select(pick.dataset.id);
}

for (const [button, verb] of [["btn-pause", "pause"], ["btn-resume", "resume"], ["btn-cancel", "cancel"]]) {
  $(button).onclick = async () => {
    if (verb === "cancel" && !confirm(`Cancel run ${state.id}? Calls on the wire finish; the rest stays pending, and Resume continues it.`)) return;
    try {
      await api("POST", `/v1/runs/${enc(state.id)}/${verb}`);
      if (verb === "resume") follow(state.id);
    } catch (e) { text($("conn"), e.message); }
  };
}
$("btn-retry-all").onclick = () => retryRun("", "every failed item");
$("btn-retry-retryable").onclick = () => retryRun("retryable=true", "the failures another attempt may cure (429s, server errors, time-outs, broken connections)");
window.addEventListener("hashchange", () => {
  const want = decodeURIComponent((location.hash.match(/run=([^&]+)/) || [])[1] || "");
  if (want && want !== state.id) select(want);
});

start();
setInterval(refreshRuns, 3000);
