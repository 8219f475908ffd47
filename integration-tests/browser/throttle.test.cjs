// A throttled catch-up in headless Chromium: the stage answers some of the page's
// `who`/`history` requests "Too Many Requests" (API Gateway's stage throttling,
// emulated by the local stack's --throttle-rate/--throttle-burst), and the page
// asks again after a back-off until every missed line is shown; a server that
// stays busy ends in a clear "incomplete" warning, not in silence.
// Usage: node throttle.test.cjs <stack websocket url> <output dir>
// Run by integration-tests/tests/browser.rs, which starts the stack throttled.
"use strict";

const assert = require("node:assert/strict");
const path = require("node:path");
const { axeViolations, WAIT, runChecks, WebSocket, step, openChat, waitForStatus, connect, say } = require("./helpers.cjs");

const [wsUrl, outputDir] = process.argv.slice(2);
if (!wsUrl || !outputDir) throw new Error("usage: node throttle.test.cjs <ws://host:port/stage> <output dir>");
const stackUrl = new URL(wsUrl.replace(/^ws/, "http"));
const pageUrl = stackUrl.origin + "/";
const SLOW = { timeout: 60_000 }; // a throttled catch-up takes seconds
const BUSY = "Catching up… (server busy, retrying)";

const numbered = (prefix, n) => Array.from({ length: n }, (_, i) => `${prefix}-${String(i + 1).padStart(3, "0")}`);
const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

async function waitCaughtUp(page, wait = WAIT) {
  await page.waitForFunction(() => document.getElementById("status").dataset.state === "connected"
    && document.getElementById("messages").getAttribute("aria-busy") === "false", null, wait);
}

// Every text the notice line showed, in order (window.notices).
async function recordNotices(page) {
  await page.evaluate(() => {
    const notice = document.getElementById("notice");
    window.notices = [];
    new MutationObserver(() => window.notices.push(`${notice.dataset.tone}: ${notice.textContent}`))
      .observe(notice, { childList: true, characterData: true, subtree: true, attributes: true });
  });
}

