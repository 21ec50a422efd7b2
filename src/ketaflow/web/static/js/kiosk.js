// The patient tablet: calm, large controls, nothing clinical. Works with touch.
import { api, $ } from "./api.js";

const status = $("#k-status");
let sessionId = null;

function say(text) {
  status.textContent = text;
}

async function send(body, okText) {
  try {
    await api("POST", `/sessions/${sessionId}/checkins`, body, { redirectOn401: false });
    say(okText);
    return true;
  } catch (err) {
    say(err.status === 401 || err.status === 403 ? "This tablet is no longer paired. Please tell your nurse." : "That did not go through. Please try again or call your nurse.");
    return false;
  }
}

$("#k-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const form = ev.currentTarget;
  const body = {};
  for (const key of ["comfort", "intensity", "nausea"]) {
    const v = form.querySelector(`input[name=${key}]:checked`);
    if (v) body[key] = Number(v.value);
  }
  if (!Object.keys(body).length) {
    say("Choose a number on any of the questions first.");
    return;
  }
  if (await send(body, "Thank you. Your nurse can see this.")) form.reset();
});

$("#k-help").addEventListener("click", async (ev) => {
  const b = ev.currentTarget;
  b.disabled = true;
  if (await send({ need_help: true }, "Your nurse has been called and is coming.")) {
    b.textContent = "Help is on the way";
    setTimeout(() => {
      b.disabled = false;
      b.textContent = "I need help";
    }, 30000);
  } else {
    b.disabled = false;
  }
});

(async () => {
  try {
    const me = await api("GET", "/auth/me", undefined, { redirectOn401: false });
    if (me.role !== "kiosk" || !me.bound_session_id) {
      say("This screen is for the patient tablet. Ask a nurse to pair it.");
      return;
    }
    sessionId = me.bound_session_id;
    $("#k-form").hidden = false;
    $("#k-help").hidden = false;
    say("Tap a number whenever you like. Your nurse is close by.");
  } catch (err) {
    say("This tablet is not paired. Please ask your nurse.");
  }
})();
