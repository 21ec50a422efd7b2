// The session cockpit: charts on one time axis, vitals, alarms, check-ins and actions, kept
// current by the session's WebSocket stream (no reloads).
import {
  api, el, $, initChrome, showError, fmtTime, fmtNum, fmtElapsed, words, priorityBadge, openStream, ApiError,
} from "./api.js";
import { drawChart } from "./chart.js";

const root = $("#cockpit");
const sid = root.dataset.sessionId;
const config = JSON.parse(root.dataset.chart);
const SCALES = Object.fromEntries(config.scales.map((s) => [s.id, s]));
const FORECAST_MIN = 30;

const state = {
  session: null,
  vitals: [], // {kind, value, t (ms), artefact}
  prediction: null,
  whatIf: null,
  whatIfLabel: "",
  helpAt: null,
  t0: null, // ms: time zero of the charts (infusion start, else first reading, else load)
};

// ---------------------------------------------------------------- data shapes (defensive)

function list(x, ...keys) {
  if (Array.isArray(x)) return x;
  for (const k of keys) if (x && Array.isArray(x[k])) return x[k];
  return [];
}

const ALIASES = {
  rate: ["rate", "change_rate", "set_rate"],
  scale: ["scale", "record_scale", "scales"],
  order: ["order", "write_order", "create_order"],
  verify: ["verify", "verify_order"],
  double_check: ["double_check", "double-check"],
  pre_assessment: ["pre_assessment", "record_pre_assessment", "pre-assessment"],
  kiosk_token: ["kiosk_token", "kiosk-token", "pair_kiosk"],
  discharge: ["discharge"],
};

function allowedMap(session) {
  const raw = session.allowed_actions ?? session.actions ?? [];
  const out = {};
  if (Array.isArray(raw)) {
    for (const a of raw) {
      if (typeof a === "string") out[a] = { enabled: true, reason: "" };
      else out[a.action || a.name] = { enabled: a.enabled !== false, reason: a.reason || "" };
    }
  } else {
    for (const [k, v] of Object.entries(raw)) out[k] = typeof v === "object" ? { enabled: v.enabled !== false, reason: v.reason || "" } : { enabled: !!v, reason: "" };
  }
  return out;
}

function lookupAllowed(map, key) {
  for (const k of ALIASES[key] || [key]) if (map[k]) return map[k];
  return derived(key, state.session);
}

// Actions the API's list does not carry (they have their own endpoints): derived from the
// state and the order, with the reason shown next to the disabled control.
const BEFORE_START = ["checked_in", "pre_assessment", "ready"];
const CLOSED = ["discharged", "aborted"];
function derived(key, s) {
  const o = s.order;
  const no = (reason) => ({ enabled: false, reason });
  const yes = { enabled: true, reason: "" };
  const role = state.role;
  switch (key) {
    case "pre_assessment":
      return s.state === "pre_assessment" ? yes : no(`only during the pre-assessment (now ${words(s.state)})`);
    case "order":
      if (!BEFORE_START.includes(s.state)) return no(s.state === "scheduled" ? "check the patient in first" : "the infusion has started");
      return role === "physician" ? yes : no("physician only");
    case "verify":
      if (!o) return no("no order written yet");
      if (o.verified_by) return no(`already verified by ${o.verified_by}`);
      return role === "physician" ? yes : no("physician only");
    case "double_check":
      if (!o) return no("no order written yet");
      if (!o.verified_by) return no("the order must be verified first");
      if (o.double_check_status === "verified") return no("double check done: matches");
      if (!BEFORE_START.includes(s.state)) return no("the infusion has started");
      return yes;
    case "rate":
      return s.state === "infusing" ? yes : no(`only while infusing (now ${words(s.state)})`);
    case "scale":
    case "kiosk_token":
      return CLOSED.includes(s.state) ? no(`the session is ${words(s.state)}`) : yes;
    default:
      return no("not allowed in this state");
  }
}

function ms(iso) {
  return iso ? new Date(iso).getTime() : NaN;
}

function rateHistory(s) {
  return list(s.rate_history).map((r) => ({ t: ms(r.at), rate: Number(r.rate_mg_per_h), reason: r.reason, by: r.by }));
}

function infusionStart(s) {
  const h = rateHistory(s).filter((r) => r.rate > 0);
  if (h.length) return h[0].t;
  const started = ms(s.started_at || s.infusion_started_at);
  return Number.isFinite(started) ? started : null;
}

