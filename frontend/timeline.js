// The message list, drawn as a conversation: events in id order, runs of
// join/leave notices collapsed into one line ("3 joined, 5 left", expandable),
// chat lines from one sender within a few minutes under one header, a separator
// when the day changes, local HH:MM with the full UTC time on hover and focus.
// It follows new lines only while the reader is at the bottom; otherwise it
// counts them on a "N new messages ↓" button, and lines inserted above (history)
// leave what the reader is looking at where it was. Drawing is batched per
// animation frame, so a catch-up of thousands of events draws only a few times.
// A deleted line (a `delete` event naming it as `target`, live or replayed,
// before or after the line itself) shows "message deleted" instead of its text;
// moderation events (kick, ban, unban) are notices of their own. Every
// user-supplied string goes through textContent.
//
// Lifecycle (issue 25), folded here by id whatever the order events arrive in
// (live or from `history` after a reload): an `edit` replaces its target's text
// (the newest edit by id, and only one by the line's author: same account, else
// same connection), marked "(edited)" with the time; a `reaction` carries the
// line's counts after it, so the newest reaction by id gives the chips, and the
// reader's own toggles (newest per emoji) highlight theirs; a reply (`replyTo`,
// `quote`) shows its quote, which jumps to the parent. Nothing shows on a
// deleted line but the placeholder.

// The picker's emoji (any other the server accepts still shows as a chip).
export const REACTIONS = ["👍", "❤️", "😂", "🎉", "😮", "😢"];
const HIGHLIGHT_MS = 2000; // a parent jumped to stays highlighted this long

const GROUP_MS = 5 * 60_000; // same sender, closer than this: one header
const BOTTOM_SLACK = 40; // px still counted as "at the bottom"

const hhmm = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
const dayName = new Intl.DateTimeFormat(undefined, { weekday: "long", day: "numeric", month: "long", year: "numeric" });

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

// `<time>`: local HH:MM shown; the full UTC time in its title (hover) and, when
// focused, spelled out beside it (CSS).
function timeOf(at) {
  if (!at) return element("span", "time", "");
  const node = element("time", "", hhmm.format(at));
  node.dateTime = at.toISOString();
  node.title = `${at.toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC")}`;
  node.tabIndex = -1; // reached with the arrow keys (the list is one tab stop)
  return node;
}

// A notice as shown: the page's own connection is "You", not its id.
function noticeText(event, describe) {
  if (!event.mine) return describe(event);
  return event.kind === "join" ? "You joined the chat" : "You left the chat";
}

function localDay(at) { return `${at.getFullYear()}-${at.getMonth() + 1}-${at.getDate()}`; }

function dayLabel(at) {
  const today = new Date();
  const yesterday = new Date(today.getFullYear(), today.getMonth(), today.getDate() - 1);
  if (localDay(at) === localDay(today)) return "Today";
  if (localDay(at) === localDay(yesterday)) return "Yesterday";
  return dayName.format(at);
}

// Where `id` belongs in the sorted `events` (mostly at the end: checked first).
function insertionIndex(events, id) {
  let low = 0;
  let high = events.length;
  if (!high || events[high - 1].id < id) return high;
  while (low < high) {
    const mid = (low + high) >> 1;
    if (events[mid].id < id) low = mid + 1;
    else high = mid;
  }
  return low;
}

