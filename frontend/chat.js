// The web chat. Speaks the seed's protocol; every user-supplied string is
// rendered with textContent, never as HTML.

const HEARTBEAT_MS = 30_000;
const HISTORY_WAIT_MS = 5_000;
const MAX_TEXT_BYTES = 32 * 1024;
const STORAGE_KEY = "websocket-chat-url";

const $ = (id) => document.getElementById(id);
const ui = {
  url: $("url"), connect: $("connect"), disconnect: $("disconnect"), status: $("status"),
  connectedAt: $("connected-at"), duration: $("duration"), auto: $("auto-disconnect"),
  autoSeconds: $("auto-seconds"), messages: $("messages"), text: $("text"), send: $("send"), notice: $("notice"),
};

let socket = null;
let myId = null;
let connectedAt = null;
let timers = [];
let userClosed = false;
let reconnectDelay = 1000;
let historyPending = false;
const seen = new Set();

function setStatus(state) {
  ui.status.textContent = state;
  ui.status.dataset.state = state;
  const open = state === "connected";
  const busy = state === "connected" || state === "connecting";
  ui.connect.disabled = busy;
  ui.disconnect.disabled = !busy;
  ui.text.disabled = !open;
  ui.send.disabled = !open;
}

function notice(text) { ui.notice.textContent = text; }

function addLine({ text, meta, cls }) {
  const item = document.createElement("li");
  if (cls) item.className = cls;
  if (meta) {
    const m = document.createElement("span");
    m.className = "meta";
    m.textContent = meta;
    item.append(m);
  }
  item.append(document.createTextNode(text));
  ui.messages.append(item);
  ui.messages.scrollTop = ui.messages.scrollHeight;
}

function render(frame) {
  if (frame.id) {
    if (seen.has(frame.id)) return; // delivery is at least once
    seen.add(frame.id);
  }
  if (frame.error) {
    // A server without `history` answers our request with "Invalid request": not the user's error.
    if (historyPending) return void (historyPending = false);
    return addLine({ text: `${frame.error}: ${frame.message}`, cls: "error" });
  }
  if (frame.id) historyPending = false;
  if (frame.message === "pong") return;
  if (frame.kind === "join" || frame.kind === "leave") return addLine({ text: frame.message, cls: "notice" });
  if (frame.kind === "chat") {
    const mine = frame.connectionId === myId;
    const who = mine ? "you" : frame.connectionId;
    return addLine({ text: frame.text, meta: `${who} · ${frame.timestamp}`, cls: mine ? "mine" : "" });
  }
  // A seed-era server: only `message`.
  addLine({ text: String(frame.message ?? "") });
}

function clearTimers() { timers.forEach(clearInterval); timers = []; }

function connect(url) {
  if (socket) return; // never two connections
  userClosed = false;
  localStorage.setItem(STORAGE_KEY, url);
  setStatus("connecting");
  notice("");
  const ws = new WebSocket(url);
  socket = ws;
  let opened = false;
  ws.onopen = () => {
    opened = true;
    myId = null; // a new connection has a new id
    reconnectDelay = 1000;
    connectedAt = new Date();
    ui.connectedAt.textContent = connectedAt.toISOString().replace(/\.\d+Z$/, "Z");
    setStatus("connected");
    historyPending = true;
    ws.send(JSON.stringify({ action: "history", limit: 50 }));
    setTimeout(() => { historyPending = false; }, HISTORY_WAIT_MS);
    timers.push(setInterval(() => ws.send(JSON.stringify({ action: "sendmessage", message: "ping" })), HEARTBEAT_MS));
    timers.push(setInterval(tick, 1000));
  };
  ws.onmessage = (event) => {
    let frame;
    try { frame = JSON.parse(event.data); } catch { return addLine({ text: String(event.data) }); }
    render(frame);
  };
  ws.onerror = () => setStatus("error");
  ws.onclose = () => {
    clearTimers();
    socket = null;
    connectedAt = null;
    setStatus(opened ? "disconnected" : "error");
    if (!userClosed) {
      notice(`Connection lost; reconnecting in ${reconnectDelay / 1000}s`);
      const delay = reconnectDelay;
      reconnectDelay = Math.min(reconnectDelay * 2, 30_000);
      setTimeout(() => { if (!socket && !userClosed) connect(ui.url.value); }, delay);
    }
  };
}

function tick() {
  if (!connectedAt) return;
  const seconds = Math.floor((Date.now() - connectedAt.getTime()) / 1000);
  ui.duration.textContent = `${seconds}s`;
  const limit = Number(ui.autoSeconds.value) || 60;
  if (ui.auto.checked && seconds >= limit) {
    disconnect();
    notice(`Auto-disconnected after ${limit}s`);
  }
}

function disconnect() {
  userClosed = true;
  clearTimers();
  if (socket) socket.close(1000);
}

$("connect-form").addEventListener("submit", (event) => {
  event.preventDefault();
  connect(ui.url.value.trim());
});
ui.disconnect.addEventListener("click", disconnect);
$("send-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = ui.text.value;
  if (!text.trim() || !socket) return;
  const bytes = new TextEncoder().encode(JSON.stringify(text)).length - 2;
  if (bytes > MAX_TEXT_BYTES) return notice(`Message too long: ${bytes} bytes, the limit is ${MAX_TEXT_BYTES}.`);
  if (!myId) learnId(text);
  socket.send(JSON.stringify({ action: "sendmessage", message: text }));
  ui.text.value = "";
  notice("");
});

// Our connection id is the sender of the first line we sent.
function learnId(text) {
  const watch = (event) => {
    try {
      const frame = JSON.parse(event.data);
      if (frame.kind === "chat" && frame.text === text && !myId) {
        myId = frame.connectionId;
        ui.messages.querySelectorAll("li").forEach((li) => {
          const meta = li.querySelector(".meta");
          if (meta && meta.textContent.startsWith(myId)) { li.classList.add("mine"); meta.textContent = meta.textContent.replace(myId, "you"); }
        });
        socket?.removeEventListener("message", watch);
      }
    } catch { /* not JSON */ }
  };
  socket.addEventListener("message", watch);
}

// Served by the local stack: default to its endpoint.
const stored = localStorage.getItem(STORAGE_KEY);
const local = location.protocol.startsWith("http") ? `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/dev` : "";
ui.url.value = stored || local;
setStatus("disconnected");
if (stored) connect(stored);
