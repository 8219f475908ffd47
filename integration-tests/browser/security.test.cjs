// The page keeps its token and its scripts to itself (issue 22, finding 9), in
// headless Chromium against a stack with --jwt-secret: the token goes only to the
// configured endpoint (another URL in the box, typed or remembered, connects
// without it and says so), plain ws:// off this machine is refused before any
// connection is tried, and both pages carry a Content-Security-Policy (meta tag and
// header) that refuses inline script, inline style and framing — and a violation
// is seen by the guard every browser test runs under (helpers.cjs).
// Usage: node security.test.cjs <ws url of a --jwt-secret stack> <output dir>
"use strict";

const assert = require("node:assert/strict");
const { WAIT, WebSocket, runChecks, step, openChat, waitForStatus, connect, takeCspViolations } = require("./helpers.cjs");

const [wsUrl, outputDir] = process.argv.slice(2);
if (!wsUrl || !outputDir) throw new Error("usage: node security.test.cjs <ws://host:port/stage> <output dir>");
const origin = new URL(wsUrl.replace(/^ws/, "http")).origin;

// Every WebSocket the page opens, by URL.
function sockets(page) {
  const urls = [];
  page.on("websocket", (ws) => urls.push(ws.url()));
  return urls;
}

// A plain WebSocket server on loopback that is not the chat: it accepts anything
// and keeps the URL of every upgrade it gets.
async function recordingServer() {
  const server = new WebSocket.Server({ host: "127.0.0.1", port: 0 });
  await new Promise((resolve, reject) => { server.once("listening", resolve); server.once("error", reject); });
  const urls = [];
  const waiters = [];
  server.on("connection", (_socket, request) => {
    urls.push(request.url);
    waiters.splice(0).forEach((wake) => wake());
  });
  return {
    url: `ws://127.0.0.1:${server.address().port}/dev`,
    urls,
    // Resolves once it has had `n` upgrades.
    async upgrades(n) {
      const deadline = Date.now() + WAIT.timeout;
      while (urls.length < n) {
        if (Date.now() > deadline) throw new Error(`the recording server had ${urls.length} upgrades, not ${n}`);
        await new Promise((wake) => { waiters.push(wake); setTimeout(wake, 200); });
      }
      return urls[n - 1];
    },
    close: () => new Promise((resolve) => { server.clients.forEach((c) => c.terminate()); server.close(resolve); }),
  };
}

// A page signed in with a development token for `name` (as the login page leaves it).
async function signedIn(browser, name) {
  const minted = await (await fetch(`${origin}/dev/token`, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ name }),
  })).json();
  assert.ok(minted.token, "the stack minted a token");
  const page = await openChat(browser, `${origin}/#room=security`);
  await page.evaluate(({ token, exp }) => { localStorage.setItem("authToken", token); localStorage.setItem("exp", String(exp)); }, minted);
  const opened = sockets(page);
  await page.reload();
  await page.waitForFunction((n) => document.getElementById("login-status").textContent === `Logged in as ${n}`, name, WAIT);
  return { page, opened, token: minted.token };
}

const notice = (page) => page.textContent("#notice");

// Waits until the guard has seen a violation whose report includes `text` (caused
// on purpose), and takes every violation seen so far off its list.
const expected = [];
async function reported(text) {
  const deadline = Date.now() + WAIT.timeout;
  while (!expected.some((seen) => seen.includes(text))) {
    if (Date.now() > deadline) throw new Error(`no CSP violation with "${text}" was reported: ${expected.join(" | ")}`);
    await new Promise((wake) => setTimeout(wake, 50));
    expected.push(...takeCspViolations());
  }
}

async function tokenOnlyToItsEndpoint(browser) {
  step("another endpoint in the box gets no token, and the page says so; the stack's own endpoint gets it");
  const other = await recordingServer();
  try {
    const { page, opened, token } = await signedIn(browser, "alice");
    assert.equal(await page.inputValue("#url"), wsUrl, "the box starts at the stack's endpoint");
    await page.fill("#url", other.url);
    await connect(page);
    const asked = await other.upgrades(1);
    assert.doesNotMatch(asked, /Authorization/i, `no token in ${asked}`);
    assert.ok(!asked.includes(token.split(".")[1]), "not even a part of it");
    assert.match(asked, /[?&]room=security(&|$)/, "the room still goes");
    assert.equal(await page.textContent("#status"), "connected, without your sign-in");
    assert.match(await notice(page), new RegExp(`without your sign-in: it is only sent to ${origin.replace(/^http/, "ws")}\\.$`));

    step("a remembered URL of another endpoint, on reload: connects again without the token");
    await page.reload();
    const again = await other.upgrades(2);
    assert.doesNotMatch(again, /Authorization/i, `no token in ${again}`);
    await waitForStatus(page, "connected");

    step("back to the stack's endpoint: the token goes (and the stack lets alice in)");
    await page.click("#disconnect");
    await waitForStatus(page, "disconnected");
    await page.fill("#url", wsUrl);
    await connect(page);
    assert.match(opened.at(-1), new RegExp(`^${wsUrl}\\?.*[?&]Authorization=Bearer%20${token.replace(/\./g, "\\.")}(&|$)`));
    assert.equal(await page.textContent("#status"), "connected");
    assert.equal(other.urls.length, 2, "nothing more went to the other server");
    await page.context().close();

    step("not signed in, where sign-in is required: another endpoint is tried without a token, not refused");
    const anonymous = await openChat(browser, `${origin}/#room=security`);
    await waitForStatus(anonymous, "disconnected");
    await anonymous.fill("#url", other.url);
    await connect(anonymous);
    assert.doesNotMatch(await other.upgrades(3), /Authorization/i);
    await anonymous.context().close();
  } finally {
    await other.close();
  }
}