export class Timeline {
  // list: the <ol> (one per room); jump: the "new messages" button, shared by the
  // rooms' timelines and used by the one on screen; who(event): the sender's
  // display name ("alice", "bob (unverified)", "you"), asked at every draw;
  // notice(event): a join, leave, kick, ban or unban as text (default: its
  // `text`), likewise; deletable(event): whether a chat line gets a Delete
  // button (asked at every draw), onDelete(event) when it is pressed.
  // editable(event), onEdit(event): an Edit button on the reader's own lines;
  // writable(): Reply and React on every line; onReply(event), onReact(event, emoji).
  constructor({ list, jump, who, notice = (event) => event.text, deletable = () => false, onDelete = () => {},
    editable = () => false, onEdit = () => {}, writable = () => false, onReply = () => {}, onReact = () => {} }) {
    Object.assign(this, { list, jump, who, notice, deletable, onDelete, editable, onEdit, writable, onReply, onReact });
    this.edits = new Map(); // target -> its edit events, by id
    this.reactions = new Map(); // target -> the newest reaction event (by id): its counts are the line's
    this.myReactions = new Map(); // `${target} ${emoji}` -> the reader's newest toggle of it {id, on}
    this.reactors = []; // reaction events not known to be the reader's (a later markMine may claim them)
    this.picking = null; // the line whose reaction picker is open
    this.events = []; // as added, plus `at` (a Date or null), by id
    this.deleted = new Set(); // ids of deleted lines (a tombstone may come before its line)
    this.loose = []; // lines without an id (seed frames, errors): {after, seq, text, cls}
    this.pending = new Map(); // clientMessageId -> text, drawn last
    this.rows = new Map(); // key -> <li>, reused between draws
    this.following = true;
    this.unseen = 0;
    this.scheduled = false;
    this.seq = 0;
    this.shown = false;
    this.scrollTop = 0; // where the reader was when another room was put on screen
    list.hidden = true;
    list.addEventListener("scroll", () => {
      this.following = this.atBottom();
      if (this.following) this.countUnseen(0);
    });
    jump.addEventListener("click", () => { if (this.shown) this.follow(); });
    list.addEventListener("keydown", (event) => this.arrowKeys(event));
  }

  // An event with an id (chat, join, leave). `fresh`: newer than anything shown,
  // arrived live; counted on the button when the reader is scrolled up.
  // Needs id, kind ("chat", "join", "leave"), timestamp, text, sender (what
  // groups lines), connectionId and mine; the rest is kept for `who`.
  add(event, { fresh = false } = {}) {
    const at = new Date(event.timestamp ?? NaN);
    const shown = { ...event, at: Number.isNaN(at.getTime()) ? null : at };
    this.events.splice(insertionIndex(this.events, event.id), 0, shown);
    if (fresh && event.kind === "chat" && !event.mine && !this.following) this.countUnseen(this.unseen + 1);
    this.draw();
  }

  // A line without an id, shown after everything that is on the page now.
  note(text, cls = "") {
    this.loose.push({ after: this.events.at(-1)?.id ?? "", seq: this.seq++, text, cls });
    this.draw();
  }

  showPending(clientMessageId, text) { this.pending.set(clientMessageId, text); this.draw(); }

  unshowPending(clientMessageId) { if (this.pending.delete(clientMessageId)) this.draw(); }

  // A `delete` event: the line `target` shows as deleted (again: nothing changes).
  deleteLine(target) {
    if (!target || this.deleted.has(target)) return;
    this.deleted.add(target);
    this.draw();
  }

  // Our connection id or user became known: the events `ours` accepts are ours.
  markMine(ours) {
    for (const event of this.events) if (ours(event)) event.mine = true;
    const theirs = [];
    for (const event of this.reactors) {
      if (ours(event)) this.toggled(event);
      else theirs.push(event);
    }
    this.reactors = theirs;
    this.draw();
  }

  // An `edit` event: {id, target, text, editedAt?, userId?, connectionId}.
  editLine(event) {
    if (!event.target) return;
    const edits = this.edits.get(event.target) ?? [];
    edits.splice(insertionIndex(edits, event.id), 0, event);
    this.edits.set(event.target, edits);
    this.draw();
  }

  // A `reaction` event: {id, target, emoji, on, counts}; `mine` when the reader toggled it.
  react(event, mine) {
    if (!event.target) return;
    const newest = this.reactions.get(event.target);
    if (!newest || newest.id < event.id) this.reactions.set(event.target, event);
    if (mine) this.toggled(event);
    else this.reactors.push(event);
    this.draw();
  }

  toggled(event) {
    const key = `${event.target} ${event.emoji}`;
    const known = this.myReactions.get(key);
    if (!known || known.id < event.id) this.myReactions.set(key, { id: event.id, on: Boolean(event.on) });
  }

