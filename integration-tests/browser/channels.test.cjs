// Several rooms on one socket (issue 23) in headless Chromium against a running
// local stack started with --jwt-secret (SECRET below) and --max-rooms 3: two
// pages signed in as the same user, three rooms each. Unread badges rise for the
// rooms not on screen and clear on read (the other page's `rooms` answer then
// shows 0: the cursor is the user's); switching rooms keeps each timeline; after
// the server closes the connection every room's gap is recovered once and in
// order; a fourth room is refused visibly; a "Not subscribed" answer is shown and
// the room subscribed again; the phone layout and axe-core.
// Usage: node channels.test.cjs <stack websocket url> <output dir>
// Run by integration-tests/tests/browser.rs, which starts and stops the stack.
"use strict";

const assert = require("node:assert/strict");
const path = require("node:path");
const { axeViolations, WAIT, Peer, runChecks, step, waitForStatus, say, deleteConnection, mintToken, signedInPage, listOf, rowOf,
  caughtUp, joinRoom, switchTo, waitUntil } = require("./helpers.cjs");

const [wsUrl, outputDir] = process.argv.slice(2);
if (!wsUrl || !outputDir) throw new Error("usage: node channels.test.cjs <ws://host:port/stage> <output dir>");
const SECRET = "browser-test-secret-of-32-bytes-or-more"; // the stack's --jwt-secret (browser.rs)
const stackUrl = new URL(wsUrl.replace(/^ws/, "http"));
const origin = stackUrl.origin;
const ROOMS = ["ch-one", "ch-two", "ch-three"];
// Read marks and focus polls without waiting; a slow reconnect, so lines can be sent while a page is away.
const TUNING = { readEveryMs: 300, roomsFocusMs: 0, reconnectMs: 3000 };
const DESKTOP = { width: 1000, height: 620 };
const ATTACHED = { ...WAIT, state: "attached" }; // in a room's list, shown or not

const token = (sub, name) => mintToken(SECRET, sub, name);
const numbered = (prefix, n) => Array.from({ length: n }, (_, i) => `${prefix}-${String(i + 1).padStart(2, "0")}`);
const signedIn = (browser, minted, room, { viewport = DESKTOP, route } = {}) =>
  signedInPage(browser, origin, minted, room, { viewport, tuning: TUNING, route });
const join = joinRoom;

// The badge of `room` as shown ("" when none).
const badge = (page, room) => page.evaluate((selector) => {
  const node = document.querySelector(`${selector} .badge:not([hidden])`);
  return node ? node.firstChild.textContent : "";
}, rowOf(room));

async function waitForBadge(page, room, text) {
  await page.waitForFunction(([selector, want]) => {
    const node = document.querySelector(`${selector} .badge:not([hidden])`);
    return (node ? node.firstChild.textContent : "") === want;
  }, [rowOf(room), text], WAIT);
}

// The chat texts of a room's timeline (shown or not), top to bottom.
const texts = (page, room) => page.$$eval(`${listOf(room)} li[data-kind="chat"]`, (items) => items.map((li) => li.lastChild.textContent));

async function assertOrderedOnce(page, room) {
  const ids = await page.$$eval(`${listOf(room)} li[data-id]`, (items) => items.map((li) => li.dataset.id));
  assert.deepEqual(ids, [...new Set(ids)].sort(), `${room}: every event once, in id order`);
}

async function accessibility(page) {
  assert.deepEqual(await axeViolations(page), [], "axe found no violations");
}

// A plain client per room: bob, who writes while the pages watch (or are away).
async function writers() {
  const bob = token("bob", "bob");
  const peers = {};
  for (const room of ROOMS) {
    peers[room] = await Peer.open(`${wsUrl}?room=${room}&Authorization=${encodeURIComponent(`Bearer ${bob.token}`)}`);
  }
  return {
    async say(room, lines) { for (const text of lines) await peers[room].say(text); },
    close() { Object.values(peers).forEach((peer) => peer.close()); },
  };
}

