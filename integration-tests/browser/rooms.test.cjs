// Rooms, members and gap-free recovery in headless Chromium against a running local stack.
// Usage: node rooms.test.cjs <stack websocket url> <output dir>
// Run by integration-tests/tests/browser.rs, which starts and stops the stack.
"use strict";

const assert = require("node:assert/strict");
const path = require("node:path");
const { WAIT, runChecks, WebSocket, step, openChat, line, waitForStatus, connect, say, deleteConnection } = require("./helpers.cjs");

const [wsUrl, outputDir] = process.argv.slice(2);
if (!wsUrl || !outputDir) throw new Error("usage: node rooms.test.cjs <ws://host:port/stage> <output dir>");
const stackUrl = new URL(wsUrl.replace(/^ws/, "http"));
const pageUrl = stackUrl.origin + "/";
const SMALL = { width: 720, height: 560 };

const inRoom = (browser, room, options) => openChat(browser, `${pageUrl}#room=${room}`, { viewport: SMALL, ...options });

// The chat texts on the page, top to bottom, that match `pattern`.
const chatTexts = (page, pattern) => page.evaluate((source) => {
  const wanted = new RegExp(source);
  return [...document.querySelectorAll('#messages li[data-kind="chat"]')]
    .map((li) => li.lastChild.textContent).filter((text) => wanted.test(text));
}, pattern.source);

const memberIds = async (page) => (await page.$$eval("#members li", (items) => items.map((li) => li.dataset.id))).sort();

async function waitForMembers(page, n) {
  await page.waitForFunction((n) => document.querySelectorAll("#members li").length === n
    && document.getElementById("member-count").textContent === String(n), n, WAIT);
}

async function waitCaughtUp(page) {
  await page.waitForFunction(() => document.getElementById("status").dataset.state === "connected"
    && document.getElementById("messages").getAttribute("aria-busy") === "false", null, WAIT);
}

// Says a line, then reads the page's own id from its member list ("you").
async function myId(page, text) {
  await say(page, text);
  await page.locator("#messages li.mine", { hasText: text }).waitFor(WAIT);
  await page.locator("#members li.me").waitFor(WAIT);
  return page.$eval("#members li.me", (li) => li.dataset.id);
}

// Every event on the page once, in id order.
async function assertOrderedOnce(page) {
  const ids = await page.$$eval("#messages li[data-id]", (items) => items.map((li) => li.dataset.id));
  assert.deepEqual(ids, [...new Set(ids)].sort(), "the page's events are in id order, each once");
}

const numbered = (prefix, n) => Array.from({ length: n }, (_, i) => `${prefix}-${String(i + 1).padStart(3, "0")}`);

// A plain WebSocket client in a room: the other user, who writes while a page is away.
class Sender {
  static async open(room) {
    const socket = new WebSocket(`${wsUrl}?room=${room}`);
    await new Promise((resolve, reject) => { socket.once("open", resolve); socket.once("error", reject); });
    return new Sender(socket);
  }

  constructor(socket) { this.socket = socket; }

  // Sends the lines without waiting in between; once all are broadcast back,
  // gives their texts in id order: the order every page must show them in.
  send(texts) {
    const wanted = new Set(texts);
    const got = [];
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`only ${got.length}/${texts.length} lines came back`)), 30_000);
      const onMessage = (data) => {
        const frame = JSON.parse(data);
        if (frame.kind !== "chat" || !wanted.delete(frame.text)) return;
        got.push(frame);
        if (wanted.size) return;
        clearTimeout(timer);
        this.socket.off("message", onMessage);
        resolve(got.sort((a, b) => (a.id < b.id ? -1 : 1)).map((f) => f.text));
      };
      this.socket.on("message", onMessage);
      for (const text of texts) this.socket.send(JSON.stringify({ action: "sendmessage", message: text }));
    });
  }

  close() { this.socket.close(1000); }
}

// Two pages' screenshots side by side in one picture.
async function sideBySide(browser, pages, file) {
  const shots = await Promise.all(pages.map((page) => page.screenshot()));
  const context = await browser.newContext({ viewport: { width: SMALL.width * pages.length + 8, height: SMALL.height } });
  const sheet = await context.newPage();
  const images = shots.map((png) => `<img src="data:image/png;base64,${png.toString("base64")}">`).join("");
  await sheet.setContent(`<body style="margin:0;display:flex;gap:8px;background:#9aa3b2">${images}</body>`);
  await sheet.waitForFunction(() => [...document.images].every((img) => img.complete), null, WAIT);
  await sheet.screenshot({ path: file });
  await context.close();
}