const minutesAt = (t) => (t - state.t0) / 60000;

// ---------------------------------------------------------------- rendering

function renderHead() {
  const s = state.session;
  const p = s.patient || {};
  const name = p.name || s.patient_name || [p.given_name, p.family_name].filter(Boolean).join(" ");
  if (name) $("#s-patient").textContent = name;
  $("#s-chair").textContent = s.chair ? `· ${s.chair}` : "";
  const pidv = p.id ?? s.patient_id;
  if (pidv) $("#s-chart-link").href = `/patients/${pidv}`;
  const st = $("#s-state");
  st.textContent = words(s.state);
  st.className = `state state-${s.state}`;
  const h = rateHistory(s);
  const current = s.current_rate_mg_per_h ?? (h.length ? h[h.length - 1].rate : null);
  $("#s-rate").textContent = ["paused"].includes(s.state) ? "0 (paused)" : fmtNum(current, 1);
  $("#s-delivered").textContent = fmtNum(s.delivered_mg, 1);
  $("#s-ordered").textContent = s.order ? `of ${fmtNum(s.order.dose_mg, 1)} mg` : "mg";
  $("#pump-warning").hidden = !s.pump_unconfirmed;
  renderElapsed();
}

function renderElapsed() {
  const start = state.session && infusionStart(state.session);
  $("#s-elapsed").textContent = start ? fmtElapsed((Date.now() - start) / 60000) : "not started";
}

function renderAlarms() {
  const alarms = list(state.session.active_alarms ?? state.session.alarms, "items").filter(
    (a) => !["cleared", "resolved", "acknowledged_cleared"].includes(a.state),
  );
  const order = { high: 0, medium: 1, low: 2 };
  alarms.sort((a, b) => (order[a.priority] ?? 3) - (order[b.priority] ?? 3));
  const box = $("#alarms");
  box.hidden = alarms.length === 0;
  box.className = `alarms ${alarms.some((a) => a.priority === "high") ? "alarms-high" : ""}`;
  const helpActive = alarms.some((a) => /HELP/i.test(a.code || "") && a.state !== "acknowledged");
  if (!helpActive && state.helpAt && state.helpFromAlarm) {
    state.helpAt = null;
  }
  if (helpActive) {
    const a = alarms.find((x) => /HELP/i.test(x.code || ""));
    state.helpAt = state.helpAt || a.raised_at;
    state.helpFromAlarm = true;
  }
  renderHelp();
  $("#alarm-list").replaceChildren(
    ...alarms.map((a) => {
      const id = a.id ?? a.alarm_id;
      const acked = a.state === "acknowledged";
      const form = el(
        "form",
        { class: "ack-form" },
        el("label", { for: `ack-${id}`, text: "Reason" }),
        el("select", { id: `ack-${id}`, name: "reason" },
          ["assessed at the bedside", "artefact: probe or cuff", "treated", "expected effect, observing"].map((r) => el("option", { value: r, text: r }))),
        el("button", { class: "btn", type: "submit", text: acked ? "Acknowledged" : "Acknowledge", disabled: acked }),
      );
      form.addEventListener("submit", async (ev) => {
        ev.preventDefault();
        try {
          await api("POST", `/alarms/${id}/acknowledge`, { reason: form.reason.value });
          await refresh();
        } catch (err) {
          showError($("#s-error"), err);
        }
      });
      return el(
        "li",
        { class: `alarm alarm-${a.priority}${acked ? " alarm-acked" : ""}` },
        priorityBadge(a.priority),
        el("span", { class: "alarm-msg", text: a.message || words(a.code) }),
        el("span", { class: "alarm-meta small", text: `${fmtTime(a.raised_at)}${a.suggested_action ? ` · suggested: ${words(a.suggested_action)}` : ""}${acked ? " · acknowledged" : ""}${a.artefact_suspect ? " · possible artefact" : ""}` }),
        form,
      );
    }),
  );
}

function renderHelp() {
  const b = $("#help-banner");
  b.hidden = !state.helpAt;
  if (state.helpAt) $("#help-when").textContent = `Pressed at ${fmtTime(state.helpAt)}. Go to the patient, then acknowledge the alarm.`;
}

