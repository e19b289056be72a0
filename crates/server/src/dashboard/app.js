// The sluice dashboard: the run list, and one run's live view fed by its
// server-sent events. Charts are drawn by hand on canvases (no libraries:
// the page works offline). Advice comes computed from the server.
"use strict";

const $ = (id) => document.getElementById(id);
const POINTS = 120;

// A line chart over the last POINTS samples; `limit` draws a dashed line.
class Chart {
  constructor(canvas, series) {
    this.canvas = canvas;
    this.series = series; // [{name, color}]
    this.data = series.map(() => []);
    this.limit = null;
    this.points = 0;
  }
  push(values, limit) {
    values.forEach((v, i) => {
      this.data[i].push(Number.isFinite(v) ? v : null);
      if (this.data[i].length > POINTS) this.data[i].shift();
    });
    this.limit = Number.isFinite(limit) && limit > 0 ? limit : null;
    this.points += 1;
    this.canvas.dataset.points = String(this.points);
    this.draw();
  }
  draw() {
    const c = this.canvas, g = c.getContext("2d");
    const w = c.width, h = c.height, pad = 28;
    g.clearRect(0, 0, w, h);
    let max = this.limit || 0;
    for (const d of this.data) for (const v of d) if (v !== null && v > max) max = v;
    max = max > 0 ? max * 1.1 : 1;
    g.strokeStyle = "#d5d9e2"; g.lineWidth = 1;
    g.beginPath(); g.moveTo(pad, 4); g.lineTo(pad, h - 14); g.lineTo(w - 4, h - 14); g.stroke();
    g.fillStyle = "#7a8294"; g.font = "10px sans-serif";
    g.fillText(fmt(max), 2, 12); g.fillText("0", 14, h - 14);
    const x = (i) => pad + (i / (POINTS - 1)) * (w - pad - 6);
    const y = (v) => (h - 14) - (v / max) * (h - 22);
    if (this.limit) {
      g.setLineDash([5, 4]); g.strokeStyle = "#e0a030";
      g.beginPath(); g.moveTo(pad, y(this.limit)); g.lineTo(w - 4, y(this.limit)); g.stroke();
      g.setLineDash([]); g.fillStyle = "#b07a10"; g.fillText("limit " + fmt(this.limit), w - 90, y(this.limit) - 3);
    }
    this.series.forEach((s, k) => {
      const d = this.data[k], off = POINTS - d.length;
      g.strokeStyle = s.color; g.lineWidth = 2; g.beginPath();
      let started = false;
      d.forEach((v, i) => {
        if (v === null) { started = false; return; }
        if (!started) { g.moveTo(x(i + off), y(v)); started = true; } else g.lineTo(x(i + off), y(v));
      });
      g.stroke();
      g.fillStyle = s.color; g.fillText(s.name, pad + 6 + k * 70, h - 2);
    });
  }
}

function fmt(n) {
  if (n === null || n === undefined || !Number.isFinite(n)) return "–";
  if (n >= 1e6) return (n / 1e6).toFixed(1) + "M";
  if (n >= 1e4) return (n / 1e3).toFixed(0) + "k";
  if (n >= 100) return n.toFixed(0);
  return n.toFixed(n >= 10 ? 1 : 2).replace(/\.?0+$/, "");
}

function duration(secs) {
  if (secs === null || secs === undefined) return "–";
  secs = Math.round(secs);
  if (secs < 60) return secs + " s";
  if (secs < 3600) return Math.floor(secs / 60) + " min " + (secs % 60) + " s";
  return Math.floor(secs / 3600) + " h " + Math.floor((secs % 3600) / 60) + " min";
}

function text(el, value) { if (el.textContent !== value) el.textContent = value; }

function list(el, items, render, empty) {
  el.replaceChildren();
  if (!items.length) { const li = document.createElement("li"); li.className = "muted"; li.textContent = empty; el.append(li); return; }
  for (const item of items) el.append(render(item));
}

