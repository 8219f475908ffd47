// Rights and moderation on the page (issue 24) in headless Chromium against a
// running local stack started with --jwt-secret (SECRET below) and
// --default-rights "mod-*=rw;news=r" (browser.rs): "secret" is private (only a
// token's claim opens it), "news" read-only. Mia's token gives her `m` in mod-*.
// - a private room shows a lock, a read-only room disables the box with the
//   reason (again enabled in a writable room), a room one may not read is refused;
// - a moderator deletes another's line: "message deleted" on every page within
//   1 s, by keyboard through the confirm dialog, and from history on a new page;
//   Delete only where the rights allow it;
// - Kick and Ban in the member list (confirm dialog, keyboard): the kicked page
//   says who removed it and stops; a banned page loses the room and cannot join it again;
// - lines typed faster than the stack's --send-rate 2 --send-burst 3: the page
//   says "Sending too fast — retrying in Ns", keeps them pending and its outbox
//   resends them after retryAfterMs until every one is stored;
// - against a server played by the test: the exact wait before a resend, a
//   refused write makes the room read-only, "Not found" is shown; axe-core,
//   light and dark.
// Usage: node moderation.test.cjs <stack websocket url> <output dir>
"use strict";

const assert = require("node:assert/strict");
const path = require("node:path");
const { axeViolations, WAIT, runChecks, step, waitForStatus, say, mintToken, signedInPage, listOf, rowOf, caughtUp,
  joinRoom, switchTo, waitUntil } = require("./helpers.cjs");

const [wsUrl, outputDir] = process.argv.slice(2);
if (!wsUrl || !outputDir) throw new Error("usage: node moderation.test.cjs <ws://host:port/stage> <output dir>");
const SECRET = "browser-test-secret-of-32-bytes-or-more"; // the stack's --jwt-secret (browser.rs)
const origin = new URL(wsUrl.replace(/^ws/, "http")).origin;
const TUNING = { readEveryMs: 300, roomsFocusMs: 0 };
const ROOM = "mod-room";
const ATTACHED = { ...WAIT, state: "attached" };
const MIA = { rights: { "mod-*": "rwm", news: "r", secret: "rw" } }; // a moderator; the others have the default rights

const page = (browser, sub, claim, room = ROOM) => signedInPage(browser, origin, mintToken(SECRET, sub, sub, claim), room, { tuning: TUNING });
const chatRow = (p, room, text) => p.locator(`${listOf(room)} li[data-kind="chat"]`, { hasText: text });
const noticeText = (p) => p.$eval("#notice", (n) => n.textContent);
const waitForNotice = (p, pattern) => p.waitForFunction((source) => new RegExp(source).test(document.getElementById("notice").textContent),
  pattern.source, WAIT);
const memberRow = (p, name) => p.locator("#members li", { hasText: name });

async function accessibility(p, what) {
  for (const scheme of ["light", "dark"]) {
    await p.emulateMedia({ colorScheme: scheme });
    assert.deepEqual(await axeViolations(p), [], `axe: no violations (${what}, ${scheme})`);
  }
  await p.emulateMedia({ colorScheme: "light" });
}

// The pages know their rights: the `rooms` answer (home room) or `subscribed` gave them.
async function rightsKnown(p, room) {
  await waitUntil(() => p.got.some((f) => (f.kind === "rooms" && f.rooms.some((r) => r.room === room && r.rights))
    || (f.kind === "subscribed" && f.room === room && f.rights)), `the rights of ${room}`);
}

async function rights(mia, bob) {
  step("a private room shows a lock (named \"private\"); the others none");
  await joinRoom(mia, "secret");
  await mia.locator(`${rowOf("secret")} .lock:not([hidden])`).waitFor(WAIT);
  assert.equal(await mia.getAttribute(`${rowOf("secret")} .lock`, "aria-label"), "private");
  assert.equal(await mia.locator(`${rowOf(ROOM)} .lock:not([hidden])`).count(), 0, "mod-room is not private");
  await switchTo(mia, ROOM);

  step("a read-only room disables the box with the reason; a writable room enables it again");
  await joinRoom(bob, "news");
  await bob.waitForFunction(() => document.getElementById("text").disabled && document.getElementById("send").disabled, null, WAIT);
  const reason = bob.locator("#read-only");
  await reason.waitFor({ state: "visible", timeout: WAIT.timeout });
  assert.match(await reason.textContent(), /^Read-only room/);
  assert.match(await bob.getAttribute("#text", "aria-describedby"), /read-only/, "the box is described by the reason");
  await accessibility(bob, "read-only room");
  await switchTo(bob, ROOM);
  await bob.waitForFunction(() => !document.getElementById("text").disabled, null, WAIT);
  assert.equal(await reason.isHidden(), true);

  step("a room one may not read is refused visibly (Forbidden) and leaves the list");
  await bob.fill("#join-room", "secret");
  await bob.press("#join-room", "Enter");
  await waitForNotice(bob, /^Could not join "secret": you may not read it/);
  await bob.waitForFunction((selector) => !document.querySelector(selector), rowOf("secret"), WAIT);
  assert.ok(bob.got.some((f) => f.error === "Forbidden" && f.room === "secret" && f.right === "read"));
}

