// Several rooms on one socket: the room list (switch, join by name, leave) with
// unread badges and member counts, the rooms the page keeps across reloads, and
// the throttled read marks. Room names and counts go through textContent.
//
// What the server's answers cost (DynamoDB + API Gateway, per call):
// - `rooms`: 1 Query (the reader's cursors) + per room 1 COUNT Query (its
//   members) and 1 Query (chat lines after the cursor, capped at 100), + 1 post
//   back. The page asks once every room has caught up (after connecting or a
//   subscribe), after an unsubscribe, every `roomsEveryMs` (60 s) and when the
//   tab gets focus (at most every `roomsFocusMs`, 15 s).
// - `read`: 1 conditional UpdateItem (the cursor; + 1 Query when another device
//   read further) + 1 post back; at most one per room every `readEveryMs` (3 s).

const KEY = "websocket-chat-rooms";

/** The rooms the page had open (stored when a connection opens, and on join and leave). */
export function storedRooms() {
  try {
    const names = JSON.parse(localStorage.getItem(KEY));
    return Array.isArray(names) ? names.filter((name) => typeof name === "string") : [];
  } catch {
    return [];
  }
}

export function storeRooms(names) {
  try { localStorage.setItem(KEY, JSON.stringify(names)); } catch { /* storage full or disabled */ }
}

/** A badge's text: the server caps unread counts at 100 and says `more`. */
export function badgeText(unread, more) {
  return more || unread > 99 ? "99+" : String(unread);
}

/**
 * Read marks: `{"action":"read","room","id"}` tells the server how far the reader
 * has seen a room (its unread count then starts after `id`). Each one is a
 * billed request and post back, so per room at most one every `everyMs`; a
 * newer id in between waits for the end of that time and goes alone.
 */
export class ReadMarks {
  // send(command): true when it went out (the socket is open).
  constructor({ everyMs, send }) {
    Object.assign(this, { everyMs, send });
    this.rooms = new Map(); // room -> {sent, want, at, timer}
  }

  mark(room, id) {
    const mark = this.rooms.get(room) ?? { sent: "", want: "", at: -Infinity, timer: null };
    this.rooms.set(room, mark);
    if (id <= mark.sent || id <= mark.want) return;
    mark.want = id;
    if (mark.timer) return;
    const wait = mark.at + this.everyMs - Date.now();
    if (wait <= 0) return this.post(room, mark);
    mark.timer = setTimeout(() => {
      mark.timer = null;
      this.post(room, mark);
    }, wait);
  }

  post(room, mark) {
    if (mark.want <= mark.sent || !this.send({ action: "read", room, id: mark.want })) return;
    mark.sent = mark.want;
    mark.at = Date.now();
  }

  // Whether a mark went out within the last `ms` (its answer may still come).
  recent(ms) {
    return [...this.rooms.values()].some((mark) => Date.now() - mark.at < ms);
  }

  forget(room) {
    clearTimeout(this.rooms.get(room)?.timer);
    this.rooms.delete(room);
  }

  // A new connection: an anonymous reader's cursor was the old connection's, so marks go again.
  reset() {
    for (const room of [...this.rooms.keys()]) this.forget(room);
  }
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/**
 * The room list: one button per room (switches to it; the one on screen is
 * `aria-current`), a lock when it is private, its member count and unread badge, a Leave button, and the
 * join form. Keyboard: every control is a button or a field in tab order. Rows
 * are kept and updated in place, so a badge that changes under the pointer or
 * the focus does not swallow a click or lose the focus.
 */
export class RoomList {
  // onSwitch(name), onLeave(name), onJoin(name) -> an error text or null
  constructor({ list, form, input, onSwitch, onLeave, onJoin }) {
    Object.assign(this, { list, input, onSwitch, onLeave });
    this.rows = new Map(); // name -> {li, open, count, badge, leave}
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const problem = onJoin(input.value.trim());
      input.setAttribute("aria-invalid", String(Boolean(problem)));
      if (!problem) input.value = "";
    });
  }

  // rooms: [{name, unread, more, count (null: unknown), private}]; current: the name on screen.
  render(rooms, current) {
    const rows = rooms.map((room) => {
      const row = this.rows.get(room.name) ?? this.row(room.name);
      update(row, room, room.name === current, rooms.length > 1);
      return row;
    });
    this.rows = new Map(rows.map((row) => [row.li.dataset.room, row]));
    const items = rows.map((row) => row.li);
    const children = [...this.list.children];
    if (items.length !== children.length || items.some((li, i) => children[i] !== li)) this.list.replaceChildren(...items);
  }

  row(name) {
    const li = element("li");
    li.dataset.room = name;
    const open = element("button", "switch");
    open.type = "button";
    const count = element("span", "count");
    const badge = element("span", "badge");
    // A private room (the deployment's default rights would not let one read it):
    // a lock, named for screen readers ("red, private, 3 members").
    const lock = element("span", "lock"); // drawn by the style sheet (no emoji font needed)
    lock.setAttribute("role", "img");
    lock.setAttribute("aria-label", "private");
    lock.title = "Private room: only those given access can read it";
    open.append(element("span", "name", name), lock, count, badge);
    open.addEventListener("click", () => this.onSwitch(name));
    const leave = element("button", "leave secondary", "×");
    leave.type = "button";
    leave.setAttribute("aria-label", `Leave ${name}`);
    leave.title = `Leave ${name}`;
    leave.addEventListener("click", () => this.onLeave(name));
    li.append(open, leave);
    return { li, open, lock, count, badge, leave };
  }
}

// Shows one room's state on its row: "red private 3 members 2 unread" to a screen reader.
function update({ open, lock, count, badge, leave }, { unread, more, count: members, private: closed }, current, canLeave) {
  if (current) open.setAttribute("aria-current", "true");
  else open.removeAttribute("aria-current");
  lock.hidden = !closed;
  count.hidden = members === null;
  if (members !== null) {
    count.replaceChildren(String(members), element("span", "visually-hidden", members === 1 ? " member" : " members"));
    count.title = `${members} here`;
  }
  badge.hidden = !(unread > 0 || more);
  if (!badge.hidden) badge.replaceChildren(badgeText(unread, more), element("span", "visually-hidden", " unread"));
  leave.hidden = !canLeave;
}
