// Who is in the room: a `who` snapshot (paged with `next`), then kept current by
// the room's join and leave frames. A leave is final (connection ids are never
// reused), so a snapshot answered late, or a replayed join, cannot bring one back.
// A moderator of the room (its rights include `m`) gets Kick and Ban buttons
// beside every member but themself, in tab order. Past the server's presence
// limit a room's joins and leaves come as one `occupancy` frame a second: the
// count is then the server's, and the newest joiners are named under it; leavers
// are counted, not named, so once some have left, "Refresh list" asks `who` again.

export class Members {
  // One per room; the panel (box, roomName, count, list) shows the room on screen.
  // label(person): how a member is named ({user, verified, userId} as the server
  // sent them; null when nameless), asked at every draw. moderator(): whether
  // the reader may kick and ban here; self(id, person): whether a member is the
  // reader (any of their connections); onKick / onBan({connectionId, user, verified, userId}).
  constructor({ room, box, roomName, count, recent, list, label, moderator = () => false, self = () => false, onKick, onBan, onRefresh }) {
    Object.assign(this, { room, box, roomName, count, recent, list, label, moderator, self, onKick, onBan, onRefresh });
    this.members = new Map(); // connectionId -> {at, person: {user, verified, userId}}
    this.left = new Set();
    this.me = null;
    this.shown = false;
    this.known = false; // a `who` snapshot came on this connection
    this.missing = false; // the server has no `who`
    this.occupancy = null; // the room's last occupancy frame: {count, joined, left, recent}
    this.stale = false; // members left (counted, not named) since the list was asked for
    this.recentLine = null; // the occupancy line and its Refresh list button, made once
  }

  get size() { return this.members.size; }

  // How many are here: the server's count in a room past the presence limit
  // (whose leavers are counted, not named), else the members listed.
  get total() { return this.occupancy ? this.occupancy.count : this.members.size; }

  show() {
    this.shown = true;
    this.roomName.textContent = this.room;
    this.box.hidden = this.missing;
    this.render();
  }

  hide() { this.shown = false; }

  // A new connection asks again; what we knew of leaves still holds.
  forget() {
    this.members.clear();
    this.known = false;
    this.occupancy = null;
    this.stale = false;
    this.render();
  }

  // A `who` page; `count` (the first page's) is newer than the last occupancy frame's.
  snapshot(members, count) {
    this.missing = false;
    this.known = true;
    if (this.shown) this.box.hidden = false;
    if (this.occupancy && typeof count === "number") this.occupancy.count = count;
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
    if (this.occupancy) this.occupancy.count = Math.max(0, this.occupancy.count + (kind === "leave" ? -1 : 1));
    this.render();
  }

  // An occupancy frame: the count, and who joined (newest last) since the one before.
  occupied({ count, joined, left, recent }, at) {
    this.occupancy = { count, joined, left, recent: recent ?? [] };
    if (left) this.stale = true;
    for (const person of this.occupancy.recent) this.add(person.connectionId, at, person);
    this.render();
  }

  // The list again from the server (paged `who`, one read per page).
  refresh() {
    this.members.clear();
    this.stale = false;
    this.render();
    this.onRefresh?.();
  }

  setMe(id) {
    this.me = id;
    this.render();
  }

  // A server without `who`: nobody to list.
  unavailable() {
    this.missing = true;
    if (this.shown) this.box.hidden = true;
  }

  // Kick and Ban for one member, named for screen readers ("Kick alice").
  actions(member, name) {
    const box = document.createElement("span");
    box.className = "actions";
    for (const [text, act] of [["Kick", this.onKick], ["Ban", this.onBan]]) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = `secondary ${text.toLowerCase()}`;
      button.textContent = text;
      button.setAttribute("aria-label", `${text} ${name}`);
      button.addEventListener("click", () => act(member, name));
      box.append(button);
    }
    return box;
  }

  add(id, at, { user, verified, userId }) {
    if (!this.left.has(id)) this.members.set(id, { at, person: { user, verified, userId } });
  }

  // "Just joined: ana, bo and 3 more · 2 left", from the last occupancy frame.
  recentText() {
    const { joined, left, recent } = this.occupancy;
    const names = recent.slice(-5).reverse().map((person) => this.label(person) ?? person.connectionId);
    const more = joined - names.length;
    const parts = [];
    if (names.length) parts.push(`Just joined: ${names.join(", ")}${more > 0 ? ` and ${more} more` : ""}`);
    else if (joined) parts.push(`${joined} joined`);
    if (left) parts.push(`${left} left`);
    return parts.join(" · ");
  }

  // The line under the count, kept across draws (the panel is every room's) so
  // a focused Refresh list button keeps its focus while frames arrive.
  renderRecent() {
    if (!this.recentLine) {
      this.recentLine = document.createElement("span");
      this.refreshButton = document.createElement("button");
      this.refreshButton.type = "button";
      this.refreshButton.className = "secondary refresh";
      this.refreshButton.textContent = "Refresh list";
      this.refreshButton.addEventListener("click", () => this.refresh());
    }
    if (this.recent.firstChild !== this.recentLine) this.recent.replaceChildren(this.recentLine, " ", this.refreshButton);
    this.recentLine.textContent = this.occupancy ? this.recentText() : "";
    this.refreshButton.hidden = !this.stale;
    this.recent.hidden = !this.recentLine.textContent && !this.stale;
  }

  render() {
    if (!this.shown) return;
    this.count.textContent = String(this.total);
    this.renderRecent();
    const me = this.me;
    const sorted = [...this.members].sort(([a, x], [b, y]) => (b === me) - (a === me) || String(x.at).localeCompare(String(y.at)));
    const moderator = this.moderator();
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
      } else if (moderator && !this.self(id, person)) {
        li.append(this.actions({ connectionId: id, ...person }, name ?? id));
      }
      return li;
    }));
  }
}
