// The web chat. Speaks the seed's protocol plus rooms, `who`, `history`, sign-in
// and coalesced frames; every user-supplied string is rendered with textContent,
// never as HTML. The message list (timeline.js), members (members.js), gap-free
// recovery (recovery.js), the outbox of unacknowledged lines (outbox.js),
// signing in (auth.js), where to connect (address.js), telling apart people who
// share a name (names.js) and the unread count in the title (attention.js) have
// their own files. "(you)" is decided by the verified `userId` when a frame has
// one (a display name is only a label anyone may share), else by connection id.

import { configuredEndpoint, endpointBeside, nameProblem, roomFromHash, roomProblem, socketUrl, tokenGoesTo, urlProblem } from "./address.js";
import { Unread } from "./attention.js";
import { SignIn } from "./auth.js";
import { Members } from "./members.js";
import { Names } from "./names.js";
import { Outbox } from "./outbox.js";
import { Backoff, CatchUp, Positions } from "./recovery.js";
import { Timeline } from "./timeline.js";

// Tests may set window.CHAT_TUNING before the page loads (smaller pages, a cap).
const TUNING = {
  reconnectMs: 1000, // the first reconnect delay; doubles up to 30 s
  pageLimit: 200, // events per recovery page (the server's maximum)
  maxPages: 25, // recovery cap: past it, show the newest events instead
  firstVisit: 50, // events shown on a first visit to a room
  overlapMs: 5000, // recovery starts this long before the last event shown
  resendMs: 5000, // an unacknowledged line is sent again after this long
  // A throttled `who`/`history` ("Too Many Requests") is sent again after 250 ms,
  // doubling to 4 s (with jitter), at most 8 times; then the catch-up says it is incomplete.
  retryFirstMs: 250,
  retryCapMs: 4000,
  retryTries: 8,
  ...globalThis.CHAT_TUNING,
};
const HEARTBEAT_MS = 30_000;
const ANSWER_WAIT_MS = 5_000; // an older server may never answer `who` or end `history`
const MAX_TEXT_BYTES = 32 * 1024;
const URL_KEY = "websocket-chat-url";
const NAME_KEY = "websocket-chat-name";

const $ = (id) => document.getElementById(id);
const ui = {
  url: $("url"), room: $("room"), name: $("name"), connect: $("connect"), disconnect: $("disconnect"), status: $("status"),
  connectedAt: $("connected-at"), duration: $("duration"), auto: $("auto-disconnect"),
  autoSeconds: $("auto-seconds"), messages: $("messages"), text: $("text"), send: $("send"), notice: $("notice"),
};
const names = new Names();
const members = new Members({ box: $("people"), roomName: $("room-name"), count: $("member-count"), list: $("members"),
  label: displayName });
const timeline = new Timeline({ list: ui.messages, jump: $("jump"), who: senderName, notice: noticeText });
const positions = new Positions();
const outbox = new Outbox();
const unread = new Unread();
const signIn = new SignIn({ status: $("login-status"), validity: $("token-validity"), signIn: $("sign-in"),
  signOut: $("sign-out"), nameField: $("name-field") });

let socket = null;
let room = null; // the room whose lines are on the page
let myId = null;
const myIds = new Set(); // this page's connection ids, one per connection
let myUserId = null; // the verified user this page is signed in as (`who` says, as youUserId)
let connectedAt = null;
let timers = [];
let userClosed = false;
let reconnectDelay = TUNING.reconnectMs;
const seen = new Set(); // ids on the page
let newest = null; // {id, timestamp} of the newest event on the page
let waiting = null; // "who" or "history": the answer that decides what comes next
let watchdog = null;
let asked = null; // the command whose answer we wait for (sent again if throttled)
let backoff = null; // the Backoff of `asked`, once it was throttled
let retryTimer = null; // a re-send of `asked` waiting for its turn
let maybeThrottled = false; // a "Too Many Requests" came that may be `asked`'s or a line's
const shortfall = new Set(); // what this connection's catch-up gave up on (throttled too often)
let throttledCount = 0; // "Too Many Requests" answers to this connection's catch-up, for tests
let catchUp = null; // a CatchUp while history is loading
let caughtUp = false; // this connection's catch-up is done: only then is `newest` gap-free
let progressShown = false;
let serverAcks = false; // the server acknowledges lines (a seed server does not)
let idProbe = null; // the text of our first line: its echo tells our connection id
let unsignedAt = null; // the origin of a socket opened without the sign-in (not the configured endpoint), or null
globalThis.chatStats = { pages: 0, events: 0, ms: 0, throttled: 0 }; // the last catch-up, for tests

