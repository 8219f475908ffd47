// The web chat. Speaks the seed's protocol plus rooms, `who`, `history`, sign-in
// and coalesced frames, and follows several rooms on one socket (`subscribe`,
// `rooms`, `read`); every user-supplied string is rendered with textContent,
// never as HTML. Each room has its own message list (timeline.js), members
// (members.js) and names (names.js); the room list, its badges and read marks
// are in rooms.js, catching up room after room in catchup.js, gap-free
// recovery in recovery.js, the outbox of unacknowledged lines in outbox.js,
// signing in in auth.js, where to connect in address.js and the unread count
// in the title in attention.js, the confirm dialog of moderation in confirm.js.
// "(you)" is decided by the verified `userId` when a frame has one (a display
// name is only a label anyone may share), else by connection id.
//
// Rights (issue 24): the server says a room's rights ("rw", "rwm") and whether it
// is private in `subscribed` and in each `rooms` entry. A private room shows a
// lock; a room without `w` disables the box ("Read-only room"); Delete goes on
// your own lines where you have `w` and on every line where you have `m`, and
// Kick/Ban on the member list where you have `m`. Until the server has said, the
// page holds nothing back and shows no moderation controls (the server decides).
//
// Lifecycle (issue 25): Edit on your own lines (and ↑ in an empty box edits your
// newest line), Reply (a quote above the box while composing; Esc cancels
// either), reactions (chips and a picker, timeline.js) and "alice is typing…":
// a `typing` signal goes at most every TYPING_EVERY_MS while the user types
// (TYPING_DELAY_MS after a burst's first key, unless the line went already),
// and another's shows for TYPING_SHOWN_MS unless renewed (never your own).
// Edits, deletes and reactions are folded by id in the timeline, so a reload's
// history shows what the live page showed.
//
// The connection's first room is the `?room=` one (its "home"); the others are
// added with `subscribe`. After every (re)connect the rooms catch up one after
// another: home first, then the room on screen, then the rest.

import { configuredEndpoint, endpointBeside, nameProblem, roomFromHash, roomProblem, socketUrl, tokenGoesTo, urlProblem } from "./address.js";
import { Unread } from "./attention.js";
import { SignIn } from "./auth.js";
import { CatchUpQueue, isThrottled } from "./catchup.js";
import { Confirm } from "./confirm.js";
import { Members } from "./members.js";
import { Names } from "./names.js";
import { Outbox, newId } from "./outbox.js";
import { Positions } from "./recovery.js";
import { ReadMarks, RoomList, badgeText, storeRooms, storedRooms } from "./rooms.js";
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
  readEveryMs: 3000, // at most one `read` per room this often (each is billed)
  roomsEveryMs: 60_000, // `rooms` (unread counts) while connected, this often
  roomsFocusMs: 15_000, // and when the tab gets focus, unless asked this recently
  ...globalThis.CHAT_TUNING,
};
const HEARTBEAT_MS = 30_000;
const TYPING_EVERY_MS = 3000; // at most one `typing` signal this often (the server refuses extra ones)
const TYPING_SHOWN_MS = 5000; // another's signal shows this long unless renewed
// A signal goes this long after the first key of a burst, if the box still has
// text: a line pasted and sent at once is no one "typing" (and costs no frame).
const TYPING_DELAY_MS = 300;
const ANSWER_WAIT_MS = 5_000; // a `read` this recent may still be answered
const MAX_TEXT_BYTES = 32 * 1024;
const URL_KEY = "websocket-chat-url";
const NAME_KEY = "websocket-chat-name";

const $ = (id) => document.getElementById(id);
const ui = {
  url: $("url"), room: $("room"), name: $("name"), connect: $("connect"), disconnect: $("disconnect"), status: $("status"),
  connectedAt: $("connected-at"), duration: $("duration"), auto: $("auto-disconnect"), timelines: $("timelines"),
  jump: $("jump"), autoSeconds: $("auto-seconds"), text: $("text"), send: $("send"), notice: $("notice"),
  readOnly: $("read-only"), composing: $("composing"), composingText: $("composing-text"), typing: $("typing"),
};
const confirm = new Confirm($("confirm"));
const positions = new Positions();
const outbox = new Outbox();
const unread = new Unread(seen);
const signIn = new SignIn({ status: $("login-status"), validity: $("token-validity"), signIn: $("sign-in"),
  signOut: $("sign-out"), nameField: $("name-field") });
const roomList = new RoomList({ list: $("room-list"), form: $("join-form"), input: $("join-room"),
  onSwitch: (name) => show(rooms.get(name)), onLeave: (name) => leave(rooms.get(name)), onJoin: join });
const reads = new ReadMarks({ everyMs: TUNING.readEveryMs, send });
const catchUps = new CatchUpQueue({ tuning: TUNING, send, mark: (name) => positions.get(name),
  busyElsewhere: () => outbox.lines.some((line) => line.sentAt > 0) || roomsPending || reads.recent(ANSWER_WAIT_MS),
  on: { progress, tooFar, finished, drained: () => pollRooms() } });

