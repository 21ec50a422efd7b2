import { api, el, $, initChrome, showError, formData, fmtDateTime, words } from "./api.js";
import { drawChart } from "./chart.js";

const root = $("#patient");
const pid = root.dataset.patientId;
const config = JSON.parse(root.dataset.chart);
const SCALES = Object.fromEntries(config.scales.map((s) => [s.id, s]));

function age(birth) {
  const b = new Date(birth);
  const n = new Date();
  let a = n.getFullYear() - b.getFullYear();
  if (n < new Date(n.getFullYear(), b.getMonth(), b.getDate())) a -= 1;
  return a;
}

function renderScreening(s) {
  const box = $("#pt-screening");
  if (!s) return;
  const hard = s.hard_stops || [];
  const warn = s.warnings || [];
  const parts = [
    el(
      "p",
      { class: `verdict ${s.can_schedule ? "ok" : "stop"}` },
      el("span", { "aria-hidden": "true", text: s.can_schedule ? "✓ " : "✕ " }),
      s.can_schedule ? "May be scheduled" : "Hard stop: may not be scheduled",
    ),
    hard.length ? el("ul", { class: "plain" }, hard.map((h) => el("li", { class: "stop" }, "Hard stop: ", h.text || words(h.code || h)))) : null,
    warn.length ? el("ul", { class: "plain" }, warn.map((h) => el("li", { class: "warn" }, "Warning: ", h.text || words(h.code || h)))) : null,
    el("p", { class: "small muted", text: `Decided ${fmtDateTime(s.decided_at)}${s.decided_by ? ` by ${s.decided_by}` : ""}` }),
  ];
  box.replaceChildren(...parts.filter(Boolean));
}

function sessionRow(s) {
  const scores = (s.scales || s.scores || []).map((x) => `${(SCALES[x.scale] || {}).short_name || x.scale} ${x.total ?? x.score}`);
  return el(
    "li",
    { class: "course-session" },
    el("a", { href: `/sessions/${s.id}` }, `Session ${s.session_number ?? s.id}`),
    ` · ${fmtDateTime(s.scheduled_for || s.started_at)} · ${words(s.state)}`,
    s.delivered_mg !== undefined && s.delivered_mg !== null ? ` · ${Number(s.delivered_mg).toFixed(1)} mg` : "",
    scores.length ? ` · ${scores.join(", ")}` : "",
  );
}

function outcomePoints(course) {
  // {scale: [[session number, total]]}, from the course's sessions.
  const out = {};
  (course.sessions || []).forEach((s, i) => {
    for (const x of s.scales || s.scores || []) {
      const k = x.scale;
      (out[k] = out[k] || []).push([s.session_number ?? i + 1, x.total ?? x.score]);
    }
  });
  return out;
}

function renderOutcomeChart(course) {
  const svg = $("#outcome-chart");
  const pts = outcomePoints(course);
  const outcomeScales = Object.keys(pts).filter((k) => SCALES[k] && SCALES[k].response_min_fall_pct !== null);
  svg.closest("figure").hidden = !outcomeScales.length;
  if (!outcomeScales.length) {
    svg.replaceChildren();
    svg.setAttribute("aria-label", "No outcome scores recorded yet");
    return;
  }
  const main = outcomeScales[0];
  const def = SCALES[main];
  const series = outcomeScales.map((k) => ({ points: pts[k], cls: `s-${k}`, label: SCALES[k].short_name, dots: true }));
  const baseline = pts[main][0][1];
  const thresholds = [
    { y: baseline * (1 - def.response_min_fall_pct / 100), label: `${def.short_name} response`, cls: "t-response" },
  ];
  if (def.remission_max_total !== null) thresholds.push({ y: def.remission_max_total, label: `${def.short_name} remission`, cls: "t-remission" });
  const n = Math.max(course.planned_sessions || 0, ...(course.sessions || []).map((s, i) => s.session_number ?? i + 1));
  drawChart(svg, {
    height: 220,
    x: { min: 0.5, max: Math.max(n, 2) + 0.5, label: "session" },
    y: { min: 0, max: Math.max(...outcomeScales.map((k) => SCALES[k].total_max)), label: "score" },
    series,
    thresholds,
    xFormat: (x) => (Number.isInteger(x) ? `#${x}` : ""),
  });
  svg.setAttribute("aria-label", `${def.short_name} from ${baseline} at baseline to ${pts[main][pts[main].length - 1][1]} at the latest session`);
}

