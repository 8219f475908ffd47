// Coalesced delivery (issue 16) in headless Chromium: the page connects with
// ?batch=1 and gets {"events":[…]} frames; a seed client in the same room sends a
// burst of lines (one broadcaster invocation carries several) and gets one plain
// frame per line as before. The page shows every line once, in log order.
// Usage: node batch.test.cjs <ws url of a stack with a batching window> <output dir>
"use strict";

const assert = require("node:assert/strict");
const path = require("node:path");
const { WAIT, Peer, runChecks, step, openChat, line, connect } = require("./helpers.cjs");

const [wsUrl, outputDir] = process.argv.slice(2);
if (!wsUrl || !outputDir) throw new Error("usage: node batch.test.cjs <ws://host:port/stage> <output dir>");
const pageUrl = new URL(wsUrl.replace(/^ws/, "http")).origin + "/";
const BURST = 30;

runChecks(async (browser) => {
  step("a ?batch=1 page and a seed client in the lobby; the seed client sends a burst");
  const page = await openChat(browser, pageUrl);
  const frames = []; // what the page's socket received, raw
  page.on("websocket", (ws) => {
    assert.match(ws.url(), /[?&]batch=1(&|$)/, "the page asks for coalesced frames");
    ws.on("framereceived", ({ payload }) => frames.push(JSON.parse(payload)));
  });
  await connect(page);
  const seed = await Peer.open(wsUrl); // no query at all: the seed's own client
  const seedRaw = [];
  seed.socket.on("message", (data) => seedRaw.push(JSON.parse(data)));
  const texts = Array.from({ length: BURST }, (_, i) => `burst ${String(i + 1).padStart(2, "0")}`);
  texts.forEach((text) => seed.socket.send(JSON.stringify({ action: "sendmessage", message: text })));
  const echoes = await Promise.all(texts.map((text) => seed.next((f) => f.kind === "chat" && f.text === text, `echo of ${text}`)));
  const inLogOrder = echoes.sort((a, b) => (a.id < b.id ? -1 : 1)).map((f) => f.text);

  step("the page shows every line once, in log order; it was sent coalesced frames, the seed client plain ones");
  await line(page, inLogOrder.at(-1)).waitFor(WAIT);
  await page.waitForFunction((n) => document.querySelectorAll('#messages li[data-kind="chat"]').length >= n, BURST, WAIT);
  const shown = await page.$$eval('#messages li[data-kind="chat"]', (items) => items.map((li) => li.lastChild.textContent));
  assert.deepEqual(shown.filter((text) => text.startsWith("burst ")), inLogOrder);
  const coalesced = frames.filter((frame) => Array.isArray(frame.events));
  const carried = coalesced.flatMap((frame) => frame.events).filter((event) => event.kind === "chat" && texts.includes(event.text));
  assert.ok(coalesced.length > 0, "the page got {\"events\":[…]} frames");
  assert.ok(carried.length > coalesced.length, `several lines per frame: ${carried.length} lines in ${coalesced.length} frames`);
  assert.ok(seedRaw.every((frame) => !("events" in frame)), "the seed client got one plain frame per event");
  assert.ok(seedRaw.filter((frame) => frame.kind === "chat").every((frame) => typeof frame.message === "string"));
  console.log(`browser: ${BURST} lines reached the page in ${coalesced.length} coalesced frames`);
  await page.screenshot({ path: path.join(outputDir, "batch.png") });
  seed.close();
}, "all coalescing checks passed");
