// Who is in the room: a `who` snapshot (paged with `next`), then kept current by
// the room's join and leave frames. A leave is final (connection ids are never
// reused), so a snapshot answered late, or a replayed join, cannot bring one back.

export class Members {
  // label(person): how a member is named ({user, verified, userId} as the server
  // sent them; null when nameless), asked at every draw.
  constructor({ box, roomName, count, list, label }) {
    Object.assign(this, { box, roomName, count, list, label });
    this.members = new Map(); // connectionId -> {at, person: {user, verified, userId}}
    this.left = new Set();
    this.me = null;
  }

  // Another room: nobody known yet.
  enter(room) {
    this.roomName.textContent = room;
    this.members.clear();
    this.left.clear();
    this.render();
  }

  // A new connection asks again; what we knew of leaves still holds.
  forget() {
    this.members.clear();
    this.render();
  }

  snapshot(members) {
    this.box.hidden = false;
    for (const m of members ?? []) this.add(m.connectionId, m.connectedAt, m);
    this.render();
  }

  // A join or leave frame: live, or replayed by history.
  event(kind, id, at, person) {
    if (!id) return;
    if (kind === "leave") {
      this.left.add(id);
      this.members.delete(id);
    } else this.add(id, at, person);
    this.render();
  }

  setMe(id) {
    this.me = id;
    this.render();
  }

  // A server without `who`: nobody to list.
  unavailable() { this.box.hidden = true; }

  add(id, at, { user, verified, userId }) {
    if (!this.left.has(id)) this.members.set(id, { at, person: { user, verified, userId } });
  }

  render() {
    this.count.textContent = String(this.members.size);
    const me = this.me;
    const sorted = [...this.members].sort(([a, x], [b, y]) => (b === me) - (a === me) || String(x.at).localeCompare(String(y.at)));
    this.list.replaceChildren(...sorted.map(([id, { at, person }]) => {
      const name = this.label(person);
      const li = document.createElement("li");
      li.dataset.id = id;
      li.title = `${person.userId ? `user ${person.userId}, ` : ""}${name ? `connection ${id}, ` : ""}connected at ${at}`;
      li.textContent = name ?? id;
      if (id === me) {
        li.className = "me";
        const you = document.createElement("span");
        you.textContent = " (you)";
        li.append(you);
      }
      return li;
    }));
  }
}
