// The web chat as people use it (issue 18), in headless Chromium against a running
// local stack: a busy history reads as a conversation, a reader scrolled up is not
// moved, a hidden tab counts in its title, the page works from the keyboard alone,
// and axe-core finds no WCAG 2.1 AA violation in light or dark mode. Takes the
// README's screenshots (light and dark, desktop and phone).
// Usage: node conversation.test.cjs <stack websocket url> <output dir>
"use strict";

const assert = require("node:assert/strict");
const path = require("node:path");
const { WAIT, runChecks, Peer, step, openChat, line, waitForStatus, connect, say } = require("./helpers.cjs");

const [wsUrl, outputDir] = process.argv.slice(2);
if (!wsUrl || !outputDir) throw new Error("usage: node conversation.test.cjs <ws://host:port/stage> <output dir>");
const pageUrl = new URL(wsUrl.replace(/^ws/, "http")).origin + "/";
const AXE = path.join(__dirname, "..", ".tools", "node_modules", "axe-core", "axe.min.js");
const DESKTOP = { width: 900, height: 700 };
const PHONE = { width: 375, height: 740 };
const ROOM = "busy";

const peer = (name) => Peer.open(`${wsUrl}?room=${ROOM}&name=${name}`);
const rows = (page, selector) => page.$$eval(selector, (items) => items.map((li) => li.textContent));

// Scrolls the message list to `where` (an expression of `ol`) and waits until the page has seen the scroll.
async function scrollTo(list, where) {
  await list.evaluate((ol, expression) => new Promise((resolve) => {
    ol.addEventListener("scroll", resolve, { once: true });
    ol.scrollTop = new Function("ol", `return ${expression}`)(ol);
  }), where);
}

function within(promise, what) {
  return Promise.race([promise, new Promise((_, reject) => setTimeout(() => reject(new Error(`no ${what} in time`)), WAIT.timeout))]);
}

async function waitCaughtUp(page) {
  await page.waitForFunction(() => document.getElementById("status").dataset.state === "connected"
    && document.getElementById("messages").getAttribute("aria-busy") === "false", null, WAIT);
}

// A busy hour: runs of two guests coming and going between ten chat lines.
async function busyHour() {
  const talker = await peer("talker");
  for (let i = 1; i <= 10; i += 1) {
    const [a, b] = [`guest-${2 * i - 1}`, `guest-${2 * i}`];
    const guests = [];
    for (const name of [a, b]) {
      guests.push(await peer(name));
      await talker.next((f) => f.kind === "join" && f.user === name, `${name}'s join`);
    }
    for (const [i, name] of [a, b].entries()) {
      guests[i].close();
      await talker.next((f) => f.kind === "leave" && f.user === name, `${name}'s leave`);
    }
    await talker.say(`line ${i}`);
  }
  return talker;
}

