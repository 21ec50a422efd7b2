// A small SVG time-series chart (no dependencies): shared time axis in minutes, step lines
// (infusion rate), lines (Cp, Ce, vitals), shaded bands (dissociation range), horizontal
// threshold lines (alarm limits, with text labels), a "now" marker, dashed forecast and
// dotted what-if series. Every series is labelled in text at its end, so no line is told
// apart by colour alone.

const NS = "http://www.w3.org/2000/svg";

function node(tag, attrs = {}, text) {
  const n = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v !== undefined && v !== null) n.setAttribute(k, String(v));
  }
  if (text !== undefined) n.textContent = text;
  return n;
}

function niceTicks(lo, hi, count) {
  const span = hi - lo;
  if (!(span > 0)) return [lo];
  const raw = span / Math.max(1, count);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) || raw;
  const ticks = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-9; v += step) ticks.push(+v.toFixed(10));
  return ticks;
}

/**
 * Draw a chart into `svg` (cleared first).
 * opts: {height, x: {min, max, label}, y: {min, max, label}, series: [{points: [[x, y]],
 *   step, cls, dash: "forecast"|"whatif", label, dots}], bands: [{y0, y1, label, cls}],
 *   thresholds: [{y, label, cls}], now: x, xFormat: (x) => string, compact}
 */
export function drawChart(svg, opts) {
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  const width = Math.max(280, svg.clientWidth || svg.parentNode?.clientWidth || 800);
  const height = opts.height || 200;
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("height", height);
  const m = { left: opts.compact ? 44 : 56, right: opts.labelRoom ?? 56, top: 20, bottom: opts.compact ? 22 : 30 };
  const w = width - m.left - m.right;
  const h = height - m.top - m.bottom;
  const { min: x0, max: x1 } = opts.x;
  let { min: y0, max: y1 } = opts.y;
  if (!(y1 > y0)) y1 = y0 + 1;
  const sx = (x) => m.left + ((x - x0) / (x1 - x0 || 1)) * w;
  const sy = (y) => m.top + h - ((Math.min(Math.max(y, y0), y1) - y0) / (y1 - y0)) * h;
  const clipId = `clip-${svg.id || Math.random().toString(36).slice(2)}`;
  const defs = node("defs");
  const clip = node("clipPath", { id: clipId });
  clip.append(node("rect", { x: m.left, y: m.top, width: w, height: h }));
  defs.append(clip);
  svg.append(defs);

  const grid = node("g", { class: "grid" });
  for (const t of niceTicks(y0, y1, opts.compact ? 3 : 4)) {
    grid.append(node("line", { x1: m.left, x2: m.left + w, y1: sy(t), y2: sy(t) }));
    grid.append(node("text", { x: m.left - 6, y: sy(t) + 4, class: "tick", "text-anchor": "end" }, String(t)));
  }
  const fmt = opts.xFormat || ((x) => `${Math.round(x)}`);
  for (const t of niceTicks(x0, x1, Math.max(3, Math.floor(w / 90)))) {
    grid.append(node("line", { x1: sx(t), x2: sx(t), y1: m.top, y2: m.top + h, class: "vgrid" }));
    grid.append(node("text", { x: sx(t), y: m.top + h + 16, class: "tick", "text-anchor": "middle" }, fmt(t)));
  }
  svg.append(grid);
  if (opts.y.label) {
    const cy = m.top + h / 2;
    svg.append(node("text", { x: 12, y: cy, transform: `rotate(-90 12 ${cy})`, "text-anchor": "middle", class: "axis-label" }, opts.y.label));
  }
  if (opts.x.label && !opts.compact) {
    svg.append(node("text", { x: m.left + w, y: height - 2, class: "axis-label", "text-anchor": "end" }, opts.x.label));
  }

  const plot = node("g", { "clip-path": `url(#${clipId})` });
  for (const b of opts.bands || []) {
    const top = sy(Math.min(b.y1, y1));
    const bottom = sy(Math.max(b.y0, y0));
    if (bottom <= top) continue;
    plot.append(node("rect", { x: m.left, y: top, width: w, height: bottom - top, class: `band ${b.cls || ""}` }));
  }
  svg.append(plot);
  for (const b of opts.bands || []) {
    if (b.label && b.y1 > y0 && b.y0 < y1) {
      svg.append(node("text", { x: m.left + 6, y: sy(Math.min(b.y1, y1)) + 13, class: "band-label" }, b.label));
    }
  }
  const placed = [];
  for (const t of opts.thresholds || []) {
    if (t.y < y0 || t.y > y1) continue;
    svg.append(node("line", { x1: m.left, x2: m.left + w, y1: sy(t.y), y2: sy(t.y), class: `threshold ${t.cls || ""}` }));
    // Labels go inside the plot, right-aligned above their line (a white halo keeps them
    // legible over data); a label that would overlap one already drawn is left out (the
    // thresholds come most important first).
    if (placed.some((py) => Math.abs(py - sy(t.y)) < 12)) continue;
    placed.push(sy(t.y));
    svg.append(node("text", { x: m.left + w - 4, y: sy(t.y) - 3, "text-anchor": "end", class: `threshold-label ${t.cls || ""}` }, t.label));
  }

  const lines = node("g", { "clip-path": `url(#${clipId})` });
  const ends = [];
  for (const s of opts.series || []) {
    const pts = (s.points || []).filter((p) => p && Number.isFinite(p[0]) && Number.isFinite(p[1]));
    if (!pts.length) continue;
    let d = "";
    pts.forEach(([x, y], i) => {
      if (i === 0) d += `M${sx(x).toFixed(1)},${sy(y).toFixed(1)}`;
      else if (s.step) d += `H${sx(x).toFixed(1)}V${sy(y).toFixed(1)}`;
      else d += `L${sx(x).toFixed(1)},${sy(y).toFixed(1)}`;
    });
    if (s.step && s.extendTo !== undefined) d += `H${sx(s.extendTo).toFixed(1)}`;
    const cls = `series ${s.cls || ""} ${s.dash ? `dash-${s.dash}` : ""}`;
    lines.append(node("path", { d, class: cls }));
    if (s.dots) {
      for (const [x, y] of pts) lines.append(node("circle", { cx: sx(x), cy: sy(y), r: 3, class: `dot ${s.cls || ""}` }));
    }
    if (s.label) {
      const [lx, ly] = pts[pts.length - 1];
      const ex = s.step && s.extendTo !== undefined ? s.extendTo : lx;
      ends.push({ x: Math.min(sx(ex), m.left + w) + 4, y: sy(ly) + 4, text: s.label, cls: s.cls || "" });
    }
  }
  svg.append(lines);
  ends.sort((a, b) => a.y - b.y);
  for (let i = 1; i < ends.length; i++) {
    if (ends[i].y - ends[i - 1].y < 13) ends[i].y = ends[i - 1].y + 13;
  }
  for (const e of ends) svg.append(node("text", { x: e.x, y: e.y, class: `series-label ${e.cls}` }, e.text));

  if (opts.now !== undefined && opts.now !== null && opts.now >= x0 && opts.now <= x1) {
    svg.append(node("line", { x1: sx(opts.now), x2: sx(opts.now), y1: m.top, y2: m.top + h, class: "now" }));
    svg.append(node("text", { x: sx(opts.now), y: 12, "text-anchor": "middle", class: "now-label" }, "now"));
  }
  svg.append(node("rect", { x: m.left, y: m.top, width: w, height: h, class: "frame" }));
}
