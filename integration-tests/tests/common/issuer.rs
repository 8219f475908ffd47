//! A test OIDC issuer: its JWKS on a loopback port (what `--oidc-issuer` points
//! the stack at) and RS256 tokens signed with the test keys in
//! `functions/core/testdata/jwt` (see its README), as Cognito issues them.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use jsonwebtoken::jwk::{Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The key the issuer publishes as `kid` "k1".
pub const RSA_A: &[u8] = include_bytes!("../../../functions/core/testdata/jwt/rsa-a.pkcs1.der");
/// A key the issuer does not publish.
pub const RSA_B: &[u8] = include_bytes!("../../../functions/core/testdata/jwt/rsa-b.pkcs1.der");
/// The app client id the issuer's ID tokens are for (`--audience`).
pub const CLIENT: &str = "web-client";

/// An OIDC issuer's JWKS on a loopback port, counting the fetches.
pub struct Issuer {
    pub url: String,
    pub fetches: Arc<AtomicUsize>,
    server: tokio::task::JoinHandle<()>,
}

impl Issuer {
    /// Publishes key A as `kid` "k1" at any path (the stack asks for `/.well-known/jwks.json`).
    pub async fn start() -> Issuer {
        let mut jwk = Jwk::from_encoding_key(&EncodingKey::from_rsa_der(RSA_A), Algorithm::RS256).unwrap();
        jwk.common.key_id = Some("k1".into());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        let body = json!({ "keys": [jwk] }).to_string();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let fetches = Arc::new(AtomicUsize::new(0));
        let counter = fetches.clone();
        let server = tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                let body = body.clone();
                tokio::spawn(async move {
                    let mut head = [0u8; 4096];
                    let _ = tcp.read(&mut head).await;
                    let response = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = tcp.write_all(response.as_bytes()).await;
                });
            }
        });
        Issuer { url, fetches, server }
    }

    /// An ID token for `username`, as Cognito issues one.
    pub fn id_token(&self, username: &str, key: &[u8], kid: &str, lifetime: i64) -> String {
        self.sign(username, key, kid, lifetime, json!({}))
    }

    /// A valid ID token for `username` (key A, ten minutes) with `extra`
    /// claims merged in: `{"chat":{"rights":…}}`, `{"cognito:groups":[…]}`.
    pub fn id_token_with(&self, username: &str, extra: Value) -> String {
        self.sign(username, RSA_A, "k1", 600, extra)
    }

    fn sign(&self, username: &str, key: &[u8], kid: &str, lifetime: i64, extra: Value) -> String {
        let now = chrono::Utc::now().timestamp();
        let mut claims = json!({"sub": format!("sub-{username}"), "iss": self.url, "aud": CLIENT, "token_use": "id",
                                "cognito:username": username, "iat": now, "exp": now + lifetime});
        claims.as_object_mut().unwrap().extend(extra.as_object().expect("extra claims are an object").clone());
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(kid.into());
        jsonwebtoken::encode(&header, &claims, &EncodingKey::from_rsa_der(key)).unwrap()
    }
}

impl Drop for Issuer {
    fn drop(&mut self) {
        self.server.abort();
    }
}