async function plainWsOffLoopback(browser) {
  step("plain ws:// to a host off this machine is refused, with a reason, before any connection");
  const { page, opened } = await signedIn(browser, "bob");
  for (const refused of ["ws://example.invalid/dev", "ws://192.168.1.10:8080/dev", "ws://[2001:db8::1]/dev", "ws://127.0.0.1.example.invalid/dev"]) {
    await page.fill("#url", refused);
    await page.click("#connect");
    const { host, pathname } = new URL(refused);
    const expected = `Not connected: plain ws:// is unencrypted, so the page only uses it on this machine (localhost, 127.x.x.x, [::1]); use wss://${host}${pathname} instead.`;
    await page.waitForFunction((text) => document.getElementById("notice").textContent === text, expected, WAIT);
    assert.equal(await page.getAttribute("#status", "data-state"), "disconnected", refused);
  }
  assert.deepEqual(opened, [], "no WebSocket was opened");

  step("a remembered ws:// URL off this machine is refused on load too");
  await page.evaluate(() => localStorage.setItem("websocket-chat-url", "ws://example.invalid/dev"));
  await page.reload();
  await page.waitForFunction(() => /plain ws:\/\/ is unencrypted/.test(document.getElementById("notice").textContent), null, WAIT);
  assert.deepEqual(opened, [], "still no WebSocket");
  await page.context().close();
}

async function addressRules(browser) {
  step("the address rules, as the page's own module has them");
  const page = await openChat(browser, `${origin}/`);
  const results = await page.evaluate(async () => {
    const { isLoopback, urlProblem, tokenGoesTo, configuredEndpoint, nameProblem } = await import("/address.js");
    const at = (href) => new URL(href);
    return {
      names: ["Ada", "Grace Hopper", "é", "a\u200Db"].map((n) => [n, nameProblem(n)]),
      badNames: ["a\nb", "eve\u202Ecila", "x\u2066y", "m\u200Fn", "p\u2028q", "r\u061Cs"].map((n) => [n, nameProblem(n)]),
      loopback: ["127.0.0.1", "127.255.0.9", "[::1]", "localhost", "LOCALHOST"].map((h) => [h, isLoopback(h)]),
      notLoopback: ["0.0.0.0", "10.0.0.1", "128.0.0.1", "example.com", "127.0.0.1.example.com", "[::ffff:7f00:1]", "localhost.example.com"]
        .map((h) => [h, isLoopback(h)]),
      allowed: ["ws://127.0.0.1:8080/dev", "ws://127.1/dev", "ws://[::1]:9/dev", "ws://localhost/dev", "wss://example.com/prod"]
        .map((u) => [u, urlProblem(u)]),
      refused: ["ws://example.com/dev", "ws://10.0.0.1/dev", "http://127.0.0.1/dev", "not a url", ""].map((u) => [u, urlProblem(u)]),
      token: [
        tokenGoesTo("ws://127.0.0.1:8080/dev?x=1", "ws://127.0.0.1:8080/dev"),
        tokenGoesTo("ws://127.0.0.1:8080/prod", "ws://127.0.0.1:8080/dev"),
        tokenGoesTo("ws://127.0.0.1:8081/dev", "ws://127.0.0.1:8080/dev"),
        tokenGoesTo("ws://localhost:8080/dev", "ws://127.0.0.1:8080/dev"),
        tokenGoesTo("wss://api.example.com/dev", "ws://api.example.com/dev"),
        tokenGoesTo("wss://api.example.com.evil.example/dev", "wss://api.example.com/dev"),
        tokenGoesTo("wss://api.example.com/dev", ""),
      ],
      endpoints: [
        configuredEndpoint({ auth: "dev" }, at("http://127.0.0.1:8080/")),
        configuredEndpoint({ auth: "oidc", endpoint: "wss://abc.execute-api.eu-west-1.amazonaws.com/prod" }, at("https://chat.example.com/")),
        configuredEndpoint({ auth: "oidc", endpoint: "/prod" }, at("https://chat.example.com/chat/")),
        configuredEndpoint({ auth: "oidc", endpoint: "ftp://x/" }, at("https://chat.example.com/")),
        configuredEndpoint({ auth: "dev" }, at("file:///home/me/index.html")),
      ],
    };
  });
  for (const [name, problem] of results.names) assert.equal(problem, null, `${JSON.stringify(name)} is a name`);
  for (const [name, problem] of results.badNames) assert.ok(problem, `${JSON.stringify(name)} is refused as the server refuses it`);
  for (const [host, yes] of results.loopback) assert.ok(yes, `${host} is loopback`);
  for (const [host, yes] of results.notLoopback) assert.ok(!yes, `${host} is not loopback`);
  for (const [url, problem] of results.allowed) assert.equal(problem, null, url);
  for (const [url, problem] of results.refused) assert.ok(problem, `${url} is refused`);
  assert.deepEqual(results.token, [true, true, false, false, false, false, false]);
  assert.deepEqual(results.endpoints, [
    "ws://127.0.0.1:8080/dev", "wss://abc.execute-api.eu-west-1.amazonaws.com/prod", "wss://chat.example.com/prod", "", "",
  ]);
  await page.context().close();
}