function checkinText(c) {
  if (c.need_help) return "▲ I need help";
  return ["comfort", "intensity", "anxiety", "nausea"].filter((k) => c[k] !== undefined && c[k] !== null).map((k) => `${k} ${c[k]}/10`).join(" · ");
}

function renderCheckins() {
  const items = list(state.session.checkins ?? state.session.check_ins).slice().reverse();
  const box = $("#checkins");
  if (!items.length) return;
  box.replaceChildren(...items.slice(0, 12).map((c) => el("li", { class: c.need_help ? "help" : "" }, el("span", { class: "muted", text: `${fmtTime(c.at || c.recorded_at || c.created_at)} ` }), checkinText(c))));
}

function renderHistory() {
  $("#rate-history").replaceChildren(
    ...rateHistory(state.session).reverse().map((r) => el("li", { text: `${fmtTime(new Date(r.t).toISOString())} · ${fmtNum(r.rate, 1)} mg/h${r.reason ? ` · ${r.reason}` : ""}${r.by ? ` · ${r.by}` : ""}` })),
  );
  const order = state.session.order;
  if (order) {
    const pump = order.pump || {};
    const dc = order.double_check_status;
    $("#order-view").replaceChildren(
      el("p", { class: "order-line" }, el("strong", { text: order.dose_text || "" }), ` · ${fmtNum(order.dose_mg, 1)} mg at ${fmtNum(order.rate_mg_per_h, 1)} mg/h · ${fmtNum(order.concentration_mg_per_ml, 2)} mg/mL`),
      el("p", { text: `Pump: ${fmtNum(pump.rate_ml_per_h, 1)} mL/h, VTBI ${fmtNum(pump.vtbi_ml, 1)} mL` }),
      el("p", {}, order.verified_by ? `✓ Verified by ${order.verified_by}` : "✕ Not verified", " · ", dc === "verified" ? "✓ Double check matches" : dc ? `✕ Double check: ${words(dc)}` : "Double check not done"),
    );
  }
}

const GROUP_OF_STATE = {
  scheduled: "prep", checked_in: "prep", pre_assessment: "prep", ready: "prep",
  infusing: "infusion", paused: "infusion", infusion_complete: "after", recovery: "after",
};

function renderActions() {
  const map = allowedMap(state.session);
  // Open the group of actions that fits the state, once per state change (the user may
  // open the others at will).
  if (state.openedFor !== state.session.state) {
    state.openedFor = state.session.state;
    const current = GROUP_OF_STATE[state.session.state];
    for (const g of root.querySelectorAll("details.group")) {
      if (g.dataset.group !== "other") g.open = g.dataset.group === current;
    }
  }
  for (const node of root.querySelectorAll(".action[data-action]")) {
    const key = node.dataset.action;
    const a = lookupAllowed(map, key);
    const enabled = a ? a.enabled : false;
    const why = node.querySelector(".why");
    node.classList.toggle("disabled", !enabled);
    for (const c of node.querySelectorAll("button, input, select, textarea")) {
      if (c.id === "preview-btn" || c.id === "new-rate" || c.id === "pause-min") continue; // a preview is always allowed
      c.disabled = !enabled;
    }
    const details = node.querySelector(":scope > details");
    if (details) {
      details.querySelector("summary").setAttribute("aria-disabled", String(!enabled));
      if (!enabled) details.open = false;
    }
    if (why) why.textContent = enabled ? "" : `Not now: ${a && a.reason ? a.reason : "not allowed in this state"}`;
  }
}

function thresholdsFor(kind) {
  const byValue = new Map();
  const rank = { high: 0, medium: 1, low: 2 };
  for (const t of config.thresholds[kind] || []) {
    const prev = byValue.get(t.value);
    if (!prev || rank[t.priority] < rank[prev.priority]) byValue.set(t.value, t);
  }
  return [...byValue.values()].sort((a, b) => rank[a.priority] - rank[b.priority]).map((t) => ({ y: t.value, label: `${t.side === "above" ? "≥" : "≤"}${t.value} ${t.priority}`, cls: `t-${t.priority}` }));
}

function xRange() {
  const now = minutesAt(Date.now());
  let max = Math.max(now + FORECAST_MIN, 60);
  const p = state.prediction;
  if (p && p.times_min && p.times_min.length) max = Math.max(max, Math.min(p.times_min[p.times_min.length - 1], now + FORECAST_MIN + 5));
  let min = 0;
  for (const v of state.vitals) min = Math.min(min, minutesAt(v.t));
  return { min: Math.max(min, now - 180), max, now };
}

