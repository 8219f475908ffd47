// What the browser tests share: launching Chromium, opening the page as one user,
// and the few page actions every test needs. Waits have timeouts, never sleeps.
"use strict";

const path = require("node:path");

const tools = path.join(__dirname, "..", ".tools", "node_modules");
const { chromium } = require(path.join(tools, "playwright-core"));
const WebSocket = require(path.join(tools, "ws")); // wscat's own client library

const WAIT = { timeout: 10_000 };

const step = (text) => console.log(`browser: ${text}`);

function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync"],
  });
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

module.exports = { WAIT, WebSocket, step, launch, openChat, status, line, waitForStatus, connect, say, deleteConnection };
