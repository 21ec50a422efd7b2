import { api, el, $, initChrome, showError, fmtDateTime, fmtTime, fmtNum, words } from "./api.js";
import { drawChart } from "./chart.js";

const root = $("#report");
const sid = root.dataset.sessionId;
const config = JSON.parse(root.dataset.chart);
const list = (x) => (Array.isArray(x) ? x : (x && x.items) || []);

function rows(tableId, items, cells) {
  $(`${tableId} tbody`).replaceChildren(
    ...(items.length ? items.map((i) => el("tr", {}, cells(i).map((c) => el("td", { text: c ?? "" })))) : [el("tr", {}, el("td", { colspan: 5, class: "muted", text: "None." }))]),
  );
}

async function load() {
  try {
    const s = await api("GET", `/sessions/${sid}`);
    const p = s.patient || {};
    const meta = [
      ["Patient", p.name || s.patient_name],
      ["Born", p.birth_date],
      ["Session", s.session_number ? `#${s.session_number}` : null],
      ["Scheduled", fmtDateTime(s.scheduled_for)],
      ["MRN", p.mrn],
      ["Chair", s.chair],
      ["State", words(s.state)],
      ["Order", s.order ? `${s.order.dose_text || ""} (${fmtNum(s.order.dose_mg ?? s.order.total_mg, 1)} mg)` : "none"],
      ["Delivered", `${fmtNum(s.delivered_mg, 1)} mg`],
      ["Discharge", s.discharge ? `${fmtDateTime(s.discharge.decided_at)} by ${s.discharge.decided_by}${s.discharge.overridden ? ` (early, override: ${s.discharge.override_reason})` : " (criteria met)"}` : "not discharged"],
    ];
    $("#r-meta").replaceChildren(...meta.filter(([, v]) => v).flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]));
    const hist = list(s.rate_history).map((r) => ({ ...r, t: new Date(r.at).getTime() }));
    const t0 = hist.length ? hist[0].t : Date.now();
    const m = (t) => (t - t0) / 60000;
    const end = Math.max(60, ...hist.map((r) => m(r.t) + 10));
    let pred = null;
    try {
      pred = await api("GET", `/sessions/${sid}/prediction?horizon_min=1`);
    } catch (err) {
      pred = null;
    }
    const xmax = Math.max(end, pred?.times_min?.at(-1) || 0);
    drawChart($("#r-rate"), { height: 120, compact: true, x: { min: 0, max: xmax }, y: { min: 0, max: Math.max(10, ...hist.map((r) => r.rate_mg_per_h)) * 1.2, label: "mg/h" }, series: [{ points: hist.map((r) => [m(r.t), r.rate_mg_per_h]), step: true, cls: "s-rate", label: "rate" }] });
    if (pred && pred.times_min) {
      const band = config.dissociation_band_ng_per_ml;
      drawChart($("#r-conc"), {
        height: 200,
        x: { min: 0, max: xmax, label: "minutes since start" },
        y: { min: 0, max: Math.max(band[1] * 1.2, ...pred.ce_ng_per_ml, ...pred.cp_ng_per_ml), label: "ng/mL" },
        bands: [{ y0: band[0], y1: band[1], label: "dissociation range", cls: "b-dissociation" }],
        series: [
          { points: pred.times_min.map((t, i) => [t, pred.cp_ng_per_ml[i]]), cls: "s-cp", label: "Cp" },
          { points: pred.times_min.map((t, i) => [t, pred.ce_ng_per_ml[i]]), cls: "s-ce", label: "Ce" },
        ],
      });
    }
    rows("#r-rates", hist, (r) => [fmtTime(r.at), fmtNum(r.rate_mg_per_h, 1), r.reason, r.by]);
    const alarms = await api("GET", `/sessions/${sid}/alarms`).catch(() => list(s.active_alarms));
    rows("#r-alarms", list(alarms).slice().reverse(), (a) => [fmtTime(a.raised_at), (a.priority || "").toUpperCase(), a.message || words(a.code), words(a.state)]);
    rows("#r-scales", list(s.scales), (x) => [fmtTime(x.at || x.recorded_at), `${x.scale}${x.timing ? ` (${x.timing})` : ""}`, `${x.total ?? x.score}${x.total_max ? ` / ${x.total_max}` : ""}`, x.band]);
    rows("#r-checkins", list(s.checkins ?? s.check_ins), (c) => [fmtTime(c.at || c.recorded_at), c.need_help ? "asked for help" : ["comfort", "intensity", "anxiety", "nausea"].filter((k) => c[k] !== undefined && c[k] !== null).map((k) => `${k} ${c[k]}`).join(", ")]);
    rows("#r-transitions", list(s.transitions), (t) => [fmtDateTime(t.at), words(t.from ?? t.from_state), words(t.to ?? t.to_state), t.by, t.why ?? t.reason]);
    $("#r-printed").textContent = fmtDateTime(new Date().toISOString());
    fetch(`/api/v1/sessions/${sid}/report`, { credentials: "same-origin" }).then((r) => {
      $("#server-report").hidden = !r.ok;
      $("#server-pdf").hidden = !r.ok;
    });
  } catch (err) {
    showError($("#r-error"), err);
  }
}

$("#print-btn").addEventListener("click", () => window.print());
initChrome().then(load);