async function history(page, talker) {
  step("history of 41 join/leave notices and 10 chat lines: 10 chat lines, the notices collapsed between them");
  await connect(page);
  await waitCaughtUp(page);
  assert.deepEqual(await page.$$eval('#messages li[data-kind="chat"]', (items) => items.map((li) => li.lastChild.textContent)),
    Array.from({ length: 10 }, (_, i) => `line ${i + 1}`));
  const notices = await rows(page, "#messages li.notice summary");
  assert.deepEqual(notices, ["3 joined, 2 left", ...Array(9).fill("2 joined, 2 left")], "one collapsed line per run");
  // After the last line: the page's own join, live, as a line of its own, said as
  // its own (`who` told the page its connection id before it sent anything).
  const single = await page.$$eval("#messages li.notice:not(:has(details))", (items) => items.map((li) => li.textContent));
  assert.equal(single.length, 1);
  assert.match(single[0], /^You joined the chat · \d\d:\d\d$/);
  assert.equal(await page.locator("#messages li.day").count(), 1, "one day, one separator");
  assert.equal(await page.locator("#messages > li").count(), 1 + 10 + 11, "a separator, 10 lines, 11 notice lines for 52 events");

  step("a collapsed run opens to the names");
  await page.locator("#messages li.notice summary").nth(1).click();
  const entries = await rows(page, "#messages li.notice details[open] .entry");
  assert.deepEqual(entries.map((e) => e.replace(/ · \d\d:\d\d$/, "")),
    ["guest-3 (unverified) joined the chat", "guest-4 (unverified) joined the chat",
      "guest-3 (unverified) left the chat", "guest-4 (unverified) left the chat"]);

  step("times: local HH:MM on each line, the full UTC time in <time datetime> and on hover");
  const times = await page.$$eval('#messages li[data-kind="chat"] time', (items) => items.map((t) => [t.textContent, t.dateTime, t.title]));
  assert.equal(times.length, 10);
  for (const [shown, datetime, title] of times) {
    const at = new Date(datetime);
    const local = `${String(at.getHours()).padStart(2, "0")}:${String(at.getMinutes()).padStart(2, "0")}`;
    assert.equal(shown, local);
    assert.equal(title, `${datetime.slice(0, 10)} ${datetime.slice(11, 19)} UTC`);
  }

  step("lines from one sender within minutes share one header; live notices still show");
  for (const text of ["grouped a", "grouped b", "grouped c"]) await talker.say(text);
  await line(page, "grouped c").waitFor(WAIT);
  assert.deepEqual(await page.$$eval("#messages li.grouped", (items) => items.map((li) => li.lastChild.textContent)),
    ["grouped b", "grouped c"]);
  assert.ok(await page.isVisible('#messages li:not(.grouped) .who:text("talker (unverified)")'), "the first has the header");
  // For screen readers the name is still there, visually hidden (1 px, clipped).
  assert.deepEqual(await page.$$eval("#messages li.grouped .who", (items) => items.map((who) => who.getBoundingClientRect().width <= 1)),
    [true, true], "the others do not show it again");
  const late = await peer("late-guest");
  await line(page, "late-guest (unverified) joined the chat").waitFor(WAIT);
  late.close();
  await page.locator("#messages li.notice summary", { hasText: "1 joined, 1 left" }).waitFor(WAIT);
  await talker.say("after the late guest");
  await line(page, "after the late guest").waitFor(WAIT);
  await say(page, "Thanks, reading the backlog now");
  await page.locator("#messages li.mine", { hasText: "reading the backlog" }).waitFor(WAIT);
  await page.waitForFunction(() => !document.querySelector("#messages li.pending"), null, WAIT);
}

async function scrolling(page, talker) {
  step("a reader scrolled up is not moved by new lines and sees how many came");
  const list = page.locator("#messages");
  // Opening a run above scrolled the list: back at the bottom, the count is gone and lines are followed.
  await scrollTo(list, "ol.scrollHeight");
  assert.ok(await page.isHidden("#jump"));
  for (let i = 1; i <= 12; i += 1) await talker.say(`filler ${i}`);
  await line(page, "filler 12").waitFor(WAIT);
  assert.ok(await page.isHidden("#jump"), "followed at the bottom: nothing counted");
  await scrollTo(list, "40");
  const before = await list.evaluate((ol) => ol.scrollTop);
  for (const text of ["new 1", "new 2", "new 3"]) await talker.say(text);
  await page.locator("#jump", { hasText: "3 new messages ↓" }).waitFor(WAIT);
  await line(page, "new 3").waitFor({ state: "attached", ...WAIT });
  assert.equal(await list.evaluate((ol) => ol.scrollTop), before, "the view did not move");
  return before;
}

async function backToBottom(page, talker) {
  step("the button jumps down, and new lines are followed again");
  await page.click("#jump");
  assert.ok(await page.isHidden("#jump"));
  const atBottom = () => page.locator("#messages").evaluate((ol) => ol.scrollHeight - ol.scrollTop - ol.clientHeight < 2);
  assert.ok(await atBottom());
  await talker.say("followed");
  await line(page, "followed").waitFor(WAIT);
  await page.waitForFunction(() => { const ol = document.getElementById("messages"); return ol.scrollHeight - ol.scrollTop - ol.clientHeight < 2; }, null, WAIT);
  assert.ok(await page.isHidden("#jump"));
}

