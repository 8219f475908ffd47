// Two accounts with the same display name (issue 22, finding 3), end to end in
// headless Chromium against a stack this script starts with a --jwt-secret of its
// own: two HS256 tokens, minted here with that secret, with different `sub`s and the same
// `preferred_username` "alice". The stack carries each one's `userId` on their
// lines and in `who` (youUserId); each page marks only its own lines "(you)" and
// shows the two alices with different tags.
// Usage: CHAT_LOCAL_BIN=… node same-name.test.cjs <ws url (unused)> <output dir>
"use strict";

const assert = require("node:assert/strict");
const crypto = require("node:crypto");
const path = require("node:path");
const { WAIT, runChecks, startStack, stopStack, step, openChat, connect, say } = require("./helpers.cjs");

const [, outputDir] = process.argv.slice(2);
if (!outputDir) throw new Error("usage: CHAT_LOCAL_BIN=… node same-name.test.cjs <ws url> <output dir>");
const secret = crypto.randomBytes(32).toString("hex");
let origin = null; // the stack's, once started

// An HS256 token signed with the stack's secret, as a sign-in service would mint it.
function token(sub, name) {
  const now = Math.floor(Date.now() / 1000);
  const part = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const unsigned = `${part({ alg: "HS256", typ: "JWT" })}.${part({ sub, preferred_username: name, iat: now, exp: now + 600 })}`;
  return { token: `${unsigned}.${crypto.createHmac("sha256", secret).update(unsigned).digest("base64url")}`, exp: now + 600 };
}

// A page signed in with `minted`, connected to the room.
async function signedIn(browser, minted) {
  const page = await openChat(browser, `${origin}/#room=namesakes`);
  await page.evaluate(({ token, exp }) => { localStorage.setItem("authToken", token); localStorage.setItem("exp", String(exp)); }, minted);
  await page.reload();
  await page.waitForFunction(() => document.getElementById("login-status").textContent === "Logged in as alice", null, WAIT);
  await connect(page);
  return page;
}

async function who(page, text) {
  const row = page.locator('#messages li[data-kind="chat"]', { hasText: text });
  await row.waitFor(WAIT);
  return row.locator(".who").textContent();
}

runChecks(async (browser) => {
  const stack = await startStack({ db: path.join(outputDir, "same-name.db"), args: ["--jwt-secret", secret] });
  try {
    origin = new URL(stack.wsUrl.replace(/^ws/, "http")).origin;
    await namesakes(browser);
  } finally {
    await stopStack(stack);
  }
}, "all same-name checks passed");

async function namesakes(browser) {
  step("two accounts named alice (different subs) in one room");
  const first = await signedIn(browser, token(`alice-${crypto.randomUUID()}`, "alice"));
  const second = await signedIn(browser, token(`alice-${crypto.randomUUID()}`, "alice"));
  await say(first, "from the first alice");
  await say(second, "from the second alice");

  step("each page marks only its own line '(you)', and the two alices carry different tags");
  const shown = {};
  for (const [name, page] of [["first", first], ["second", second]]) {
    shown[name] = { first: await who(page, "from the first alice"), second: await who(page, "from the second alice") };
    await page.waitForFunction(() => document.querySelectorAll('#messages li[data-kind="chat"]').length === 2, null, WAIT);
    const mine = await page.$$eval('#messages li.mine[data-kind="chat"]', (rows) => rows.map((li) => li.lastChild.textContent));
    assert.deepEqual(mine, [`from the ${name} alice`], `${name} page: only its own line is mine`);
  }
  const tagOf = (label) => /^alice #([0-9a-z]{4})( \(you\))?$/.exec(label)?.[1];
  assert.ok(shown.first.first.endsWith(" (you)") && !shown.first.second.endsWith(" (you)"), JSON.stringify(shown));
  assert.ok(shown.second.second.endsWith(" (you)") && !shown.second.first.endsWith(" (you)"), JSON.stringify(shown));
  const [a, b] = [tagOf(shown.first.first), tagOf(shown.first.second)];
  assert.ok(a && b && a !== b, `two different tags: ${JSON.stringify(shown)}`);
  assert.equal(tagOf(shown.second.first), a, "the same tag for the same user on both pages");
  assert.equal(tagOf(shown.second.second), b);

  step("the member lists tell them apart");
  await first.waitForFunction((labels) => {
    const names = [...document.querySelectorAll("#members li")].map((li) => li.textContent).sort();
    return JSON.stringify(names) === JSON.stringify(labels);
  }, [`alice #${a} (you)`, `alice #${b}`].sort(), WAIT);
  await first.screenshot({ path: path.join(outputDir, "same-name.png") });
  await first.context().close();
  await second.context().close();
}
