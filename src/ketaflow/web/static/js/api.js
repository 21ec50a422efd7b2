// Shared helpers: the JSON API (same origin, HttpOnly cookie), small DOM helpers, the
// signed-in user, and the live session stream with reconnect.

export const API = "/api/v1";

export class ApiError extends Error {
  constructor(status, code, message, fields) {
    super(message);
    this.status = status;
    this.code = code;
    this.fields = fields || [];
  }
  describe() {
    const extra = this.fields.map((f) => `${f.field}: ${f.message}`).join("; ");
    return extra ? `${this.message} (${extra})` : this.message;
  }
}

export async function api(method, path, body, { redirectOn401 = true } = {}) {
  const init = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(API + path, init);
  } catch (err) {
    throw new ApiError(0, "offline", "The clinic server cannot be reached. Check the network.");
  }
  if (response.status === 401 && redirectOn401) {
    const next = encodeURIComponent(location.pathname + location.search);
    location.assign(`/login?next=${next}`);
    throw new ApiError(401, "not_authenticated", "Signed out.");
  }
  if (response.status === 204) return null;
  const type = response.headers.get("content-type") || "";
  const data = type.includes("json") ? await response.json() : await response.text();
  if (!response.ok) {
    const e = (data && data.error) || {};
    throw new ApiError(response.status, e.code || "error", e.message || `HTTP ${response.status}`, e.fields);
  }
  return data;
}

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

export function $(sel, root = document) {
  return root.querySelector(sel);
}

export function showError(node, err) {
  if (!node) return;
  if (!err) {
    node.hidden = true;
    node.textContent = "";
    return;
  }
  node.textContent = err instanceof ApiError ? err.describe() : String(err.message || err);
  node.hidden = false;
}

export function fmtTime(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

export function fmtDateTime(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  return d.toLocaleString([], { dateStyle: "medium", timeStyle: "short" });
}

export function fmtNum(x, digits = 0) {
  if (x === null || x === undefined || Number.isNaN(Number(x))) return "–";
  return Number(x).toFixed(digits);
}

export function fmtElapsed(minutes) {
  if (minutes === null || minutes === undefined) return "–";
  const m = Math.max(0, Math.floor(minutes));
  return `${Math.floor(m / 60)}:${String(m % 60).padStart(2, "0")}`;
}

export function words(code) {
  return String(code || "").replace(/_/g, " ");
}

// Priority is always shown as text and as a shape, never by colour alone.
const PRIORITY_SHAPE = { high: "▲", medium: "◆", low: "●" };
export function priorityBadge(priority) {
  const p = String(priority || "low").toLowerCase();
  return el(
    "span",
    { class: `prio prio-${p}` },
    el("span", { class: "prio-shape", "aria-hidden": "true", text: PRIORITY_SHAPE[p] || "●" }),
    ` ${p.toUpperCase()}`,
  );
}

let mePromise = null;
export function me() {
  if (!mePromise) mePromise = api("GET", "/auth/me");
  return mePromise;
}

// Header: who is signed in, sign-out, and role-only parts of the page.
export async function initChrome() {
  const who = $("#who");
  let principal;
  try {
    principal = await me();
  } catch (err) {
    return null;
  }
  if (who) who.textContent = `${principal.username} · ${words(principal.role)}`;
  const out = $("#logout");
  if (out) {
    out.hidden = false;
    out.addEventListener("click", async () => {
      try {
        await api("POST", "/auth/logout", undefined, { redirectOn401: false });
      } finally {
        location.assign("/login");
      }
    });
  }
  for (const node of document.querySelectorAll("[data-role-only]")) {
    const roles = node.getAttribute("data-role-only").split(/\s+/);
    if (!roles.includes(principal.role)) node.hidden = true;
  }
  return principal;
}

// The session's live stream: JSON events {type, ts, data}; reconnects with backoff.
export function openStream(sessionId, onEvent, onStatus) {
  let delay = 1000;
  let socket = null;
  let closed = false;
  const connect = () => {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    socket = new WebSocket(`${scheme}://${location.host}${API}/sessions/${sessionId}/stream`);
    socket.addEventListener("open", () => {
      delay = 1000;
      onStatus && onStatus("live");
    });
    socket.addEventListener("message", (msg) => {
      try {
        onEvent(JSON.parse(msg.data));
      } catch (err) {
        console.error("bad stream event", err);
      }
    });
    socket.addEventListener("close", (ev) => {
      if (closed) return;
      if (ev.code === 4401) {
        onStatus && onStatus("signed-out");
        return;
      }
      onStatus && onStatus("reconnecting");
      setTimeout(connect, delay);
      delay = Math.min(delay * 2, 15000);
    });
  };
  connect();
  return { close: () => { closed = true; socket && socket.close(); } };
}

export function formData(form) {
  const out = {};
  for (const [k, v] of new FormData(form).entries()) out[k] = v;
  return out;
}
