// Message lifecycle on the page (issue 25) in headless Chromium, two signed-in
// pages (alice, bob) in one room:
// - alice edits her line with ↑ in an empty box (and Edit + Esc cancels):
//   bob sees the new text and "(edited)" (its time in the tooltip) within 1 s;
// - bob reacts through the picker by keyboard, alice adds hers with the chip:
//   counts on both pages within 1 s, each one's own chip pressed; a click toggles;
// - bob replies (the quote above the box while composing; Esc cancels): alice sees
//   the quote within 1 s, and following it (Enter) scrolls to and highlights the parent;
// - alice types: bob sees "alice is typing…" within 1 s, alice never her own; one
//   `typing` signal at most every 3 s; the indicator goes 5 s after the last one;
// - alice deletes a line: "message deleted" on bob's page within 1 s;
// - a reload of both pages folds the history back to the same view (edits,
//   deletes, reactions with each one's own highlighted, replies);
// - axe-core finds nothing, light and dark (picker open, reply being composed);
//   screenshot lifecycle.png.
// Run twice by browser.rs: against the local stack (its lifecycle handlers), and
// with PLAYED=1 against a server played by the test (routeWebSocket, a tiny
// in-memory chat speaking the same frames), whose clock the checks can trust.
// Usage: node lifecycle.test.cjs <stack websocket url> <output dir>
"use strict";

const assert = require("node:assert/strict");
const path = require("node:path");
const { axeViolations, WAIT, runChecks, step, say, mintToken, signedInPage, listOf, caughtUp, waitUntil } = require("./helpers.cjs");

const [wsUrl, outputDir] = process.argv.slice(2);
if (!wsUrl || !outputDir) throw new Error("usage: node lifecycle.test.cjs <ws://host:port/stage> <output dir>");
const SECRET = "browser-test-secret-of-32-bytes-or-more"; // the stack's --jwt-secret (browser.rs)
const origin = new URL(wsUrl.replace(/^ws/, "http")).origin;
const PLAYED = process.env.PLAYED === "1";
const ROOM = PLAYED ? "played" : "life";
const TUNING = { readEveryMs: 300, roomsFocusMs: 0 };
const ATTACHED = { ...WAIT, state: "attached" };
const LIVE_MS = 1000; // everything shows on the other page within this

const chatRow = (p, text) => p.locator(`${listOf(ROOM)} li[data-kind="chat"]`, { hasText: text });
const textOf = (p, id) => p.$eval(`${listOf(ROOM)} li[data-id="${id}"] .text`, (n) => n.textContent).catch(() => null);

async function accessibility(p, what) {
  for (const scheme of ["light", "dark"]) {
    await p.emulateMedia({ colorScheme: scheme });
    assert.deepEqual(await axeViolations(p), [], `axe: no violations (${what}, ${scheme})`);
  }
  await p.emulateMedia({ colorScheme: "light" });
}

// Waits until `check` holds in page `p` (a page-side function of `arg`) and says how long since `started`.
async function within(p, what, started, check, arg) {
  await p.waitForFunction(check, arg, WAIT);
  const took = Date.now() - started;
  console.log(`browser: ${what} in ${took} ms`);
  assert.ok(took < LIVE_MS, `${what} within ${LIVE_MS} ms (took ${took} ms)`);
}

// What the page shows of its chat lines: id, text (or the placeholder), edited, chips (* = pressed), quote.
function view(p) {
  return p.$$eval(`${listOf(ROOM)} li[data-kind="chat"]`, (rows) => rows.map((li) => ({
    id: li.dataset.id,
    text: li.querySelector(".text, .placeholder")?.textContent,
    edited: Boolean(li.querySelector(".edited")),
    chips: [...li.querySelectorAll(".chip")].map((c) => `${c.textContent}${c.getAttribute("aria-pressed") === "true" ? "*" : ""}`),
    quote: li.querySelector(".quote")?.textContent ?? null,
  })));
}