async function api(method, path) {
  const r = await fetch(path, { method, headers: { accept: "application/json" } });
  // The token cookie is gone or stale (a restarted server has a new one):
  // the page itself then asks for the token.
  if (r.status === 401) { location.reload(); throw new Error("the server needs its token"); }
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error((body.error && body.error.message) || r.statusText);
  return body;
}

const state = { id: null, source: null, charts: null, last: null };

function makeCharts() {
  return {
    calls: new Chart($("ch-calls"), [{ name: "calls/s", color: "#3b6fd8" }]),
    tokens: new Chart($("ch-tokens"), [{ name: "tokens/min", color: "#8e5bd8" }]),
    inflight: new Chart($("ch-inflight"), [{ name: "in flight", color: "#2a9bb0" }]),
    outcomes: new Chart($("ch-outcomes"), [{ name: "done/s", color: "#2f9e6b" }, { name: "failed/s", color: "#d9534f" }]),
    latency: new Chart($("ch-latency"), [{ name: "p50", color: "#2f9e6b" }, { name: "p90", color: "#e0a030" }, { name: "p99", color: "#d9534f" }]),
  };
}

function sum(values) {
  let total = null;
  for (const v of values) if (Number.isFinite(v)) total = (total || 0) + v;
  return total;
}

function update(p) {
  const counts = p.counts || {}, live = p.live || null;
  const stats = (live && live.stats) || { steps: [], providers: [], recent_errors: [] };
  text($("run-state"), p.state); $("run-state").className = "state " + p.state;
  text($("c-done"), String(counts.done || 0));
  text($("c-failed"), String(counts.failed || 0));
  text($("c-pending"), counts.pending === null || counts.pending === undefined ? "?" : String(counts.pending));
  const total = counts.total || 0;
  $("bar-done").style.width = total ? (100 * (counts.done || 0) / total) + "%" : "0";
  $("bar-failed").style.width = total ? (100 * (counts.failed || 0) / total) + "%" : "0";
  const rates = (live && live.rates) || {};
  const inflight = live && live.counters ? live.counters.in_flight : 0;
  text($("c-calls"), fmt(rates.calls_per_sec || 0));
  text($("c-tokens"), fmt(rates.tokens_per_min || 0));
  text($("c-inflight"), String(inflight || 0));
  // A paused run's clock stands still: no ETA.
  text($("c-eta"), p.state === "paused" ? "paused" : live ? duration(live.eta_secs) : (p.state === "finished" ? "done" : "–"));
  $("btn-pause").disabled = p.state !== "running";
  const held = p.state === "paused" || p.state === "pausing";
  $("btn-resume").disabled = !(held || p.state.startsWith("interrupted"));
  $("btn-cancel").disabled = !(p.state === "running" || held);

  const provs = stats.providers || [];
  const rpsLimit = sum(provs.map((x) => x.limits.rps ?? (x.limits.rpm ? x.limits.rpm / 60 : null)));
  const now = performance.now();
  let doneRate = null, failRate = null;
  if (state.last) {
    const dt = (now - state.last.at) / 1000;
    if (dt > 0) {
      doneRate = Math.max(0, ((counts.done || 0) - state.last.done) / dt);
      failRate = Math.max(0, ((counts.failed || 0) - state.last.failed) / dt);
    }
  }
  state.last = { at: now, done: counts.done || 0, failed: counts.failed || 0 };
  const c = state.charts;
  c.calls.push([rates.calls_per_sec || 0], rpsLimit);
  c.tokens.push([rates.tokens_per_min || 0], sum(provs.map((x) => x.limits.tpm)));
  c.inflight.push([inflight || 0], sum(provs.map((x) => x.concurrency)));
  c.outcomes.push([doneRate, failRate], null);
  const slow = [...(stats.steps || [])].sort((a, b) => (b.latency_ms.p50 || 0) - (a.latency_ms.p50 || 0));
  const top = slow[0];
  c.latency.push(top ? [top.latency_ms.p50, top.latency_ms.p90, top.latency_ms.p99] : [null, null, null], null);

  list($("advice"), p.recommendations || [], (a) => {
    const li = document.createElement("li"); li.className = a.level; li.textContent = a.message; return li;
  }, "nothing to recommend");
  const rows = slow.map((s) => [s.step, s.provider, s.attempts, fmt(s.latency_ms.p50), fmt(s.latency_ms.p99), s.throttled]);
  table($("steps"), rows);
  table($("providers"), provs.map((x) => [
    x.name, (x.on_wire || 0) + " · " + x.in_flight + (x.concurrency ? " / " + x.concurrency : ""),
    x.limits.rpm ? Math.round(100 * x.used_rpm / x.limits.rpm) + "%" : fmt(x.used_rpm) + "/min",
    x.limits.tpm ? Math.round(100 * x.used_tpm / x.limits.tpm) + "%" : fmt(x.used_tpm) + "/min",
    x.endpoints.map((e) => e.breaker).join(" "),
  ]));
  const errors = (stats.recent_errors || []).map((e) => `${new Date(e.at).toLocaleTimeString()} ${e.unit} · ${e.step}: ${e.error}`);
  for (const e of p.top_errors || []) errors.push(`${e.count} × ${e.error}`);
  list($("errors"), errors.slice(0, 20), (t) => { const li = document.createElement("li"); li.textContent = t; return li; }, "none");
}