function setStatus(state) {
  // Connected elsewhere than the configured endpoint: the sign-in did not go along.
  ui.status.textContent = unsignedAt && ["connecting", "connected"].includes(state) ? `${state}, without your sign-in` : state;
  ui.status.dataset.state = state;
  const open = state === "connected";
  const busy = open || state === "connecting";
  // While connected, Connect stays usable to switch to another room.
  ui.connect.disabled = busy && !(open && ui.room.value.trim() !== room);
  ui.disconnect.disabled = !busy;
  // Lines typed while reconnecting wait in the outbox.
  ui.text.disabled = !room;
  ui.send.disabled = !room;
}

function notice(text, tone = "error") {
  ui.notice.textContent = text;
  ui.notice.dataset.tone = tone;
  progressShown = false;
}

function progress(text) {
  notice(text, "info");
  progressShown = true;
}

function send(command) {
  if (socket?.readyState === WebSocket.OPEN) socket.send(JSON.stringify(command));
}

function clearLines() {
  timeline.clear();
  seen.clear();
  newest = null;
  outbox.pending(room).forEach(showPending);
}

// ---- The outbox: a line is pending until acknowledged.
function showPending(line) { timeline.showPending(line.clientMessageId, line.text); }

function unshow(line) { timeline.unshowPending(line.clientMessageId); }

// Sends what is due: everything right after connecting, else lines unanswered for a while.
function flush(afterMs) {
  if (socket?.readyState !== WebSocket.OPEN) return;
  outbox.due(room, afterMs).forEach((line) => send(outbox.command(line)));
  const given = outbox.exhausted();
  given.forEach(unshow);
  if (given.length) notice(`Could not send ${given.length} line(s); the server never confirmed them.`);
}

function render(frame) {
  if (Array.isArray(frame.events)) return frame.events.forEach(render); // coalesced (batch=1): in log order
  if (frame.room && frame.room !== room) return; // not this room's (a late frame)
  if (frame.ack) return acked(frame);
  if (frame.error) return refused(frame);
  if (frame.kind === "presence") return presence(frame);
  if (frame.kind === "history") return historyEnd(frame);
  if (isThrottled(frame) && asked) return throttled();
  let fresh = false; // newer than anything shown, after catching up: news for the reader
  if (frame.id) {
    catchUp?.saw(frame.id); // before dedupe: it tells where a history page ended
    if (seen.has(frame.id)) return; // delivery is at least once
    seen.add(frame.id);
    fresh = caughtUp && (!newest || frame.id > newest.id);
    if (!newest || frame.id > newest.id) newest = { id: frame.id, timestamp: frame.timestamp };
    remember();
  }
  if (frame.message === "pong") return;
  if (frame.kind === "join" || frame.kind === "leave") {
    noteName(frame);
    members.event(frame.kind, frame.connectionId, frame.timestamp, frame);
    return timeline.add({ ...frame, text: frame.message, sender: frame.connectionId, mine: myIds.has(frame.connectionId) });
  }
  if (frame.kind === "chat") {
    if (!myId && idProbe === frame.text) learnId(frame.connectionId);
    noteName(frame);
    const mine = myIds.has(frame.connectionId) || isMyUser(frame);
    echoed(frame.connectionId, frame.text);
    if (fresh && !mine) unread.add();
    // Grouped by verified user (any of their connections), else by connection.
    const sender = frame.userId ? `user:${frame.userId}` : frame.verified ? `name:${frame.user}` : frame.connectionId;
    return timeline.add({ ...frame, sender, mine }, { fresh });
  }
  // A seed-era server: only `message`, maybe a seed chat line.
  const seedLine = SEED_CHAT_LINE.exec(String(frame.message ?? ""));
  if (seedLine) echoed(seedLine[1], seedLine[2]);
  timeline.note(String(frame.message ?? ""));
}