const rooms = new Map(); // name -> the room's state (see addRoom), in list order
let current = null; // the room on screen
let before = null; // the room on screen before it (shown again when `current` is left)
let home = null; // the connection's `?room=` room
let socket = null;
let myId = null;
const myIds = new Set(); // this page's connection ids, one per connection
let myUserId = null; // the verified user this page is signed in as (`who` says, as youUserId)
let connectedAt = null;
let timers = [];
let userClosed = false;
let reconnectDelay = TUNING.reconnectMs;
let progressShown = false;
let serverAcks = false; // the server acknowledges lines (a seed server does not)
let serverRooms = null; // the server answers `rooms` (true), does not (false), not known yet (null)
let roomsAskedAt = 0; // when `rooms` last went out
let roomsPending = false; // and is not answered yet
const left = new Set(); // rooms left on this connection (a `rooms` answer may still list them)
let rateNotice = false; // "Sending too fast" is shown until the lines it held are acknowledged
const holdTimers = new Map(); // room -> the timer that sends its rate-limited lines again
let idProbe = null; // the text of our first line: its echo tells our connection id
let composing = null; // {mode: "edit"|"reply", room, event} while editing a line or replying to one
let typingSentAt = 0; // when our last `typing` signal went
let typingTimer = null; // the signal waiting for TYPING_DELAY_MS
let serverTyping = null; // false: the server answered `typing` with "Invalid request" (it has none); else not known
let unsignedAt = null; // the origin of a socket opened without the sign-in (not the configured endpoint), or null
globalThis.chatStats = { pages: 0, events: 0, ms: 0, throttled: 0, rooms: {} }; // the last catch-up, for tests

// ---- Rooms: each keeps its own timeline, members, names and position.
function addRoom(name) {
  const list = document.createElement("ol");
  list.className = "messages";
  list.tabIndex = 0;
  list.setAttribute("aria-label", `Messages in ${name}`);
  list.setAttribute("aria-live", "polite");
  ui.timelines.insertBefore(list, ui.jump);
  // rights: the server's letters for this room ("rw"; null until it says), private: its lock;
  // people: everyone seen in the room, by userId (else connection id), to name a kicked member.
  const room = { name, list, names: new Names(), seen: new Set(), newest: null, caughtUp: false, subscribed: false,
    resubscribed: false, shortfall: new Set(), unread: 0, more: false, count: null, rights: null, private: false,
    people: new Map(), typists: new Map() };
  room.timeline = new Timeline({ list, jump: ui.jump, who: (event) => senderName(room, event), notice: (event) => noticeText(room, event),
    deletable: (event) => deletable(room, event), onDelete: (event) => askDelete(room, event),
    editable: () => canWrite(room), onEdit: (event) => compose("edit", room, event),
    writable: () => canWrite(room), onReply: (event) => compose("reply", room, event),
    onReact: (event, emoji) => react(room, event, emoji) });
  room.members = new Members({ room: name, box: $("people"), roomName: $("room-name"), count: $("member-count"),
    recent: $("recent"), list: $("members"), label: (person) => displayName(room, person), moderator: () => canModerate(room),
    self: (id, person) => myIds.has(id) || Boolean(myUserId && person.userId === myUserId),
    onKick: (member, label) => askKick(room, member, label), onBan: (member, label) => askBan(room, member, label),
    onRefresh: () => send({ action: "who", room: name }) });
  if (myId) room.members.setMe(myId);
  outbox.pending(name).forEach((line) => showPending(room, line));
  rooms.set(name, room);
  return room;
}

// Puts `room` on screen: its list, members and the address (#room=NAME, so a
// reload opens it); it is seen, so its badge clears and a read mark goes.
function show(room) {
  if (!room || room === current) return;
  current?.timeline.hide();
  current?.members.hide();
  before = current;
  current = room;
  if (composing) cancelCompose();
  room.timeline.show();
  room.members.show();
  showTyping();
  ui.room.value = room.name;
  ui.room.setAttribute("aria-invalid", "false");
  history.replaceState(null, "", `#room=${encodeURIComponent(room.name)}`);
  seen();
  setStatus(ui.status.dataset.state);
}

// The room on screen is seen (switched to, a line arrived, the tab came back).
function seen() {
  if (!current || document.hidden) return showRooms();
  current.unread = 0;
  current.more = false;
  if (current.caughtUp && current.newest && serverRooms) reads.mark(current.name, current.newest.id);
  showRooms();
}

function showRooms() {
  const list = [...rooms.values()].map(({ name, unread: n, more, count, members, private: closed }) =>
    ({ name, unread: n, more, count: members.known || members.occupancy ? members.total : count, private: closed }));
  roomList.render(list, current?.name);
  const total = [...rooms.values()].reduce((sum, room) => sum + room.unread, 0);
  unread.show(total ? badgeText(total, [...rooms.values()].some((room) => room.more)) : 0);
}

// The join form, Connect while connected and #room=: opens `name`, adding it
// to the connection if it is new. Returns why not, or null.
function join(name) {
  const problem = roomProblem(name);
  if (problem) {
    notice(`Not joined: ${problem}`);
    return problem;
  }
  let room = rooms.get(name);
  if (!room) {
    room = addRoom(name);
    storeRooms([...rooms.keys()]);
    if (socket?.readyState === WebSocket.OPEN) catchUps.enqueue(room, true);
  }
  show(room);
  return null;
}

// Leave: `unsubscribe` (unless the server refused the room), and the room's
// list, lines and waiting lines go.
function leave(room, { tell = true } = {}) {
  if (!room || rooms.size < 2) return;
  if (tell) send({ action: "unsubscribe", room: room.name });
  left.add(room.name);
  catchUps.drop(room);
  outbox.drop(room.name);
  reads.forget(room.name);
  rooms.delete(room.name);
  room.list.remove();
  storeRooms([...rooms.keys()]);
  if (current === room) {
    current = null;
    show(before && rooms.get(before.name) === before ? before : rooms.values().next().value);
  }
  showRooms();
}

