// Two people with one display name, told apart (issue 22, finding 3), in headless
// Chromium: the page served by the stack connects to a scripted loopback
// WebSocket server that speaks the protocol with verified `userId`s (and
// `youUserId` in the `who` answer), so the page's rules are checked on exact
// frames: "(you)" goes by userId, not by name (your line from another connection
// too); once a second user takes a name, both get a tag drawn from their userId,
// on lines, notices and in the member list; a unique name stays bare.
// Usage: node people.test.cjs <ws url of a stack> <output dir>
"use strict";

const assert = require("node:assert/strict");
const path = require("node:path");
const { WAIT, WebSocket, runChecks, step, openChat, connect } = require("./helpers.cjs");

const [wsUrl, outputDir] = process.argv.slice(2);
if (!wsUrl || !outputDir) throw new Error("usage: node people.test.cjs <ws://host:port/stage> <output dir>");
const origin = new URL(wsUrl.replace(/^ws/, "http")).origin;

const ROOM = "people";
const ME = { user: "alice", verified: true, userId: "local|alice-one" };
const NAMESAKE = { user: "alice", verified: true, userId: "https://issuer.example|alice-two" };
const BOB = { user: "bob", verified: true, userId: "local|bob" };

// A loopback server that answers `who` (this page is connection `me`, user
// ME.userId), refuses `history` as a seed server does, and sends what the test says.
async function scriptedServer() {
  const server = new WebSocket.Server({ host: "127.0.0.1", port: 0 });
  await new Promise((resolve, reject) => { server.once("listening", resolve); server.once("error", reject); });
  let client = null;
  let joined = null;
  const ready = new Promise((resolve) => { joined = resolve; });
  server.on("connection", (socket) => {
    client = socket;
    socket.on("message", (data) => {
      const command = JSON.parse(data);
      if (command.action === "who") {
        socket.send(JSON.stringify({
          kind: "presence", room: ROOM, count: 2, you: "me", youUserId: ME.userId,
          members: [{ connectionId: "me", connectedAt: "2026-12-04T20:00:00Z", ...ME }, { connectionId: "bob", connectedAt: "2026-12-04T20:00:01Z", ...BOB }],
        }));
      } else if (command.action === "history") {
        socket.send(JSON.stringify({ error: "Invalid request", message: "no history here" }));
        joined();
      }
    });
  });
  let seq = 0;
  const frame = (fields) => ({ id: `01J${String(++seq).padStart(23, "0")}`, room: ROOM, timestamp: new Date().toISOString(), ...fields });
  return {
    url: `ws://127.0.0.1:${server.address().port}/dev`,
    ready,
    chat: (connectionId, person, text) => client.send(JSON.stringify(frame({ kind: "chat", connectionId, ...person, text }))),
    join: (connectionId, person) => client.send(JSON.stringify(frame({ kind: "join", connectionId, ...person, message: `User ${connectionId} has joined the chat.` }))),
    close: () => new Promise((resolve) => { server.clients.forEach((c) => c.terminate()); server.close(resolve); }),
  };
}

// The sender shown on the line with `text`, once it is there.
async function who(page, text) {
  const row = page.locator('#messages li[data-kind="chat"]', { hasText: text });
  await row.waitFor(WAIT);
  return row.locator(".who").textContent();
}

const memberNames = (page) => page.$$eval("#members li", (items) => items.map((li) => li.textContent));

runChecks(async (browser) => {
  const server = await scriptedServer();
  try {
    const page = await openChat(browser, `${origin}/#room=${ROOM}`);
    const tag = async (userId) => page.evaluate(async (id) => (await import("/names.js")).userTag(id), userId);
    const [mine, theirs] = [await tag(ME.userId), await tag(NAMESAKE.userId)];
    assert.match(mine, /^[0-9a-z]{4}$/);
    assert.notEqual(mine, theirs);

    step("one alice: her lines are '(you)' by userId, bare name; bob is bob");
    await page.fill("#url", server.url);
    await connect(page);
    await server.ready;
    server.chat("me", ME, "my first line");
    server.chat("bob", BOB, "hello from bob");
    assert.equal(await who(page, "my first line"), "alice (you)");
    assert.equal(await who(page, "hello from bob"), "bob");

    step("a second alice (another userId) joins and talks: both get tags, only mine is '(you)'");
    server.join("namesake", NAMESAKE);
    server.chat("namesake", NAMESAKE, "I am alice too");
    assert.equal(await who(page, "I am alice too"), `alice #${theirs}`);
    await page.waitForFunction((text) => [...document.querySelectorAll('#messages li[data-kind="chat"]')]
      .some((li) => li.textContent.includes("my first line") && li.querySelector(".who").textContent === text), `alice #${mine} (you)`, WAIT);
    assert.equal(await who(page, "hello from bob"), "bob", "a unique name stays bare");
    await page.locator("#messages li.notice", { hasText: `alice #${theirs} joined the chat` }).waitFor(WAIT);

    step("my user on another connection (another tab) is me; the namesake is not");
    server.chat("my-phone", ME, "from my phone");
    assert.equal(await who(page, "from my phone"), `alice #${mine} (you)`);
    const mineShown = await page.$$eval('#messages li.mine[data-kind="chat"]', (rows) => rows.map((li) => li.lastChild.textContent));
    assert.deepEqual(mineShown.sort(), ["from my phone", "my first line"]);
    assert.equal(await page.getAttribute('#messages li[data-kind="chat"]:has-text("I am alice too")', "title"),
      `user ${NAMESAKE.userId}, connection namesake`, "the full userId on hover");

    step("the member list tells the two alices apart too");
    await page.waitForFunction((n) => document.querySelectorAll("#members li").length === n, 3, WAIT);
    assert.deepEqual((await memberNames(page)).sort(), [`alice #${mine} (you)`, `alice #${theirs}`, "bob"].sort());
    await page.screenshot({ path: path.join(outputDir, "people.png") });
    await page.context().close();
  } finally {
    await server.close();
  }
}, "all people checks passed");
