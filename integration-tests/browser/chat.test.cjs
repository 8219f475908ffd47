// The web chat in headless Chromium against a running local stack.
// Usage: node chat.test.cjs <stack websocket url> <output dir>
// Run by integration-tests/tests/browser.rs, which starts and stops the stack.
"use strict";

const assert = require("node:assert/strict");
const path = require("node:path");
const { WAIT, step, launch, openChat: open, status, line, waitForStatus, connect, say, deleteConnection } = require("./helpers.cjs");

const [wsUrl, outputDir] = process.argv.slice(2);
if (!wsUrl || !outputDir) throw new Error("usage: node chat.test.cjs <ws://host:port/stage> <output dir>");
const stackUrl = new URL(wsUrl.replace(/^ws/, "http")); // the stack serves the page and @connections too
const pageUrl = stackUrl.origin + "/";
const ISO_UTC = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/;

const openChat = (browser, viewport) => open(browser, pageUrl, { viewport });

async function main() {
  const browser = await launch();
  try {
    step("the page served by the stack is pre-filled with the stack's endpoint");
    const alice = await openChat(browser);
    assert.equal(await alice.inputValue("#url"), wsUrl);
    assert.equal(await status(alice).getAttribute("data-state"), "disconnected");
    assert.ok(await alice.isDisabled("#disconnect"), "Disconnect is disabled until connected");

    step("connect: status, connected-at in UTC, a running duration, no second connection");
    await connect(alice);
    assert.ok(await alice.isDisabled("#connect"), "Connect is disabled while connected");
    const connectedAt = await alice.textContent("#connected-at");
    assert.match(connectedAt, ISO_UTC);
    assert.ok(Math.abs(Date.parse(connectedAt) - Date.now()) < 60_000, `connected-at ${connectedAt} is now`);
    await alice.waitForFunction(() => parseInt(document.getElementById("duration").textContent, 10) >= 2, null, WAIT);

    // Alice may see her own join too (history is read after it was logged): count up.
    // Notices in a row collapse into one line: count the notices inside the lines.
    // The join notices on a page; with `above`, whether there are more than that.
    // A function, not a string: a string predicate still false at first is
    // polled with eval, which the page's CSP refuses (and a violation fails the run).
    const joins = (above) => {
      const count = [...document.querySelectorAll("#messages li.notice .entry")].filter((e) =>
        e.textContent.includes("has joined"),
      ).length;
      return above === undefined ? count : count > above;
    };
    const joinsBefore = await alice.evaluate(joins);
    const bob = await openChat(browser);
    await connect(bob);
    await alice.waitForFunction(joins, joinsBefore, WAIT);

    step("a line sent from one page shows in both, marked as mine on the sender's");
    await say(alice, "hello from alice");
    await line(alice, "hello from alice").waitFor(WAIT);
    await line(bob, "hello from alice").waitFor(WAIT);
    await alice.locator("#messages li.mine", { hasText: "hello from alice" }).waitFor(WAIT);
    assert.equal(await bob.locator("#messages li.mine").count(), 0, "bob did not send it");
    const aliceId = (await line(bob, "hello from alice").locator(".meta").textContent()).split(" · ")[0];
    assert.match(aliceId, /^\S+=?$/, "bob sees alice's connection id as the sender");
    assert.equal(await alice.inputValue("#text"), "", "the input is cleared after sending");

    step("HTML in a message is shown as text, never run");
    const attack = `<img src=x onerror="window.__pwned=1">`;
    await say(bob, attack);
    for (const page of [alice, bob]) {
      const item = line(page, "onerror");
      await item.waitFor(WAIT);
      assert.ok((await item.textContent()).includes(attack), "the markup is visible as text");
      assert.equal(await page.locator("#messages img").count(), 0, "no element was created");
      assert.equal(await page.evaluate(() => window.__pwned), undefined, "no script ran");
    }
    await say(bob, "hi alice, that markup above is plain text");
    await line(alice, "plain text").waitFor(WAIT);
    await alice.screenshot({ path: path.join(outputDir, "chat.png") });

    step("heartbeat pongs are not shown; empty and oversize messages are not sent");
    const before = await alice.locator("#messages li").count();
    await say(alice, "ping");
    await say(alice, "   ");
    await say(alice, "x".repeat(33 * 1024));
    await alice.waitForFunction(() => document.getElementById("notice").textContent.includes("too long"), null, WAIT);
    await say(alice, "after the refusals");
    await line(bob, "after the refusals").waitFor(WAIT);
    await line(alice, "after the refusals").waitFor(WAIT);
    assert.equal(await alice.locator("#messages li").count(), before + 1, "only the last line was shown");

    step("reconnecting asks for history without duplicating lines already shown");
    await alice.click("#disconnect");
    await waitForStatus(alice, "disconnected");
    await line(bob, `User ${aliceId} has left the chat.`).waitFor(WAIT);
    await connect(alice);
    await line(alice, "after the refusals").waitFor(WAIT);
    await alice.waitForFunction(() => document.querySelectorAll("#messages li").length > 0, null, WAIT);
    // A round trip after the history request proves the history answer has arrived.
    await say(alice, "back again");
    await line(alice, "back again").waitFor(WAIT);
    assert.equal(await line(alice, "hello from alice").count(), 1, "history lines are deduplicated by id");

    step("a reload auto-connects to the remembered URL and shows history");
    await alice.reload();
    await waitForStatus(alice, "connected");
    await line(alice, "hello from alice").waitFor(WAIT);
    assert.equal(await line(alice, "hello from alice").count(), 1);

    step("a server-side close reconnects with backoff; a user disconnect does not");
    await say(alice, "who am i");
    const newId = (await line(bob, "who am i").locator(".meta").textContent()).split(" · ")[0];
    const deleted = await deleteConnection(stackUrl, newId);
    assert.equal(deleted.status, 204);
    await alice.waitForFunction(() => document.getElementById("notice").textContent.includes("reconnecting"), null, WAIT);
    await waitForStatus(alice, "connected");
    await alice.click("#disconnect");
    await waitForStatus(alice, "disconnected");
    await alice.waitForTimeout(1_500); // longer than the first backoff: it must stay down
    assert.equal(await status(alice).getAttribute("data-state"), "disconnected");

    step("auto-disconnect after the chosen number of seconds");
    await alice.fill("#auto-seconds", "2");
    await alice.check("#auto-disconnect");
    await connect(alice);
    await waitForStatus(alice, "disconnected");
    assert.match(await alice.textContent("#notice"), /Auto-disconnected after 2s/);
    await alice.waitForTimeout(1_500);
    assert.equal(await status(alice).getAttribute("data-state"), "disconnected", "no reconnect after auto-disconnect");

    step("a phone-sized screen has no horizontal scrolling");
    const phone = await openChat(browser, { width: 375, height: 667 });
    await waitForStatus(phone, "disconnected");
    await connect(phone);
    await line(phone, "hello from alice").waitFor(WAIT);
    const overflow = await phone.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `page is ${overflow}px wider than the phone`);
    await phone.screenshot({ path: path.join(outputDir, "chat-phone.png") });
    step("a chosen name shows on lines and in the member list, marked unverified, as text");
    const carol = await openChat(browser);
    await carol.fill("#name", "<i>Carol</i>");
    await connect(carol);
    await say(carol, "named line");
    const named = line(bob, "named line");
    await named.waitFor(WAIT);
    assert.match(await named.locator(".meta").textContent(), /^<i>Carol<\/i> \(unverified\) · /);
    assert.equal(await bob.locator("#messages i").count(), 0, "the name is text, not markup");
    await bob.waitForFunction(() => [...document.querySelectorAll("#members li")].some((li) => li.textContent === "<i>Carol</i> (unverified)"), null, WAIT);
    assert.equal(await line(carol, "named line").locator(".meta").textContent().then((t) => t.split(" · ")[0]), "<i>Carol</i> (you)");
    await carol.fill("#name", "x".repeat(33));
    await carol.click("#disconnect");
    await waitForStatus(carol, "disconnected");
    await carol.click("#connect");
    await carol.waitForFunction(() => document.getElementById("notice").textContent.includes("at most 32"), null, WAIT);

    step("a line of the publish API (chat-local publish, signed) shows its label with a bot badge, as text");
    await publishLine(stackUrl.origin, "lobby", "<b>Deploy</b>", "build 42 is green");
    const published = line(bob, "build 42 is green");
    await published.waitFor(WAIT);
    assert.equal(await published.locator(".meta .who").textContent(), "<b>Deploy</b>");
    assert.equal(await published.locator(".meta .badge.server").textContent(), "bot");
    assert.equal(await bob.locator("#messages b").count(), 0, "the label is text, not markup");
    assert.equal(await line(bob, "hello from alice").locator(".badge").count(), 0, "people's lines have no badge");
    step("all checks passed");
  } finally {
    await browser.close();
  }
}

// `chat-local publish` (CHAT_LOCAL_BIN), signed with the stack's default key.
function publishLine(endpoint, room, user, text) {
  const { execFile } = require("node:child_process");
  const env = { ...process.env, AWS_ACCESS_KEY_ID: "test", AWS_SECRET_ACCESS_KEY: "test", AWS_REGION: "us-east-1", AWS_EC2_METADATA_DISABLED: "true" };
  return new Promise((resolve, reject) => {
    execFile(process.env.CHAT_LOCAL_BIN, ["publish", "--endpoint", endpoint, "--room", room, "--user", user, text], { env },
      (error, stdout, stderr) => (error ? reject(new Error(`chat-local publish: ${stderr}`)) : resolve(stdout.trim())));
  });
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