function table(body, rows) {
  body.replaceChildren();
  for (const r of rows) {
    const tr = document.createElement("tr");
    for (const v of r) { const td = document.createElement("td"); td.textContent = String(v); tr.append(td); }
    body.append(tr);
  }
}

function select(id) {
  if (state.source) state.source.close();
  state.id = id; state.last = null;
  location.hash = "run=" + encodeURIComponent(id);
  $("empty").hidden = true; $("run").hidden = false;
  text($("run-id"), id);
  state.charts = makeCharts();
  for (const li of $("runs").children) li.classList.toggle("sel", li.dataset.id === id);
  const source = new EventSource("/v1/runs/" + encodeURIComponent(id) + "/events");
  state.source = source;
  source.addEventListener("progress", (e) => { text($("conn"), "live"); update(JSON.parse(e.data)); });
  source.addEventListener("end", (e) => { text($("conn"), "run ended"); update(JSON.parse(e.data)); source.close(); });
  source.onerror = () => text($("conn"), "reconnecting…");
}

async function refreshRuns() {
  try {
    const { runs } = await api("GET", "/v1/runs");
    list($("runs"), runs, (r) => {
      const li = document.createElement("li");
      li.dataset.id = r.id;
      if (r.id === state.id) li.className = "sel";
      const name = document.createElement("span"); name.textContent = r.id;
      const st = document.createElement("span"); st.className = "state " + r.state; st.textContent = r.state;
      li.append(name, st);
      li.onclick = () => select(r.id);
      return li;
    }, "no runs yet");
    if (!state.id) {
      const want = decodeURIComponent((location.hash.match(/run=([^&]+)/) || [])[1] || "");
      const pick = runs.find((r) => r.id === want) || runs.find((r) => r.state === "running");
      if (pick) select(pick.id);
    }
  } catch (e) {
    text($("conn"), "cannot list runs: " + e.message);
  }
}

for (const [button, verb] of [["btn-pause", "pause"], ["btn-resume", "resume"], ["btn-cancel", "cancel"]]) {
  $(button).onclick = async () => {
    try { await api("POST", `/v1/runs/${encodeURIComponent(state.id)}/${verb}`); if (verb === "resume") select(state.id); }
    catch (e) { text($("conn"), e.message); }
  };
}

refreshRuns();
setInterval(refreshRuns, 3000);
