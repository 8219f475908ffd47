// A tiny OIDC issuer on loopback for the browser tests: discovery, an /authorize
// that signs in a fixed user at once and redirects back with a code, a /token
// that checks the PKCE verifier (S256) and answers an RS256 ID token, and the
// JWKS. Public client (no secret), CORS open, as Cognito's endpoints are for a page.
"use strict";

const crypto = require("node:crypto");
const http = require("node:http");

const base64url = (data) => Buffer.from(data).toString("base64url");

async function startIssuer({ clientId, user }) {
  const { publicKey, privateKey } = crypto.generateKeyPairSync("rsa", { modulusLength: 2048 });
  const kid = "test-key-1";
  const jwk = { ...publicKey.export({ format: "jwk" }), kid, alg: "RS256", use: "sig" };
  const codes = new Map(); // code -> {challenge, nonce, redirectUri}
  const seen = { authorize: [], token: [] }; // what the page sent, for the test to check
  let issuer = null;

  function idToken(nonce) {
    const now = Math.floor(Date.now() / 1000);
    const header = base64url(JSON.stringify({ alg: "RS256", kid, typ: "JWT" }));
    const claims = base64url(JSON.stringify({
      iss: issuer, aud: clientId, sub: `sub-${user}`, preferred_username: user, nonce, iat: now, exp: now + 600,
    }));
    const signature = crypto.sign("sha256", Buffer.from(`${header}.${claims}`), privateKey);
    return `${header}.${claims}.${base64url(signature)}`;
  }

  function reply(response, status, body, headers = {}) {
    response.writeHead(status, { "Access-Control-Allow-Origin": "*", "Content-Type": "application/json", ...headers });
    response.end(body === undefined ? "" : JSON.stringify(body));
  }

  function authorize(url, response) {
    const q = Object.fromEntries(url.searchParams);
    seen.authorize.push(q);
    const problem = q.response_type !== "code" ? "response_type" : q.client_id !== clientId ? "client_id"
      : q.code_challenge_method !== "S256" || !q.code_challenge ? "code_challenge" : !q.state || !q.nonce ? "state/nonce"
        : !q.redirect_uri ? "redirect_uri" : null;
    if (problem) return reply(response, 400, { error: "invalid_request", error_description: problem });
    const code = crypto.randomBytes(16).toString("hex");
    codes.set(code, { challenge: q.code_challenge, nonce: q.nonce, redirectUri: q.redirect_uri });
    const back = new URL(q.redirect_uri);
    back.searchParams.set("code", code);
    back.searchParams.set("state", q.state);
    reply(response, 302, undefined, { Location: back.href });
  }

  function token(form, response) {
    seen.token.push(form);
    const grant = codes.get(form.code);
    codes.delete(form.code); // single use
    const verified = grant && base64url(crypto.createHash("sha256").update(form.code_verifier ?? "").digest()) === grant.challenge;
    if (form.grant_type !== "authorization_code" || !grant || form.client_id !== clientId
      || form.redirect_uri !== grant.redirectUri || !verified) {
      return reply(response, 400, { error: "invalid_grant" });
    }
    reply(response, 200, { id_token: idToken(grant.nonce), access_token: "opaque", token_type: "Bearer", expires_in: 600 });
  }

  const server = http.createServer((request, response) => {
    const url = new URL(request.url, issuer);
    if (request.method === "GET" && url.pathname === "/.well-known/openid-configuration") {
      return reply(response, 200, {
        issuer, authorization_endpoint: `${issuer}/authorize`, token_endpoint: `${issuer}/token`,
        jwks_uri: `${issuer}/.well-known/jwks.json`, response_types_supported: ["code"],
        id_token_signing_alg_values_supported: ["RS256"], code_challenge_methods_supported: ["S256"],
      });
    }
    if (request.method === "GET" && ["/.well-known/jwks.json", "/jwks.json"].includes(url.pathname)) {
      return reply(response, 200, { keys: [jwk] });
    }
    if (request.method === "GET" && url.pathname === "/authorize") return authorize(url, response);
    if (request.method === "POST" && url.pathname === "/token") {
      let body = "";
      request.on("data", (chunk) => { body += chunk; });
      request.on("end", () => token(Object.fromEntries(new URLSearchParams(body)), response));
      return undefined;
    }
    return reply(response, 404, { error: "not_found" });
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  issuer = `http://127.0.0.1:${server.address().port}`;
  return { issuer, seen, close: () => new Promise((resolve) => server.close(resolve)) };
}

module.exports = { startIssuer };
