// Signing in (issue 15), in headless Chromium: the local stack's development
// sign-in (the stack given runs with --jwt-secret), names on both pages' lines,
// Sign out, refusals without a token; a token already in localStorage; and the
// authorization-code flow with PKCE against a tiny OIDC issuer (oidc-issuer.cjs)
// with a second stack this script starts with --oidc-issuer.
// Usage: CHAT_LOCAL_BIN=… node signin.test.cjs <ws url of a --jwt-secret stack> <output dir>
"use strict";

const assert = require("node:assert/strict");
const path = require("node:path");
const { WAIT, runChecks, WebSocket, startStack, stopStack, step, openChat, line, waitForStatus, connect, say } = require("./helpers.cjs");
const { startIssuer } = require("./oidc-issuer.cjs");

const [wsUrl, outputDir] = process.argv.slice(2);
if (!wsUrl || !outputDir) throw new Error("usage: node signin.test.cjs <ws://host:port/stage> <output dir>");
const origin = (ws) => new URL(ws.replace(/^ws/, "http")).origin;
const CLIENT_ID = "chat-web";

// Every WebSocket the page opens, by URL: to tell a refusal from a reconnect loop.
function sockets(page) {
  const urls = [];
  page.on("websocket", (ws) => urls.push(ws.url()));
  return urls;
}

const loginStatus = (page) => page.textContent("#login-status");
// The sender shown on the stored (not pending) line with `text`.
async function who(page, text) {
  const stored = page.locator('#messages li[data-kind="chat"]', { hasText: text });
  await stored.waitFor(WAIT);
  return stored.locator(".who").textContent();
}

// The upgrade's HTTP status for a connection attempt (101 when accepted).
function upgradeStatus(url) {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(url);
    socket.once("open", () => { socket.close(); resolve(101); });
    socket.once("unexpected-response", (_, response) => { resolve(response.statusCode); socket.terminate(); });
    socket.on("error", reject);
  });
}

async function devSignIn(page) {
  const opened = sockets(page);
  await waitForStatus(page, "disconnected");
  assert.equal(await loginStatus(page), "Not logged in");
  // Shown once the page has read config.json: waited for, not sampled.
  await page.waitForSelector("#sign-in", { state: "visible" });
  assert.ok(await page.isHidden("#name-field"), "no unverified name when the stack signs people in");
  await page.click("#connect");
  await page.waitForFunction(() => /Sign in required/.test(document.getElementById("notice").textContent), null, WAIT);
  assert.equal(opened.length, 0, "no connection is tried without a token");
  await page.click("#sign-in");
  await page.waitForURL(/\/login\.html\?return=/, WAIT);
  return opened;
}

async function signInAs(page, name) {
  await page.fill("#login-name", name);
  await page.press("#login-name", "Enter");
  await page.waitForURL((url) => url.pathname === "/", WAIT);
  await page.waitForFunction((n) => document.getElementById("login-status").textContent === `Logged in as ${n}`, name, WAIT);
}

async function devFlow(browser) {
  const pageUrl = `${origin(wsUrl)}/#room=signin`;
  step("dev sign-in: nothing connects without a token; the sign-in page mints one for a typed name");
  const alice = await openChat(browser, pageUrl);
  const aliceSockets = await devSignIn(alice);
  await signInAs(alice, "alice");
  assert.match(await alice.textContent("#token-validity"), /^\d+m \d\ds$|^\d+h \d\dm$/);
  assert.ok(await alice.isVisible("#sign-out"));
  await connect(alice);
  assert.match(aliceSockets.at(-1), /[?&]Authorization=Bearer%20[\w-]+\.[\w-]+\.[\w-]+(&|$)/, "the token goes as Authorization=Bearer%20…");
  assert.match(aliceSockets.at(-1), /[?&]batch=1(&|$)/, "coalesced frames asked for");

  const bob = await openChat(browser, pageUrl);
  await devSignIn(bob);
  await signInAs(bob, "bob");
  await connect(bob);

  step("names on both pages' lines, yours marked, no (unverified)");
  await say(alice, "hello, I am alice");
  await say(bob, "and I am bob");
  for (const [page, mine, theirs] of [[alice, "hello, I am alice", "and I am bob"], [bob, "and I am bob", "hello, I am alice"]]) {
    await line(page, theirs).waitFor(WAIT);
    await line(page, mine).waitFor(WAIT);
  }
  assert.equal(await who(alice, "hello, I am alice"), "alice (you)");
  assert.equal(await who(alice, "and I am bob"), "bob");
  assert.equal(await who(bob, "hello, I am alice"), "alice");
  assert.equal(await who(bob, "and I am bob"), "bob (you)");
  await bob.waitForFunction(() => [...document.querySelectorAll("#members li")].some((li) => li.textContent === "alice"), null, WAIT);
  await alice.screenshot({ path: path.join(outputDir, "signed-in.png") });

  step("Sign out closes the socket; without a token the page does not connect and the stack refuses");
  const before = aliceSockets.length;
  await alice.click("#sign-out");
  await waitForStatus(alice, "disconnected");
  assert.equal(await loginStatus(alice), "Not logged in");
  assert.equal(await alice.evaluate(() => localStorage.getItem("authToken")), null);
  await line(bob, "alice left the chat").waitFor(WAIT);
  await alice.click("#connect");
  await alice.waitForFunction(() => /Sign in required/.test(document.getElementById("notice").textContent), null, WAIT);
  assert.equal(aliceSockets.length, before, "no new connection without a token");
  assert.equal(await upgradeStatus(`${wsUrl}?room=signin`), 401, "no token: 401");
  assert.equal(await upgradeStatus(`${wsUrl}?room=signin&Authorization=Bearer%20not.a.token`), 403, "a bad token: 403");

  step("a token the stack refuses: a clear message, and no reconnect loop");
  await alice.evaluate(() => {
    const claims = btoa(JSON.stringify({ preferred_username: "mallory", exp: Math.floor(Date.now() / 1000) + 600 }));
    localStorage.setItem("authToken", `eyJhbGciOiJIUzI1NiJ9.${claims.replace(/=+$/, "")}.forged`);
    localStorage.setItem("exp", String(Math.floor(Date.now() / 1000) + 600));
  });
  await alice.click("#connect");
  await waitForStatus(alice, "error");
  assert.match(await alice.textContent("#notice"), /refused the connection.*sign in again/);
  await alice.waitForTimeout(2_500); // longer than the first reconnect delay: it must stay down
  assert.equal(aliceSockets.length, before + 1, "one attempt, no retries");
  await alice.context().close();
  await bob.context().close();
}