  // What a chat line shows now: its text after the author's newest edit, when edited.
  current(event) {
    const edits = this.edits.get(event.id) ?? [];
    for (let i = edits.length - 1; i >= 0; i -= 1) {
      const edit = edits[i];
      const byAuthor = event.userId ? edit.userId === event.userId : edit.connectionId === event.connectionId;
      if (byAuthor && edit.id > event.id) {
        const at = new Date(edit.editedAt ?? edit.timestamp ?? NaN);
        return { text: String(edit.text ?? ""), editedAt: Number.isNaN(at.getTime()) ? null : at };
      }
    }
    return { text: event.text, editedAt: null };
  }

  // The line's chips: [{emoji, count, mine}] (counts from its newest reaction event).
  chips(id) {
    const counts = this.reactions.get(id)?.counts ?? {};
    return Object.entries(counts).filter(([, n]) => Number(n) > 0)
      .map(([emoji, n]) => ({ emoji, count: Number(n), mine: Boolean(this.myReactions.get(`${id} ${emoji}`)?.on) }));
  }

  // The newest line of the reader's that can be edited (↑ on an empty box), or null.
  lastOwnLine() {
    for (let i = this.events.length - 1; i >= 0; i -= 1) {
      const event = this.events[i];
      if (event.kind === "chat" && event.mine && !this.deleted.has(event.id)) return { ...event, text: this.current(event).text };
    }
    return null;
  }

  // The chat line `id` as shown now (text after edits), or null.
  line(id) {
    const event = this.events[insertionIndex(this.events, id)];
    if (!event || event.id !== id || event.kind !== "chat") return null;
    return { ...event, text: this.current(event).text, deleted: this.deleted.has(id) };
  }

  // Opens (or closes) the reaction picker of line `id`; its first emoji gets the focus.
  pick(id) {
    this.picking = this.picking === id ? null : id;
    this.flush();
    if (this.picking) this.list.querySelector(`li[data-id="${CSS.escape(id)}"] .picker button`)?.focus();
  }

  // Scrolls to line `id` and highlights it for a moment (a reply's quote was followed).
  jumpTo(id) {
    this.flush();
    const row = this.rows.get(id);
    if (!row) return false;
    this.following = false;
    row.scrollIntoView({ block: "center" });
    row.classList.add("highlight");
    row.tabIndex = -1;
    row.focus({ preventScroll: true });
    setTimeout(() => row.classList.remove("highlight"), HIGHLIGHT_MS);
    return true;
  }

  clear() {
    this.events = [];
    this.loose = [];
    this.deleted.clear();
    this.edits.clear();
    this.reactions.clear();
    this.myReactions.clear();
    this.reactors = [];
    this.pending.clear();
    this.countUnseen(0);
    this.draw();
  }

  // Back to the newest line, and following again.
  follow() {
    this.following = true;
    this.countUnseen(0);
    this.flush();
    this.list.scrollTop = this.list.scrollHeight;
  }

  // On screen (one room's list at a time carries the id `messages`): back where
  // the reader left it, or at the bottom while following.
  show() {
    this.shown = true;
    this.list.hidden = false;
    this.list.id = "messages";
    this.flush();
    this.list.scrollTop = this.following ? this.list.scrollHeight : this.scrollTop;
    this.countUnseen(this.unseen);
  }

  hide() {
    this.scrollTop = this.list.scrollTop;
    this.shown = false;
    this.list.hidden = true;
    this.list.removeAttribute("id");
  }

  setBusy(busy) {
    if (!busy) this.flush(); // "not busy" promises that everything is drawn
    this.list.setAttribute("aria-busy", String(busy));
  }

  atBottom() {
    const { scrollHeight, scrollTop, clientHeight } = this.list;
    return scrollHeight - scrollTop - clientHeight < BOTTOM_SLACK;
  }

  countUnseen(n) {
    this.unseen = n;
    if (!this.shown) return;
    this.jump.hidden = n === 0;
    this.jump.textContent = `${n} new message${n === 1 ? "" : "s"} ↓`;
  }