function predSeries(pred, key, cls, label, dash) {
  if (!pred || !pred[key]) return [];
  const now = pred.now_min ?? minutesAt(Date.now());
  const pts = pred.times_min.map((t, i) => [t + (pred.offset_min || 0), pred[key][i]]);
  if (dash === "whatif") return [{ points: pts.filter(([t]) => t >= now - 1e-9), cls, dash, label }];
  return [
    { points: pts.filter(([t]) => t <= now + 1e-9), cls, label: null },
    { points: pts.filter(([t]) => t >= now - 1e-9), cls, dash: "forecast", label },
  ];
}

function renderCharts() {
  const xr = xRange();
  const xFormat = (x) => `${Math.round(x)}′`;
  const h = rateHistory(state.session).map((r) => [minutesAt(r.t), r.rate]);
  const rateSeries = [{ points: h, step: true, cls: "s-rate", label: "rate", extendTo: xr.now }];
  const current = h.length ? h[h.length - 1][1] : 0;
  if (h.length && state.session.state === "infusing") rateSeries.push({ points: [[xr.now, current], [xr.now + FORECAST_MIN, current]], step: true, cls: "s-rate", dash: "forecast", label: null });
  if (state.whatIf && state.whatIf.rate !== undefined) {
    const w = state.whatIf;
    const pts = w.pause_min ? [[xr.now, 0], [xr.now + w.pause_min, current]] : [[xr.now, w.rate]];
    rateSeries.push({ points: pts, step: true, cls: "s-whatif", dash: "whatif", label: "what-if", extendTo: xr.now + FORECAST_MIN });
  }
  const maxRate = Math.max(10, ...h.map((p) => p[1]), state.whatIf?.rate || 0) * 1.2;
  drawChart($("#rate-chart"), { height: 120, x: { min: xr.min, max: xr.max, label: "minutes since start" }, y: { min: 0, max: maxRate, label: "mg/h" }, series: rateSeries, now: xr.now, xFormat, compact: true });

  const p = state.prediction;
  const band = config.dissociation_band_ng_per_ml;
  const series = [...predSeries(p, "cp_ng_per_ml", "s-cp", "Cp"), ...predSeries(p, "ce_ng_per_ml", "s-ce", "Ce")];
  if (state.whatIf && state.whatIf.pred) series.push(...predSeries(state.whatIf.pred, "ce_ng_per_ml", "s-whatif", "Ce what-if", "whatif"));
  const all = [p, state.whatIf?.pred].filter(Boolean).flatMap((q) => [...(q.cp_ng_per_ml || []), ...(q.ce_ng_per_ml || [])]);
  const ymax = Math.max(band[1] * 1.2, ...all) * 1.05;
  drawChart($("#conc-chart"), {
    height: 220,
    x: { min: xr.min, max: xr.max, label: "minutes since start" },
    y: { min: 0, max: ymax, label: "ng/mL" },
    bands: [{ y0: band[0], y1: band[1], label: "dissociation range", cls: "b-dissociation" }],
    series,
    now: xr.now,
    xFormat,
  });
  if (p && p.ce_ng_per_ml) {
    const i = p.times_min.findIndex((t) => t >= (p.now_min ?? 0));
    const j = p.times_min.length - 1;
    const ceNow = p.ce_ng_per_ml[Math.max(0, i)];
    $("#pred-summary").textContent = `Predicted now: Cp ${fmtNum(p.cp_ng_per_ml[Math.max(0, i)], 0)}, Ce ${fmtNum(ceNow, 0)} ng/mL (${ceNow >= band[0] ? "in or above" : "below"} the dissociation range). In ${FORECAST_MIN} min at the current rate: Ce ${fmtNum(p.ce_ng_per_ml[j], 0)} ng/mL.`;
  }

  for (const v of config.vitals) {
    const pts = state.vitals.filter((r) => r.kind === v.kind).map((r) => [minutesAt(r.t), r.value]);
    const latest = state.vitals.filter((r) => r.kind === v.kind).at(-1);
    drawChart($(`#chart-${v.kind}`), {
      height: 120,
      compact: true,
      labelRoom: 12,
      x: { min: xr.min, max: xr.max },
      y: { min: v.y_min, max: v.y_max, label: v.unit },
      series: [{ points: pts, cls: `s-vital`, label: null }],
      thresholds: thresholdsFor(v.kind),
      now: xr.now,
      xFormat,
    });
    $(`#latest-${v.kind}`).textContent = latest ? fmtNum(latest.value, v.kind === "temp" ? 1 : 0) : "–";
    const flag = $(`#flag-${v.kind}`);
    const breach = latest && thresholdsFor(v.kind).find((t) => (t.label.startsWith("≥") ? latest.value >= t.y : latest.value <= t.y));
    flag.textContent = latest?.artefact ? "possible artefact" : breach ? `${breach.label.startsWith("≥") ? "▲ above" : "▼ below"} limit` : "";
    flag.className = `vital-flag ${breach ? "breach" : ""}`;
  }
}