async function badRoomNames(browser) {
  step("a bad room name is refused with a reason and nothing connects");
  const page = await inRoom(browser, "no%20spaces");
  assert.equal(await page.inputValue("#room"), "no spaces", "the address sets the room field");
  await page.click("#connect");
  await page.waitForFunction(() => /Not connected: A room name may only use letters/.test(document.getElementById("notice").textContent), null, WAIT);
  assert.equal(await page.getAttribute("#room", "aria-invalid"), "true");
  assert.equal(await page.getAttribute("#status", "data-state"), "disconnected");
  await page.fill("#room", "r".repeat(65));
  await page.click("#connect");
  await page.waitForFunction(() => /at most 64 characters; this one has 65/.test(document.getElementById("notice").textContent), null, WAIT);
  assert.equal(await page.getAttribute("#status", "data-state"), "disconnected");

  step("a refused upgrade ends in a clear message, not in reconnects");
  await page.fill("#room", "fine");
  await page.fill("#url", wsUrl.replace(/\/[^/]*$/, "/no-such-stage"));
  await page.click("#connect");
  await waitForStatus(page, "error");
  assert.match(await page.textContent("#notice"), /Could not connect to room "fine": the server refused the connection/);
  await page.waitForTimeout(2_500); // longer than the first reconnect delay: it must stay down
  assert.equal(await page.getAttribute("#status", "data-state"), "error");
  await page.context().close();
}

async function twoRooms(browser) {
  step("two rooms: a line in red reaches the other red page and never blue");
  const a = await inRoom(browser, "red");
  await connect(a);
  assert.equal(await a.evaluate(() => location.hash), "#room=red");
  const b = await inRoom(browser, "blue");
  await connect(b);
  const c = await inRoom(browser, "red");
  await connect(c);
  const aId = await myId(a, "red: hello from A");
  await line(c, "red: hello from A").waitFor(WAIT);
  const cId = await myId(c, "red: hi from C");
  await line(a, "red: hi from C").waitFor(WAIT);
  const bId = await myId(b, "blue: hello from B"); // a round trip on B after the red lines
  assert.equal(await line(b, "red:").count(), 0, "blue never sees red's lines");
  for (const page of [a, c]) assert.equal(await line(page, "blue:").count(), 0, "red never sees blue's lines");

  step("member lists: who is in the room, with a count, yourself marked");
  await waitForMembers(a, 2);
  await waitForMembers(c, 2);
  await waitForMembers(b, 1);
  assert.deepEqual(await memberIds(a), [aId, cId].sort());
  assert.deepEqual(await memberIds(c), [aId, cId].sort());
  assert.deepEqual(await memberIds(b), [bId]);
  assert.equal(await a.textContent("#room-name"), "red");
  assert.equal(await b.textContent("#room-name"), "blue");
  await say(b, "anyone in blue?");
  await line(b, "anyone in blue?").waitFor(WAIT);
  await sideBySide(browser, [a, b], path.join(outputDir, "rooms.png"));

  step("member lists follow leaves and joins live");
  await c.click("#disconnect");
  await waitForMembers(a, 1);
  assert.deepEqual(await memberIds(a), [aId]);
  await connect(c);
  await waitForMembers(a, 2);
  await waitForMembers(c, 2);
  assert.ok(!(await memberIds(a)).includes(cId), "C's old connection is gone from the list");
  await waitForMembers(b, 1);

  step("switching rooms: Connect with another room opens it on the same connection");
  await b.fill("#room", "red");
  assert.ok(!(await b.isDisabled("#connect")), "Connect is enabled to switch rooms");
  await b.click("#connect");
  await b.waitForFunction(() => document.getElementById("room-name").textContent === "red", null, WAIT);
  await waitCaughtUp(b);
  assert.equal(await b.evaluate(() => location.hash), "#room=red");
  await waitForMembers(b, 3);
  await waitForMembers(a, 3);
  await line(b, "red: hello from A").waitFor(WAIT); // a first visit shows the room's recent lines
  assert.equal(await line(b, "blue:").count(), 0, "blue's lines left with the room");
  await b.fill("#room", "blue");
  await b.click("#connect");
  await waitCaughtUp(b);
  await line(b, "blue: hello from B").waitFor(WAIT);
  await waitForMembers(b, 1);
  // Several rooms on one connection (issue 23): B is still in red until it leaves it.
  assert.equal(await a.textContent("#member-count"), "3", "B stays in red while blue is on screen");
  await b.click('#room-list li[data-room="red"] .leave');
  await waitForMembers(a, 2);
  assert.equal(await b.locator("#room-list li").count(), 1, "red left B's room list");
  for (const page of [a, b, c]) await page.context().close();
}

