// The outbox: lines the server has not acknowledged yet. Each send carries a
// clientMessageId; the server stores a line once per id and answers
// {"ack":"<message id>","clientMessageId":…} once it is in the log. Until then
// the line stays here, shown as pending and kept in localStorage, and is sent
// again (same id) after every reconnect and every few seconds while connected,
// so a line typed just before a crash, a reload or a lost connection arrives once.
// A line the server refused for going too fast ("Rate limited", with
// `retryAfterMs`) stays here, and its room's lines are held until that wait is
// over, then go again together in the order typed (each line waiting on its
// own would let a later one through first).

const KEY = "websocket-chat-outbox";
const MAX_TRIES = 20; // then the line is given up, and the user told

export function newId() {
  if (crypto.randomUUID) return crypto.randomUUID();
  // Pages opened from file:// are not a secure context: a v4 UUID by hand.
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const hex = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

export class Outbox {
  constructor() {
    try { this.lines = JSON.parse(localStorage.getItem(KEY)) ?? []; } catch { this.lines = []; }
    this.holds = new Map(); // room -> when its lines may go again (rate limited)
  }

  save() {
    try { localStorage.setItem(KEY, JSON.stringify(this.lines)); } catch { /* storage full or disabled */ }
  }

  // A new line for `room`; returns it (send it with `command`).
  // `replyTo`: the id of the line it answers (a reply), if any.
  add(room, text, replyTo) {
    const line = { clientMessageId: newId(), room, text, tries: 0, sentAt: 0, ...(replyTo ? { replyTo } : {}) };
    this.lines.push(line);
    this.save();
    return line;
  }

  pending(room) { return this.lines.filter((l) => l.room === room); }

  command(line) {
    line.tries += 1;
    line.sentAt = Date.now();
    this.save();
    const command = { action: "sendmessage", room: line.room, message: line.text, clientMessageId: line.clientMessageId };
    if (line.replyTo) command.replyTo = line.replyTo;
    return command;
  }

  // Lines of `room` to send now: all after a (re)connect, else those unanswered
  // for `afterMs`; none while the room is held (rate limited).
  due(room, afterMs = 0) {
    if (this.heldFor(room) > 0) return [];
    return this.pending(room).filter((l) => Date.now() - l.sentAt >= afterMs);
  }

  // How long `room`'s lines still wait (ms; 0: they may go).
  heldFor(room) { return Math.max(0, (this.holds.get(room) ?? 0) - Date.now()); }

  // The server refused the line for now (rate limited): its room's lines wait
  // `ms` (or longer, if held longer already), and the refused try does not count
  // towards giving up. Returns the line, if it is here.
  limited(clientMessageId, ms) {
    const line = this.lines.find((l) => l.clientMessageId === clientMessageId);
    if (!line) return null;
    this.holds.set(line.room, Math.max(this.holds.get(line.room) ?? 0, Date.now() + ms));
    line.tries = Math.max(0, line.tries - 1);
    this.save();
    return line;
  }

  // The server has the line: forget it. Returns it, if it was here.
  acked(clientMessageId) {
    const line = this.lines.find((l) => l.clientMessageId === clientMessageId);
    if (line) this.remove(line);
    return line;
  }

  // A server without acks (the seed's) shows our own line instead: that is the ack.
  echoed(room, text) {
    const line = this.lines.find((l) => l.room === room && l.text === text);
    if (line) this.remove(line);
    return line;
  }

  // Lines of a room the page left: they cannot go any more.
  drop(room) {
    const gone = this.pending(room);
    gone.forEach((l) => this.remove(l));
    return gone;
  }

  // Replies to line `id`, which is gone (deleted, or not found): they cannot go.
  orphans(id) {
    const gone = this.lines.filter((l) => l.replyTo === id);
    gone.forEach((l) => this.remove(l));
    return gone;
  }

  // Lines tried too often: removed and returned, so the page can say so.
  exhausted() {
    const gone = this.lines.filter((l) => l.tries >= MAX_TRIES);
    gone.forEach((l) => this.remove(l));
    return gone;
  }

  remove(line) {
    this.lines = this.lines.filter((l) => l !== line);
    this.save();
  }
}
