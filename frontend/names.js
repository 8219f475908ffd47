// Telling people apart. A verified line carries a stable `userId`
// (issuer-qualified: "https://issuer|sub", "local|sub"); the display name is only
// a label that anyone may share. When two different userIds in the room go by
// the same name, each is shown with a short tag drawn from its userId
// ("alice #k3f9"), the same on every page and every visit; the full userId is in
// the row's title.

const TAG_LENGTH = 4;

// A short, stable tag for `userId`: FNV-1a (32-bit) in base 36. Four characters
// tell apart the few people who share one name in a room; it is a label, not a
// proof (the userId is).
export function userTag(userId) {
  let hash = 0x811c9dc5;
  for (const byte of new TextEncoder().encode(userId)) {
    hash ^= byte;
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash.toString(36).padStart(TAG_LENGTH, "0").slice(-TAG_LENGTH);
}

/** The verified names seen in a room, and which of them more than one user shares. */
export class Names {
  constructor() {
    this.users = new Map(); // display name -> Set of userIds
  }

  clear() { this.users.clear(); }

  // A verified `name` used by `userId`; true when it made a name ambiguous (redraw).
  note(name, userId) {
    if (!name || !userId) return false;
    const ids = this.users.get(name) ?? new Set();
    this.users.set(name, ids);
    if (ids.has(userId)) return false;
    ids.add(userId);
    return ids.size === 2;
  }

  // `name` as shown: with its user's tag while another user shares it.
  label(name, userId) {
    if (!name || !userId || (this.users.get(name)?.size ?? 0) < 2) return name;
    return `${name} #${userTag(userId)}`;
  }
}