async function recovery(browser) {
  const sender = await Sender.open("red");
  // Pages of 40 so that 120 missed lines take several; a slow reconnect so that
  // lines can be sent while the page is away after a server-side close.
  const page = await inRoom(browser, "red", { tuning: { pageLimit: 40, reconnectMs: 4_000 } });
  await connect(page);
  await waitCaughtUp(page);
  await page.evaluate(() => {
    const notice = document.getElementById("notice");
    window.notices = [];
    new MutationObserver(() => window.notices.push(notice.textContent))
      .observe(notice, { childList: true, characterData: true, subtree: true });
  });

  step("Disconnect, 120 lines sent meanwhile, Connect: all recovered once, in order, with live lines mixed in");
  await page.click("#disconnect");
  await waitForStatus(page, "disconnected");
  const missed = await sender.send(numbered("r", 120));
  const started = Date.now();
  await page.click("#connect");
  const live = await sender.send(numbered("l", 20)); // broadcast while the page is catching up
  await waitCaughtUp(page);
  await line(page, "l-020").waitFor(WAIT);
  const elapsed = Date.now() - started;
  assert.deepEqual(await chatTexts(page, /^[rl]-\d+$/), [...missed, ...live]);
  await assertOrderedOnce(page);
  const stats = await page.evaluate(() => window.chatStats);
  assert.ok(stats.events >= 120 && stats.pages >= 3, `recovered in pages: ${JSON.stringify(stats)}`);
  assert.ok((await page.evaluate(() => window.notices)).some((text) => /^Catching up… \d+ events$/.test(text)),
    "progress was shown");
  console.log(`browser: recovered 120/120 missed lines (+20 live) in ${stats.pages} pages of ≤40, `
    + `${stats.events} events fetched, catch-up ${stats.ms} ms, all shown in ${elapsed} ms`);

  step("closed by the server: the automatic reconnect recovers what was sent meanwhile");
  const id = await myId(page, "red: R is here");
  const deleted = await deleteConnection(stackUrl, id);
  assert.equal(deleted.status, 204);
  await page.waitForFunction(() => document.getElementById("notice").textContent.includes("reconnecting"), null, WAIT);
  const whileAway = await sender.send(numbered("s", 30));
  assert.equal(await page.getAttribute("#status", "data-state"), "disconnected", "sent while the page was away");
  await waitForStatus(page, "connected");
  await waitCaughtUp(page);
  await line(page, "s-030").waitFor(WAIT);
  assert.deepEqual(await chatTexts(page, /^s-\d+$/), whileAway);
  await assertOrderedOnce(page);

  step("a reload recovers from the position remembered in localStorage");
  await page.click("#disconnect");
  await waitForStatus(page, "disconnected");
  const beforeReload = await sender.send(numbered("t", 80)); // more than a first visit's 50
  await page.reload();
  await waitCaughtUp(page);
  await line(page, "t-080").waitFor(WAIT);
  assert.deepEqual(await chatTexts(page, /^t-\d+$/), beforeReload);
  await assertOrderedOnce(page);
  await page.context().close();

  step("a gap past the cap: told plainly, the most recent lines shown");
  const capped = await inRoom(browser, "red", { tuning: { pageLimit: 20, maxPages: 2 } });
  await connect(capped);
  await waitCaughtUp(capped);
  await capped.click("#disconnect");
  await waitForStatus(capped, "disconnected");
  const many = await sender.send(numbered("c", 60));
  await connect(capped);
  await waitCaughtUp(capped);
  assert.equal(await capped.textContent("#notice"),
    "More than 40 events were missed while you were away; showing the most recent.");
  const shown = await chatTexts(capped, /^c-\d+$/);
  assert.ok(shown.length >= 45 && shown.length <= 50, `the newest 50 events, ${shown.length} of them lines`);
  assert.deepEqual(shown, many.slice(-shown.length));
  await assertOrderedOnce(capped);
  await capped.context().close();
  sender.close();
}

