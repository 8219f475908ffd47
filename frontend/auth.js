// Signing in. What the stack or the deployment asks for comes from `config.json`
// beside the page (missing = no sign-in). The token the page connects with sits in
// localStorage as the seed's page keeps it: `authToken`, and `exp` in epoch
// seconds. Two ways to get one: the local stack's development sign-in page
// (`loginUrl`), or an OIDC issuer with the authorization-code flow and PKCE
// (S256, state, nonce) — Cognito's hosted UI among them. The page is a public
// client: no secret; the server verifies every token it is given.

const TOKEN_KEY = "authToken";
const EXP_KEY = "exp";
const FLOW_KEY = "websocket-chat-oidc"; // sessionStorage: the request in flight across the redirect

/**
 * The page's sign-in: what config.json asks for, the stored token, and the panel
 * that shows them (Login Status, Token Validity, Sign in, Sign out, and the
 * unverified Name field, only where there is no sign-in).
 */
export class SignIn {
  // ui: {status, validity, signIn, signOut, nameField}
  constructor(ui) {
    this.ui = ui;
    this.config = { auth: "none" };
    this.ready = loadConfig().then((config) => { this.config = config; this.show(); });
    this.show();
    setInterval(() => this.show(), 1000);
  }

  /** The stored token while it is valid (`{token, exp, name}`), else null. */
  token() {
    const stored = storedToken();
    return stored && secondsLeft(stored) > 0 ? stored : null;
  }

  /** Why connecting cannot work now, or null. */
  problem() {
    if (this.config.auth === "none" || this.token()) return null;
    if (storedToken()) return "Sign-in expired: sign in again to connect.";
    return this.config.auth === "token"
      ? "Sign in required: this chat needs a token (localStorage authToken) from your sign-in service."
      : "Sign in required: this chat needs you to sign in.";
  }

  show() {
    const { ui, config } = this;
    const stored = storedToken();
    const left = stored && secondsLeft(stored);
    const valid = stored && left > 0;
    ui.status.textContent = valid ? `Logged in as ${stored.name ?? "(no name in the token)"}` : stored ? "Sign-in expired" : "Not logged in";
    ui.status.dataset.state = valid ? "in" : stored ? "expired" : "out";
    ui.validity.textContent = !stored ? "–" : left === Infinity ? "unknown" : valid ? duration(left) : "expired";
    ui.signIn.hidden = !["dev", "oidc"].includes(config.auth) || Boolean(valid); // "token": no way to sign in here
    ui.signOut.hidden = !stored;
    ui.nameField.hidden = config.auth !== "none" || Boolean(valid); // a verified name comes from the token
  }

  start() { return signIn(this.config); }

  /** Back from the issuer? Then signed in (true); throws what went wrong. */
  async complete() {
    await this.ready;
    const done = await completeSignIn(this.config);
    this.show();
    return done;
  }

  stop() {
    signOut(this.config);
    this.show();
  }
}

// config.json: `{auth: "none"}`, `{auth: "dev", loginUrl}`, `{auth: "oidc", issuer,
// clientId, scope, …}`, or `{auth: "token"}` (a token is required, obtained elsewhere).
async function loadConfig() {
  try {
    const response = await fetch("config.json", { cache: "no-store" });
    if (!response.ok) return { auth: "none" };
    const config = await response.json();
    return ["dev", "oidc", "token"].includes(config?.auth) ? config : { auth: "none" };
  } catch {
    return { auth: "none" }; // opened from a file, or no such file
  }
}

// The claims of a JWT, unverified (the server verifies): only to show a name and a time.
function claimsOf(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const bytes = Uint8Array.from(atob(part), (c) => c.charCodeAt(0));
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    return null;
  }
}

// The display name the server derives from the same claims.
function nameOf(claims) {
  return claims?.["cognito:username"] ?? claims?.username ?? claims?.preferred_username ?? claims?.name ?? claims?.sub ?? null;
}

/** The stored token: `{token, exp, name}` (exp 0 when unknown), or null. */
function storedToken() {
  const token = localStorage.getItem(TOKEN_KEY);
  if (!token) return null;
  const claims = claimsOf(token);
  const exp = Number(localStorage.getItem(EXP_KEY)) || Number(claims?.exp) || 0;
  return { token, exp, name: nameOf(claims) };
}

/** Seconds the stored token has left (Infinity when it does not say). */
function secondsLeft(stored) {
  return stored.exp ? stored.exp - Date.now() / 1000 : Infinity;
}

