// A room past the presence limit on the page (issue 27), in headless Chromium
// against the real local stack started with `--presence-limit 3`: once a fourth
// member is there, joins come as one occupancy frame a second, and the page shows
// the server's count ("N here", in the panel and the room list) and names the
// newest joiners; leavers are counted, and "Refresh list" asks `who` for the list
// again (axe-core finds nothing in that panel); a room below the limit still gets
// the seed's join notices.
// Usage: node occupancy.test.cjs <ws url of a stack> <output dir>
"use strict";

const assert = require("node:assert/strict");
const path = require("node:path");
const { WAIT, Peer, axeViolations, runChecks, step, openChat, connect } = require("./helpers.cjs");

const [wsUrl, outputDir] = process.argv.slice(2);
if (!wsUrl || !outputDir) throw new Error("usage: node occupancy.test.cjs <ws://host:port/stage> <output dir>");
const origin = new URL(wsUrl.replace(/^ws/, "http")).origin;

const peer = (room, name) => Peer.open(`${wsUrl}?room=${room}&name=${name}`);
const text = (page, id) => page.$eval(id, (element) => element.textContent);
// The timeline's text, collapsed runs of notices included.
const timelineHas = (page, wanted) => page.waitForFunction((w) => document.getElementById("messages").textContent.includes(w), wanted, WAIT);

runChecks(async (browser) => {
  const peers = [];
  try {
    step("a small room: two members, the seed's join notice");
    const quiet = await openChat(browser, `${origin}/#room=quiet`);
    await connect(quiet);
    peers.push(await peer("quiet", "dana"));
    await timelineHas(quiet, "dana (unverified) joined the chat");
    await quiet.waitForFunction(() => document.getElementById("member-count").textContent === "2", null, WAIT);
    assert.equal(await quiet.isHidden("#recent"), true, "no occupancy line below the limit");

    step("a crowd: past 3 members, joins are counted, the newest named");
    const page = await openChat(browser, `${origin}/#room=crowd`);
    await connect(page);
    for (const name of ["ana", "bo", "cy", "eve", "fay", "gus"]) peers.push(await peer("crowd", name));
    await page.waitForFunction(() => document.getElementById("member-count").textContent === "7", null, WAIT);
    await page.waitForFunction(() => /Just joined: .*gus/.test(document.getElementById("recent").textContent), null, WAIT);
    const recent = await text(page, "#recent");
    assert.match(recent, /^Just joined: gus\b/, "newest first");
    assert.equal(await page.$eval("#room-list .count", (count) => count.firstChild.textContent), "7", "the room list agrees");
    await timelineHas(page, "ana (unverified) joined the chat");
    const notices = await text(page, "#messages");
    assert.ok(!/gus \(unverified\) joined/.test(notices), `a counted join is no notice: ${notices}`);

    step("leavers are counted too");
    for (const gone of peers.splice(-3)) gone.close();
    await page.waitForFunction(() => document.getElementById("member-count").textContent === "4", null, WAIT);
    await page.waitForFunction(() => /\d left/.test(document.getElementById("recent").textContent), null, WAIT);
    await page.screenshot({ path: path.join(outputDir, "occupancy.png") });
    assert.deepEqual(await axeViolations(page), [], "axe finds nothing in the panel with its count and button");

    step("leavers are not named: Refresh list asks the server again");
    await page.click("#recent button.refresh");
    await page.waitForFunction(() => document.querySelectorAll("#members li").length === 4, null, WAIT);
    const names = await page.$$eval("#members li", (items) => items.map((li) => li.textContent));
    assert.ok(!names.some((name) => /gus|fay|eve/.test(name)), `the leavers are gone from the list: ${names}`);
    assert.equal(await text(page, "#member-count"), "4", "the count agrees with the list");
    await page.context().close();
    await quiet.context().close();
  } finally {
    peers.forEach((p) => p.close());
  }
}, "all occupancy checks passed");