// A server played by the test (playwright's routeWebSocket), for what the real
// stack does not do on demand.
async function fakeServer(browser, tuning, answer) {
  const page = await openChat(browser, pageUrl, { viewport: SMALL, tuning });
  await page.context().routeWebSocket(/\/dev/, (ws) => ws.onMessage((raw) => answer(ws, JSON.parse(raw))));
  return page;
}

async function seedServer(browser) {
  step("a seed server (no who, no history): nothing shown for them, chat works");
  const page = await fakeServer(browser, undefined, (ws, command) => {
    if (command.action === "sendmessage") {
      ws.send(JSON.stringify({ message: `[2026-11-24T10:15:30Z - UTC]\n seedId  ${command.message}\n` }));
    } else {
      ws.send(JSON.stringify({ error: "Invalid request", message: "The requested action is not recognized. Please check your WebSocket commands." }));
    }
  });
  await connect(page);
  await waitCaughtUp(page);
  await say(page, "hello seed");
  await line(page, "hello seed").waitFor(WAIT);
  assert.equal(await page.locator("#messages li.error").count(), 0, "no error line");
  assert.ok(await page.isHidden("#people"), "no member list without who");
  assert.equal(await page.textContent("#notice"), "");
  await page.context().close();
}

async function interleavedPages(browser) {
  step("live lines between history pages, one with an older id: every event once, in id order");
  const id = (n) => `00000000-0000-7000-8000-${String(n).padStart(12, "0")}`;
  const at = (n) => new Date(Date.UTC(2026, 10, 24, 10) + n * 1000).toISOString().replace(".000Z", "Z");
  const chat = (n, text = `m-${n}`) => ({ message: `[${at(n)} - UTC]\n peer  ${text}\n`, id: id(n), connectionId: "peer",
    text, timestamp: at(n), kind: "chat", room: "mock" });
  const log = Array.from({ length: 130 }, (_, i) => chat(10 * (i + 1))); // ids 10, 20, … 1300
  const asked = [];
  let live = 0;
  const page = await fakeServer(browser, { pageLimit: 25 }, (ws, command) => {
    if (command.action === "who") {
      ws.send(JSON.stringify({ kind: "presence", room: "mock", count: 1, members: [{ connectionId: "me", connectedAt: at(0) }] }));
    }
    if (command.action !== "history") return;
    asked.push(command.since ?? null);
    const sorted = [...log].sort((a, b) => (a.id < b.id ? -1 : 1));
    const byTime = command.since?.endsWith("Z");
    const after = !command.since ? sorted : sorted.filter((e) => (byTime ? e.timestamp > command.since : e.id > command.since));
    const page = command.since ? after.slice(0, command.limit) : after.slice(-command.limit);
    for (const event of page) ws.send(JSON.stringify(event));
    if (command.since && page.length > 5) {
      // Written meanwhile: by a late writer, with an id inside this page; and a new line.
      live += 1;
      const older = chat(Number(page[3].id.slice(-12)) + 5, `late-${live}`);
      const newer = chat(2000 + 10 * live, `live-${live}`);
      log.push(older, newer);
      ws.send(JSON.stringify(older));
      ws.send(JSON.stringify(newer));
    }
    ws.send(JSON.stringify({ kind: "history", room: "mock", count: page.length, more: after.length > page.length }));
  });
  // The page last showed event 100 (remembered in localStorage); the rest was missed.
  await page.evaluate((mark) => localStorage.setItem("websocket-chat-last", JSON.stringify({ mock: mark })), { id: id(100), timestamp: at(100) });
  await page.goto(`${pageUrl}#room=mock`);
  await page.reload(); // a hash change alone does not load the page again
  await connect(page);
  await waitCaughtUp(page);
  const shown = await page.$$eval("#messages li[data-id]", (items) => items.map((li) => li.dataset.id));
  const expected = log.map((e) => e.id).filter((i) => i >= id(100)).sort();
  assert.deepEqual(shown, expected, "every event from the remembered one on, once, in id order");
  assert.equal(asked[0], null, "an empty page first shows the newest");
  assert.equal(asked[1], at(95), "recovery starts 5 s before the remembered event");
  assert.ok(asked.slice(2).every((since) => /^0{8}-/.test(since)), "then pages by id");
  console.log(`browser: ${expected.length} events (${2 * live} of them live, ${live} with an older id) `
    + `in ${asked.length - 1} recovery requests, all once and in order`);
  await page.context().close();
}

runChecks(async (browser) => {
  await badRoomNames(browser);
  await twoRooms(browser);
  await recovery(browser);
  await seedServer(browser);
  await interleavedPages(browser);
}, "all room checks passed");