// A writer that is throttled too: each line goes with a clientMessageId and is
// sent again (same id, stored once) after "Too Many Requests", until acked.
async function writeThrottled(room, texts) {
  const socket = new WebSocket(`${wsUrl}?room=${room}`);
  await new Promise((resolve, reject) => { socket.once("open", resolve); socket.once("error", reject); });
  let throttled = 0;
  for (const [i, text] of texts.entries()) {
    const clientMessageId = `00000000-0000-4000-8000-${String(i).padStart(12, "0")}`;
    for (;;) {
      const answer = new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no answer to "${text}"`)), WAIT.timeout);
        const onMessage = (data) => {
          const frame = JSON.parse(data);
          const done = frame.ack && frame.clientMessageId === clientMessageId ? "ack"
            : frame.message === "Too Many Requests" ? "throttled" : null;
          if (!done) return;
          clearTimeout(timer);
          socket.off("message", onMessage);
          resolve(done);
        };
        socket.on("message", onMessage);
      });
      socket.send(JSON.stringify({ action: "sendmessage", message: text, clientMessageId }));
      if ((await answer) === "ack") break;
      throttled += 1;
      await sleep(300); // the test's writer, not the page: a fixed pause is its back-off
    }
  }
  socket.close(1000);
  return throttled;
}

const chatTexts = (page) => page.$$eval('#messages li[data-kind="chat"]', (items) => items.map((li) => li.lastChild.textContent));

async function accessibility(page) {
  assert.deepEqual(await axeViolations(page), [], "axe found violations with the warning shown");
}

async function throttledRecovery(browser) {
  step("disconnect, 40 lines written meanwhile, reconnect under stage throttling: all shown once, in order");
  // Pages of 5: the catch-up asks ~10 times in a row, more than the stage's burst.
  const page = await openChat(browser, `${pageUrl}#room=busy`, { tuning: { pageLimit: 5 } });
  await connect(page);
  await waitCaughtUp(page, SLOW);
  await say(page, "before"); // shown while caught up: the position recovery starts from
  await page.locator("#messages li.mine", { hasText: "before" }).waitFor(WAIT);
  await page.click("#disconnect");
  await waitForStatus(page, "disconnected");
  const lines = numbered("t", 40);
  const writerThrottled = await writeThrottled("busy", lines);
  await recordNotices(page);
  const started = Date.now();
  await page.click("#connect");
  await waitForStatus(page, "connected");
  await waitCaughtUp(page, SLOW);
  const elapsed = Date.now() - started;
  assert.deepEqual(await chatTexts(page), ["before", ...lines], "every line once, in order (no gap)");
  const ids = await page.$$eval("#messages li[data-id]", (items) => items.map((li) => li.dataset.id));
  assert.deepEqual(ids, [...new Set(ids)].sort(), "the page's events are in id order, each once");
  const stats = await page.evaluate(() => window.chatStats);
  const notices = await page.evaluate(() => window.notices);
  assert.ok(stats.throttled > 0, `the catch-up was throttled: ${JSON.stringify(stats)}`);
  assert.ok(notices.includes(`info: ${BUSY}`), `the page said it retried: ${JSON.stringify(notices)}`);
  assert.ok(!notices.some((text) => text.startsWith("warn:")), "and did not give up");
  assert.equal(await page.textContent("#notice"), "", "the busy notice is gone once caught up");
  console.log(`browser: 40/40 missed lines shown once and in order after ${stats.throttled} throttled `
    + `catch-up request(s), ${stats.pages} pages, catch-up ${stats.ms} ms, all shown in ${elapsed} ms `
    + `(the writer itself was throttled ${writerThrottled} times)`);

  step("lines typed faster than the stage allows: the outbox sends the throttled ones again, each is stored once");
  const typed = numbered("o", 6);
  for (const text of typed) await say(page, text);
  await page.waitForFunction((n) => document.querySelectorAll("#messages li.pending").length === 0
    && [...document.querySelectorAll('#messages li[data-kind="chat"]')].filter((li) => /^o-/.test(li.lastChild.textContent)).length === n,
  typed.length, SLOW);
  // Each once; in the order they were stored (by id), which is not the typed
  // order when an earlier line was throttled and a later one was not.
  assert.deepEqual((await chatTexts(page)).filter((text) => text.startsWith("o-")).sort(), typed);
  const shownIds = await page.$$eval("#messages li[data-id]", (items) => items.map((li) => li.dataset.id));
  assert.deepEqual(shownIds, [...new Set(shownIds)].sort(), "in id order, each once");
  // Outside a catch-up a throttled frame is shown as the server's note (as before).
  const refused = await page.locator("#messages li", { hasText: "Too Many Requests" }).count();
  assert.ok(refused > 0, "some of the typed lines were throttled");
  console.log(`browser: ${typed.length} lines typed at once, ${refused} of the sends throttled: all acknowledged and shown once`);
  await page.context().close();
}

// A server that throttles every `history`: played by the test (routeWebSocket).
async function stayingBusy(browser) {
  step("a server that stays busy: the same request is tried a bounded number of times, then a clear warning");
  const tries = 4;
  const page = await openChat(browser, `${pageUrl}#room=busy`, { tuning: { retryFirstMs: 50, retryCapMs: 200, retryTries: tries } });
  const asked = [];
  await page.context().routeWebSocket(/\/dev/, (ws) => ws.onMessage((raw) => {
    const command = JSON.parse(raw);
    if (command.action === "who") {
      ws.send(JSON.stringify({ kind: "presence", room: "busy", you: "me", members: [] }));
      // A live line while catching up: it must not become the remembered position.
      return ws.send(JSON.stringify({ kind: "chat", room: "busy", id: "01900000-0000-7000-8000-000000000001",
        timestamp: "2026-12-04T21:00:00Z", connectionId: "other", user: "bob", text: "live" }));
    }
    if (command.action !== "history") return;
    asked.push(raw);
    ws.send(JSON.stringify({ message: "Too Many Requests", connectionId: "me", requestId: `r${asked.length}` }));
  }));
  await recordNotices(page);
  await connect(page);
  await waitCaughtUp(page);
  const notices = await page.evaluate(() => window.notices);
  assert.equal(asked.length, 1 + tries, `the request and ${tries} tries: ${asked.length}`);
  assert.ok(asked.every((raw) => raw === asked[0]), "each try is the same request");
  assert.ok(notices.includes(`info: ${BUSY}`), "the page said it retried");
  const warning = await page.textContent("#notice");
  assert.match(warning, /^Catch-up incomplete: .*earlier messages may be missing/);
  assert.equal(await page.getAttribute("#notice", "data-tone"), "warn");
  assert.equal(await page.evaluate(() => localStorage.getItem("websocket-chat-last")), null,
    "no position remembered past the gap");
  await accessibility(page);
  console.log(`browser: a server that stays busy: ${asked.length} identical history requests, then "${warning}"; axe: 0 violations`);
  await page.screenshot({ path: path.join(outputDir, "throttled.png") });
  await page.context().close();
}

// "Too Many Requests" does not say which request it answers. While a line of the
// page's is unacknowledged, it may be the line's: then the page must not ask for
// the history page again at once (its answer, merely slow, would come twice).
// And when it was the history request's after all, the page asks again once the
// watchdog saw no answer.
async function notOursPerhaps(browser, { historyThrottledFirst }) {
  step(historyThrottledFirst ? "a throttled line and a throttled history request: history is asked again after the watchdog"
    : "a throttled line while history is slow to answer: the history request is not sent twice");
  const page = await openChat(browser, `${pageUrl}#room=busy`);
  await page.evaluate(() => localStorage.setItem("websocket-chat-outbox", JSON.stringify([{
    clientMessageId: "00000000-0000-4000-8000-00000000abcd", room: "busy", text: "typed offline", tries: 1, sentAt: 1 }])));
  await page.reload();
  const asked = [];
  await page.context().routeWebSocket(/\/dev/, (ws) => ws.onMessage((raw) => {
    const command = JSON.parse(raw);
    if (command.action === "who") return ws.send(JSON.stringify({ kind: "presence", room: "busy", you: "me", members: [] }));
    if (command.action === "sendmessage") {
      return ws.send(JSON.stringify({ message: "Too Many Requests", connectionId: "me", requestId: "r-line" }));
    }
    if (command.action !== "history") return;
    asked.push(raw);
    if (historyThrottledFirst && asked.length === 1) {
      return ws.send(JSON.stringify({ message: "Too Many Requests", connectionId: "me", requestId: "r-history" }));
    }
    setTimeout(() => {
      ws.send(JSON.stringify({ kind: "chat", room: "busy", id: "01900000-0000-7000-8000-000000000002",
        timestamp: "2026-12-04T21:00:00Z", connectionId: "other", user: "bob", text: "earlier" }));
      ws.send(JSON.stringify({ kind: "history", room: "busy", count: 1, more: false }));
    }, 600); // slower than the first back-off
  }));
  await recordNotices(page);
  await connect(page);
  await waitCaughtUp(page, SLOW);
  const expected = historyThrottledFirst ? 2 : 1;
  assert.equal(asked.length, expected, `history was asked ${expected} time(s)`);
  assert.deepEqual(await chatTexts(page), ["earlier"]);
  const notices = await page.evaluate(() => window.notices);
  assert.ok(!notices.some((text) => text.startsWith("warn:")), "no warning");
  if (historyThrottledFirst) assert.ok(notices.includes(`info: ${BUSY}`), "the page said it retried");
  console.log(`browser: a throttled line${historyThrottledFirst ? " and history request" : " during a slow history answer"}: `
    + `history asked ${asked.length} time(s), its line shown once`);
  await page.context().close();
}

runChecks(async (browser) => {
  await throttledRecovery(browser);
  await stayingBusy(browser);
  await notOursPerhaps(browser, { historyThrottledFirst: false });
  await notOursPerhaps(browser, { historyThrottledFirst: true });
}, "all throttling checks passed");
