import { api, el, $, initChrome, showError, formData } from "./api.js";

$("#search-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const q = $("#q").value.trim();
  const mrn = $("#mrn-search").value.trim();
  const params = new URLSearchParams();
  if (q) params.set("q", q);
  if (mrn) params.set("mrn", mrn);
  try {
    const page = await api("GET", `/patients?${params}`);
    const body = $("#results tbody");
    body.replaceChildren(
      ...page.items.map((p) =>
        el("tr", {}, el("td", {}, el("a", { href: `/patients/${p.id}`, text: `${p.family_name}, ${p.given_name}` })), el("td", { text: p.mrn }), el("td", { text: p.birth_date })),
      ),
    );
    $("#results").hidden = false;
    showError($("#search-error"), page.items.length ? null : "No patient matches.");
  } catch (err) {
    showError($("#search-error"), err);
  }
});

$("#new-patient").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  try {
    const p = await api("POST", "/patients", formData(ev.currentTarget));
    location.assign(`/patients/${p.id}`);
  } catch (err) {
    showError($("#new-error"), err);
  }
});

initChrome();
