// What the browser tests share: launching Chromium, opening the page as one user,
// and the few page actions every test needs. Waits have timeouts, never sleeps.
"use strict";

const fs = require("node:fs");
const path = require("node:path");
const readline = require("node:readline");
const { spawn } = require("node:child_process");

const tools = path.join(__dirname, "..", ".tools", "node_modules");
const { chromium } = require(path.join(tools, "playwright-core"));
const WebSocket = require(path.join(tools, "ws")); // wscat's own client library

const WAIT = { timeout: 10_000 };

const step = (text) => console.log(`browser: ${text}`);

// Every page of every test runs under the pages' Content-Security-Policy, and a
// violation fails the script: the page's `securitypolicyviolation` event, or
// Chromium's console report of one, is kept here, and closing the browser (every
// script does, last) throws if any was kept. `takeCspViolations` hands a test
// the ones it caused on purpose.
const cspViolations = [];

function cspViolation(text) {
  cspViolations.push(text);
  console.error(`browser: CSP violation: ${text}`);
}

function takeCspViolations() {
  return cspViolations.splice(0);
}

async function watchCsp(context) {
  await context.exposeBinding("__reportCspViolation", ({ page }, text) => cspViolation(`${page.url()}: ${text}`));
  await context.addInitScript(() => {
    document.addEventListener("securitypolicyviolation", (event) => {
      window.__reportCspViolation(`${event.effectiveDirective} refused ${event.blockedURI || "(inline)"} at ${event.sourceFile}:${event.lineNumber}`);
    });
  });
  context.on("console", (message) => {
    if (/Content.Security.Policy/i.test(message.text())) cspViolation(`console: ${message.text()}`);
  });
}

// The Chromium to drive: $CHROMIUM, else apt's. Missing, it is one line that says
// how to get it, not Playwright's page of launch diagnostics.
function chromiumPath() {
  const executable = process.env.CHROMIUM || "/usr/bin/chromium";
  if (!fs.existsSync(executable)) {
    throw new Error(`Chromium not found at ${executable}: run integration-tests/run-all.sh (it installs Chromium with apt), or set CHROMIUM=/path/to/chromium`);
  }
  return executable;
}

async function launch() {
  const browser = await chromium.launch({
    executablePath: chromiumPath(),
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync"],
  });
  const newContext = browser.newContext.bind(browser);
  browser.newContext = async (options) => {
    const context = await newContext(options);
    await watchCsp(context);
    return context;
  };
  const close = browser.close.bind(browser);
  browser.close = async () => {
    await close();
    const found = takeCspViolations();
    if (found.length) throw new Error(`Content-Security-Policy violations:\n${found.join("\n")}`);
  };
  return browser;
}

// One context per user: separate localStorage, like two people. `tuning` is
// handed to the page as window.CHAT_TUNING before it loads.
async function openChat(browser, pageUrl, { viewport = { width: 900, height: 700 }, tuning } = {}) {
  const context = await browser.newContext({ viewport });
  if (tuning) await context.addInitScript((t) => { window.CHAT_TUNING = t; }, tuning);
  const page = await context.newPage();
  page.on("pageerror", (error) => { throw new Error(`page error: ${error.message}`); });
  await page.goto(pageUrl);
  return page;
}

const status = (page) => page.locator("#status");
const line = (page, text) => page.locator("#messages li", { hasText: text });

async function waitForStatus(page, state) {
  await page.waitForFunction((s) => document.getElementById("status").dataset.state === s, state, WAIT);
}

async function connect(page) {
  await page.click("#connect");
  await waitForStatus(page, "connected");
}

async function say(page, text) {
  await page.fill("#text", text);
  await page.press("#text", "Enter");
}

// A plain WebSocket client (no page): another user, or a seed client. Keeps every
// frame it gets (coalesced ones unpacked) so a test can wait for one.
class Peer {
  static async open(url) {
    const socket = new WebSocket(url);
    const peer = new Peer(socket);
    await new Promise((resolve, reject) => { socket.once("open", resolve); socket.once("error", reject); });
    return peer;
  }

  constructor(socket) {
    this.socket = socket;
    this.frames = [];
    this.waiters = [];
    socket.on("message", (data) => {
      const frame = JSON.parse(data);
      this.frames.push(...(Array.isArray(frame.events) ? frame.events : [frame]));
      this.waiters = this.waiters.filter((check) => !check());
    });
  }