  // Draws at the next animation frame (a hidden tab has none: a timer then).
  draw() {
    if (this.scheduled) return;
    this.scheduled = true;
    if (document.hidden) setTimeout(() => this.flush(), 100);
    else requestAnimationFrame(() => this.flush());
  }

  flush() {
    this.scheduled = false;
    const list = this.list;
    if (!this.shown) return this.reconcile(this.layout()); // no layout to keep while hidden
    const anchor = this.following ? null : this.topRow();
    this.reconcile(this.layout());
    if (this.following) list.scrollTop = list.scrollHeight;
    else if (anchor?.row.isConnected) list.scrollTop = anchor.row.offsetTop - anchor.offset;
  }

  // The first row in view and its distance from the top: it stays put.
  topRow() {
    const top = this.list.scrollTop;
    for (const row of this.list.children) {
      if (row.offsetTop + row.offsetHeight > top) return { row, offset: row.offsetTop - top };
    }
    return null;
  }

  // What to show, top to bottom: [{key, signature, build()}].
  layout() {
    const rows = [];
    const notice = this.notice;
    let loose = 0;
    let day = null;
    let run = null;
    let previous = null; // the chat event just above, for grouping
    const looseUpTo = (id) => {
      for (; loose < this.loose.length && this.loose[loose].after <= id; loose += 1) {
        const line = this.loose[loose];
        rows.push({ key: `loose-${line.seq}`, signature: "", build: () => element("li", line.cls, line.text) });
        run = previous = null;
      }
    };
    looseUpTo("");
    for (const event of this.events) {
      const eventDay = event.at ? localDay(event.at) : day;
      if (eventDay && eventDay !== day) {
        day = eventDay;
        const label = dayLabel(event.at);
        rows.push({ key: `day-${day}`, signature: label, build: () => this.daySeparator(label) });
        run = previous = null;
      }
      if (event.kind === "chat") {
        const grouped = Boolean(previous && previous.sender === event.sender && event.at && previous.at
          && event.at - previous.at < GROUP_MS);
        const who = this.who(event);
        const deleted = this.deleted.has(event.id);
        const deletable = !deleted && this.deletable(event);
        const editable = !deleted && event.mine && this.editable(event);
        const writable = !deleted && this.writable(event);
        const { text, editedAt } = deleted ? { text: "", editedAt: null } : this.current(event);
        const chips = deleted ? [] : this.chips(event.id);
        const picking = writable && this.picking === event.id;
        const quote = event.replyTo ? this.quoteOf(event) : null;
        const state = { deleted, deletable, editable, writable, text, editedAt, chips, picking, quote };
        rows.push({ key: event.id, signature: `${grouped}|${event.mine}|${who}|${JSON.stringify(state)}`,
          build: () => this.chatRow(event, who, grouped, state) });
        previous = event;
        run = null;
      } else if (event.kind !== "join" && event.kind !== "leave") {
        // A moderation notice (kick, ban, unban): its own line, never folded into a run.
        const text = this.notice(event);
        rows.push({ key: event.id, signature: text, build: () => this.noticeRow([event]) });
        run = previous = null;
      } else {
        if (!run) {
          run = { key: event.id, events: [] };
          const members = run.events;
          rows.push({ key: run.key,
            get signature() { return `${members.length}|${members.at(-1).id}|${members.map((e) => noticeText(e, notice)).join("|")}`; },
            build: () => this.noticeRow(members) });
        }
        run.events.push(event);
        previous = null;
      }
      looseUpTo(event.id);
    }
    looseUpTo("\uffff");
    for (const [clientMessageId, text] of this.pending) {
      rows.push({ key: `pending-${clientMessageId}`, signature: "", build: () => this.pendingRow(clientMessageId, text) });
    }
    return rows;
  }

