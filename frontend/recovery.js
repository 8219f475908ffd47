// Gap-free recovery. The page remembers, per room, the newest event it showed
// while caught up. After any (re)connect it asks, room after room, `history` (or
// `subscribe` with `since`, for a room added to the connection) from that event's time
// minus an overlap (ids from concurrent writers are not strictly monotonic, so a
// strict "after this id" could skip one), then page by page while `more`. Lines are
// deduped and placed by id, so live lines arriving meanwhile can show at once.

const KEY = "websocket-chat-last";

// Per room, `{id, timestamp}` of the newest event shown while caught up; kept in
// localStorage so that a reload recovers too.
export class Positions {
  constructor() {
    try { this.byRoom = JSON.parse(localStorage.getItem(KEY)) ?? {}; } catch { this.byRoom = {}; }
  }

  get(room) { return this.byRoom[room] ?? null; }

  set(room, event) {
    this.byRoom[room] = event;
    try { localStorage.setItem(KEY, JSON.stringify(this.byRoom)); } catch { /* storage full or disabled */ }
  }
}

// One room's catch-up on one connection, one request at a time: `subscribe`
// (a room added to the connection; with `since` its answer is the first
// recovery page), `who`, then `history`; each history answer is closed by
// `{"kind":"history","room","count":K,"more":bool}`.
export class CatchUp {
  // room: its name. emptyPage: nothing of the room is shown (first visit,
  // reload): show its newest events too. mark: the remembered position, if any.
  // subscribe: the room is not on the connection yet (the `?room=` one is).
  constructor({ room, emptyPage, mark, subscribe = false, tuning }) {
    this.room = room;
    this.tuning = tuning;
    const history = [];
    if (emptyPage) history.push({ type: "history", limit: tuning.firstVisit });
    if (mark) history.push({ type: "history", limit: tuning.pageLimit, since: isoMinus(mark.timestamp, tuning.overlapMs), recover: true });
    const recover = subscribe ? history.find((step) => step.recover) : null;
    this.plan = [
      ...(subscribe ? [{ ...recover, type: "subscribe" }] : []),
      { type: "who" },
      ...history.filter((step) => step !== recover),
    ];
    this.current = null;
    this.pages = 0;
    this.events = 0;
    this.started = performance.now();
  }

  // The next command to send, or null when caught up.
  next() {
    const step = this.plan.shift();
    this.current = step ? { ...step, ids: [] } : null;
    if (!step) return null;
    const { type, limit, since } = step;
    return { action: type, room: this.room, ...(limit && { limit }), ...(since && { since }) };
  }

  // Any event frame of the room that arrived, history or live, shown before or not.
  saw(id) { this.current?.ids.push(id); }

  // The closing frame of the current answer: "page" (a recovery page counted),
  // "too-far" (past the cap: the caller clears the page; the newest come next), or null.
  ended({ count, more }) {
    const step = this.current;
    this.current = null;
    if (!step?.recover) return null;
    this.pages += 1;
    this.events += count;
    if (!more) return "page";
    if (this.pages >= this.tuning.maxPages) {
      this.plan = [...this.plan.filter((s) => s.type !== "history"), { type: "history", limit: this.tuning.firstVisit }];
      return "too-far";
    }
    // The page holds the K smallest ids after `since`. Live frames that came
    // meanwhile are newer, so the K-th smallest id received is the page's last
    // (were a live one older, a few events are only asked for twice).
    const ids = step.ids.filter((id) => id > (step.afterId ?? "")).sort();
    const last = ids[Math.min(count, ids.length) - 1];
    if (last) this.plan.unshift({ ...step, type: "history", since: last, afterId: last });
    return "page";
  }

  get cap() { return this.tuning.maxPages * this.tuning.pageLimit; }

  stats() { return { pages: this.pages, events: this.events, ms: Math.round(performance.now() - this.started) }; }
}

function isoMinus(iso, ms) {
  const at = Date.parse(iso);
  return Number.isNaN(at) ? iso : new Date(at - ms).toISOString().replace(/\.\d+Z$/, "Z");
}

// Re-sending a catch-up request the stage throttled ("Too Many Requests": API
// Gateway dropped it unprocessed). Exponential back-off with jitter, so pages
// reconnecting together after an outage do not ask again in lockstep; bounded,
// so a server that stays busy ends in a clear "incomplete" instead of forever.
export class Backoff {
  constructor({ firstMs, capMs, tries }, random = Math.random) {
    Object.assign(this, { firstMs, capMs, max: tries, random });
    this.tries = 0;
  }

  // The wait before the next try (half the doubled delay, plus up to as much
  // again at random), or null when the tries are used up.
  next() {
    if (this.tries >= this.max) return null;
    const delay = Math.min(this.firstMs * 2 ** this.tries, this.capMs);
    this.tries += 1;
    return Math.round(delay / 2 + (delay / 2) * this.random());
  }
}