  // The first frame (already here or still to come) that `wanted` accepts.
  next(wanted, what = "a frame") {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no ${what} within ${WAIT.timeout} ms`)), WAIT.timeout);
      const check = () => {
        const frame = this.frames.find(wanted);
        if (frame) { clearTimeout(timer); resolve(frame); }
        return Boolean(frame);
      };
      if (!check()) this.waiters.push(check);
    });
  }

  // Sends a chat line and waits until it is broadcast back.
  async say(text) {
    this.socket.send(JSON.stringify({ action: "sendmessage", message: text }));
    return this.next((f) => f.kind === "chat" && f.text === text, `echo of "${text}"`);
  }

  close() { this.socket.close(1000); }
}

// Starts the stack's binary (CHAT_LOCAL_BIN) itself, for a script that needs
// other flags or a restart: resolves to {child, wsUrl} once it listens. The
// script stops it (stop(), and process exit kills whatever is left).
const started = new Set();
process.on("exit", () => started.forEach((child) => child.kill("SIGKILL")));
function startStack({ db, port = 0, args = [] }) {
  const binary = process.env.CHAT_LOCAL_BIN;
  if (!binary) throw new Error("CHAT_LOCAL_BIN names the chat-local binary");
  const child = spawn(binary, ["--port", String(port), "--db", db, ...args], {
    stdio: ["ignore", "pipe", "inherit"],
    env: { ...process.env, RUST_LOG: "warn" },
  });
  started.add(child);
  child.once("exit", () => started.delete(child));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("the stack did not listen in time")), 20_000);
    readline.createInterface({ input: child.stdout }).once("line", (first) => {
      clearTimeout(timer);
      resolve({ child, wsUrl: first.replace(/^websocket: /, "") });
    });
    child.once("exit", (code) => reject(new Error(`the stack exited with ${code}`)));
  });
}

function stopStack({ child }) {
  return new Promise((resolve) => {
    if (child.exitCode !== null) return resolve();
    child.once("exit", resolve);
    child.kill("SIGTERM");
  });
}

// Runs a script's checks with one browser; a failure ends the process with 1.
function runChecks(checks, done) {
  (async () => {
    const browser = await launch();
    try {
      await checks(browser);
      step(done);
    } finally {
      await browser.close();
    }
  })().catch((error) => {
    console.error(error);
    process.exit(1);
  });
}

// DeleteConnection on the stack's @connections API, SigV4-signed with the stack's
// default test/test key as an SDK would sign it (service execute-api, whose
// canonical path is the sent path encoded once more).
async function deleteConnection(stackUrl, connectionId) {
  const crypto = require("node:crypto");
  const url = new URL(`${stackUrl.href.replace(/\/$/, "")}/@connections/${encodeURIComponent(connectionId)}`);
  const [key, secret, region, service] = ["test", "test", "us-east-1", "execute-api"];
  const amzDate = new Date().toISOString().replace(/[-:]/g, "").replace(/\.\d+/, "");
  const scope = `${amzDate.slice(0, 8)}/${region}/${service}/aws4_request`;
  const uriEncode = (text) => Array.from(Buffer.from(text, "utf8"))
    .map((b) => (/[A-Za-z0-9_.~-]/.test(String.fromCharCode(b)) ? String.fromCharCode(b) : `%${b.toString(16).toUpperCase().padStart(2, "0")}`))
    .join("");
  const canonicalPath = url.pathname.split("/").map(uriEncode).join("/");
  const sha256 = (data) => crypto.createHash("sha256").update(data).digest("hex");
  const hmac = (k, data) => crypto.createHmac("sha256", k).update(data).digest();
  const canonical = ["DELETE", canonicalPath, "", `host:${url.host}`, `x-amz-date:${amzDate}`, "", "host;x-amz-date", sha256("")].join("\n");
  const toSign = ["AWS4-HMAC-SHA256", amzDate, scope, sha256(canonical)].join("\n");
  const signingKey = [amzDate.slice(0, 8), region, service, "aws4_request"].reduce(hmac, `AWS4${secret}`);
  const signature = crypto.createHmac("sha256", signingKey).update(toSign).digest("hex");
  const authorization = `AWS4-HMAC-SHA256 Credential=${key}/${scope}, SignedHeaders=host;x-amz-date, Signature=${signature}`;
  return fetch(url, { method: "DELETE", headers: { "x-amz-date": amzDate, authorization } });
}

// axe-core's WCAG 2.1 A and AA violations on the page, as lines (none: []). The
// script is served as if from the page's own origin: the CSP allows no other.
const AXE = path.join(tools, "axe-core", "axe.min.js");
async function axeViolations(page) {
  await page.route("**/axe.min.js", (route) => route.fulfill({ path: AXE, contentType: "text/javascript" }));
  await page.addScriptTag({ url: "/axe.min.js" });
  return page.evaluate(async () => {
    const results = await window.axe.run(document, { runOnly: { type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"] } });
    return results.violations.map((v) => `${v.id} (${v.impact}): ${v.help} — ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`);
  });
}

// An HS256 token signed with the stack's --jwt-secret, as the dev sign-in page
// mints it; `chat` (optional) is the rights claim: {rights: {pattern: letters}, rooms}.
function mintToken(secret, sub, name, chat) {
  const crypto = require("node:crypto");
  const now = Math.floor(Date.now() / 1000);
  const part = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const claims = { sub, preferred_username: name, iat: now, exp: now + 900, ...(chat ? { chat } : {}) };
  const unsigned = `${part({ alg: "HS256", typ: "JWT" })}.${part(claims)}`;
  return { token: `${unsigned}.${crypto.createHmac("sha256", secret).update(unsigned).digest("base64url")}`, exp: now + 900, name };
}

// Every command the page sent, parsed, in order (each with a non-enumerable `at`, ms).
function sentCommands(page) {
  const sent = [];
  page.on("websocket", (ws) => ws.on("framesent", ({ payload }) => {
    try { sent.push(Object.defineProperty(JSON.parse(payload), "at", { value: Date.now() })); } catch { /* not JSON */ }
  }));
  return sent;
}

// Every frame the page received (coalesced ones unpacked).
function receivedFrames(page) {
  const got = [];
  page.on("websocket", (ws) => ws.on("framereceived", ({ payload }) => {
    try {
      const frame = JSON.parse(payload);
      got.push(...(Array.isArray(frame.events) ? frame.events : [frame]));
    } catch { /* not JSON */ }
  }));
  return got;
}

// A page of the stack at `origin` signed in with `minted`, showing `room`,
// connected (a `route` — a server played by the test — is set before it
// connects); `page.sent` and `page.got` keep what it sends and receives.
async function signedInPage(browser, origin, minted, room, { viewport = { width: 1000, height: 620 }, tuning, route } = {}) {
  const page = await openChat(browser, `${origin}/#room=${room}`, { viewport, tuning });
  if (route) await page.context().routeWebSocket(/\/dev/, route);
  await page.evaluate(({ token: t, exp }) => { localStorage.setItem("authToken", t); localStorage.setItem("exp", String(exp)); }, minted);
  page.sent = sentCommands(page);
  page.got = receivedFrames(page);
  await page.reload();
  await page.waitForFunction((n) => document.getElementById("login-status").textContent === `Logged in as ${n}`, minted.name, WAIT);
  await connect(page);
  return page;
}

const listOf = (room) => `ol.messages[aria-label="Messages in ${room}"]`;
const rowOf = (room) => `#room-list li[data-room="${room}"]`;

// Connected, and `room` has caught up.
async function caughtUp(page, room) {
  await page.waitForFunction((selector) => document.querySelector(selector)?.getAttribute("aria-busy") === "false"
    && document.getElementById("status").dataset.state === "connected", listOf(room), WAIT);
}

// Joins `room` with the join form and waits until it has caught up.
async function joinRoom(page, room) {
  await page.fill("#join-room", room);
  await page.press("#join-room", "Enter");
  await page.locator(rowOf(room)).waitFor(WAIT);
  await caughtUp(page, room);
}

async function switchTo(page, room) {
  await page.click(`${rowOf(room)} .switch`);
  await page.waitForFunction((r) => document.getElementById("messages")?.getAttribute("aria-label") === `Messages in ${r}`, room, WAIT);
}

// Polls `check` (a test-side condition) until it holds.
async function waitUntil(check, what) {
  const until = Date.now() + WAIT.timeout;
  while (!check()) {
    if (Date.now() > until) throw new Error(`no ${what} within ${WAIT.timeout} ms`);
    await new Promise((resolve) => { setTimeout(resolve, 50); });
  }
}

module.exports = { mintToken, sentCommands, receivedFrames, signedInPage, listOf, rowOf, caughtUp, joinRoom, switchTo, waitUntil,
  axeViolations, takeCspViolations, WAIT, WebSocket, Peer, startStack, stopStack, runChecks, deleteConnection, step, launch, openChat, status, line,
  waitForStatus, connect, say };
