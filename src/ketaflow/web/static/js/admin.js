import { api, el, $, initChrome, showError, formData, fmtDateTime, words } from "./api.js";

const ROLES = ["admin", "physician", "nurse", "front_desk"];

async function loadUsers() {
  const users = await api("GET", "/users");
  $("#users tbody").replaceChildren(
    ...users.map((u) => {
      const select = el("select", { "aria-label": `Role of ${u.username}` }, ROLES.map((r) => el("option", { value: r, text: words(r), selected: r === u.role })));
      select.addEventListener("change", async () => {
        try {
          await api("PATCH", `/users/${u.id}`, { role: select.value });
          await loadUsers();
        } catch (err) {
          showError($("#admin-error"), err);
          select.value = u.role;
        }
      });
      const locked = u.locked_until && new Date(u.locked_until) > new Date();
      return el("tr", {}, el("td", { text: u.username }), el("td", { text: words(u.role) }), el("td", { text: !u.active ? "inactive" : locked ? "locked" : "active" }), el("td", {}, select));
    }),
  );
}

async function loadAudit(filter = {}) {
  const status = await api("GET", "/audit/verify");
  const chain = $("#chain");
  chain.textContent = status.ok ? `✓ Audit chain intact: ${status.records} records.` : `✕ Audit chain broken at record ${status.first_broken_seq}: ${status.reason || ""}`;
  chain.className = `chain ${status.ok ? "ok" : "stop"}`;
  const after = Math.max(0, status.records - 500);
  const rows = await api("GET", `/audit/records?after_seq=${after}&limit=500`);
  const match = (r) =>
    (!filter.actor || r.actor.includes(filter.actor)) && (!filter.action || r.action.includes(filter.action)) && (!filter.entity || r.entity.includes(filter.entity));
  $("#audit tbody").replaceChildren(
    ...rows.filter(match).reverse().slice(0, 200).map((r) =>
      el("tr", {}, el("td", { text: r.seq }), el("td", { text: fmtDateTime(r.ts) }), el("td", { text: r.actor }), el("td", { text: r.action }), el("td", { text: `${r.entity}${r.entity_id ? ` ${r.entity_id}` : ""}` })),
    ),
  );
}

$("#user-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const f = ev.currentTarget;
  try {
    await api("POST", "/users", formData(f));
    f.reset();
    showError(f.querySelector(".error"), null);
    await loadUsers();
  } catch (err) {
    showError(f.querySelector(".error"), err);
  }
});

$("#audit-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  loadAudit(formData(ev.currentTarget)).catch((err) => showError($("#admin-error"), err));
});

initChrome().then(async (p) => {
  if (!p) return;
  if (p.role !== "admin") {
    showError($("#admin-error"), "Administration is for administrators.");
    return;
  }
  try {
    await Promise.all([loadUsers(), loadAudit()]);
  } catch (err) {
    showError($("#admin-error"), err);
  }
});
