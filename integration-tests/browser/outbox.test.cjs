// The outbox in headless Chromium: a line typed while the server is down is
// kept (in localStorage, so a reload does not lose it), sent when the page is
// connected again, acknowledged, and stored and shown exactly once.
// Usage: node outbox.test.cjs <ws url> <output dir> <stack pid>, with CHAT_LOCAL_BIN
// and CHAT_DB naming the stack's binary and database: the script kills that stack
// and starts a new one on the same port and database, which it stops itself.
"use strict";

const assert = require("node:assert/strict");
const fs = require("node:fs");
const path = require("node:path");
const { WAIT, startStack, stopStack, step, launch, openChat, line, waitForStatus, connect, say } = require("./helpers.cjs");

const [wsUrl, outputDir, pid] = process.argv.slice(2);
const { CHAT_LOCAL_BIN: binary, CHAT_DB: db } = process.env;
if (!wsUrl || !outputDir || !pid || !binary || !db) {
  throw new Error("usage: CHAT_LOCAL_BIN=… CHAT_DB=… node outbox.test.cjs <ws url> <output dir> <stack pid>");
}
const stackUrl = new URL(wsUrl.replace(/^ws/, "http"));
const pageUrl = stackUrl.origin + "/";
const TEXT = "typed while the server was down";

let restarted = null;

// Starts the stack again where the page expects it; resolves once it listens.
async function restart() {
  restarted = await startStack({ db, port: stackUrl.port });
}

const pendingCount = (page) => page.locator("#messages li.pending").count();

(async () => {
  const browser = await launch();
  try {
    const page = await openChat(browser, pageUrl);
    await connect(page);
    await say(page, "before the crash");
    await line(page, "before the crash").first().waitFor(WAIT);
    await page.waitForFunction(() => !document.querySelector("#messages li.pending"), null, WAIT);

    step("the server dies; a line typed now waits in the outbox");
    process.kill(Number(pid), "SIGKILL");
    await page.waitForFunction(() => document.getElementById("status").dataset.state !== "connected", null, WAIT);
    await say(page, TEXT);
    assert.equal(await pendingCount(page), 1, "the line is shown as pending");
    assert.equal(await page.locator("#messages li.pending").textContent(), `you · sending…${TEXT}`);

    const stored = await page.evaluate(() => JSON.parse(localStorage.getItem("websocket-chat-outbox")));
    assert.equal(stored.length, 1, "kept in localStorage");
    assert.match(stored[0].clientMessageId, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);

    step("the server is back; the page is reloaded (memory gone, localStorage kept) and sends it");
    await restart();
    fs.writeFileSync(path.join(outputDir, "restarted"), "");
    await page.reload(); // the stack serves the page, so only now can it load
    await waitForStatus(page, "connected"); // the remembered URL connects by itself
    await page.waitForFunction(() => !document.querySelector("#messages li.pending"), null, WAIT);
    await line(page, TEXT).first().waitFor(WAIT);
    assert.equal(await line(page, TEXT).count(), 1, "the line arrived once");
    assert.deepEqual(await page.evaluate(() => JSON.parse(localStorage.getItem("websocket-chat-outbox"))), []);

    step("a later reload sends nothing again");
    await page.reload();
    await waitForStatus(page, "connected");
    await line(page, TEXT).first().waitFor(WAIT); // recovered from history
    assert.equal(await line(page, TEXT).count(), 1);
    assert.equal(await pendingCount(page), 0);
    await page.screenshot({ path: path.join(outputDir, "outbox.png") });
    step("outbox checks passed");
  } finally {
    await browser.close();
    if (restarted) await stopStack(restarted);
  }
})().catch((error) => {
  console.error(error);
  process.exit(1);
});