// ---- A server played by the test: one room, every command answered as the
// stack answers it (the frames of the preamble's wire format), kept in memory.
function playedServer() {
  const log = [];
  const clients = new Set();
  const acked = new Map(); // clientMessageId -> id
  const reactors = new Map(); // `${target} ${emoji}` -> Set of userIds
  const commands = []; // every command the pages sent, with `user` and `at`
  let seq = 0;
  let connections = 0;
  const nextId = () => `01900000-0000-7000-8000-${String(++seq).padStart(12, "0")}`;
  const route = (ws) => {
    const url = new URL(ws.url());
    const token = (url.searchParams.get("Authorization") ?? "").replace(/^Bearer /, "");
    const claims = JSON.parse(Buffer.from(token.split(".")[1], "base64url").toString());
    const me = { connectionId: `conn-${++connections}`, user: claims.preferred_username, verified: true, userId: `test|${claims.sub}` };
    const client = { ws, me };
    clients.add(client);
    ws.onClose(() => clients.delete(client));
    const answer = (frame) => ws.send(JSON.stringify(frame));
    const append = (fields) => {
      const event = { id: nextId(), room: ROOM, ...me, timestamp: new Date().toISOString(), ...fields };
      log.push(event);
      for (const c of clients) c.ws.send(JSON.stringify(event));
      return event;
    };
    const line = (id) => log.find((e) => e.id === id && e.kind === "chat");
    const deleted = (id) => log.some((e) => e.kind === "delete" && e.target === id);
    ws.onMessage((raw) => {
      const command = JSON.parse(raw);
      commands.push({ ...command, user: me.user, at: Date.now() });
      switch (command.action) {
        case "who":
          return answer({ kind: "presence", room: ROOM, count: clients.size, you: me.connectionId, youUserId: me.userId,
            members: [...clients].map((c) => ({ ...c.me, connectedAt: new Date().toISOString() })) });
        case "history":
          log.forEach(answer);
          return answer({ kind: "history", room: ROOM, count: log.length, more: false });
        case "rooms": return answer({ kind: "rooms", rooms: [{ room: ROOM, count: clients.size, unread: 0, more: false, rights: "rw", private: false }] });
        case "subscribe": return answer({ kind: "subscribed", room: command.room, count: clients.size, rights: "rw", private: false });
        case "sendmessage": {
          if (command.message === "ping") return answer({ message: "pong" });
          if (acked.has(command.clientMessageId)) return answer({ ack: acked.get(command.clientMessageId), clientMessageId: command.clientMessageId });
          const parent = command.replyTo ? line(command.replyTo) : null;
          if (command.replyTo && !parent) return answer({ error: "Not found", id: command.replyTo, message: "No such line." });
          const reply = parent ? { replyTo: parent.id, ...(deleted(parent.id) ? {} : { quote: currentText(parent).slice(0, 80) }) } : {};
          const event = append({ kind: "chat", text: command.message, message: command.message, ...reply });
          acked.set(command.clientMessageId, event.id);
          return answer({ ack: event.id, clientMessageId: command.clientMessageId });
        }
        case "edit": {
          const target = line(command.id);
          if (!target) return answer({ error: "Not found", id: command.id, message: "No such line." });
          if (target.userId !== me.userId) return answer({ error: "Forbidden", right: "write", room: ROOM, message: "Only the author may edit." });
          const at = new Date().toISOString();
          return append({ kind: "edit", target: target.id, text: command.message, message: `${command.message} (edited)`, editedAt: at, timestamp: at });
        }
        case "delete":
          if (!line(command.id)) return answer({ error: "Not found", id: command.id, message: "No such line." });
          return append({ kind: "delete", target: command.id, message: "message deleted" });
        case "react": {
          if (!line(command.id)) return answer({ error: "Not found", id: command.id, message: "No such line." });
          const key = `${command.id} ${command.emoji}`;
          const who = reactors.get(key) ?? new Set();
          reactors.set(key, who);
          const on = !who.has(me.userId);
          if (on) who.add(me.userId);
          else who.delete(me.userId);
          const counts = {};
          for (const [k, set] of reactors) if (k.startsWith(`${command.id} `) && set.size) counts[k.slice(command.id.length + 1)] = set.size;
          return append({ kind: "reaction", target: command.id, emoji: command.emoji, on, counts, message: "" });
        }
        case "typing":
          for (const c of clients) if (c !== client) c.ws.send(JSON.stringify({ kind: "typing", room: ROOM, ...me }));
          return undefined;
        default: return undefined;
      }
    });
    function currentText(parent) {
      const edit = log.filter((e) => e.kind === "edit" && e.target === parent.id).at(-1);
      return edit ? edit.text : parent.text;
    }
  };
  return { route, commands };
}