async function channels(browser) {
  step("two pages of one user, three rooms each, on one socket each");
  const alice = token("alice", "alice");
  const a = await signedIn(browser, alice, ROOMS[0]);
  const b = await signedIn(browser, alice, ROOMS[0]);
  for (const page of [a, b]) {
    await caughtUp(page, ROOMS[0]);
    for (const room of ROOMS.slice(1)) await join(page, room);
    await switchTo(page, ROOMS[0]);
    assert.deepEqual(await page.$$eval("#room-list li", (items) => items.map((li) => li.dataset.room)), ROOMS);
    assert.deepEqual(await page.evaluate(() => JSON.parse(localStorage.getItem("websocket-chat-rooms"))), ROOMS, "kept for a reload");
    assert.equal(await page.evaluate(() => location.hash), `#room=${ROOMS[0]}`);
  }
  const opened = (page) => page.sent.filter((c) => c.action === "subscribe").map((c) => c.room);
  assert.deepEqual(opened(a), ROOMS.slice(1), "one subscribe per added room");

  step("lines in rooms not on screen raise their badges at once (chat lines only, not joins); the title sums them");
  const bob = await writers(); // bob's joins arrive in all three rooms: no badge
  await bob.say("ch-two", numbered("two", 3));
  await bob.say("ch-three", numbered("three", 2));
  for (const page of [a, b]) {
    await waitForBadge(page, "ch-two", "3");
    await waitForBadge(page, "ch-three", "2");
    assert.equal(await badge(page, "ch-one"), "");
    assert.equal(await page.title(), "(5) WebSocket chat");
  }
  await accessibility(a);

  step("switching to a room clears its badge and sends one read mark; the other page's `rooms` answer then says 0 too");
  const sentBeforeSwitch = a.sent.length;
  await switchTo(a, "ch-two");
  await waitForBadge(a, "ch-two", "");
  assert.deepEqual(await texts(a, "ch-two"), numbered("two", 3));
  await a.waitForFunction(() => document.title === "(2) WebSocket chat", null, WAIT);
  await a.screenshot({ path: path.join(outputDir, "channels.png") });
  const newest = (await a.$$eval(`${listOf("ch-two")} li[data-id]`, (items) => items.map((li) => li.dataset.id))).at(-1);
  await waitUntil(() => a.got.some((f) => f.kind === "read" && f.room === "ch-two" && f.id === newest), "the answer to A's read of ch-two");
  const reads = a.sent.slice(sentBeforeSwitch).filter((c) => c.action === "read" && c.room === "ch-two");
  assert.equal(reads.length, 1, "one read mark");
  assert.equal(reads[0].id, newest, "at the newest line shown");
  await b.evaluate(() => window.dispatchEvent(new Event("focus"))); // B asks `rooms`
  await waitForBadge(b, "ch-two", "");
  assert.equal(await badge(b, "ch-three"), "2", "B: ch-three still unread");
  await b.waitForFunction(() => document.title === "(2) WebSocket chat", null, WAIT);

  step("switching rooms keeps each timeline (nothing asked again), by mouse and by keyboard");
  const before = a.sent.length;
  await switchTo(a, "ch-one");
  await a.focus(`${rowOf("ch-three")} .switch`);
  await a.keyboard.press("Enter");
  await a.waitForFunction(() => document.getElementById("messages").getAttribute("aria-label") === "Messages in ch-three", null, WAIT);
  assert.deepEqual(await texts(a, "ch-three"), numbered("three", 2));
  await waitForBadge(a, "ch-three", "");
  await switchTo(a, "ch-two");
  assert.deepEqual(await texts(a, "ch-two"), numbered("two", 3));
  const asked = a.sent.slice(before).filter((c) => ["history", "subscribe", "who"].includes(c.action));
  assert.deepEqual(asked, [], "switching sends no history, subscribe or who");
  await say(a, "two: from alice");
  await b.locator(`${listOf("ch-two")} li[data-kind="chat"]`, { hasText: "two: from alice" }).waitFor(ATTACHED);
  assert.equal(a.sent.find((c) => c.action === "sendmessage" && c.message === "two: from alice").room, "ch-two",
    "a line goes with the room on screen");
  assert.equal(await badge(b, "ch-two"), "", "your own line is no news");

  step("closed by the server: after the reconnect every room's gap is recovered once and in order");
  const id = await a.$eval("#members li.me", (li) => li.dataset.id);
  const sentBefore = a.sent.length;
  assert.equal((await deleteConnection(stackUrl, id)).status, 204);
  await a.waitForFunction(() => document.getElementById("notice").textContent.includes("reconnecting"), null, WAIT);
  const gaps = {};
  for (const room of ROOMS) {
    gaps[room] = numbered(`gap-${room}`, 4);
    await bob.say(room, gaps[room]);
  }
  assert.equal(await a.getAttribute("#status", "data-state"), "disconnected", "written while A was away");
  await waitForStatus(a, "connected");
  for (const room of ROOMS) {
    await caughtUp(a, room);
    await a.locator(`${listOf(room)} li[data-kind="chat"]`, { hasText: gaps[room].at(-1) }).waitFor(ATTACHED);
  }
  assert.deepEqual(await texts(a, "ch-one"), gaps["ch-one"]);
  assert.deepEqual(await texts(a, "ch-two"), [...numbered("two", 3), "two: from alice", ...gaps["ch-two"]]);
  assert.deepEqual(await texts(a, "ch-three"), [...numbered("three", 2), ...gaps["ch-three"]]);
  for (const room of ROOMS) await assertOrderedOnce(a, room);
  const again = a.sent.slice(sentBefore).filter((c) => c.action === "subscribe");
  assert.deepEqual(again.map((c) => c.room).sort(), ["ch-one", "ch-three"], "the rooms besides ?room= subscribed again");
  assert.ok(again.every((c) => typeof c.since === "string"), "each with since (the recovery overlap)");
  console.log(`browser: after a forced reconnect, ${ROOMS.length} rooms each recovered their 4 missed lines once and in order `
    + `(${again.length} subscribes with since, ${a.sent.slice(sentBefore).filter((c) => c.action === "history").length} history requests)`);
  // Recovered lines are not counted locally; the server's `rooms` answer counts
  // them from alice's cursor: ch-three's 4; ch-one's were read on B, where it is on screen.
  await waitForBadge(a, "ch-three", "4");
  assert.equal(await badge(a, "ch-one"), "");
  assert.equal(await badge(a, "ch-two"), "");

  step("a room past the connection's limit (--max-rooms 3) is refused visibly and leaves the list");
  await a.fill("#join-room", "ch-four");
  await a.press("#join-room", "Enter");
  await a.waitForFunction(() => /^Could not join "ch-four": /.test(document.getElementById("notice").textContent), null, WAIT);
  await a.waitForFunction(() => !document.querySelector('#room-list li[data-room="ch-four"]'), null, WAIT);
  assert.deepEqual(await a.evaluate(() => JSON.parse(localStorage.getItem("websocket-chat-rooms"))), ROOMS);
  assert.equal(await a.evaluate(() => document.getElementById("messages").getAttribute("aria-label")), "Messages in ch-two");

  step("leave: unsubscribe, the room goes from the list and no longer counts");
  await a.click(`${rowOf("ch-three")} .leave`);
  await waitUntil(() => a.got.some((f) => f.kind === "unsubscribed" && f.room === "ch-three"), "unsubscribed");
  await bob.say("ch-three", ["after A left"]);
  await b.locator(`${listOf("ch-three")} li[data-kind="chat"]`, { hasText: "after A left" }).waitFor(ATTACHED);
  assert.equal(await a.locator(rowOf("ch-three")).count(), 0);
  assert.ok(!a.got.some((f) => f.text === "after A left"), "nothing of ch-three reaches A any more");
  await phone(browser);
  bob.close();
  for (const page of [a, b]) await page.context().close();
}