async function deletion(browser, mia, bob, carol) {
  step("Delete where the rights allow it: the moderator on every line, a writer on their own lines only");
  await say(mia, "mia says hi");
  await say(bob, "a line to delete");
  for (const p of [mia, bob, carol]) await chatRow(p, ROOM, "a line to delete").waitFor(ATTACHED);
  await rightsKnown(mia, ROOM);
  await rightsKnown(bob, ROOM);
  await chatRow(mia, ROOM, "a line to delete").locator("button.delete").waitFor(ATTACHED);
  await chatRow(bob, ROOM, "a line to delete").locator("button.delete").waitFor(ATTACHED);
  assert.equal(await chatRow(mia, ROOM, "mia says hi").locator("button.delete").count(), 1, "mia: her own line too");
  assert.equal(await chatRow(bob, ROOM, "mia says hi").locator("button.delete").count(), 0, "bob: not on mia's line");
  assert.equal(await chatRow(carol, ROOM, "a line to delete").locator("button.delete").count(), 0, "carol: not on bob's line");

  step("the moderator deletes bob's line by keyboard through the confirm dialog: \"message deleted\" on every page within 1 s");
  const id = await chatRow(mia, ROOM, "a line to delete").getAttribute("data-id");
  await mia.focus(listOf(ROOM));
  await mia.keyboard.press("End"); // the last stop of the list: the newest line's Delete
  assert.equal(await mia.evaluate(() => document.activeElement.closest("li")?.dataset.id + "|" + document.activeElement.className), `${id}|delete secondary`);
  await mia.keyboard.press("Enter");
  await mia.locator("#confirm[open]").waitFor(WAIT);
  assert.equal(await mia.evaluate(() => document.activeElement.id), "confirm-ok", "the dialog has the focus");
  assert.match(await mia.textContent("#confirm-text"), /a line to delete/);
  await accessibility(mia, "the delete dialog");
  const started = Date.now();
  await mia.keyboard.press("Enter");
  const placeholder = (p) => p.waitForFunction((selector) => document.querySelector(selector)?.lastChild.textContent === "message deleted",
    `${listOf(ROOM)} li.deleted[data-id="${id}"]`, WAIT);
  await Promise.all([mia, bob, carol].map(placeholder));
  const took = Date.now() - started;
  console.log(`browser: a moderator's delete reached 3 pages in ${took} ms`);
  assert.ok(took < 1000, `every page shows "message deleted" within 1 s (took ${took} ms)`);
  for (const p of [mia, bob, carol]) {
    assert.equal(await chatRow(p, ROOM, "a line to delete").count(), 0, "the text is gone from every page");
    assert.equal(await p.locator(`${listOf(ROOM)} li[data-kind="chat"].deleted`).count(), 1, "the tombstone is no line of its own");
  }
  assert.ok(mia.sent.some((c) => c.action === "delete" && c.id === id), "the page sent the delete");

  step("a page opened afterwards replays the tombstone from history: the line shows \"message deleted\" too");
  const dave = await page(browser, "dave");
  await caughtUp(dave, ROOM);
  await placeholder(dave);
  assert.equal(await chatRow(dave, ROOM, "a line to delete").count(), 0);
  return dave;
}