function renderAll() {
  if (!state.session) return;
  renderHead();
  renderAlarms();
  renderCheckins();
  renderHistory();
  renderActions();
  renderCharts();
}

// ---------------------------------------------------------------- loading

function addReadings(readings) {
  for (const r of readings) {
    const t = ms(r.measured_at || r.at || r.ts);
    if (!Number.isFinite(t) || r.value === undefined) continue;
    state.vitals.push({ kind: r.kind, value: Number(r.value), t, artefact: !!r.artefact_suspect });
  }
  state.vitals.sort((a, b) => a.t - b.t);
  if (state.vitals.length > 5000) state.vitals = state.vitals.slice(-5000);
}

async function loadPrediction() {
  try {
    const pred = await api("GET", `/sessions/${sid}/prediction?horizon_min=${FORECAST_MIN}`);
    state.prediction = alignPrediction(pred);
  } catch (err) {
    state.prediction = null;
  }
}

// Prediction times count from the infusion start; the charts from state.t0.
function alignPrediction(pred) {
  if (!pred || !pred.times_min) return null;
  const start = infusionStart(state.session);
  const offset = start ? (start - state.t0) / 60000 : 0;
  return { ...pred, offset_min: offset, now_min: (pred.now_min ?? minutesAt(Date.now())) + offset };
}

async function refresh() {
  try {
    state.session = await api("GET", `/sessions/${sid}`);
    if (state.t0 === null || infusionStart(state.session)) state.t0 = infusionStart(state.session) ?? state.t0 ?? Date.now();
    await loadPrediction();
    showError($("#s-error"), null);
    renderAll();
  } catch (err) {
    showError($("#s-error"), err.status === 404 ? `There is no session ${sid} on this server.` : err);
  }
}

let refreshTimer = null;
function refreshSoon() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(refresh, 250);
}

function onEvent(ev) {
  const d = ev.data || {};
  switch (ev.type) {
    case "vitals":
      addReadings(list(d.readings ?? d, "items").length ? list(d.readings ?? d, "items") : [d]);
      renderCharts();
      break;
    case "checkin":
      if (state.session) {
        const key = state.session.checkins ? "checkins" : "check_ins";
        state.session[key] = [...list(state.session[key]), { ...d, at: d.at || ev.ts }];
        renderCheckins();
      }
      if (d.need_help) {
        state.helpAt = d.at || ev.ts || new Date().toISOString();
        state.helpFromAlarm = false;
        renderHelp();
      }
      refreshSoon();
      break;
    case "prediction":
      // The event carries the forecast only; re-read it with the history for the chart.
      loadPrediction().then(renderCharts);
      break;
    case "alarm_ack":
      if (/HELP/i.test(d.code || "")) state.helpAt = null;
      refreshSoon();
      break;
    case "stream.opened":
      break;
    default:
      refreshSoon();
  }
}

// ---------------------------------------------------------------- actions

async function act(button, fn) {
  const scope = button.closest(".action") || root;
  const err = scope.querySelector(".error") || $("#s-error");
  showError(err, null);
  button.disabled = true;
  try {
    const out = await fn();
    await refresh();
    return out;
  } catch (e) {
    showError(err, e);
    button.disabled = false;
    return null;
  }
}

function onSubmit(id, fn) {
  $(id).addEventListener("submit", (ev) => {
    ev.preventDefault();
    act(ev.submitter || ev.currentTarget.querySelector("button[type=submit]"), () => fn(ev.currentTarget));
  });
}