// Headless Chromium never hides a page: the test tells the page its tab is hidden
// (and shown again) the way the browser would.
async function setHidden(page, hidden) {
  await page.evaluate((h) => {
    Object.defineProperty(document, "hidden", { configurable: true, get: () => h });
    Object.defineProperty(document, "visibilityState", { configurable: true, get: () => (h ? "hidden" : "visible") });
    document.dispatchEvent(new Event("visibilitychange"));
  }, hidden);
}

async function hiddenTab(page, talker) {
  step("a hidden tab counts unread lines in its title; seeing it clears the count");
  await setHidden(page, true);
  await talker.say("while hidden 1");
  await talker.say("while hidden 2");
  await page.waitForFunction(() => document.title === "(2) WebSocket chat", null, WAIT);
  await setHidden(page, false);
  assert.equal(await page.title(), "WebSocket chat");
}

async function accessibility(page) {
  // Served as if from the page's own origin: the page's CSP allows no inline script.
  await page.route("**/axe.min.js", (route) => route.fulfill({ path: AXE, contentType: "text/javascript" }));
  await page.addScriptTag({ url: "/axe.min.js" });
  for (const colorScheme of ["light", "dark"]) {
    step(`axe-core, WCAG 2.1 A and AA, ${colorScheme} mode: no violations`);
    await page.emulateMedia({ colorScheme });
    const { passes, unsure, violations } = await page.evaluate(async () => {
      const results = await window.axe.run(document, { runOnly: { type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"] } });
      return {
        passes: results.passes.map((rule) => rule.id),
        unsure: results.incomplete.map((v) => `${v.id}: ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`),
        violations: results.violations.map((v) => `${v.id} (${v.impact}): ${v.help} — ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`),
      };
    });
    assert.deepEqual(violations, [], `axe found violations in ${colorScheme} mode`);
    assert.ok(passes.includes("color-contrast"), "contrast was checked");
    console.log(`browser: axe ${colorScheme}: ${passes.length} rules passed (${passes.join(", ")}), 0 violations; `
      + `left for a person to judge: ${unsure.join("; ") || "nothing"}`);
  }
  await page.emulateMedia({ colorScheme: "light" });
}

async function screenshots(page) {
  step("screenshots: light and dark, desktop and phone; no horizontal scroll from 320 px");
  await page.$$eval("#messages details", (runs) => { runs.at(-1).open = true; }); // the late guest's run, opened
  for (const [name, viewport] of [["desktop", DESKTOP], ["phone", PHONE]]) {
    await page.setViewportSize(viewport);
    for (const colorScheme of ["light", "dark"]) {
      await page.emulateMedia({ colorScheme });
      await page.locator("#messages").evaluate((ol) => { ol.scrollTop = ol.scrollHeight; });
      await page.evaluate(() => window.scrollTo(0, document.body.scrollHeight)); // a phone scrolls the header away
      await page.screenshot({ path: path.join(outputDir, `conversation-${name}-${colorScheme}.png`) });
    }
  }
  await page.setViewportSize({ width: 320, height: 640 });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `the page is ${overflow}px wider than 320 px`);
  await page.emulateMedia({ colorScheme: "light" });
  await page.setViewportSize(DESKTOP);
}

async function keyboardOnly(browser, talker) {
  step("keyboard only: Tab to Connect, Enter; Tab to the box; Shift+Enter for a new line, Enter sends; Esc leaves");
  const page = await openChat(browser, `${pageUrl}#room=${ROOM}`, { viewport: DESKTOP });
  const focused = () => page.evaluate(() => document.activeElement?.id || document.activeElement?.tagName);
  const tabTo = async (id) => {
    for (let i = 0; i < 60 && (await focused()) !== id; i += 1) await page.keyboard.press("Tab");
    assert.equal(await focused(), id, `Tab reaches #${id}`);
  };
  await tabTo("connect");
  await page.keyboard.press("Enter");
  await waitForStatus(page, "connected");
  await waitCaughtUp(page);
  await tabTo("text");
  assert.equal(await page.$eval("#text", (el) => getComputedStyle(el).outlineStyle), "solid", "a visible focus ring");
  await page.keyboard.type("typed with keys");
  await page.keyboard.press("Shift+Enter");
  await page.keyboard.type("second line");
  await page.keyboard.press("Enter");
  const frame = await talker.next((f) => f.kind === "chat" && f.text.startsWith("typed with keys"), "the typed line");
  assert.equal(frame.text, "typed with keys\nsecond line");
  await page.locator("#messages li.mine", { hasText: "second line" }).waitFor(WAIT);
  assert.equal(await page.inputValue("#text"), "");
  await page.keyboard.press("Escape");
  assert.equal(await focused(), "messages", "Esc leaves the box for the message list");
  await page.keyboard.press("ArrowUp");
  const time = await page.evaluate(() => {
    const el = document.activeElement;
    return { tag: el.tagName, title: el.title, after: getComputedStyle(el, "::after").content, outline: getComputedStyle(el).outlineStyle };
  });
  assert.equal(time.tag, "TIME", "arrow keys walk the lines' times");
  assert.match(time.title, /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$/);
  assert.ok(time.after.includes(time.title), "the focused time spells out the UTC time");
  assert.equal(time.outline, "solid");
  await page.context().close();
}

// History arriving after live lines (a first visit): inserted above, the view stays.
async function historyAbove(browser) {
  step("history arriving above the lines in view does not move them");
  const id = (n) => `00000000-0000-7000-8000-${String(n).padStart(12, "0")}`;
  const at = (n) => new Date(Date.now() - 3_600_000 + n * 1000).toISOString().replace(/\.\d+Z$/, "Z");
  const chat = (n) => ({ message: `[${at(n)} - UTC]\n peer  m-${n}\n`, id: id(n), connectionId: `peer-${n % 3}`,
    text: `m-${n}`, timestamp: at(n), kind: "chat", room: "mock" });
  let historyAsked;
  const asked = new Promise((resolve) => { historyAsked = resolve; });
  const page = await openChat(browser, `${pageUrl}#room=mock`, { viewport: { width: 720, height: 560 } });
  await page.context().routeWebSocket(/\/dev/, (ws) => {
    ws.onMessage((raw) => {
      const command = JSON.parse(raw);
      if (command.action === "who") ws.send(JSON.stringify({ kind: "presence", room: "mock", count: 1, members: [] }));
      if (command.action === "history") historyAsked(ws); // answered by the test, later
    });
  });
  await connect(page);
  const server = await within(asked, "the history request");
  for (let n = 100; n < 140; n += 1) server.send(JSON.stringify(chat(n))); // live lines first
  await line(page, "m-139").waitFor(WAIT);
  const list = page.locator("#messages");
  await scrollTo(list, "ol.scrollHeight / 2");
  const anchor = await page.evaluate(() => {
    const ol = document.getElementById("messages");
    const top = ol.getBoundingClientRect().top;
    const li = [...ol.children].find((row) => row.getBoundingClientRect().bottom > top + 20);
    return { text: li.textContent, y: li.getBoundingClientRect().top };
  });
  // A coalesced frame (batch=1) with the 50 older events, then the end of the page.
  server.send(JSON.stringify({ events: Array.from({ length: 50 }, (_, i) => chat(40 + i)) }));
  server.send(JSON.stringify({ kind: "history", room: "mock", count: 50, more: false }));
  await waitCaughtUp(page);
  await line(page, "m-40").waitFor({ state: "attached", ...WAIT });
  const after = await page.evaluate((text) => [...document.querySelectorAll("#messages li")]
    .find((li) => li.textContent === text).getBoundingClientRect().top, anchor.text);
  assert.ok(Math.abs(after - anchor.y) <= 1, `the line in view stayed put (${anchor.y}px → ${after}px)`);
  assert.ok(await page.isHidden("#jump"), "older lines are not counted as new");
  await page.context().close();
}

runChecks(async (browser) => {
  const talker = await busyHour();
  const page = await openChat(browser, `${pageUrl}#room=${ROOM}`, { viewport: DESKTOP, tuning: { firstVisit: 100 } });
  await history(page, talker);
  await screenshots(page);
  await scrolling(page, talker);
  await accessibility(page); // with the "new messages" button showing
  await backToBottom(page, talker);
  await hiddenTab(page, talker);
  await keyboardOnly(browser, talker);
  await historyAbove(browser);
  talker.close();
}, "all conversation checks passed");
