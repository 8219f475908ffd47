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
  // The server's rule (chat_core::text::is_control_or_bidi): controls, line and
  // paragraph separators, and bidirectional marks that reorder how a name reads.
  if (/[\p{Cc}\u2028\u2029\u202A-\u202E\u2066-\u2069\u200E\u200F\u061C]/u.test(chosen)) {
    return "A name cannot contain control or text-direction characters.";
  }
  return null;
}

// Why the page will not open `base`, or null. Only ws:// and wss://; plain ws://
// only to this machine (loopback: 127.0.0.0/8, [::1], localhost), because
// everything on it, a token included, crosses the network unencrypted.
export function urlProblem(base) {
  let url;
  try { url = new URL(base); } catch { return `"${base}" is not a ws:// or wss:// URL.`; }
  if (!/^wss?:$/.test(url.protocol)) return `"${base}" is not a ws:// or wss:// URL.`;
  if (url.protocol === "ws:" && !isLoopback(url.hostname)) {
    return `plain ws:// is unencrypted, so the page only uses it on this machine (localhost, 127.x.x.x, [::1]); use wss://${url.host}${url.pathname} instead.`;
  }
  return null;
}

// Whether a URL's hostname (as `URL` normalizes it: "127.0.0.1", "[::1]") is this machine.
export function isLoopback(hostname) {
  const host = hostname.toLowerCase();
  return host === "localhost" || host === "[::1]" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

// The endpoint the page's sign-in is for, as a ws:// or wss:// URL ("" when none):
// config.json's `endpoint` (a ws(s):// URL, or a path on the page's own host, as
// for a page hosted apart from its API), else the endpoint beside the page.
export function configuredEndpoint(config, location) {
  if (typeof config?.endpoint !== "string") return endpointBeside(location);
  try {
    const url = new URL(config.endpoint, location.href);
    if (url.protocol === "http:" || url.protocol === "https:") url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    return /^wss?:$/.test(url.protocol) ? url.href : "";
  } catch {
    return "";
  }
}

// Whether the token may go to `base`: only to the configured endpoint's origin
// (scheme, host and port), never to whatever URL was typed or remembered.
export function tokenGoesTo(base, endpoint) {
  try {
    return Boolean(endpoint) && new URL(base).origin === new URL(endpoint).origin;
  } catch {
    return false;
  }
}

// The address to connect to: room, then a token (`Authorization=Bearer%20…`,
// the authorizer's identity source; browsers cannot set headers on a WebSocket),
// only when `base` is at the configured `endpoint`, or else a chosen, unverified
// name (only where nobody signs in); and coalesced frames. Throws an Error
// saying why (`urlProblem`) for a URL the page will not open.
export function socketUrl(base, room, { token, endpoint, name, auth }) {
  const problem = urlProblem(base);
  if (problem) throw new Error(problem);
  const url = new URL(base);
  url.searchParams.set("room", room);
  url.searchParams.set("batch", "1");
  if (token && tokenGoesTo(base, endpoint)) url.search += `&Authorization=${encodeURIComponent(`Bearer ${token}`)}`;
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