async function renderCourses(patient) {
  const box = $("#pt-courses");
  const courses = patient.courses || [];
  if (!courses.length) return;
  const full = await Promise.all(courses.map((c) => api("GET", `/courses/${c.id}`).catch(() => c)));
  box.replaceChildren(
    ...full.map((c) =>
      el(
        "div",
        { class: "course" },
        el("h3", { text: `${words(c.indication)} · protocol ${c.protocol} · ${(c.sessions || []).length} of ${c.planned_sessions} sessions` }),
        c.goal ? el("p", { class: "small", text: `Goal: ${typeof c.goal === "string" ? c.goal : `${(SCALES[c.goal.scale_id] || {}).short_name || c.goal.scale_id} ${words(c.goal.kind)}`}` }) : null,
        el("ol", { class: "plain timeline" }, (c.sessions || []).map(sessionRow)),
        el("p", { class: "outcome" }, Object.entries(c.outcomes || {}).map(([k, v]) => `${(SCALES[k] || {}).short_name || k}: baseline ${v.baseline_total}; ${v.response ? "✓ response" : "no response yet"}${v.remission ? ", ✓ remission" : ""}. `)),
      ),
    ),
  );
  root.dataset.courseId = full[full.length - 1].id;
  renderOutcomeChart(full[full.length - 1]);
}

async function load() {
  try {
    const p = await api("GET", `/patients/${pid}`);
    $("#pt-name").textContent = `${p.given_name} ${p.family_name}`;
    document.title = `${p.family_name}, ${p.given_name} · ketaflow`;
    $("#pt-demo").textContent = `MRN ${p.mrn} · born ${p.birth_date} (${age(p.birth_date)} y) · ${p.sex}`;
    $("#pt-weight").textContent = p.latest_weight ? `${p.latest_weight.weight_kg} kg` : "no weight";
    const weights = await api("GET", `/patients/${pid}/weights`).catch(() => []);
    $("#pt-weights").replaceChildren(...weights.slice(-5).reverse().map((w) => el("li", { text: `${w.measured_on}: ${w.weight_kg} kg` })));
    // Screening, medications, allergies and courses come from the clinic endpoints.
    const clin = await api("GET", `/patients/${pid}/clinical`).catch(() => ({}));
    renderScreening(clin.latest_screening);
    const flags = clin.interaction_flags || [];
    const meds = clin.medications || [];
    if (meds.length) {
      $("#pt-meds").replaceChildren(
        ...meds.map((m) => el("li", {}, `${m.name}${m.dose_text ? ` ${m.dose_text}` : ""}`)),
        ...flags.map((f) => el("li", { class: "warn" }, el("span", { "aria-hidden": "true", text: "⚠ " }), `Interaction: ${f.message || f.text || words(f.code || f.drug_class || "")}`)),
      );
    }
    $("#pt-allergies").replaceChildren(...(clin.allergies || []).map((a) => el("li", { class: "warn", text: `Allergy: ${a.substance}${a.reaction ? ` (${a.reaction})` : ""}` })));
    await renderCourses(clin);
  } catch (err) {
    showError($("#pt-error"), err);
  }
}

function bind(formId, handler) {
  const form = $(formId);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const errorNode = form.querySelector(".error");
    showError(errorNode, null);
    try {
      await handler(form);
      await load();
    } catch (err) {
      showError(errorNode, err);
    }
  });
}

bind("#weight-form", (f) => api("POST", `/patients/${pid}/weights`, { weight_kg: Number(f.weight_kg.value), measured_on: f.measured_on.value }));
bind("#screening-form", (f) => {
  const findings = {};
  for (const box of f.querySelectorAll("input[type=checkbox]")) findings[box.name] = box.checked;
  return api("POST", `/patients/${pid}/screenings`, { findings, notes: f.notes.value });
});
bind("#med-form", (f) => api("POST", `/patients/${pid}/medications`, { name: f.name.value }));
bind("#course-form", (f) => {
  const d = formData(f);
  return api("POST", `/patients/${pid}/courses`, {
    indication: d.indication,
    protocol: d.protocol,
    planned_sessions: Number(d.planned_sessions),
    goal: { scale: d.goal_scale, kind: d.goal_kind },
  });
});
bind("#session-form", async (f) => {
  const courseId = root.dataset.courseId;
  if (!courseId) throw new Error("Plan a course first.");
  const s = await api("POST", `/courses/${courseId}/sessions`, {
    scheduled_for: new Date(f.scheduled_for.value).toISOString(),
    chair: f.chair.value,
  });
  location.assign(`/sessions/${s.id}`);
});

const now = new Date();
$("#w-on").value = now.toISOString().slice(0, 10);
now.setMinutes(now.getMinutes() - now.getTimezoneOffset());
$("#s-when").value = now.toISOString().slice(0, 16);

api("GET", "/protocols")
  .then((list) => {
    const items = Array.isArray(list) ? list : list.items || list.protocols || [];
    $("#c-prot").replaceChildren(...items.map((p) => el("option", { value: p.id || p.name, text: p.title || p.name || p.id })));
  })
  .catch(() => $("#c-prot").replaceChildren(el("option", { value: "depression-standard", text: "depression-standard" })));

initChrome().then(load);