function setStatus(state) {
  // Connected elsewhere than the configured endpoint: the sign-in did not go along.
  ui.status.textContent = unsignedAt && ["connecting", "connected"].includes(state) ? `${state}, without your sign-in` : state;
  ui.status.dataset.state = state;
  const open = state === "connected";
  const busy = open || state === "connecting";
  // While connected, Connect stays usable to open another room.
  ui.connect.disabled = busy && !(open && ui.room.value.trim() !== current?.name);
  ui.disconnect.disabled = !busy;
  // Lines typed while reconnecting wait in the outbox; a read-only room takes none.
  const readOnly = Boolean(current) && !canWrite(current);
  ui.text.disabled = !current || readOnly;
  ui.send.disabled = !current || readOnly;
  ui.text.placeholder = readOnly ? "" : "Type a message and press Enter"; // the reason is shown there instead
  ui.readOnly.hidden = !readOnly;
  ui.readOnly.textContent = readOnly ? "Read-only room: you can read here but not write." : "";
}

// ---- Rights, as the server last said them for a room.
function canWrite(room) { return room.rights === null || room.rights.includes("w"); }

function canModerate(room) { return Boolean(room.rights?.includes("m")); }

// `subscribed` or a `rooms` entry: {rights, private}. The controls that depend on them are redrawn.
function access(room, { rights, private: closed }) {
  if (typeof rights !== "string" || (rights === room.rights && Boolean(closed) === room.private)) return;
  room.rights = rights;
  room.private = Boolean(closed);
  room.timeline.draw();
  room.members.render();
  if (room === current) setStatus(ui.status.dataset.state);
  showRooms();
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
  if (socket?.readyState !== WebSocket.OPEN) return false;
  socket.send(JSON.stringify(command));
  return true;
}

function clearLines(room) {
  room.timeline.clear();
  room.seen.clear();
  room.newest = null;
  outbox.pending(room.name).forEach((line) => showPending(room, line));
}

// ---- The outbox: a line is pending until acknowledged.
function showPending(room, line) { room.timeline.showPending(line.clientMessageId, line.text); }

function unshow(line) { rooms.get(line.room)?.timeline.unshowPending(line.clientMessageId); }

// Sends what is due in the rooms this connection has: everything right after
// connecting (or subscribing), else lines unanswered for a while.
function flush(afterMs) {
  if (socket?.readyState !== WebSocket.OPEN) return;
  for (const room of rooms.values()) {
    if (room.subscribed) outbox.due(room.name, afterMs).forEach((line) => send(outbox.command(line)));
  }
  const given = outbox.exhausted();
  given.forEach(unshow);
  if (given.length) notice(`Could not send ${given.length} line(s); the server never confirmed them.`);
}

function render(frame) {
  if (Array.isArray(frame.events)) return frame.events.forEach(render); // coalesced (batch=1): in log order
  if (frame.ack) return acked(frame);
  if (frame.error) return refused(frame);
  if (frame.kind === "rooms") return roomsAnswered(frame);
  if (frame.kind === "subscribed") return subscribed(frame);
  if (frame.kind === "unsubscribed") return pollRooms();
  if (frame.kind === "read") return;
  if (frame.kind === "removed") return removed(frame);
  if (frame.kind === "typing") return typing(frame);
  if (MODERATED.has(frame.kind)) return moderated(frame);
  if (isThrottled(frame) && catchUps.throttled()) return;
  // Frames without a room are the home room's (a seed server names none).
  const room = rooms.get(frame.room ?? home);
  if (!room) return; // a room the page left: its late frames
  if (frame.kind === "presence") return presence(room, frame);
  if (frame.kind === "occupancy") return occupancy(room, frame);
  if (frame.kind === "history") return catchUps.historyEnd(room, frame);
  let fresh = false; // newer than anything shown, after catching up: news for the reader
  if (frame.id) {
    catchUps.saw(room, frame.id); // before dedupe: it tells where a history page ended
    if (room.seen.has(frame.id)) return; // delivery is at least once
    room.seen.add(frame.id);
    fresh = room.caughtUp && (!room.newest || frame.id > room.newest.id);
    if (!room.newest || frame.id > room.newest.id) room.newest = { id: frame.id, timestamp: frame.timestamp };
    remember(room);
  }
  if (frame.message === "pong") return;
  const timeline = room.timeline;
  notePerson(room, frame);
  // A tombstone is not a line: the line it names shows "message deleted".
  if (frame.kind === "delete") {
    if (composing?.room === room && composing.event.id === frame.target) {
      // The line being edited or replied to is gone: the bar goes (a reply's typed text stays).
      notice(`The message you were ${composing.mode === "edit" ? "editing" : "replying to"} was deleted.`, "warn");
      cancelCompose();
    }
    return timeline.deleteLine(frame.target);
  }
  if (frame.kind === "edit") return timeline.editLine(frame);
  if (frame.kind === "reaction") return timeline.react(frame, isMine(frame));
  if (MODERATION.has(frame.kind)) return timeline.add({ ...frame, text: frame.message, sender: frame.connectionId, mine: false });
  if (frame.kind === "join" || frame.kind === "leave") {
    noteName(room, frame);
    room.members.event(frame.kind, frame.connectionId, frame.timestamp, frame);
    if (fresh && room.count !== null) room.count = Math.max(0, room.count + (frame.kind === "join" ? 1 : -1));
    if (fresh) showRooms();
    return timeline.add({ ...frame, text: frame.message, sender: frame.connectionId, mine: myIds.has(frame.connectionId) });
  }
  if (frame.kind === "chat") {
    if (!myId && idProbe === frame.text) learnId(frame.connectionId);
    noteName(room, frame);
    const mine = isMine(frame);
    echoed(room, frame.connectionId, frame.text);
    stoppedTyping(room, frame);
    // Grouped by verified user (any of their connections), a server sender by its
    // label (the publish API's lines all come on connection "api"), else by connection.
    const sender = frame.userId ? `user:${frame.userId}` : frame.server ? `server:${frame.user}`
      : frame.verified ? `name:${frame.user}` : frame.connectionId;
    timeline.add({ ...frame, sender, mine }, { fresh });
    if (fresh && !mine) arrived(room);
    return;
  }
  // A seed-era server: only `message`, maybe a seed chat line.
  const seedLine = SEED_CHAT_LINE.exec(String(frame.message ?? ""));
  if (seedLine) echoed(room, seedLine[1], seedLine[2]);
  timeline.note(String(frame.message ?? ""));
}