// Whether a line is from the user this page is signed in as: by the verified
// userId; a server that sends none (older) is trusted on the verified name.
function isMyUser(frame) {
  if (!frame.verified) return false;
  if (frame.userId) return frame.userId === myUserId;
  return frame.user === signIn.token()?.name;
}

// A verified name and its user: two users with one name get tags (names.js).
function noteName(frame) {
  if (frame.verified && names.note(frame.user, frame.userId)) {
    timeline.draw();
    members.render();
  }
}

// Who a chat line is from, as shown (asked at every draw, so a tag appears once a
// second user takes the name): "you" (or "alice (you)"), a name, or the connection id.
function senderName(event) {
  if (event.mine) return event.user ? `${event.verified ? names.label(event.user, event.userId) : event.user} (you)` : "you";
  return displayName(event) ?? event.connectionId;
}

// A join or leave notice as shown: "alice #k3f9 joined the chat", else the server's text.
function noticeText(event) {
  const name = displayName(event);
  return name ? `${name} ${event.kind === "join" ? "joined" : "left"} the chat` : event.text;
}

// `[<time> - UTC]\n <sender>  <text>\n`, the seed's chat line.
const SEED_CHAT_LINE = /^\[[^\]]* - UTC\]\n (\S+) {2}([\s\S]*)\n$/;

// Our own line is back: its pending copy goes (before our id is known, the first
// line echoed with a pending text is ours). Without acks (a seed server), the
// echo is the only confirmation there is.
function echoed(sender, text) {
  if (!myIds.has(sender) && myId) return;
  const pending = outbox.pending(room).find((l) => l.text === text);
  if (!pending) return;
  unshow(pending);
  if (!serverAcks) outbox.remove(pending);
}

function acked(frame) {
  serverAcks = true;
  const line = outbox.acked(frame.clientMessageId);
  if (line) unshow(line); // the line itself comes (or came) with the broadcast
}

// A user's name as the server gave it (tagged while another user shares it); a
// name the client chose itself says so.
function displayName(frame) {
  if (!frame.user) return null;
  return frame.verified ? names.label(frame.user, frame.userId) : `${frame.user} (unverified)`;
}

// An error frame. A server without `who` or `history` answers "Invalid request":
// not the user's error, so that step is skipped silently.
function refused(frame) {
  if (!waiting || frame.error !== "Invalid request") return timeline.note(`${frame.error}: ${frame.message}`, "error");
  if (waiting === "who") {
    members.unavailable();
    startCatchUp();
  } else finishCatchUp();
}

function presence(frame) {
  if (!myId && frame.you) learnId(frame.you); // a server that says who asked
  if (frame.youUserId && frame.youUserId !== myUserId) learnUser(frame.youUserId);
  (frame.members ?? []).forEach(noteName);
  members.snapshot(frame.members);
  if (frame.next) send({ action: "who", next: frame.next });
  if (waiting === "who") startCatchUp();
}

// ---- Catching up: after `who` is answered, `history` until caught up.
// Sends `command` and waits for its answer (`what`: "who" or "history").
function ask(what, command) {
  expect(what);
  asked = command;
  send(command);
}

function expect(what) {
  waiting = what;
  asked = null;
  backoff = null;
  maybeThrottled = false;
  clearTimeout(retryTimer);
  retryTimer = null;
  watch();
}

