// The development sign-in page (login.html): posts the typed name to the local
// stack's `/dev/token` and keeps the token the way the chat page reads it. Its
// own file, not inline, so the page's Content-Security-Policy allows no inline script.
import { saveToken } from "./auth.js";

const form = document.getElementById("login-form");
const notice = document.getElementById("login-notice");
// Back to the page that sent us here (same origin only), else the chat.
function returnUrl() {
  const wanted = new URLSearchParams(location.search).get("return");
  try {
    const url = new URL(wanted ?? "/", location.href);
    return url.origin === location.origin ? url.href : "/";
  } catch {
    return "/";
  }
}
form.addEventListener("submit", async (event) => {
  event.preventDefault();
  notice.textContent = "Signing in…";
  try {
    const response = await fetch("/dev/token", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ name: document.getElementById("login-name").value.trim() }),
    });
    const answer = await response.json().catch(() => ({}));
    if (!response.ok || !answer.token) throw new Error(answer.error ?? answer.message ?? `the server answered ${response.status}`);
    saveToken(answer.token, answer.exp);
    location.assign(returnUrl());
  } catch (error) {
    notice.textContent = `Not signed in: ${error.message}`;
  }
});