  // Makes the list's children `rows`, reusing unchanged rows (keyed), so that
  // inserting above moves nothing and an opened notice run stays open.
  reconcile(rows) {
    const wanted = new Set(rows.map((row) => row.key));
    for (const [key, row] of this.rows) if (!wanted.has(key)) row.remove();
    const keep = new Map();
    let cursor = this.list.firstElementChild;
    for (const { key, signature, build } of rows) {
      let row = this.rows.get(key);
      if (!row || row.dataset.signature !== signature) {
        const fresh = build();
        fresh.dataset.signature = signature;
        if (row) {
          row.replaceWith(fresh);
          if (row === cursor) cursor = fresh;
        }
        row = fresh;
      }
      keep.set(key, row);
      if (row === cursor) cursor = cursor.nextElementSibling;
      else this.list.insertBefore(row, cursor);
    }
    this.rows = keep;
  }

  daySeparator(label) {
    const row = element("li", "day");
    row.append(element("span", "", label));
    return row;
  }

  // A reply's quote as shown: the parent's author and the quoted words ("message
  // deleted" once the parent is).
  quoteOf(event) {
    const parent = this.line(event.replyTo);
    const words = parent?.deleted ? "message deleted" : String(event.quote ?? parent?.text ?? "").slice(0, 80);
    return { who: parent ? this.who(parent) : null, words, deleted: Boolean(parent?.deleted) };
  }

  // The line's text is its last child when it has no reactions (a deleted line's:
  // the placeholder), else the chips follow it; a reply's quote comes before it.
  // Its buttons (Reply, React, Edit, Delete) sit in its header, reached with the
  // arrow keys like the times.
  chatRow(event, who, grouped, { deleted, deletable, editable, writable, text, editedAt, chips, picking, quote }) {
    const row = element("li", [event.mine && "mine", grouped && "grouped", deleted && "deleted"].filter(Boolean).join(" "));
    row.dataset.id = event.id;
    row.dataset.kind = "chat";
    row.dataset.sender = event.connectionId;
    row.title = `${event.userId ? `user ${event.userId}, ` : ""}connection ${event.connectionId}`;
    const meta = element("span", "meta");
    meta.append(element("span", "who", who));
    // A line of the publish API (a bot, CI, a service): marked, so no one takes it for a person.
    if (event.server) {
      const badge = meta.appendChild(element("span", "badge server", "bot"));
      badge.title = "Sent by a server through the publish API";
    }
    meta.append(element("span", "sep", " · "), timeOf(event.at));
    if (editedAt) {
      const marker = timeOf(editedAt);
      marker.className = "edited";
      marker.textContent = "(edited)";
      marker.title = `edited ${marker.title}`;
      meta.append(" ", marker);
    }
    const button = (cls, label, aria, action) => {
      const node = element("button", `${cls} secondary`, label);
      node.type = "button";
      node.tabIndex = -1;
      node.setAttribute("aria-label", aria);
      node.addEventListener("click", action);
      meta.append(node);
      return node;
    };
    if (writable) {
      button("reply", "Reply", `Reply to ${who}`, () => this.onReply({ ...event, text }));
      button("react", "React", `React to the message from ${who}`, () => this.pick(event.id)).setAttribute("aria-expanded", String(picking));
    }
    if (editable) button("edit", "Edit", "Edit your message", () => this.onEdit({ ...event, text }));
    if (deletable) {
      const remove = element("button", "delete secondary", "Delete");
      remove.type = "button";
      remove.tabIndex = -1;
      remove.setAttribute("aria-label", `Delete the message from ${who}`);
      remove.addEventListener("click", () => this.onDelete(event));
      meta.append(remove);
    }
    row.append(meta);
    if (quote) row.append(this.quoteButton(event, quote));
    if (picking) row.append(this.picker(event, who));
    row.append(deleted ? element("span", "placeholder", "message deleted") : element("span", "text", text));
    if (chips.length) row.append(this.chipRow(event, chips));
    return row;
  }

  // A reply's quote: a button that scrolls to the parent and highlights it.
  quoteButton(event, quote) {
    const node = element("button", `quote${quote.deleted ? " gone" : ""}`);
    node.type = "button";
    node.tabIndex = -1;
    node.setAttribute("aria-label", `In reply to ${quote.who ?? "a message"}: ${quote.words}. Show it`);
    if (quote.who) node.append(element("span", "who", quote.who), " ");
    node.append(element("span", "", quote.words));
    node.addEventListener("click", () => this.jumpTo(event.replyTo));
    return node;
  }