// Moderation events in the log (notices), and the answers a moderator gets.
const MODERATION = new Set(["kick", "ban", "unban"]);
const MODERATED = new Set(["kicked", "banned", "unbanned"]);

// Remembers who a connection id or user id is, to name a member in a moderation notice.
function notePerson(room, person) {
  if (!person.connectionId || !person.user || MODERATION.has(person.kind) || person.kind === "delete") return;
  const seen = { user: person.user, verified: person.verified, userId: person.userId };
  room.people.set(person.connectionId, seen);
  if (person.userId) room.people.set(person.userId, seen);
}

// A member as moderation names them (a userId, else a connection id): their name if seen.
function memberName(room, member) {
  const person = room.people.get(member);
  return (person && displayName(room, person)) ?? String(member ?? "someone");
}

// An ISO time as the reader's local date and time.
const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
function when(iso) {
  const at = new Date(iso);
  return Number.isNaN(at.getTime()) ? String(iso) : dateTime.format(at);
}

// A kick, ban or unban in the log, as a notice: "mia removed bob", "mia banned bob until …: spam".
function moderationText(room, event) {
  const by = displayName(room, event) ?? "A moderator";
  const member = memberName(room, event.member);
  if (event.kind === "kick") return `${by} removed ${member} from the room`;
  if (event.kind === "unban") return `${by} lifted the ban on ${member}`;
  const until = event.until ? ` until ${when(event.until)}` : "";
  return `${by} banned ${member}${until}${event.reason ? `: ${event.reason}` : ""}`;
}

// The moderator's own answer: {"kind":"kicked"|"banned"|"unbanned","room","user","connections","until"?}.
function moderated(frame) {
  const room = rooms.get(frame.room);
  const member = room ? memberName(room, frame.user) : String(frame.user);
  const n = Number(frame.connections) || 0;
  const connections = `${n} connection${n === 1 ? "" : "s"}`;
  if (frame.kind === "kicked") return notice(`Removed ${member} from "${frame.room}" (${connections}).`, "info");
  if (frame.kind === "banned") return notice(`Banned ${member} from "${frame.room}"${frame.until ? ` until ${when(frame.until)}` : ""} (${connections} removed).`, "info");
  notice(`Lifted the ban on ${member} in "${frame.room}".`, "info");
}

// This connection was kicked or banned from a room: said, and the room goes
// (its last room: the page disconnects and does not reconnect by itself).
function removed(frame) {
  const room = rooms.get(frame.room);
  const banned = frame.reason === "banned" ? `; you are banned${frame.until ? ` until ${when(frame.until)}` : ""}` : "";
  const text = `You were removed from ${frame.room}${frame.by ? ` by ${frame.by}` : ""}${banned}.`;
  if (room && rooms.size > 1) leave(room, { tell: false });
  else if (room) {
    room.timeline.note(text, "error");
    disconnect();
  }
  notice(text);
}

// A new line from someone else: seen if its room is on screen in a visible tab,
// else counted on the room's badge (and in the title) until the room is seen;
// the next `rooms` answer sets the server's count.
function arrived(room) {
  if (room === current && !document.hidden) return seen();
  room.unread += 1;
  showRooms();
}

// Whether an event is the reader's: by this page's connections, else its verified user.
function isMine(frame) { return myIds.has(frame.connectionId) || isMyUser(frame); }

// Whether a line is from the user this page is signed in as: by the verified
// userId; a server that sends none (older) is trusted on the verified name.
function isMyUser(frame) {
  if (!frame.verified) return false;
  if (frame.userId) return frame.userId === myUserId;
  return frame.user === signIn.token()?.name;
}

// A verified name and its user: two users with one name get tags (names.js).
function noteName(room, frame) {
  if (frame.verified && room.names.note(frame.user, frame.userId)) {
    room.timeline.draw();
    room.members.render();
  }
}

// Who a chat line is from, as shown (asked at every draw, so a tag appears once a
// second user takes the name): "you" (or "alice (you)"), a name, or the connection id.
function senderName(room, event) {
  if (event.mine) return event.user ? `${event.verified ? room.names.label(event.user, event.userId) : event.user} (you)` : "you";
  return displayName(room, event) ?? event.connectionId;
}

// A notice as shown: "alice #k3f9 joined the chat" (else the server's text),
// "bob was removed from the chat" (a leave by kick or ban), or a moderation event.
function noticeText(room, event) {
  if (MODERATION.has(event.kind)) return moderationText(room, event);
  const name = displayName(room, event);
  if (event.kind === "leave" && (event.reason === "kicked" || event.reason === "banned")) {
    return `${name ?? `User ${event.connectionId}`} was removed from the chat`;
  }
  return name ? `${name} ${event.kind === "join" ? "joined" : "left"} the chat` : event.text;
}

// ---- Moderation: each action is asked for in the confirm dialog first.
// Delete: your own line where you may write, any line where you moderate (once the server has said the rights).
function deletable(room, event) {
  return canModerate(room) || (room.rights !== null && event.mine && canWrite(room));
}

// The first words of a line, for the dialog.
const excerpt = (text) => (text.length > 80 ? `${text.slice(0, 80)}…` : text);

