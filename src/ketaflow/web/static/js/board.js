import { api, el, $, initChrome, showError, fmtElapsed, fmtTime, words, priorityBadge } from "./api.js";

const REFRESH_MS = 10000;

function patientName(s) {
  const p = s.patient || {};
  return s.patient_name || [p.given_name, p.family_name].filter(Boolean).join(" ") || `Session ${s.id}`;
}

// Active alarms by priority, whatever shape the board row gives them in.
function alarmCounts(s) {
  const a = s.active_alarms ?? s.alarms ?? {};
  if (Array.isArray(a)) {
    const out = {};
    for (const x of a) out[x.priority] = (out[x.priority] || 0) + 1;
    return out;
  }
  return a.by_priority || a;
}

function overdue(s) {
  const o = s.overdue_readings ?? s.overdue ?? [];
  return Array.isArray(o) ? o.map((x) => (typeof x === "string" ? x : x.kind || x.code || "reading")) : [];
}

function card(s) {
  const counts = alarmCounts(s);
  const alarms = ["high", "medium", "low"]
    .filter((p) => counts[p] > 0)
    .map((p) => el("li", {}, priorityBadge(p), ` × ${counts[p]}`));
  const od = s.overdue_readings === true ? ["vital signs"] : overdue(s);
  const closed = ["discharged", "aborted"].includes(s.state);
  const elapsed = closed ? undefined : s.elapsed_min ?? s.elapsed_minutes;
  return el(
    "li",
    { class: `chair chair-${s.state}${counts.high ? " has-high" : ""}` },
    el(
      "a",
      { href: `/sessions/${s.id}`, class: "chair-link" },
      el("span", { class: "chair-name", text: s.chair || "No chair" }),
      el("span", { class: "chair-patient", text: patientName(s) }),
      el("span", { class: `state state-${s.state}`, text: words(s.state) + (s.pump_unconfirmed ? " · pump unconfirmed" : "") }),
      el(
        "span",
        { class: "chair-meta" },
        closed ? `Finished · scheduled ${fmtTime(s.scheduled_for)}` : elapsed !== undefined && elapsed !== null ? `Elapsed ${fmtElapsed(elapsed)}` : `Scheduled ${fmtTime(s.scheduled_for)}`,
      ),
    ),
    alarms.length ? el("ul", { class: "chair-alarms", "aria-label": closed ? "Alarms not yet resolved" : "Active alarms" }, alarms) : el("p", { class: "muted small", text: "No active alarms" }),
    od.length ? el("p", { class: "overdue" }, el("span", { "aria-hidden": "true", text: "⏰ " }), `Overdue: ${od.map(words).join(", ")}`) : null,
  );
}

async function refresh() {
  const today = new Date();
  const iso = `${today.getFullYear()}-${String(today.getMonth() + 1).padStart(2, "0")}-${String(today.getDate()).padStart(2, "0")}`;
  $("#board-date").textContent = today.toLocaleDateString([], { dateStyle: "full" });
  try {
    const data = await api("GET", `/sessions?date=${iso}`);
    const rows = (Array.isArray(data) ? data : data.items || data.sessions || []).slice();
    // Sessions still running first, finished ones last; otherwise in scheduled order.
    const done = (s) => (["discharged", "aborted"].includes(s.state) ? 1 : 0);
    rows.sort((a, b) => done(a) - done(b));
    const list = $("#board");
    list.replaceChildren(...rows.map(card));
    list.setAttribute("aria-busy", "false");
    $("#board-empty").hidden = rows.length > 0;
    $("#board-updated").textContent = `Updated ${fmtTime(new Date().toISOString())}`;
    showError($("#board-error"), null);
  } catch (err) {
    showError($("#board-error"), err.status === 404 ? "The session board is not available on this server yet." : err);
  }
}

initChrome().then((p) => {
  if (p && p.role === "kiosk") location.assign("/kiosk");
  refresh();
  setInterval(refresh, REFRESH_MS);
});