for (const b of root.querySelectorAll("[data-do=transition]")) {
  b.addEventListener("click", () => act(b, () => api("POST", `/sessions/${sid}/transitions`, { action: b.dataset.transition, reason: "" })));
}
$("[data-do=verify]").addEventListener("click", (ev) => act(ev.currentTarget, () => api("POST", `/sessions/${sid}/order/verify`, {})));
$("[data-do=start]").addEventListener("click", (ev) => act(ev.currentTarget, () => api("POST", `/sessions/${sid}/start`, {})));
onSubmit("#pump-form", (f) => {
  const body = { running: f.running.value === "yes" };
  if (f.volume_delivered_ml.value !== "") body.volume_delivered_ml = Number(f.volume_delivered_ml.value);
  return api("POST", `/sessions/${sid}/confirm-pump`, body);
});
onSubmit("#pause-form", (f) => api("POST", `/sessions/${sid}/pause`, { reason: f.reason.value }));
onSubmit("#resume-form", (f) => api("POST", `/sessions/${sid}/resume`, { reason: f.reason.value }));
onSubmit("#abort-form", (f) => api("POST", `/sessions/${sid}/transitions`, { action: "abort", reason: f.reason.value }));
onSubmit("#pre-form", (f) => {
  const n = (k) => Number(f[k].value);
  return api("POST", `/sessions/${sid}/pre-assessment`, {
    fasting_confirmed: f.fasting_confirmed.checked,
    consent_confirmed: f.consent_confirmed.checked,
    escort_name: f.escort_name.value,
    baseline: { sbp_mmhg: n("sbp_mmhg"), dbp_mmhg: n("dbp_mmhg"), hr_per_min: n("hr_per_min"), spo2_percent: n("spo2_percent"), rr_per_min: n("rr_per_min") },
  });
});
onSubmit("#order-form", (f) => {
  const body = {};
  if (f.dose_text.value.trim()) body.dose_text = f.dose_text.value.trim();
  if (f.override.value.trim()) body.override = { reason: f.override.value.trim() };
  return api("POST", `/sessions/${sid}/order`, body);
});
onSubmit("#dc-form", async (f) => {
  const out = await api("POST", `/sessions/${sid}/order/double-check`, {
    rate_ml_per_h: Number(f.rate_ml_per_h.value), vtbi_ml: Number(f.vtbi_ml.value),
    concentration_mg_per_ml: Number(f.concentration_mg_per_ml.value), dose_mg: Number(f.dose_mg.value),
  });
  const mism = list(out?.mismatches);
  f.querySelector(".result").textContent = out && out.match === false ? `✕ Mismatch: ${mism.map((m) => m.field || m).join(", ")}. ${out.message || "Check the pump and the order."}` : "✓ Matches the order.";
  return out;
});
onSubmit("#scale-form", async (f) => {
  const items = f.items.value.split(/[,\s]+/).filter(Boolean).map(Number);
  const out = await api("POST", `/sessions/${sid}/scales`, { scale: f.scale.value, items, timing: f.timing.value });
  f.querySelector(".result").textContent = out ? `Score ${out.total ?? out.score}${out.band ? ` (${out.band})` : ""}${list(out.flags).length ? ` · flags: ${list(out.flags).map(words).join(", ")}` : ""}` : "";
  return out;
});
onSubmit("#discharge-form", (f) => {
  const body = {};
  for (const box of f.querySelectorAll("input[type=checkbox]")) body[box.name] = box.checked;
  if (f.override.value.trim()) body.override = { reason: f.override.value.trim() };
  return api("POST", `/sessions/${sid}/discharge`, body);
});