async function askDelete(room, event) {
  const answer = await confirm.ask({ title: "Delete this message?",
    text: `${senderName(room, event)}: “${excerpt(event.text)}” — everyone in ${room.name} will see “message deleted” instead.`,
    ok: "Delete" });
  if (!answer) return;
  if (!send({ action: "delete", id: event.id })) notice("Not connected: the message was not deleted.");
  if (!room.list.contains(document.activeElement)) room.list.focus(); // its Delete button is gone
}

// ---- Lifecycle: edit, reply, react, typing.
// Composing an edit of `event` (the box gets its text) or a reply to it (a quote above the box).
function compose(mode, room, event) {
  if (room !== current) return;
  composing = { mode, room, event };
  ui.composing.hidden = false;
  ui.composing.dataset.mode = mode;
  ui.composingText.textContent = mode === "edit" ? "Editing your message"
    : `Replying to ${senderName(room, event)}: “${excerpt(event.text)}”`;
  if (mode === "edit") ui.text.value = event.text;
  fitText();
  ui.text.focus();
  if (mode === "edit") ui.text.setSelectionRange(ui.text.value.length, ui.text.value.length);
}

// Esc or Cancel: back to an ordinary box (an edit's text goes; a reply keeps what was typed).
function cancelCompose() {
  if (composing?.mode === "edit") ui.text.value = "";
  composing = null;
  ui.composing.hidden = true;
  ui.composingText.textContent = "";
  fitText();
}

// The box's text as an edit of the line being edited (unchanged: nothing is sent).
function sendEdit(text) {
  const { room, event } = composing;
  cancelCompose();
  if (text === event.text) return;
  if (!send({ action: "edit", room: room.name, id: event.id, message: text })) notice("Not connected: the message was not edited.");
}

// A reaction toggles (the server decides on or off and sends the counts to everyone).
function react(room, event, emoji) {
  if (!send({ action: "react", room: room.name, id: event.id, emoji, clientMessageId: newId() })) {
    notice("Not connected: the reaction was not sent.");
  }
}

// The user types: one `typing` signal at most every TYPING_EVERY_MS (not while editing).
// Never while a catch-up or `rooms` waits for an answer: a server without `typing`
// answers "Invalid request", which must not be taken for theirs (see refused).
function typed() {
  if (typingTimer || Date.now() - typingSentAt < TYPING_EVERY_MS) return;
  typingTimer = setTimeout(() => {
    typingTimer = null;
    if (!current || !ui.text.value.trim() || composing?.mode === "edit" || !canWrite(current)) return;
    if (serverTyping === false || catchUps.waiting || roomsPending) return;
    if (send({ action: "typing", room: current.name })) typingSentAt = Date.now();
  }, TYPING_DELAY_MS);
}

// {"kind":"typing","room","user"?,"userId"?,"connectionId"}: shown for TYPING_SHOWN_MS, never our own.
function typing(frame) {
  const room = rooms.get(frame.room ?? home);
  if (!room || isMine(frame) || (frame.userId && frame.userId === myUserId)) return;
  const key = frame.userId ?? frame.connectionId;
  if (!key) return;
  // The signal says no `verified`: a userId only ever comes from a verified token.
  const name = displayName(room, { ...frame, verified: frame.verified ?? Boolean(frame.userId) }) ?? "Someone";
  const known = room.typists.get(key);
  clearTimeout(known?.timer);
  const timer = setTimeout(() => {
    room.typists.delete(key);
    if (room === current) showTyping();
  }, TYPING_SHOWN_MS);
  room.typists.set(key, { name, timer });
  if (room === current) showTyping();
}

// A line from a typist ends their "typing…".
function stoppedTyping(room, frame) {
  const key = frame.userId ?? frame.connectionId;
  const known = room.typists.get(key);
  if (!known) return;
  clearTimeout(known.timer);
  room.typists.delete(key);
  if (room === current) showTyping();
}

// "alice is typing…", "alice and bob are typing…", "3 people are typing…".
function showTyping() {
  const names = current ? [...current.typists.values()].map((t) => t.name) : [];
  const text = names.length === 0 ? "" : names.length === 1 ? `${names[0]} is typing…`
    : names.length === 2 ? `${names[0]} and ${names[1]} are typing…` : `${names.length} people are typing…`;
  if (ui.typing.textContent !== text) ui.typing.textContent = text;
}

// Who a kick or ban names: the member's account, else (anonymous) its connection.
const memberKey = (member) => member.userId ?? member.connectionId;

async function askKick(room, member, label) {
  const answer = await confirm.ask({ title: `Remove ${label} from ${room.name}?`,
    text: `Every connection of ${label} leaves "${room.name}". They can join again; a ban keeps them out.`, ok: "Kick" });
  if (answer && !send({ action: "kick", room: room.name, user: memberKey(member) })) notice("Not connected: nobody was removed.");
}

async function askBan(room, member, label) {
  const answer = await confirm.ask({ title: `Ban ${label} from ${room.name}?`,
    text: `${label} is removed from "${room.name}" and cannot join it again until the ban ends.`, ok: "Ban", ban: true });
  if (!answer) return;
  const command = { action: "ban", room: room.name, user: memberKey(member), seconds: answer.seconds };
  if (answer.reason) command.reason = answer.reason;
  if (!send(command)) notice("Not connected: nobody was banned.");
}

// `[<time> - UTC]\n <sender>  <text>\n`, the seed's chat line.
const SEED_CHAT_LINE = /^\[[^\]]* - UTC\]\n (\S+) {2}([\s\S]*)\n$/;

// Our own line is back: its pending copy goes (before our id is known, the first
// line echoed with a pending text is ours). Without acks (a seed server), the
// echo is the only confirmation there is.
function echoed(room, sender, text) {
  if (!myIds.has(sender) && myId) return;
  const pending = outbox.pending(room.name).find((l) => l.text === text);
  if (!pending) return;
  unshow(pending);
  if (!serverAcks) outbox.remove(pending);
}