async function phone(browser) {
  step("the phone layout: the rooms in one row above the messages, no horizontal scrolling");
  const carol = await signedIn(browser, token("carol", "carol"), ROOMS[0], { viewport: { width: 390, height: 760 } });
  await caughtUp(carol, ROOMS[0]);
  for (const room of ROOMS.slice(1)) await join(carol, room);
  await switchTo(carol, ROOMS[0]);
  const overflow = await carol.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `no horizontal scrolling (${overflow}px)`);
  await carol.screenshot({ path: path.join(outputDir, "channels-phone.png") });
  await accessibility(carol);
  await carol.context().close();
}

// A server played by the test: a line answered "Not subscribed" is shown, and the room subscribed again.
async function notSubscribed(browser) {
  step("a \"Not subscribed\" answer is shown and the room is subscribed again; the line then goes");
  const commands = [];
  const page = await signedIn(browser, token("dave", "dave"), "solo", {
    route: (ws) => ws.onMessage((raw) => {
      const command = JSON.parse(raw);
      commands.push(command);
      const answer = (frame) => ws.send(JSON.stringify(frame));
      if (command.action === "who") answer({ kind: "presence", room: command.room, you: "me", members: [] });
      if (command.action === "history") answer({ kind: "history", room: command.room, count: 0, more: false });
      if (command.action === "subscribe") answer({ kind: "subscribed", room: command.room, count: 1 });
      if (command.action !== "sendmessage" || command.message === "ping") return;
      if (commands.filter((c) => c.action === "sendmessage").length === 1) {
        return answer({ error: "Not subscribed", room: command.room, message: `This connection is not subscribed to room "${command.room}".` });
      }
      answer({ ack: "01900000-0000-7000-8000-000000000009", clientMessageId: command.clientMessageId });
    }),
  });
  await caughtUp(page, "solo");
  await say(page, "hello solo");
  await page.locator('#messages li.error', { hasText: 'Not subscribed to "solo"' }).waitFor(WAIT);
  await page.waitForFunction(() => /Not subscribed to "solo"; joining it again/.test(document.getElementById("notice").textContent), null, WAIT);
  await waitUntil(() => commands.some((c) => c.action === "subscribe" && c.room === "solo"), "a subscribe for solo");
  await page.waitForFunction(() => document.querySelectorAll("#messages li.pending").length === 0, null, { timeout: 15_000 });
  assert.equal(commands.filter((c) => c.action === "sendmessage" && c.message === "hello solo").length, 2, "sent again after subscribing");
  await page.context().close();
}

runChecks(async (browser) => {
  await channels(browser);
  await notSubscribed(browser);
}, "all channel checks passed");