async function contentSecurityPolicy(browser) {
  step("both pages carry the CSP as a header (with frame-ancestors) and as a meta tag");
  for (const path of ["/", "/login.html"]) {
    const response = await fetch(`${origin}${path}`);
    const header = response.headers.get("content-security-policy") ?? "";
    for (const directive of ["script-src 'self'", "style-src 'self'", "frame-ancestors 'none'", "base-uri 'none'", "object-src 'none'"]) {
      assert.ok(header.split(/;\s*/).includes(directive), `${path}: ${directive} in "${header}"`);
    }
    const html = await response.text();
    assert.match(html, /<meta http-equiv="Content-Security-Policy" content="default-src 'self'; script-src 'self';/, path);
    assert.doesNotMatch(html, /<script(?![^>]*\bsrc=)[^>]*>/, `${path}: no inline script`);
  }
  assert.equal(takeCspViolations().length, 0);

  step("an injected inline script, inline style or eval is refused, and the guard sees each violation");
  const page = await openChat(browser, `${origin}/`);
  await waitForStatus(page, "disconnected");
  const outcome = await page.evaluate(() => new Promise((resolve) => {
    const script = document.createElement("script");
    script.textContent = "window.__inlineRan = true";
    document.body.append(script);
    const styled = document.createElement("p");
    styled.setAttribute("style", "color: rgb(255, 0, 0)");
    document.body.append(styled);
    // From a timer, as the page's own code would: not inside the test's evaluation.
    setTimeout(() => {
      let evaluated = false;
      try { evaluated = eval("true"); } catch { /* refused */ }
      resolve({ ran: window.__inlineRan ?? false, red: getComputedStyle(styled).color === "rgb(255, 0, 0)", evaluated });
    });
  }));
  assert.deepEqual(outcome, { ran: false, red: false, evaluated: false });
  for (const directive of ["script-src-elem", "style-src-attr", "script-src"]) await reported(`: ${directive} refused`);

  step("another page cannot frame the chat (frame-ancestors, from the header); config.json, without a policy, can be");
  await page.context().close();
  takeCspViolations(); // late copies of the reports above (the console's and the event's): the context is closed, no more come
  const framing = await (await browser.newContext()).newPage(); // a page of no origin, with no policy
  await framing.setContent(`<iframe src="${origin}/" title="chat"></iframe><iframe src="${origin}/config.json" title="control"></iframe>`);
  const frameOf = async (title) => (await framing.$(`iframe[title="${title}"]`)).contentFrame();
  const [chat, control] = [await frameOf("chat"), await frameOf("control")];
  await Promise.all([chat, control].map((frame) => frame.waitForLoadState("load", WAIT)));
  assert.match(await control.evaluate(() => document.body.textContent), /"auth"/, "the control frame loaded");
  const framed = await chat.evaluate(() => Boolean(document.getElementById("url"))).catch(() => false);
  assert.equal(framed, false, `the chat did not load inside the frame (${chat.url()})`);
  await reported("frame-ancestors"); // Chromium reports the refused frame: expected here
  await framing.context().close();
  takeCspViolations();
}

runChecks(async (browser) => {
  await contentSecurityPolicy(browser);
  await addressRules(browser);
  await tokenOnlyToItsEndpoint(browser);
  await plainWsOffLoopback(browser);
}, "all page security checks passed");