// The rate form: Preview draws the forecast; Confirm sends it (soft limits need a reason).
async function preview() {
  const f = $("#rate-form");
  const rate = f.rate_mg_per_h.value === "" ? null : Number(f.rate_mg_per_h.value);
  const pause = f.pause_min.value === "" ? null : Number(f.pause_min.value);
  if (rate === null && pause === null) {
    state.whatIf = null;
    $("#whatif-summary").textContent = "";
    renderCharts();
    return;
  }
  const body = pause !== null ? { pause_min: pause } : { rate_mg_per_h: rate };
  try {
    const pred = await api("POST", `/sessions/${sid}/what-if`, body);
    state.whatIf = { rate: pause !== null ? 0 : rate, pause_min: pause, pred: alignPrediction(pred) };
    const ce = pred.ce_ng_per_ml || [];
    const band = config.dissociation_band_ng_per_ml;
    const peak = Math.max(...ce);
    $("#whatif-summary").textContent = `Preview (not saved): ${pause !== null ? `pause ${pause} min` : `${rate} mg/h`} gives Ce ${fmtNum(ce[ce.length - 1], 0)} ng/mL in ${FORECAST_MIN} min (peak ${fmtNum(peak, 0)}; ${peak > band[1] ? "above" : peak >= band[0] ? "within" : "below"} the dissociation range).`;
    showError(f.querySelector(".error"), null);
  } catch (err) {
    state.whatIf = null;
    showError(f.querySelector(".error"), err);
  }
  renderCharts();
}
$("#preview-btn").addEventListener("click", preview);
// A disabled checklist does not open (its reason is shown under it).
root.addEventListener("click", (ev) => {
  if (ev.target.closest("summary[aria-disabled=true]")) ev.preventDefault();
});
let previewTimer = null;
for (const id of ["#new-rate", "#pause-min"]) {
  $(id).addEventListener("input", () => {
    clearTimeout(previewTimer);
    previewTimer = setTimeout(preview, 400);
  });
}
onSubmit("#rate-form", async (f) => {
  const body = { rate_mg_per_h: Number(f.rate_mg_per_h.value), reason: f.reason.value };
  if (f.override.value.trim()) body.override = { reason: f.override.value.trim() };
  try {
    const out = await api("POST", `/sessions/${sid}/rate`, body);
    state.whatIf = null;
    f.rate_mg_per_h.value = "";
    f.pause_min.value = "";
    $("#whatif-summary").textContent = "";
    return out;
  } catch (err) {
    if (err instanceof ApiError && err.code === "soft_limit") {
      throw new ApiError(err.status, err.code, `${err.message} To go ahead, give an override reason and confirm again.`, err.fields);
    }
    throw err;
  }
});

$("#kiosk-btn").addEventListener("click", (ev) =>
  act(ev.currentTarget, async () => {
    const out = await api("POST", `/auth/kiosk-tokens`, { infusion_session_id: Number(sid) });
    const url = `${location.origin}/kiosk/pair#${encodeURIComponent(out.token)}`;
    $("#kiosk-link").replaceChildren(
      "Open this on the patient's tablet (valid until ",
      fmtTime(out.expires_at),
      "): ",
      el("a", { href: url, id: "kiosk-url", target: "_blank", rel: "noopener", text: "pairing link" }),
      el("br"),
      el("span", { class: "small muted", text: "Or type the code on the tablet's pairing page: " }),
      el("code", { class: "token", text: out.token }),
    );
    return out;
  }),
);

// Discharge checklist items the nurse confirms (the server evaluates the rest).
$("#discharge-criteria").replaceChildren(
  ...[["escort_confirmed", "Escort present and taking the patient home"], ["no_driving_acknowledged", "Patient acknowledges: no driving until tomorrow"]].map(([k, t]) =>
    el("div", { class: "check" }, el("input", { type: "checkbox", id: `dis-${k}`, name: k }), el("label", { for: `dis-${k}`, text: t }))),
);
const scaleSelect = $("#sc-scale");
if (config.scales.length) {
  scaleSelect.replaceChildren(...config.scales.map((s) => el("option", { value: s.id, text: `${s.short_name} (${s.n_items} items, ${s.item_min}–${s.item_max})` })));
  const def = config.scales.find((s) => s.id === "cadss6");
  if (def) scaleSelect.value = def.id;
}

// ---------------------------------------------------------------- start

async function start() {
  const me = await initChrome();
  state.role = me ? me.role : null;
  await refresh();
  try {
    const v = await api("GET", `/sessions/${sid}/vitals`);
    addReadings(list(v, "items", "readings"));
    renderCharts();
  } catch (err) {
    // Vitals will arrive over the stream.
  }
  openStream(sid, onEvent, (status) => {
    const text = { live: "live", reconnecting: "reconnecting…", "signed-out": "signed out: reload to sign in" }[status] || status;
    $("#s-live-text").textContent = text;
    $("#s-live").className = `live live-${status}`;
    if (status === "live") refreshSoon();
  });
  setInterval(() => {
    renderElapsed();
    if (state.session) renderCharts();
  }, 5000);
  setInterval(loadPrediction, 30000);
  window.addEventListener("resize", () => state.session && renderCharts());
}

start();