function acked(frame) {
  serverAcks = true;
  const line = outbox.acked(frame.clientMessageId);
  if (line) unshow(line); // the line itself comes (or came) with the broadcast
  if (rateNotice && !holdTimers.size) {
    rateNotice = false;
    notice("");
  }
}

// A user's name as the server gave it (tagged while another user shares it); a
// name the client chose itself says so.
function displayName(room, frame) {
  if (!frame.user) return null;
  if (frame.server) return frame.user; // a backend's label (the "bot" badge says what it is)
  return frame.verified ? room.names.label(frame.user, frame.userId) : `${frame.user} (unverified)`;
}

// An error frame. A server without `who`, `history` or `rooms` answers "Invalid
// request": not the user's error, so that step is skipped silently.
function refused(frame) {
  const room = frame.room ? rooms.get(frame.room) : null;
  if (frame.error === "Rate limited") return rateLimited(frame);
  if (frame.error === "Forbidden" && room) return forbidden(room, frame);
  if (frame.error === "Banned" && room) return notJoined(room, `you are banned from it${frame.until ? ` until ${when(frame.until)}` : ""}`);
  // A reply whose parent is gone is refused every time: it leaves the outbox.
  const orphans = (frame.error === "Not found" || frame.error === "Deleted") && frame.id ? outbox.orphans(frame.id) : [];
  if (orphans.length) {
    orphans.forEach(unshow);
    return notice(`Not sent: the message you replied to ${frame.error === "Deleted" ? "was deleted" : "does not exist"} (${orphans.length} line(s)).`);
  }
  if (frame.error === "Deleted") return notice("That message was deleted.");
  if (frame.error === "Not found") {
    notice(`Not found: ${frame.message ?? "that message does not exist or was already deleted."}`);
    return current?.timeline.note(`Not found: ${frame.message ?? "no such message"}`, "error");
  }
  if (frame.error === "Too many rooms" && room) return tooManyRooms(room, frame);
  if (frame.error === "Not subscribed" && room) return notSubscribed(room, frame);
  if (frame.error === "Invalid request" && serverTyping === null && Date.now() - typingSentAt < ANSWER_WAIT_MS
    && !catchUps.waiting && !roomsPending) {
    serverTyping = false; // an older (or the seed's) server: no more typing signals to it, and nothing to show
    return;
  }
  if (frame.error === "Invalid request" && roomsPending && !catchUps.waiting) {
    serverRooms = false; // an older server: no badges from it
    roomsPending = false;
    return;
  }
  if (frame.error === "Invalid request" && catchUps.refused()) return;
  (room ?? current)?.timeline.note(`${frame.error}: ${frame.message}`, "error");
}

// A right the connection lacks in `room` (from its token, or the deployment's
// default). Read: the room cannot be joined. Write: the room is read-only, and
// its waiting lines cannot go. Moderate: the action was refused.
function forbidden(room, frame) {
  const drop = (letter) => access(room, { rights: (room.rights ?? "rw").replace(letter, ""), private: room.private });
  if (frame.right === "read") return notJoined(room, "you may not read it");
  if (frame.right === "write") {
    drop("w");
    const gone = outbox.drop(room.name);
    gone.forEach(unshow);
    room.timeline.note(`Read-only room: you may not write in "${room.name}".`, "error");
    return notice(`You may not write in "${room.name}"${gone.length ? `; ${gone.length} line(s) not sent` : ""}.`);
  }
  if (frame.right === "moderate") drop("m");
  room.timeline.note(`Forbidden: ${frame.message ?? `you may not ${frame.right} in "${room.name}"`}`, "error");
  notice(`Not allowed: you may not ${frame.right ?? "do that"} in "${room.name}".`);
}

// A room the server will not let this connection hear (Forbidden to read, Banned):
// it leaves the list (the last room stays, with the reason on it).
function notJoined(room, why) {
  if (rooms.size > 1) leave(room, { tell: false });
  else room.timeline.note(`Could not join "${room.name}": ${why}.`, "error");
  notice(`Could not join "${room.name}": ${why}.`);
}

// "Rate limited" (the server's per-user buckets): a line waits `retryAfterMs`
// in the outbox and is sent again, still pending; a catch-up request likewise.
function rateLimited(frame) {
  const ms = Math.max(0, Number(frame.retryAfterMs) || 1000);
  const seconds = Math.ceil(ms / 1000);
  // A typing signal too soon is only a hint lost: the next one waits for the server's time.
  if (frame.action === "typing") {
    serverTyping = true;
    typingSentAt = Date.now() + ms - TYPING_EVERY_MS;
    return;
  }
  if ((frame.action === "history" || frame.action === "who") && catchUps.limited(frame.action, ms)) return;
  const line = frame.clientMessageId ? outbox.limited(frame.clientMessageId, ms) : null;
  if (!line) return notice(`${frame.action === "sendmessage" ? "Sending" : "Asking"} too fast — wait ${seconds}s and try again.`, "warn");
  notice(`Sending too fast — retrying in ${seconds}s`, "warn");
  rateNotice = true;
  // One timer per room, at the end of its hold: its lines go again in order.
  clearTimeout(holdTimers.get(line.room));
  holdTimers.set(line.room, setTimeout(() => {
    holdTimers.delete(line.room);
    if (rooms.get(line.room)?.subscribed) outbox.due(line.room).forEach((l) => send(outbox.command(l)));
  }, outbox.heldFor(line.room)));
}

// The server refused to add a room (the connection's limit): the room goes, and the page says so.
function tooManyRooms(room, frame) {
  leave(room, { tell: false });
  notice(`Could not join "${room.name}": ${frame.message ?? "too many rooms"}`);
}

