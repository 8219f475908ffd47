// Where the page connects: the room and name rules the server enforces (it
// refuses others with 400), the socket's URL, and the room in the page's address.

const ROOM_RULE = /^[A-Za-z0-9_-]{1,64}$/;
const MAX_NAME = 32;

// Why `name` is not a room name, or null.
export function roomProblem(name) {
  if (!name) return "Enter a room name.";
  if (name.length > 64) return `A room name has at most 64 characters; this one has ${name.length}.`;
  if (!ROOM_RULE.test(name)) return "A room name may only use letters, digits, - and _ (no spaces or other signs).";
  return null;
}

// Why an optional display name would be refused, or null.
export function nameProblem(chosen) {
  if ([...chosen].length > MAX_NAME) return `A name has at most ${MAX_NAME} characters.`;
  if (/\p{Cc}/u.test(chosen)) return "A name cannot contain control characters.";
  return null;
}

// The address to connect to: room, then a token (`Authorization=Bearer%20…`,
// the authorizer's identity source; browsers cannot set headers on a WebSocket)
// or else a chosen, unverified name (only where nobody signs in); and coalesced
// frames. Throws on a URL that is not ws:// or wss://.
export function socketUrl(base, room, { token, name, auth }) {
  const url = new URL(base);
  if (!/^wss?:$/.test(url.protocol)) throw new Error("not a WebSocket URL");
  url.searchParams.set("room", room);
  url.searchParams.set("batch", "1");
  if (token) url.search += `&Authorization=${encodeURIComponent(`Bearer ${token}`)}`;
  else if (name && auth === "none") url.searchParams.set("name", name);
  return url.href;
}

// The room named by the page's address (#room=NAME), or null.
export function roomFromHash(hash) {
  const match = /^#room=(.*)$/.exec(hash);
  try { return match ? decodeURIComponent(match[1]) : null; } catch { return match[1]; }
}

// The local stack serves the page beside its endpoint (`/dev`); a page opened
// from a file has none.
export function endpointBeside(location) {
  if (!location.protocol.startsWith("http")) return "";
  return `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/dev`;
}