// (Re)starts the watchdog: an answer that never comes ends the wait. Not while a
// throttled request waits to be sent again: its own try restarts it.
function watch() {
  clearTimeout(watchdog);
  if (!waiting || retryTimer) return;
  const what = waiting;
  watchdog = setTimeout(() => {
    if (maybeThrottled) return retryLater(); // no answer since: it was ours
    return what === "who" ? startCatchUp() : finishCatchUp();
  }, ANSWER_WAIT_MS);
}

// API Gateway's answer to a frame its stage throttling dropped unprocessed.
function isThrottled(frame) {
  return frame.message === "Too Many Requests" && !frame.kind && !frame.id;
}

// The request we wait for was throttled. The frame does not say which request it
// answers: while a line of ours is unacknowledged too, it may be that line's
// (which the outbox sends again anyway), and sending `asked` again could bring
// its answer twice, so the watchdog decides: no answer within its wait means it was ours.
function throttled() {
  if (retryTimer) return; // already waiting to try again
  throttledCount += 1;
  if (outbox.pending(room).some((line) => line.sentAt > 0)) {
    maybeThrottled = true;
    return;
  }
  retryLater();
}

// Sends `asked` again after a back-off, and says so; when the tries are used up,
// goes on without it and says that too.
function retryLater() {
  maybeThrottled = false;
  backoff ??= new Backoff({ firstMs: TUNING.retryFirstMs, capMs: TUNING.retryCapMs, tries: TUNING.retryTries });
  const delay = backoff.next();
  if (delay === null) return gaveUp();
  progress("Catching up… (server busy, retrying)");
  const command = asked;
  clearTimeout(watchdog);
  retryTimer = setTimeout(() => {
    retryTimer = null;
    if (asked !== command) return;
    watch();
    send(command);
  }, delay);
}

function gaveUp() {
  if (waiting === "who") {
    shortfall.add("who is here");
    return startCatchUp();
  }
  shortfall.add("earlier messages");
  finishCatchUp();
}

function startCatchUp() {
  catchUp = new CatchUp({ emptyPage: seen.size === 0, mark: positions.get(room), tuning: TUNING });
  request();
}

function request() {
  const command = catchUp.next();
  if (!command) return finishCatchUp();
  ask("history", command);
}

function historyEnd(frame) {
  if (!catchUp?.current) return;
  const outcome = catchUp.ended(frame);
  if (outcome === "too-far") {
    clearLines();
    notice(`More than ${catchUp.cap} events were missed while you were away; showing the most recent.`, "warn");
  } else if (outcome === "page") progress(`Catching up… ${catchUp.events} events`);
  request();
}

function finishCatchUp() {
  expect(null);
  if (catchUp) globalThis.chatStats = { ...catchUp.stats(), throttled: throttledCount };
  catchUp = null;
  caughtUp = true;
  timeline.setBusy(false);
  if (shortfall.size) {
    notice(`Catch-up incomplete: the server is too busy (it throttled our requests), so ${[...shortfall].join(" and ")} `
      + "may be missing. Reconnect later to try again.", "warn");
  } else if (progressShown) notice("");
  remember();
}

// The connection ended: an unfinished catch-up is redone on the next one.
function dropCatchUp() {
  expect(null);
  catchUp = null;
  caughtUp = false;
  shortfall.clear();
  throttledCount = 0;
  timeline.setBusy(false);
}

// Remembers the newest event shown, but only when caught up: then everything
// before it is on the page too (a live line seen earlier may lie past a gap).
// Not after a catch-up that gave up on history: the next one starts before the gap.
function remember() {
  if (caughtUp && !shortfall.has("earlier messages") && room && newest) positions.set(room, newest);
}

// ---- Connections.
function clearTimers() { timers.forEach(clearInterval); timers = []; }

// Where the sign-in goes (config.json's endpoint, else the one beside the page).
function endpoint() { return configuredEndpoint(signIn.config, location); }