// A request for a room the connection does not have (any more): said, and the
// room is subscribed again (once per connection); its lines wait in the outbox.
function notSubscribed(room, frame) {
  room.timeline.note(`Not subscribed to "${room.name}": ${frame.message ?? ""}`, "error");
  room.subscribed = false;
  if (room.resubscribed) return notice(`Not subscribed to "${room.name}"; reconnect to try again.`);
  room.resubscribed = true;
  notice(`Not subscribed to "${room.name}"; joining it again.`, "warn");
  catchUps.drop(room);
  catchUps.enqueue(room, true);
}

function subscribed(frame) {
  const room = rooms.get(frame.room);
  if (!room) return;
  room.subscribed = true;
  if (typeof frame.count === "number") room.count = frame.count;
  access(room, frame);
  flush(0);
  catchUps.subscribed(room);
}

function presence(room, frame) {
  if (!myId && frame.you) learnId(frame.you); // a server that says who asked
  if (frame.youUserId && frame.youUserId !== myUserId) learnUser(frame.youUserId);
  for (const member of frame.members ?? []) {
    noteName(room, member);
    notePerson(room, member);
  }
  room.members.snapshot(frame.members, frame.count);
  if (typeof frame.count === "number") room.count = frame.count;
  if (frame.next) send({ action: "who", room: room.name, next: frame.next });
  showRooms();
  catchUps.presence(room);
}

// A room past the server's presence limit: one frame a second says how many are
// here and who joined, instead of a join or leave notice per member.
function occupancy(room, frame) {
  for (const person of frame.recent ?? []) noteName(room, person);
  room.members.occupied(frame, new Date().toISOString());
  room.count = frame.count;
  showRooms();
}

// ---- Unread counts from the server: `rooms` (costs in rooms.js). Asked only
// while nothing else waits for an answer until the server is known to have it,
// so an older server's "Invalid request" cannot be taken for another's. Not by
// an anonymous page with one room: the room is on screen, and its cursor (the
// connection's) would end with the connection; so neither `rooms` nor `read`.
function pollRooms({ unlessWithinMs = 0 } = {}) {
  if (serverRooms === false || socket?.readyState !== WebSocket.OPEN) return;
  if (rooms.size < 2 && !myUserId && !signIn.token()) return;
  if (serverRooms === null && (catchUps.waiting || roomsPending)) return;
  if (unlessWithinMs && Date.now() - roomsAskedAt < unlessWithinMs) return;
  roomsAskedAt = Date.now();
  roomsPending = true;
  send({ action: "rooms" });
}

// The server's counts replace the page's. A line stored just before the answer
// was counted may still arrive after it and count once more, until the next answer.
function roomsAnswered(frame) {
  serverRooms = true;
  roomsPending = false;
  for (const entry of frame.rooms ?? []) {
    const room = rooms.get(entry.room) ?? (left.has(entry.room) ? null : tokenRoom(entry.room));
    if (!room) continue;
    if (typeof entry.count === "number") room.count = entry.count;
    access(room, entry);
    room.unread = Number(entry.unread) || 0;
    room.more = Boolean(entry.more);
  }
  seen(); // the room on screen: its count is cleared by a read mark
}

// A room the connection has that the page did not ask for (the token's
// `chat.rooms` claim subscribes at connect): listed and caught up like the others.
function tokenRoom(name) {
  if (roomProblem(name)) return null;
  const room = addRoom(name);
  room.subscribed = true;
  storeRooms([...rooms.keys()]);
  catchUps.enqueue(room, false);
  return room;
}

// ---- Catching up (catchup.js): what the page does with its outcomes.
// Past the cap: the page is cleared, the newest events come next.
function tooFar(room, cap) {
  clearLines(room);
  notice(`More than ${cap} events were missed while you were away; showing the most recent.`, "warn");
}

function finished(room, stats) {
  globalThis.chatStats = { ...stats, rooms: { ...globalThis.chatStats.rooms, [room.name]: stats } };
  if (room.shortfall.size) {
    notice(`Catch-up incomplete: the server is too busy (it throttled our requests), so in "${room.name}" `
      + `${[...room.shortfall].join(" and ")} may be missing. Reconnect later to try again.`, "warn");
  } else if (progressShown) notice("");
  remember(room);
  if (room === current) seen();
}

// The connection ended: unfinished catch-ups are redone on the next one.
function dropCatchUp() {
  catchUps.reset();
  roomsPending = false;
  for (const room of rooms.values()) {
    room.caughtUp = room.subscribed = room.resubscribed = false;
    room.timeline.setBusy(false);
  }
}

