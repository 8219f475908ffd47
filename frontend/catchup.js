// Catching up after a (re)connect, room after room, one request in flight at a
// time: a room added to the connection is subscribed first (with `since`, its
// answer is the first recovery page), then `who`, then `history` pages
// (recovery.js says which). One request at a time keeps answers unambiguous:
// API Gateway's "Too Many Requests" does not say which request it refuses, and an
// older server's "Invalid request" does not say which action it does not know.

import { Backoff, CatchUp } from "./recovery.js";

const ANSWER_WAIT_MS = 5_000; // an older server may never answer `who` or end `history`

/** API Gateway's answer to a frame its stage throttling dropped unprocessed. */
export function isThrottled(frame) {
  return frame.message === "Too Many Requests" && !frame.kind && !frame.id;
}

/**
 * The connection's catch-up queue. A room is a plain object with `name`,
 * `seen` (ids shown), `caughtUp`, `shortfall` (a Set of what was given up on),
 * `members` and `timeline`.
 */
export class CatchUpQueue {
  // send(command); mark(name): the room's remembered position, or null;
  // busyElsewhere(): whether another request of the page (a line, `rooms`,
  // `read`) may be unanswered; on: {progress(text), tooFar(room, cap),
  // finished(room, stats), drained()}.
  constructor({ tuning, send, mark, busyElsewhere, on }) {
    Object.assign(this, { tuning, send, mark, busyElsewhere, on });
    this.queue = []; // rooms waiting for their turn: [{room, subscribe}]
    this.room = null; // the room being caught up, and its CatchUp
    this.catchUp = null;
    this.waiting = null; // "subscribe", "who" or "history": the answer that decides what comes next
    this.watchdog = null;
    this.asked = null; // the command whose answer we wait for (sent again if throttled)
    this.backoff = null; // the Backoff of `asked`, once it was throttled
    this.retryTimer = null; // a re-send of `asked` waiting for its turn
    this.maybeThrottled = false; // a "Too Many Requests" came that may be `asked`'s or another request's
    this.throttledCount = 0; // "Too Many Requests" answers to this connection's catch-up, for tests
  }

  enqueue(room, subscribe) {
    if (this.room === room || this.queue.some((job) => job.room === room)) return;
    this.queue.push({ room, subscribe });
    if (!this.room) this.next();
  }

  // `room` is left, or is to be subscribed again: its answers are not awaited any more.
  drop(room) {
    this.queue = this.queue.filter((job) => job.room !== room);
    if (this.room === room) this.next();
  }

  // The connection ended: unfinished catch-ups are redone on the next one.
  reset() {
    this.queue = [];
    this.next();
    this.throttledCount = 0;
  }

  // A frame came: the server is still answering, so the watchdog waits on.
  alive() { this.watch(); }

  // An event of `room` arrived (before dedupe: it tells where a history page ended).
  saw(room, id) { if (this.room === room) this.catchUp.saw(id); }

  subscribed(room) {
    // Without `since` the answer ends here; with it, the history end frame follows.
    if (this.waiting === "subscribe" && this.room === room && !this.catchUp.current?.since) this.request();
  }

  presence(room) { if (this.waiting === "who" && this.room === room) this.request(); }

  historyEnd(room, frame) {
    if (this.room !== room || !this.catchUp.current) return;
    const outcome = this.catchUp.ended(frame);
    if (outcome === "too-far") this.on.tooFar(room, this.catchUp.cap);
    else if (outcome === "page") this.on.progress(`Catching up… ${this.catchUp.events} events`);
    this.request();
  }

  // "Invalid request" while waiting: a server without that action, not the
  // user's error, so the step is skipped. False when nothing waits.
  refused() {
    if (!this.waiting) return false;
    if (this.waiting === "who") {
      this.room.members.unavailable();
      this.request();
    } else {
      if (this.waiting === "subscribe") this.room.timeline.note(`This server cannot add "${this.room.name}" to the connection.`, "error");
      this.finish();
    }
    return true;
  }

  // "Too Many Requests" (API Gateway's answer to a frame its stage throttling
  // dropped unprocessed). False when no request of ours waits: not ours.
  // While another request may be unanswered too, it may be that one's, and
  // sending `asked` again could bring its answer twice, so the watchdog
  // decides: no answer within its wait means it was ours.
  throttled() {
    if (!this.asked) return false;
    if (this.retryTimer) return true; // already waiting to try again
    this.throttledCount += 1;
    if (this.busyElsewhere()) this.maybeThrottled = true;
    else this.retryLater();
    return true;
  }

  // Starts the next room's catch-up (dropping an unfinished one).
  next() {
    this.expect(null);
    this.room?.timeline.setBusy(false);
    this.room = this.catchUp = null;
    const job = this.queue.shift();
    if (!job) return this.on.drained();
    const { room } = job;
    this.room = room;
    room.caughtUp = false;
    room.shortfall.clear();
    room.members.forget();
    room.timeline.setBusy(true);
    this.catchUp = new CatchUp({ room: room.name, emptyPage: room.seen.size === 0, mark: this.mark(room.name),
      subscribe: job.subscribe, tuning: this.tuning });
    this.request();
  }

  // Sends the room's next request and waits for its answer, or ends the room's catch-up.
  request() {
    const command = this.catchUp.next();
    if (!command) return this.finish();
    this.expect(command.action);
    this.asked = command;
    this.send(command);
  }

  expect(what) {
    this.waiting = what;
    this.asked = null;
    this.backoff = null;
    this.maybeThrottled = false;
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.watch();
  }

  // (Re)starts the watchdog: an answer that never comes ends the wait. Not while a
  // throttled request waits to be sent again: its own try restarts it.
  watch() {
    clearTimeout(this.watchdog);
    if (!this.waiting || this.retryTimer) return;
    const what = this.waiting;
    this.watchdog = setTimeout(() => {
      if (this.maybeThrottled) return this.retryLater(); // no answer since: it was ours
      return what === "history" ? this.finish() : this.request();
    }, ANSWER_WAIT_MS);
  }

  // Sends `asked` again after a back-off, and says so; when the tries are used up,
  // goes on without it (the room's `shortfall` says what is missing).
  retryLater() {
    this.maybeThrottled = false;
    const { retryFirstMs: firstMs, retryCapMs: capMs, retryTries: tries } = this.tuning;
    this.backoff ??= new Backoff({ firstMs, capMs, tries });
    const delay = this.backoff.next();
    if (delay === null) return this.gaveUp();
    this.on.progress("Catching up… (server busy, retrying)");
    this.resendAfter(delay);
  }

  // "Rate limited" (the server's per-user bucket for `history` and `who`): the
  // request waiting for its answer is sent again once the wait named is over.
  // False when no request of ours for `action` waits: not ours.
  limited(action, ms) {
    if (this.asked?.action !== action) return false;
    this.on.progress(`Catching up… (asking too fast, retrying in ${Math.ceil(ms / 1000)}s)`);
    clearTimeout(this.retryTimer);
    this.resendAfter(ms);
    return true;
  }

  resendAfter(delay) {
    const command = this.asked;
    clearTimeout(this.watchdog);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      if (this.asked !== command) return;
      this.watch();
      this.send(command);
    }, delay);
  }

  gaveUp() {
    if (this.waiting !== "history") {
      this.room.shortfall.add(this.waiting === "who" ? "who is here" : "the room itself");
      return this.request();
    }
    this.room.shortfall.add("earlier messages");
    this.finish();
  }

  finish() {
    const room = this.room;
    room.caughtUp = true;
    this.on.finished(room, { ...this.catchUp.stats(), throttled: this.throttledCount });
    this.next();
  }
}