/** Keeps a token where the seed's page reads it (the login page uses this too). */
export function saveToken(token, exp) {
  localStorage.setItem(TOKEN_KEY, token);
  localStorage.setItem(EXP_KEY, String(exp));
}

function clearToken() {
  localStorage.removeItem(TOKEN_KEY);
  localStorage.removeItem(EXP_KEY);
}

// "14m 05s", "1h 02m".
function duration(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  const pad = (n) => String(n).padStart(2, "0");
  if (s >= 3600) return `${Math.floor(s / 3600)}h ${pad(Math.floor(s / 60) % 60)}m`;
  if (s >= 60) return `${Math.floor(s / 60)}m ${pad(s % 60)}s`;
  return `${s}s`;
}

// The page's own address, without query or fragment: the OIDC redirect URI.
function redirectUri() {
  return location.origin + location.pathname;
}

// Sends the browser to sign in; it comes back to this page.
async function signIn(config) {
  if (config.auth === "dev") {
    const login = new URL(config.loginUrl ?? "/login.html", location.href);
    login.searchParams.set("return", location.href);
    return location.assign(login.href);
  }
  const endpoints = await endpointsOf(config);
  const verifier = randomText(32);
  const flow = { state: randomText(16), nonce: randomText(16), verifier, hash: location.hash, tokenEndpoint: endpoints.token };
  sessionStorage.setItem(FLOW_KEY, JSON.stringify(flow));
  const url = new URL(endpoints.authorization);
  const challenge = base64url(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier)));
  Object.entries({
    response_type: "code", client_id: config.clientId, redirect_uri: redirectUri(), scope: config.scope ?? "openid",
    state: flow.state, nonce: flow.nonce, code_challenge: challenge, code_challenge_method: "S256",
  }).forEach(([key, value]) => url.searchParams.set(key, value));
  location.assign(url.href);
}

// Back from the issuer (`?code=…&state=…` on this page): trades the code for
// tokens and keeps the ID token. Resolves to true when it signed in, false when
// this load is no such return; throws an Error that says what went wrong.
async function completeSignIn(config) {
  const answer = new URLSearchParams(location.search);
  if (config.auth !== "oidc" || !(answer.has("code") || answer.has("error"))) return false;
  const flow = JSON.parse(sessionStorage.getItem(FLOW_KEY) ?? "null");
  sessionStorage.removeItem(FLOW_KEY);
  history.replaceState(null, "", redirectUri() + (flow?.hash ?? "")); // the code is single-use: out of the address
  if (answer.has("error")) throw new Error(`Sign-in failed: ${answer.get("error_description") ?? answer.get("error")}`);
  if (!flow || answer.get("state") !== flow.state) throw new Error("Sign-in failed: the answer does not match this page's request.");
  const response = await fetch(flow.tokenEndpoint, {
    method: "POST",
    headers: { "Content-Type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({
      grant_type: "authorization_code", code: answer.get("code"), redirect_uri: redirectUri(),
      client_id: config.clientId, code_verifier: flow.verifier,
    }),
  });
  if (!response.ok) throw new Error(`Sign-in failed: the token endpoint answered ${response.status}.`);
  const idToken = (await response.json()).id_token;
  const claims = idToken && claimsOf(idToken);
  if (!claims || claims.nonce !== flow.nonce) throw new Error("Sign-in failed: the ID token is missing or not for this request.");
  saveToken(idToken, claims.exp);
  return true;
}

// Forgets the token; an issuer with a logout URL is told too (it comes back here).
function signOut(config) {
  clearToken();
  if (config.logoutUrl) location.assign(config.logoutUrl);
}

// The issuer's endpoints: from config.json, else its discovery document.
async function endpointsOf(config) {
  if (config.authorizationEndpoint && config.tokenEndpoint) {
    return { authorization: config.authorizationEndpoint, token: config.tokenEndpoint };
  }
  const discovery = `${config.issuer.replace(/\/$/, "")}/.well-known/openid-configuration`;
  const response = await fetch(discovery);
  if (!response.ok) throw new Error(`Sign-in unavailable: ${discovery} answered ${response.status}.`);
  const discovered = await response.json();
  return { authorization: discovered.authorization_endpoint, token: discovered.token_endpoint };
}

function base64url(buffer) {
  return btoa(String.fromCharCode(...new Uint8Array(buffer))).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function randomText(bytes) {
  return base64url(crypto.getRandomValues(new Uint8Array(bytes)));
}