async function tokenInStorage(browser) {
  step("a page given a token in localStorage shows Logged in and a countdown, and connects with it");
  const minted = await (await fetch(`${origin(wsUrl)}/dev/token`, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ name: "dora" }),
  })).json();
  assert.equal(minted.name, "dora");
  const context = await browser.newContext();
  await context.addInitScript(({ token, exp }) => {
    if (!localStorage.getItem("authToken")) {
      localStorage.setItem("authToken", token);
      localStorage.setItem("exp", String(exp));
    }
  }, minted);
  const page = await context.newPage();
  await page.goto(`${origin(wsUrl)}/#room=signin`);
  await page.waitForFunction(() => document.getElementById("login-status").textContent === "Logged in as dora", null, WAIT);
  const first = await page.textContent("#token-validity");
  await page.waitForFunction((t) => document.getElementById("token-validity").textContent !== t, first, WAIT);
  const left = (text) => text.match(/^(\d+)m (\d\d)s$/).slice(1).reduce((m, s) => Number(m) * 60 + Number(s));
  const second = await page.textContent("#token-validity");
  assert.ok(left(second) < left(first) && left(first) - left(second) <= 5, `the countdown runs: ${first} → ${second}`);
  assert.ok(Math.abs(left(second) - (minted.exp - Date.now() / 1000)) <= 3, "the time left is the token's");
  await connect(page);
  await say(page, "dora was here");
  assert.equal(await who(page, "dora was here"), "dora (you)");
  await context.close();
}

async function tokenOnly(browser) {
  step('config {"auth":"token"} (a secret off loopback): no Sign in button, and the notice says a token is needed');
  const context = await browser.newContext();
  await context.route("**/config.json", (route) => route.fulfill({ json: { auth: "token" } }));
  const page = await context.newPage();
  const opened = sockets(page);
  await page.goto(`${origin(wsUrl)}/#room=signin`);
  await page.waitForFunction(() => document.getElementById("name-field").hidden, null, WAIT);
  assert.ok(await page.isHidden("#sign-in"));
  await page.click("#connect");
  await page.waitForFunction(() => /needs a token/.test(document.getElementById("notice").textContent), null, WAIT);
  assert.equal(opened.length, 0);
  await context.close();
}

async function oidcFlow(browser) {
  step("OIDC: Sign in goes to the issuer (code flow, PKCE S256, state, nonce) and back; the ID token connects");
  const issuer = await startIssuer({ clientId: CLIENT_ID, user: "carol" });
  const stack = await startStack({ db: path.join(outputDir, "oidc.db"), args: ["--oidc-issuer", issuer.issuer, "--audience", CLIENT_ID] });
  try {
    const pageUrl = `${origin(stack.wsUrl)}/#room=oidc`;
    const config = await (await fetch(`${origin(stack.wsUrl)}/config.json`)).json();
    assert.equal(config.auth, "oidc");
    assert.equal(config.issuer, issuer.issuer);
    const page = await openChat(browser, pageUrl);
    await waitForStatus(page, "disconnected");
    assert.equal(await loginStatus(page), "Not logged in");
    await page.click("#sign-in");
    await page.waitForFunction(() => document.getElementById("login-status").textContent === "Logged in as carol", null, WAIT);
    assert.equal(page.url(), pageUrl, "back on the page, the code gone from the address, the room kept");
    const [asked] = issuer.seen.authorize;
    assert.equal(asked.code_challenge_method, "S256");
    assert.equal(asked.redirect_uri, `${origin(stack.wsUrl)}/`);
    assert.equal(issuer.seen.token.length, 1, "the code was exchanged once");
    await waitForStatus(page, "connected"); // back from signing in, it connects
    await say(page, "carol via OIDC");
    assert.equal(await who(page, "carol via OIDC"), "carol (you)");
    const peer = await openChat(browser, pageUrl);
    await peer.click("#connect");
    await peer.waitForFunction(() => /Sign in required/.test(document.getElementById("notice").textContent), null, WAIT);
    assert.equal(await upgradeStatus(`${stack.wsUrl}?room=oidc`), 401);
    await page.screenshot({ path: path.join(outputDir, "oidc-signed-in.png") });
    await page.context().close();
    await peer.context().close();
  } finally {
    await stopStack(stack);
    await issuer.close();
  }
}

runChecks(async (browser) => {
  await devFlow(browser);
  await tokenInStorage(browser);
  await tokenOnly(browser);
  await oidcFlow(browser);
}, "all sign-in checks passed");