  // The chips: "👍 2", the reader's own pressed; a click toggles the reader's reaction.
  chipRow(event, chips) {
    const box = element("span", "reactions");
    for (const { emoji, count, mine } of chips) {
      const chip = element("button", `chip${mine ? " mine" : ""}`, `${emoji} ${count}`);
      chip.type = "button";
      chip.tabIndex = -1;
      chip.setAttribute("aria-pressed", String(mine));
      chip.setAttribute("aria-label", `${emoji} ${count}${mine ? ", including you" : ""}`);
      chip.addEventListener("click", () => this.onReact(event, emoji));
      box.append(chip);
    }
    return box;
  }

  // The picker: a few emoji; Left/Right move, Escape closes it (the focus goes back to React).
  picker(event, who) {
    const box = element("span", "picker");
    box.setAttribute("role", "group");
    box.setAttribute("aria-label", `Reactions for the message from ${who}`);
    for (const emoji of REACTIONS) {
      const choice = element("button", "secondary", emoji);
      choice.type = "button";
      choice.addEventListener("click", () => {
        this.picking = null;
        this.onReact(event, emoji);
        this.draw();
        this.list.focus();
      });
      box.append(choice);
    }
    box.addEventListener("keydown", (key) => {
      const choices = [...box.querySelectorAll("button")];
      const at = choices.indexOf(document.activeElement);
      const step = { ArrowLeft: -1, ArrowRight: 1, ArrowUp: -1, ArrowDown: 1 }[key.key];
      if (step) choices[(at + step + choices.length) % choices.length].focus();
      if (key.key === "Escape") {
        this.picking = null;
        this.flush();
        this.list.querySelector(`li[data-id="${CSS.escape(event.id)}"] button.react`)?.focus();
      }
      if (step || key.key === "Escape") {
        key.preventDefault();
        key.stopPropagation();
      }
    });
    return box;
  }

  // One notice as its own line; several in a row as "2 joined, 3 left", expandable.
  noticeRow(events) {
    const row = element("li", "notice");
    row.dataset.id = events[0].id;
    row.dataset.kind = "notices";
    const entries = events.map((event) => {
      const entry = element("span", "entry");
      entry.dataset.id = event.id;
      entry.append(element("span", "", noticeText(event, this.notice)), element("span", "sep", " · "), timeOf(event.at));
      return entry;
    });
    if (events.length === 1) {
      row.append(...entries);
      return row;
    }
    const joined = events.filter((e) => e.kind === "join").length;
    const left = events.length - joined;
    const details = element("details");
    const summary = element("summary", "", [joined && `${joined} joined`, left && `${left} left`].filter(Boolean).join(", "));
    details.append(summary, ...entries);
    row.append(details);
    return row;
  }

  pendingRow(clientMessageId, text) {
    const row = element("li", "mine pending");
    row.dataset.clientMessageId = clientMessageId;
    const meta = element("span", "meta");
    meta.append(element("span", "who", "you"), element("span", "sep", " · "), element("span", "", "sending…"));
    row.append(meta, document.createTextNode(text));
    return row;
  }

  // The list is one tab stop; Up/Down (Home/End) walk its times, summaries,
  // buttons, quotes and chips. Up from outside them starts at the newest time.
  arrowKeys(event) {
    const steps = { ArrowUp: -1, ArrowDown: 1, Home: -Infinity, End: Infinity };
    if (!(event.key in steps)) return;
    const stops = [...this.list.querySelectorAll("time, summary, button")].filter((node) => node.offsetParent);
    if (!stops.length) return;
    event.preventDefault();
    const at = stops.indexOf(document.activeElement);
    const step = steps[event.key];
    if (at < 0 && step === -1) {
      const times = stops.filter((node) => node.matches("time:not(.edited), summary"));
      if (times.length) return times.at(-1).focus();
    }
    const from = at >= 0 ? at : step > 0 ? -1 : stops.length;
    stops[Math.max(0, Math.min(stops.length - 1, from + step))].focus();
  }
}