runChecks(async (browser) => {
  const played = PLAYED ? playedServer() : null;
  const options = { tuning: TUNING, ...(played ? { route: played.route } : {}) };
  const alice = await signedInPage(browser, origin, mintToken(SECRET, "alice", "alice"), ROOM, options);
  const bob = await signedInPage(browser, origin, mintToken(SECRET, "bob", "bob"), ROOM, options);
  for (const p of [alice, bob]) await caughtUp(p, ROOM);
  // What each page sent (with `at`): the played server keeps it, else the pages' sockets tell (helpers.cjs).
  const pages = { alice, bob };
  const sent = (user, action) => (played ? played.commands.filter((c) => c.user === user) : pages[user].sent)
    .filter((c) => c.action === action);
  const typingSent = { get length() { return sent("alice", "typing").length; }, at: (i) => sent("alice", "typing").at(i)?.at };
  console.log(`browser: against ${PLAYED ? "a server played by the test" : "the local stack"}`);

  step("alice's line; ↑ in the empty box edits it; bob sees the new text and \"(edited)\" within 1 s");
  await say(alice, "helo wrold");
  await say(alice, "a line to delete");
  for (const p of [alice, bob]) await chatRow(p, "a line to delete").waitFor(ATTACHED);
  const first = await chatRow(alice, "helo wrold").getAttribute("data-id");
  await alice.focus("#text");
  await alice.keyboard.press("ArrowUp");
  assert.equal(await alice.inputValue("#text"), "a line to delete", "↑ takes the newest own line");
  assert.equal(await alice.isVisible("#composing"), true, "the box says it is editing");
  await alice.keyboard.press("Escape");
  assert.equal(await alice.inputValue("#text"), "", "Esc cancels the edit");
  assert.equal(await alice.isHidden("#composing"), true);
  assert.equal(sent("alice", "edit").length, 0, "nothing was sent");
  await chatRow(alice, "helo wrold").locator("button.edit").click();
  assert.equal(await alice.inputValue("#text"), "helo wrold", "Edit puts the line in the box");
  assert.equal(await bob.locator(`${listOf(ROOM)} li[data-id="${first}"] button.edit`).count(), 0, "no Edit on another's line");
  await alice.fill("#text", "hello world");
  let started = Date.now();
  await alice.press("#text", "Enter");
  await within(bob, "an edit reached the other page", started, ({ list, id }) => {
    const row = document.querySelector(`${list} li[data-id="${id}"]`);
    return row?.querySelector(".text")?.textContent === "hello world" && row.querySelector(".edited");
  }, { list: listOf(ROOM), id: first });
  assert.ok(sent("alice", "edit").some((c) => c.id === first && c.message === "hello world"), "the edit was sent");
  assert.match(await bob.getAttribute(`${listOf(ROOM)} li[data-id="${first}"] .edited`, "title"), /^edited \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$/);
  assert.equal(await alice.inputValue("#text"), "", "the box is empty after the edit");

  step("bob reacts with the picker, by keyboard: the chip and its count on both pages within 1 s");
  await chatRow(bob, "hello world").locator("button.react").click();
  await bob.locator(`${listOf(ROOM)} .picker`).waitFor(WAIT);
  assert.equal(await bob.evaluate(() => document.activeElement.textContent), "👍", "the picker's first emoji has the focus");
  await bob.keyboard.press("ArrowRight");
  await bob.keyboard.press("ArrowLeft");
  await accessibility(bob, "the reaction picker open");
  started = Date.now();
  await bob.keyboard.press("Enter");
  const chips = (p, expected) => within(p, `a reaction reached ${p === alice ? "alice" : "bob"}`, started, ({ list, id, want }) =>
    JSON.stringify([...document.querySelectorAll(`${list} li[data-id="${id}"] .chip`)]
      .map((c) => `${c.textContent}${c.getAttribute("aria-pressed") === "true" ? "*" : ""}`)) === want, { list: listOf(ROOM), id: first, want: JSON.stringify(expected) });
  await Promise.all([chips(alice, ["👍 1"]), chips(bob, ["👍 1*"])]);
  assert.equal(await bob.locator(`${listOf(ROOM)} .picker`).count(), 0, "the picker closed");
  step("alice clicks the chip: 2, hers pressed; bob clicks his: off again");
  started = Date.now();
  await alice.locator(`${listOf(ROOM)} li[data-id="${first}"] .chip`).click();
  await Promise.all([chips(alice, ["👍 2*"]), chips(bob, ["👍 2*"])]);
  started = Date.now();
  await bob.locator(`${listOf(ROOM)} li[data-id="${first}"] .chip`).click();
  await Promise.all([chips(alice, ["👍 1*"]), chips(bob, ["👍 1"])]);
  await chatRow(bob, "hello world").locator("button.react").click();
  await bob.keyboard.press("ArrowRight");
  await bob.keyboard.press("Escape");
  assert.equal(await bob.locator(`${listOf(ROOM)} .picker`).count(), 0, "Esc closes the picker");
  assert.equal(await bob.evaluate(() => document.activeElement.className), "react secondary", "the focus is back on React");

  step("bob replies: the quote above the box (Esc cancels); alice sees the quote within 1 s; following it highlights the parent");
  await chatRow(bob, "hello world").locator("button.reply").click();
  await bob.locator("#composing").waitFor(WAIT);
  assert.match(await bob.textContent("#composing-text"), /^Replying to alice: “hello world”$/);
  await bob.keyboard.press("Escape");
  assert.equal(await bob.isHidden("#composing"), true, "Esc cancels the reply");
  await chatRow(bob, "hello world").locator("button.reply").click();
  await bob.fill("#text", "a reply to alice");
  await accessibility(bob, "a reply being composed");
  started = Date.now();
  await bob.press("#text", "Enter");
  await within(alice, "a reply reached the other page", started, ({ list }) =>
    [...document.querySelectorAll(`${list} li[data-kind="chat"]`)].some((li) => li.querySelector(".text")?.textContent === "a reply to alice"
      && li.querySelector(".quote")?.textContent.includes("hello world")), { list: listOf(ROOM) });
  assert.ok(sent("bob", "sendmessage").some((c) => c.message === "a reply to alice" && c.replyTo === first), "sent with replyTo");
  assert.equal(await bob.isHidden("#composing"), true, "the quote goes once sent");
  await chatRow(alice, "a reply to alice").locator(".quote").focus();
  await alice.keyboard.press("Enter");
  await alice.waitForFunction(({ list, id }) => {
    const row = document.querySelector(`${list} li[data-id="${id}"]`);
    return row?.classList.contains("highlight") && document.activeElement === row;
  }, { list: listOf(ROOM), id: first }, WAIT);

  step("alice types: \"alice is typing…\" on bob's page within 1 s, never on hers; one signal per 3 s; gone 5 s later");
  // Her last signal (the lines she typed) is 3 s old: the next key sends one.
  await waitUntil(() => Date.now() - (typingSent.at(-1) ?? 0) >= 3000, "3 s since alice's last typing signal");
  const signalsBefore = typingSent.length;
  await alice.focus("#text");
  started = Date.now();
  await alice.keyboard.type("typi");
  await within(bob, "typing reached the other page", started, () => document.getElementById("typing").textContent === "alice is typing…");
  assert.equal(await bob.getAttribute("#typing", "aria-live"), "polite");
  await alice.keyboard.type("ng more");
  assert.equal(await alice.textContent("#typing"), "", "never for yourself");
  const signals = typingSent.length - signalsBefore;
  assert.equal(signals, 1, `one typing signal for a burst of keys (sent ${signals})`);
  const shownAt = Date.now();
  await bob.waitForFunction(() => document.getElementById("typing").textContent === "", null, { timeout: 8000 });
  const shown = Date.now() - shownAt;
  console.log(`browser: "typing…" went ${shown} ms after it was shown`);
  assert.ok(shown > 3500 && shown < 6500, `the indicator expires after 5 s (${shown} ms)`);
  await alice.fill("#text", "");

  step("alice deletes a line: \"message deleted\" on bob's page within 1 s");
  const doomed = await chatRow(alice, "a line to delete").getAttribute("data-id");
  await chatRow(bob, "a line to delete").locator("button.reply").click(); // bob is replying to it meanwhile
  await bob.fill("#text", "too late");
  await chatRow(alice, "a line to delete").locator("button.delete").click();
  await alice.locator("#confirm[open]").waitFor(WAIT);
  started = Date.now();
  await alice.click("#confirm-ok");
  const tombstone = ({ list, id }) => document.querySelector(`${list} li.deleted[data-id="${id}"] .placeholder`)?.textContent === "message deleted";
  await within(bob, "a delete reached the other page", started, tombstone, { list: listOf(ROOM), id: doomed });
  await alice.waitForFunction(tombstone, { list: listOf(ROOM), id: doomed }, WAIT);
  step("bob's reply to the deleted line: the quote bar goes, his text stays, and he is told");
  await bob.waitForFunction(() => document.getElementById("composing").hidden, null, WAIT);
  assert.equal(await bob.inputValue("#text"), "too late");
  assert.equal(await bob.textContent("#notice"), "The message you were replying to was deleted.");
  await bob.fill("#text", "");

  const before = { alice: await view(alice), bob: await view(bob) };
  await alice.screenshot({ path: path.join(outputDir, "lifecycle.png") });
  await accessibility(alice, "edited, reacted, replied, deleted");

  step("a reload folds the history to the same view on both pages");
  for (const p of [alice, bob]) {
    await p.reload();
    await caughtUp(p, ROOM);
    await p.locator(`${listOf(ROOM)} li[data-kind="chat"] .quote`).waitFor(ATTACHED);
  }
  for (const [name, p] of [["alice", alice], ["bob", bob]]) {
    await p.waitForFunction(({ list, n }) => document.querySelectorAll(`${list} li[data-kind="chat"]`).length === n,
      { list: listOf(ROOM), n: before[name].length }, WAIT);
    await p.waitForFunction(({ list }) => document.querySelectorAll(`${list} .chip`).length > 0, { list: listOf(ROOM) }, WAIT);
    assert.deepEqual(await view(p), before[name], `${name}: the same view after a reload`);
  }
  assert.equal(await textOf(bob, first), "hello world");
  for (const p of [alice, bob]) await p.context().close();
}, "all lifecycle checks passed");
