import { api, showError, $ } from "./api.js";

const HOME = { admin: "/admin", kiosk: "/kiosk" };

$("#login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const form = ev.currentTarget;
  const button = form.querySelector("button");
  button.disabled = true;
  showError($("#login-error"), null);
  try {
    const out = await api(
      "POST",
      "/auth/login",
      { username: form.username.value.trim(), password: form.password.value },
      { redirectOn401: false },
    );
    const next = new URLSearchParams(location.search).get("next");
    const safeNext = next && next.startsWith("/") && !next.startsWith("//") ? next : null;
    location.assign(safeNext || HOME[out.principal.role] || "/board");
  } catch (err) {
    showError($("#login-error"), err.status === 401 ? "Wrong username or password, or the account is locked." : err);
    button.disabled = false;
    form.password.select();
  }
});
