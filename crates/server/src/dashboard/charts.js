// Line charts over a run's points, drawn by hand on canvases (no library:
// the page works offline): a time axis, a dashed limit line, hover values,
// crisp on hi-DPI screens (drawn at devicePixelRatio), as wide as their box.
(() => {
"use strict";

const css = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();

function fmt(n) {
  if (n === null || n === undefined || !Number.isFinite(n)) return "–";
  const a = Math.abs(n);
  if (a >= 1e6) return (n / 1e6).toFixed(1) + "M";
  if (a >= 1e4) return (n / 1e3).toFixed(0) + "k";
  if (a >= 100) return n.toFixed(0);
  if (a === 0) return "0";
  return n.toFixed(a >= 10 ? 1 : 2).replace(/\.?0+$/, "");
}

function clock(t) {
  const d = new Date(t);
  return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
}

// A chart of `series` ([{name, color, get(point)}]) read from the shared
// points; `limit()` gives a dashed line (or null); `unit` labels values.
class Chart {
  constructor(canvas, series, opts = {}) {
    this.canvas = canvas;
    this.series = series;
    this.unit = opts.unit || "";
    this.limit = opts.limit || (() => null);
    this.limitName = opts.limitName || "limit";
    this.max = opts.max || null;
    this.points = [];
    this.hover = null;
    canvas.addEventListener("mousemove", (e) => this.track(e));
    canvas.addEventListener("mouseleave", () => { this.hover = null; this.draw(); });
    if (window.ResizeObserver) new ResizeObserver(() => this.draw()).observe(canvas);
    // Colours come from the style: redraw when the scheme turns dark or light.
    if (window.matchMedia) matchMedia("(prefers-color-scheme: dark)").addEventListener("change", () => this.draw());
  }

  set(points) {
    this.points = points;
    this.canvas.dataset.points = String(points.length);
    this.draw();
  }

  track(e) {
    const r = this.canvas.getBoundingClientRect();
    this.hover = e.clientX - r.left;
    this.draw();
  }

  draw() {
    const c = this.canvas, dpr = window.devicePixelRatio || 1;
    const w = c.clientWidth, h = c.clientHeight;
    if (!w || !h) return;
    if (c.width !== Math.round(w * dpr) || c.height !== Math.round(h * dpr)) {
      c.width = Math.round(w * dpr); c.height = Math.round(h * dpr);
    }
    const g = c.getContext("2d");
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, h);
    const fg = css("--muted") || "#7a8294", grid = css("--grid") || "#d5d9e2";
    const left = 40, right = 8, top = 8, bottom = 34;
    const pts = this.points;
    const limit = this.limit();
    let max = Number.isFinite(limit) && limit > 0 ? limit : 0;
    for (const p of pts) for (const s of this.series) { const v = s.get(p); if (Number.isFinite(v) && v > max) max = v; }
    max = this.max || (max > 0 ? max * 1.1 : 1);
    const t1 = pts.length ? pts[pts.length - 1].t : Date.now();
    const t0 = pts.length > 1 ? pts[0].t : t1 - 60000;
    const span = Math.max(t1 - t0, 1000);
    const x = (t) => left + ((t - t0) / span) * (w - left - right);
    const y = (v) => top + (1 - v / max) * (h - top - bottom);
    g.font = "10px system-ui, sans-serif"; g.lineWidth = 1;
    // Value grid: 0, half, max.
    g.strokeStyle = grid; g.fillStyle = fg; g.textAlign = "right"; g.textBaseline = "middle";
    for (const v of [0, max / 2, max]) {
      g.beginPath(); g.moveTo(left, Math.round(y(v)) + 0.5); g.lineTo(w - right, Math.round(y(v)) + 0.5); g.stroke();
      g.fillText(fmt(v), left - 4, y(v));
    }
    // Time axis: up to five ticks.
    g.textAlign = "center"; g.textBaseline = "top";
    const ticks = Math.max(2, Math.min(5, Math.floor((w - left) / 80)));
    for (let i = 0; i < ticks; i++) {
      const t = t0 + (span * i) / (ticks - 1);
      const label = clock(t), half = g.measureText(label).width / 2;
      g.fillText(label, Math.min(Math.max(x(t), left + half), w - right - half), h - bottom + 4);
    }
    if (Number.isFinite(limit) && limit > 0) {
      g.setLineDash([5, 4]); g.strokeStyle = css("--limit") || "#e0a030";
      g.beginPath(); g.moveTo(left, y(limit)); g.lineTo(w - right, y(limit)); g.stroke(); g.setLineDash([]);
      g.fillStyle = css("--limit-text") || "#b07a10"; g.textAlign = "right"; g.textBaseline = "bottom";
      g.fillText(`${this.limitName} ${fmt(limit)}`, w - right - 2, y(limit) - 2);
    }
    // A gap longer than a few steps (between sessions) breaks the line.
    const steps = [];
    for (let i = 1; i < pts.length; i++) steps.push(pts[i].t - pts[i - 1].t);
    steps.sort((a, b) => a - b);
    const gap = Math.max(2500, 2.5 * (steps[Math.floor(steps.length / 2)] || 1000));
    this.series.forEach((s) => {
      // Runs of points without a gap; a lone point (a short session) is a dot.
      const runs = [];
      let cur = null, prev = null;
      for (const p of pts) {
        const v = s.get(p);
        if (!Number.isFinite(v) || (prev && p.t - prev.t > gap)) cur = null;
        if (Number.isFinite(v)) {
          if (!cur) { cur = []; runs.push(cur); }
          cur.push([x(p.t), y(v)]);
        }
        prev = p;
      }
      g.strokeStyle = s.color; g.fillStyle = s.color; g.lineWidth = 1.75;
      for (const run of runs) {
        g.beginPath();
        if (run.length === 1) { g.arc(run[0][0], run[0][1], 2.5, 0, 2 * Math.PI); g.fill(); continue; }
        run.forEach(([px, py], i) => (i ? g.lineTo(px, py) : g.moveTo(px, py)));
        g.stroke();
      }
    });
    // Legend.
    g.textAlign = "left"; g.textBaseline = "bottom";
    let lx = left;
    for (const s of this.series) {
      g.fillStyle = s.color; g.fillRect(lx, h - 10, 10, 3);
      g.fillStyle = fg; g.fillText(s.name, lx + 14, h - 3);
      lx += 22 + g.measureText(s.name).width;
    }
    if (this.hover !== null && pts.length) this.drawHover(g, pts, x, y, w, h, top, bottom, fg);
  }

  drawHover(g, pts, x, y, w, h, top, bottom) {
    let best = pts[0], dist = Infinity;
    for (const p of pts) { const d = Math.abs(x(p.t) - this.hover); if (d < dist) { dist = d; best = p; } }
    const px = x(best.t);
    g.strokeStyle = css("--fg") || "#1d2330"; g.globalAlpha = 0.35;
    g.beginPath(); g.moveTo(px, top); g.lineTo(px, h - bottom); g.stroke(); g.globalAlpha = 1;
    const lines = [clock(best.t)].concat(this.series.map((s) => `${s.name}: ${fmt(s.get(best))}${this.unit}`));
    // What the tooltip says, for assistive tech and tests.
    this.canvas.dataset.hover = lines.join(" · ");
    g.font = "11px system-ui, sans-serif";
    const bw = Math.max(...lines.map((l) => g.measureText(l).width)) + 12, bh = lines.length * 14 + 6;
    const bx = px + bw + 10 < w ? px + 8 : px - bw - 8;
    g.fillStyle = css("--card") || "#fff"; g.strokeStyle = css("--grid") || "#ccc";
    g.fillRect(bx, top, bw, bh); g.strokeRect(bx, top, bw, bh);
    g.textAlign = "left"; g.textBaseline = "top";
    lines.forEach((l, i) => { g.fillStyle = i === 0 ? css("--muted") : this.series[i - 1].color; g.fillText(l, bx + 6, top + 4 + i * 14); });
  }
}

window.SluiceCharts = { Chart, fmt, clock };
})();