// Remembers the newest event shown, but only when caught up: then everything
// before it is on the page too (a live line seen earlier may lie past a gap).
// Not after a catch-up that gave up on history: the next one starts before the gap.
function remember(room) {
  if (room.caughtUp && !room.shortfall.has("earlier messages") && room.newest) positions.set(room.name, room.newest);
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

// The user's Connect: checks the room and the sign-in; while connected, opens
// the room on the same connection (never two connections).
async function connect() {
  await signIn.ready;
  const base = ui.url.value.trim();
  const name = ui.room.value.trim();
  const problem = roomProblem(name) ?? nameProblem(ui.name.value.trim());
  ui.room.setAttribute("aria-invalid", String(Boolean(problem)));
  if (problem) return notice(`Not connected: ${problem}`);
  if (socket) return join(name);
  const refused = urlProblem(base) ?? signInProblem(base);
  if (refused) return notice(`Not connected: ${refused}`);
  reconnectDelay = TUNING.reconnectMs;
  show(rooms.get(name) ?? addRoom(name));
  open(base, false);
}

// Opens the connection with the room on screen as its `?room=`; the page's
// other rooms are subscribed once it is open.
function open(base, reconnecting) {
  const name = current.name;
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
  setStatus("connecting");
  if (elsewhere) {
    const at = endpoint() ? new URL(endpoint()).origin : "the endpoint config.json names";
    notice(`Connecting to ${unsignedAt} without your sign-in: it is only sent to ${at}.`, "warn");
  } else notice("");
  const ws = new WebSocket(url);
  socket = ws;
  let opened = false;
  ws.onopen = () => {
    opened = true;
    myId = null; // a new connection has a new id
    serverTyping = null;
    home = name;
    reconnectDelay = TUNING.reconnectMs;
    connectedAt = new Date();
    ui.connectedAt.textContent = connectedAt.toISOString().replace(/\.\d+Z$/, "Z");
    setStatus("connected");
    reads.reset();
    left.clear();
    storeRooms([...rooms.keys()]);
    const homeRoom = rooms.get(name);
    if (homeRoom) homeRoom.subscribed = true;
    // Home first, then the room on screen, then the rest in list order.
    const order = [homeRoom, current, ...rooms.values()].filter(Boolean);
    for (const room of new Set(order)) catchUps.enqueue(room, room !== homeRoom);
    flush(0);
    timers.push(setInterval(() => flush(TUNING.resendMs), TUNING.resendMs));
    timers.push(setInterval(() => send({ action: "sendmessage", message: "ping" }), HEARTBEAT_MS));
    timers.push(setInterval(tick, 1000));
    timers.push(setInterval(() => { if (!catchUps.waiting) pollRooms(); }, TUNING.roomsEveryMs));
  };
  ws.onmessage = (event) => {
    let frame;
    try { frame = JSON.parse(event.data); } catch { return current?.timeline.note(String(event.data)); }
    catchUps.alive();
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
    setTimeout(() => { if (!socket && !userClosed && !signInProblem(base) && current) open(base, true); }, delay);
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
  if (!text.trim() || !current) return;
  if (text === "ping") {
    // The seed's heartbeat word: the server answers pong and stores nothing.
    send({ action: "sendmessage", message: text });
    ui.text.value = "";
    return;
  }
  const bytes = new TextEncoder().encode(JSON.stringify(text)).length - 2;
  if (bytes > MAX_TEXT_BYTES) return notice(`Message too long: ${bytes} bytes, the limit is ${MAX_TEXT_BYTES}.`);
  clearTimeout(typingTimer); // sent: nobody is typing it any more
  typingTimer = null;
  if (composing?.mode === "edit") return sendEdit(text);
  const replyTo = composing?.mode === "reply" ? composing.event.id : undefined;
  if (composing) cancelCompose();
  if (!myId && socket) idProbe = text;
  const line = outbox.add(current.name, text, replyTo);
  showPending(current, line);
  // While the room is held (rate limited), the line waits its turn behind the held ones.
  if (current.subscribed && !outbox.heldFor(current.name)) send(outbox.command(line));
  ui.text.value = "";
  fitText();
  current.timeline.follow(); // you see your own line go out
  notice("");
});

// Keys in the message box: Enter sends, Shift+Enter is a new line, Esc leaves
// the box for the message list.
ui.text.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    $("send-form").requestSubmit();
  } else if (event.key === "Escape") {
    if (composing) cancelCompose();
    else current?.list.focus();
  } else if (event.key === "ArrowUp" && !ui.text.value && !composing && current && canWrite(current)) {
    // As in Slack: ↑ in an empty box edits your newest line.
    const last = current.timeline.lastOwnLine();
    if (!last) return;
    event.preventDefault();
    compose("edit", current, last);
  }
});
$("composing-cancel").addEventListener("click", () => {
  cancelCompose();
  ui.text.focus();
});
ui.text.addEventListener("input", typed);
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
  for (const room of rooms.values()) {
    room.timeline.markMine((event) => event.connectionId === myId);
    room.members.setMe(myId);
  }
}

// Our verified user: `who`'s answer says it (youUserId); their lines are ours,
// from any connection, and only theirs, whatever name others chose.
function learnUser(userId) {
  myUserId = userId;
  for (const room of rooms.values()) {
    room.timeline.markMine((event) => (event.kind === "chat" || event.kind === "reaction") && event.userId === userId);
  }
}

// The tab got focus: fresh unread counts, unless asked a moment ago.
window.addEventListener("focus", () => { if (!catchUps.waiting) pollRooms({ unlessWithinMs: TUNING.roomsFocusMs }); });

// The room comes from the address (#room=NAME): it is opened (and joined while
// connected); the local stack's page defaults to its own endpoint.
window.addEventListener("hashchange", () => {
  ui.room.value = roomFromHash(location.hash) ?? "lobby";
  if (socket) connect();
});
const stored = localStorage.getItem(URL_KEY);
ui.url.value = stored || endpointBeside(location);
ui.room.value = roomFromHash(location.hash) ?? "lobby";
ui.name.value = localStorage.getItem(NAME_KEY) ?? "";
// The rooms of the last visit, and the one the address names (on screen).
for (const name of storedRooms()) if (!roomProblem(name) && !rooms.has(name)) addRoom(name);
if (!roomProblem(ui.room.value)) show(rooms.get(ui.room.value) ?? addRoom(ui.room.value));
setStatus("disconnected");
showRooms();
signIn.complete() // back from the issuer's sign-in page?
  .catch((error) => notice(error.message))
  .then((signedIn) => {
    if (!stored && signIn.config.endpoint) ui.url.value = endpoint(); // a page hosted apart from its API
    ui.room.value = roomFromHash(location.hash) ?? ui.room.value;
    if (stored || signedIn) connect();
  });