async function kickAndBan(mia, bob, dave) {
  step("Kick and Ban in the moderator's member list, for everyone but herself; none for the others");
  await memberRow(mia, "dave").locator("button.kick").waitFor(WAIT);
  await memberRow(mia, "bob").locator("button.ban").waitFor(WAIT);
  assert.equal(await mia.locator("#members li.me button").count(), 0, "not for herself");
  assert.equal(await bob.locator("#members button").count(), 0, "bob may not moderate");
  assert.equal(await mia.getAttribute('#members li:has-text("dave") button.kick', "aria-label"), "Kick dave");

  step("kick from the member list, by keyboard: the kicked page says who removed it and does not reconnect");
  await mia.focus("#people"); // the member list, then Tab through its buttons
  for (let tabs = 0; await mia.evaluate(() => document.activeElement.getAttribute("aria-label")) !== "Kick dave"; tabs += 1) {
    assert.ok(tabs < 10, "Kick dave is reached with Tab");
    await mia.keyboard.press("Tab");
  }
  await mia.keyboard.press("Enter");
  await mia.locator("#confirm[open]").waitFor(WAIT);
  await mia.keyboard.press("Enter");
  await waitForNotice(dave, /^You were removed from mod-room by mia\.$/);
  await waitForStatus(dave, "disconnected");
  await waitForNotice(mia, /^Removed dave from "mod-room" \(1 connection\)\.$/);
  assert.ok(mia.sent.some((c) => c.action === "kick" && c.room === ROOM && c.user === dave.userId), "kicked by dave's account");
  for (const p of [mia, bob]) {
    await p.locator(`${listOf(ROOM)} li.notice`, { hasText: "mia removed dave from the room" }).waitFor(ATTACHED);
    await p.locator(`${listOf(ROOM)} li.notice`, { hasText: "dave was removed from the chat" }).waitFor(ATTACHED);
    await p.waitForFunction(() => ![...document.querySelectorAll("#members li")].some((li) => li.textContent.startsWith("dave")), null, WAIT);
  }
  assert.equal(await dave.getAttribute("#status", "data-state"), "disconnected", "still disconnected: no reconnect");

  step("ban with a duration: the banned page loses the room and cannot join it again");
  await memberRow(mia, "bob").locator("button.ban").click();
  await mia.locator("#confirm[open] #confirm-ban:not([hidden])").waitFor(WAIT);
  await mia.selectOption("#ban-for", "600");
  await mia.fill("#ban-reason", "spam");
  await accessibility(mia, "the ban dialog");
  await mia.screenshot({ path: path.join(outputDir, "moderation-ban.png") });
  await mia.click("#confirm-ok");
  await waitForNotice(bob, /^You were removed from mod-room by mia; you are banned until .+\.$/);
  await bob.waitForFunction((selector) => !document.querySelector(selector), rowOf(ROOM), WAIT);
  const ban = mia.sent.find((c) => c.action === "ban");
  assert.deepEqual([ban.room, ban.seconds, ban.reason], [ROOM, 600, "spam"]);
  await mia.locator(`${listOf(ROOM)} li.notice`, { hasText: /^mia banned bob until .+: spam/ }).waitFor(ATTACHED);
  await bob.fill("#join-room", ROOM);
  await bob.press("#join-room", "Enter");
  await waitForNotice(bob, /^Could not join "mod-room": you are banned from it until /);
  assert.ok(bob.got.some((f) => f.error === "Banned" && f.room === ROOM));
  await mia.screenshot({ path: path.join(outputDir, "moderation.png") });
}

async function rateLimited(browser) {
  step("lines typed faster than the stack's rate limit: \"Sending too fast\", pending, then all resent by the outbox");
  const fay = await page(browser, "fay", undefined, "mod-fast");
  await caughtUp(fay, "mod-fast");
  const lines = Array.from({ length: 6 }, (_, i) => `fast-${i + 1}`);
  for (const text of lines) await say(fay, text);
  await waitForNotice(fay, /^Sending too fast — retrying in \ds$/);
  assert.ok(await fay.locator("#messages li.pending").count() > 0, "the refused lines are still pending");
  for (const text of lines) await chatRow(fay, "mod-fast", text).waitFor(WAIT);
  await fay.waitForFunction(() => document.querySelectorAll("#messages li.pending").length === 0, null, WAIT);
  const limited = fay.got.filter((f) => f.error === "Rate limited");
  assert.ok(limited.length >= 3, `the stack refused the lines past its burst (${limited.length} refusals)`);
  assert.ok(limited.every((f) => f.action === "sendmessage" && f.retryAfterMs > 0 && f.clientMessageId));
  const texts = await fay.$$eval(`${listOf("mod-fast")} li[data-kind="chat"]`, (items) => items.map((li) => li.lastChild.textContent));
  assert.deepEqual(texts, lines, "every line once, in the order typed");
  console.log(`browser: ${lines.length} lines typed at once against --send-burst 3: ${limited.length} "Rate limited" answers, all stored once`);
  await fay.context().close();
}