// Why connecting to `base` cannot work now, or null: the sign-in counts only at
// the configured endpoint (another URL gets no token, so needs none).
function signInProblem(base) {
  return tokenGoesTo(base, endpoint()) ? signIn.problem() : null;
}

// The user's Connect: checks the room and the sign-in, switches rooms if
// connected to another one.
async function connect() {
  await signIn.ready;
  const base = ui.url.value.trim();
  const name = ui.room.value.trim();
  const problem = roomProblem(name) ?? nameProblem(ui.name.value.trim());
  ui.room.setAttribute("aria-invalid", String(Boolean(problem)));
  if (problem) return notice(`Not connected: ${problem}`);
  const refused = urlProblem(base) ?? signInProblem(base);
  if (refused) return notice(`Not connected: ${refused}`);
  if (socket && name === room) return; // never two connections
  if (socket) retire();
  reconnectDelay = TUNING.reconnectMs;
  open(base, name, false);
}

// Drops the current socket without the close handling (no reconnect, no status).
function retire() {
  const old = socket;
  old.onopen = old.onmessage = old.onerror = old.onclose = null;
  old.close(1000);
  socket = null;
  clearTimers();
  dropCatchUp();
}

function open(base, name, reconnecting) {
  const chosen = ui.name.value.trim();
  localStorage.setItem(NAME_KEY, chosen);
  let url;
  try {
    url = socketUrl(base, name, { token: signIn.token()?.token, endpoint: endpoint(), name: chosen, auth: signIn.config.auth });
  } catch (error) {
    return notice(`Not connected: ${error.message}`);
  }
  // Another endpoint than the configured one: it gets no token, and the user is told.
  const elsewhere = signIn.config.auth !== "none" && !tokenGoesTo(base, endpoint());
  unsignedAt = elsewhere ? new URL(base).origin : null;
  userClosed = false;
  localStorage.setItem(URL_KEY, base);
  history.replaceState(null, "", `#room=${name}`);
  if (name !== room) {
    room = name;
    clearLines();
    names.clear();
    members.enter(room);
  }
  setStatus("connecting");
  if (elsewhere) {
    const home = endpoint() ? new URL(endpoint()).origin : "the endpoint config.json names";
    notice(`Connecting to ${unsignedAt} without your sign-in: it is only sent to ${home}.`, "warn");
  } else notice("");
  const ws = new WebSocket(url);
  socket = ws;
  let opened = false;
  ws.onopen = () => {
    opened = true;
    myId = null; // a new connection has a new id
    reconnectDelay = TUNING.reconnectMs;
    connectedAt = new Date();
    ui.connectedAt.textContent = connectedAt.toISOString().replace(/\.\d+Z$/, "Z");
    setStatus("connected");
    members.forget(); // a fresh snapshot for this connection
    timeline.setBusy(true); // until caught up: `who`, then `history`
    ask("who", { action: "who" });
    flush(0);
    timers.push(setInterval(() => flush(TUNING.resendMs), TUNING.resendMs));
    timers.push(setInterval(() => send({ action: "sendmessage", message: "ping" }), HEARTBEAT_MS));
    timers.push(setInterval(tick, 1000));
  };
  ws.onmessage = (event) => {
    let frame;
    try { frame = JSON.parse(event.data); } catch { return timeline.note(String(event.data)); }
    watch(); // still answering: wait on
    render(frame);
  };
  ws.onerror = () => setStatus("error");
  ws.onclose = () => {
    clearTimers();
    dropCatchUp();
    socket = null;
    connectedAt = null;
    setStatus(opened ? "disconnected" : "error");
    if (userClosed) return;
    // Without a usable token, trying again cannot help: say so instead.
    if (signInProblem(base)) return notice(signInProblem(base));
    if (!opened && !reconnecting) {
      // A browser cannot see the HTTP status: a refused upgrade (a bad room, a
      // wrong stage, a refused token) and an unreachable host look alike. Do not retry.
      const why = signIn.config.auth === "none" ? "Check the URL and the room name."
        : unsignedAt ? "Check the URL and the room name (your sign-in is not sent there)."
          : "Check the URL and the room name, or sign in again.";
      return notice(`Could not connect to room "${name}": the server refused the connection or is unreachable. ${why}`);
    }
    notice(`Connection lost; reconnecting in ${reconnectDelay / 1000}s`);
    const delay = reconnectDelay;
    reconnectDelay = Math.min(reconnectDelay * 2, 30_000);
    setTimeout(() => { if (!socket && !userClosed && !signInProblem(base)) open(base, name, true); }, delay);
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

$("sign-in").addEventListener("click", () => signIn.start().catch((error) => notice(error.message)));
$("sign-out").addEventListener("click", () => {
  disconnect();
  signIn.stop();
  notice("Signed out.", "info");
});
$("connect-form").addEventListener("submit", (event) => {
  event.preventDefault();
  connect();
});
ui.room.addEventListener("input", () => setStatus(ui.status.dataset.state));
ui.disconnect.addEventListener("click", disconnect);
$("send-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = ui.text.value;
  if (!text.trim() || !room) return;
  if (text === "ping") {
    // The seed's heartbeat word: the server answers pong and stores nothing.
    send({ action: "sendmessage", message: text });
    ui.text.value = "";
    return;
  }
  const bytes = new TextEncoder().encode(JSON.stringify(text)).length - 2;
  if (bytes > MAX_TEXT_BYTES) return notice(`Message too long: ${bytes} bytes, the limit is ${MAX_TEXT_BYTES}.`);
  if (!myId && socket) idProbe = text;
  const line = outbox.add(room, text);
  showPending(line);
  if (socket?.readyState === WebSocket.OPEN) send(outbox.command(line));
  ui.text.value = "";
  fitText();
  timeline.follow(); // you see your own line go out
  notice("");
});

// Keys in the message box: Enter sends, Shift+Enter is a new line, Esc leaves
// the box for the message list.
ui.text.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    $("send-form").requestSubmit();
  } else if (event.key === "Escape") {
    ui.messages.focus();
  }
});
// The box grows with its text, up to a few lines.
function fitText() {
  ui.text.style.height = "auto";
  ui.text.style.height = `${Math.min(ui.text.scrollHeight + 2, 160)}px`;
}
ui.text.addEventListener("input", fitText);