// A server played by the test (routeWebSocket): what the stack under test may
// not say yet, or not on demand. A moderator in "solo"; zed wrote one line.
async function playedServer(browser) {
  step("a played server: \"Rate limited\" shows the wait; the line stays pending and is resent after retryAfterMs");
  const commands = [];
  const ZED = { id: "01900000-0000-7000-8000-0000000000a1", kind: "chat", room: "solo", connectionId: "zed-1", user: "zed",
    verified: true, userId: "test|zed", text: "zed's line", message: "zed's line", timestamp: new Date().toISOString() };
  let sends = 0;
  const p = await signedInPage(browser, origin, mintToken(SECRET, "eve", "eve"), "solo", {
    tuning: TUNING,
    route: (ws) => ws.onMessage((raw) => {
      const command = JSON.parse(raw);
      commands.push({ ...command, at: Date.now() });
      const answer = (frame) => ws.send(JSON.stringify(frame));
      if (command.action === "who") {
        answer({ kind: "presence", room: "solo", you: "me", youUserId: "test|eve", members: [
          { connectionId: "me", connectedAt: ZED.timestamp, user: "eve", verified: true, userId: "test|eve" },
          { connectionId: "zed-1", connectedAt: ZED.timestamp, user: "zed", verified: true, userId: "test|zed" }] });
      }
      if (command.action === "history") {
        answer(ZED);
        answer({ kind: "history", room: "solo", count: 1, more: false });
      }
      if (command.action === "rooms") answer({ kind: "rooms", rooms: [{ room: "solo", count: 2, unread: 0, more: false, rights: "rwm", private: true }] });
      if (command.action === "delete") answer({ error: "Not found", id: command.id, message: `No chat line "${command.id}" to delete.` });
      if (command.action !== "sendmessage" || command.message === "ping") return;
      sends += 1;
      const { clientMessageId } = command;
      if (sends === 1) {
        return answer({ error: "Rate limited", retryAfterMs: 1500, action: "sendmessage", clientMessageId, message: "Slow down." });
      }
      if (command.message === "not allowed") {
        return answer({ error: "Forbidden", room: "solo", right: "write", message: 'This connection may not write in room "solo".' });
      }
      const id = `01900000-0000-7000-8000-${String(100 + sends).padStart(12, "0")}`;
      answer({ ack: id, clientMessageId });
      answer({ ...ZED, id, connectionId: "me", user: "eve", userId: "test|eve", text: command.message, message: command.message });
    }),
  });
  await caughtUp(p, "solo");
  await p.locator(`${rowOf("solo")} .lock:not([hidden])`).waitFor(WAIT);
  await say(p, "too fast");
  await waitForNotice(p, /^Sending too fast — retrying in 2s$/);
  assert.equal(await p.locator("#messages li.pending", { hasText: "too fast" }).count(), 1, "still pending, not lost");
  await chatRow(p, "solo", "too fast").waitFor(WAIT);
  await p.waitForFunction(() => document.querySelectorAll("#messages li.pending").length === 0, null, WAIT);
  const tries = commands.filter((c) => c.action === "sendmessage" && c.message === "too fast");
  assert.equal(tries.length, 2, "sent once more");
  assert.equal(tries[0].clientMessageId, tries[1].clientMessageId, "the same line (same clientMessageId)");
  const waited = tries[1].at - tries[0].at;
  assert.ok(waited >= 1450 && waited < 4000, `resent after retryAfterMs (${waited} ms)`);
  assert.equal(await noticeText(p), "", "the notice goes once the line is stored");

  step("a played server: \"Not found\" for a delete is shown");
  await chatRow(p, "solo", "zed's line").locator("button.delete").click();
  await p.click("#confirm-ok");
  await waitForNotice(p, /^Not found: No chat line/);

  step("a played server: a refused write makes the room read-only; the line is not kept");
  await say(p, "not allowed");
  await waitForNotice(p, /^You may not write in "solo"; 1 line\(s\) not sent\.$/);
  await p.waitForFunction(() => document.getElementById("text").disabled && !document.getElementById("read-only").hidden, null, WAIT);
  await p.waitForFunction(() => document.querySelectorAll("#messages li.pending").length === 0, null, WAIT);
  assert.deepEqual(await p.evaluate(() => JSON.parse(localStorage.getItem("websocket-chat-outbox"))), [], "nothing left to resend");

  step("a phone-sized screen: the lock, Kick/Ban and the read-only box fit, no horizontal scrolling");
  await p.setViewportSize({ width: 390, height: 760 });
  await p.locator("#members button.kick").waitFor(WAIT);
  const overflow = await p.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `no horizontal scrolling (${overflow}px)`);
  await accessibility(p, "phone, read-only, moderator");
  await p.context().close();
}

runChecks(async (browser) => {
  const mia = await page(browser, "mia", MIA);
  const bob = await page(browser, "bob");
  const carol = await page(browser, "carol");
  for (const p of [mia, bob, carol]) await caughtUp(p, ROOM);
  await rights(mia, bob);
  const dave = await deletion(browser, mia, bob, carol);
  dave.userId = mia.got.find((f) => f.kind === "join" && f.user === "dave")?.userId; // the account a kick names
  await kickAndBan(mia, bob, dave);
  await rateLimited(browser);
  await playedServer(browser);
  for (const p of [mia, bob, carol, dave]) await p.context().close();
}, "all moderation checks passed");