// Our connection id: `who`'s answer says it, else it is the sender of the first
// line we sent.
function learnId(connectionId) {
  myId = connectionId;
  myIds.add(myId);
  idProbe = null;
  timeline.markMine((event) => event.connectionId === myId);
  members.setMe(myId);
}

// Our verified user: `who`'s answer says it (youUserId); their lines are ours,
// from any connection, and only theirs, whatever name others chose.
function learnUser(userId) {
  myUserId = userId;
  timeline.markMine((event) => event.kind === "chat" && event.userId === userId);
}

// The room comes from the address (#room=NAME); the local stack's page defaults
// to its own endpoint.
window.addEventListener("hashchange", () => {
  ui.room.value = roomFromHash(location.hash) ?? "lobby";
  if (socket) connect();
});
const stored = localStorage.getItem(URL_KEY);
ui.url.value = stored || endpointBeside(location);
ui.room.value = roomFromHash(location.hash) ?? "lobby";
ui.name.value = localStorage.getItem(NAME_KEY) ?? "";
setStatus("disconnected");
signIn.complete() // back from the issuer's sign-in page?
  .catch((error) => notice(error.message))
  .then((signedIn) => {
    if (!stored && signIn.config.endpoint) ui.url.value = endpoint(); // a page hosted apart from its API
    ui.room.value = roomFromHash(location.hash) ?? "lobby";
    if (stored || signedIn) connect();
  });
