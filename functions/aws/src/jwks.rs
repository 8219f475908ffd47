//! JWK Sets over HTTPS for the authorizer's verifier, on the hyper / rustls stack
//! the SDK already links (no second HTTP client to build or ship).
//!
//! Short and bounded: 2 s for the whole fetch, 64 KiB of body, HTTPS only
//! (plain HTTP to loopback alone, for tests and the local stack). Any failure is
//! a [`JwksError`], which the verifier turns into a deny.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chat_core::auth::{JwksError, JwksSource};
use http_body_util::{BodyExt, Empty, Limited};

use crate::http_client::{HttpClient, http_client};

/// Fetches JWK Sets; build once per cold start so connections are reused.
#[derive(Clone)]
pub struct HttpJwks {
    client: HttpClient<Empty<Bytes>>,
    timeout: Duration,
}

impl HttpJwks {
    /// The whole fetch, connect included: an authorizer must answer well inside
    /// API Gateway's wait, and a slow JWKS is treated as a down one.
    pub const TIMEOUT: Duration = Duration::from_secs(2);
    /// Cognito's JWKS is ~1 KB; anything this large is not a key set.
    pub const MAX_BYTES: usize = 64 * 1024;

    /// Trusts the system's root certificates (Lambda's images carry them).
    pub fn new() -> std::io::Result<Self> {
        Ok(Self { client: http_client()?, timeout: Self::TIMEOUT })
    }

    /// The same client with another overall timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    async fn get(&self, uri: http::Uri) -> Result<Vec<u8>, JwksError> {
        let response = self.client.get(uri).await.map_err(|e| JwksError(format!("request failed: {e}")))?;
        if !response.status().is_success() {
            return Err(JwksError(format!("HTTP {}", response.status())));
        }
        let body = Limited::new(response.into_body(), Self::MAX_BYTES)
            .collect()
            .await
            .map_err(|e| JwksError(format!("reading the body: {e}")))?;
        Ok(body.to_bytes().to_vec())
    }
}

#[async_trait]
impl JwksSource for HttpJwks {
    async fn fetch(&self, url: &str) -> Result<Vec<u8>, JwksError> {
        let uri: http::Uri = url.parse().map_err(|e| JwksError(format!("bad JWKS URL {url:?}: {e}")))?;
        let loopback = matches!(uri.host(), Some("127.0.0.1" | "localhost" | "[::1]"));
        match uri.scheme_str() {
            Some("https") => {}
            Some("http") if loopback => {}
            _ => return Err(JwksError(format!("JWKS URL {url:?} is not https"))),
        }
        tokio::time::timeout(self.timeout, self.get(uri))
            .await
            .map_err(|_| JwksError(format!("no answer from {url} within {:?}", self.timeout)))?
    }
}

#[cfg(test)]
mod tests {
    //! The verifier over real HTTP: a JWKS served by a loopback server that counts
    //! its fetches. Test-only keys from chat-core's testdata (see its README).

    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use chat_core::auth::{AuthError, TrustedIssuer, Verifier, VerifierConfig};
    use jsonwebtoken::jwk::{Jwk, PublicKeyUse};
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use serde_json::{Value, json};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    const RSA_A: &[u8] = include_bytes!("../../core/testdata/jwt/rsa-a.pkcs1.der");
    const RSA_B: &[u8] = include_bytes!("../../core/testdata/jwt/rsa-b.pkcs1.der");
    const EC: &[u8] = include_bytes!("../../core/testdata/jwt/ec-p256.pkcs8.der");
    const NOW: i64 = 1_795_515_330;
    const CLIENT: &str = "client-a";

    /// A tiny HTTP/1.1 server: `documents` by path (404 otherwise), one
    /// request per connection, every request counted.
    #[derive(Clone, Default)]
    struct JwksServer {
        documents: Arc<Mutex<HashMap<String, (u16, String)>>>,
        requests: Arc<AtomicUsize>,
    }

    impl JwksServer {
        async fn start() -> (Self, String) {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let base = format!("http://{}", listener.local_addr().unwrap());
            let server = Self::default();
            let state = server.clone();
            tokio::spawn(async move {
                while let Ok((mut socket, _)) = listener.accept().await {
                    let state = state.clone();
                    tokio::spawn(async move {
                        let mut request = Vec::new();
                        let mut buf = [0u8; 1024];
                        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                            match socket.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => request.extend_from_slice(&buf[..n]),
                            }
                        }
                        state.requests.fetch_add(1, Ordering::SeqCst);
                        let text = String::from_utf8_lossy(&request);
                        let path = text.split_whitespace().nth(1).unwrap_or("/").to_owned();
                        let (status, body) =
                            state.documents.lock().unwrap().get(&path).cloned().unwrap_or((404, String::new()));
                        let head = format!(
                            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                            body.len()
                        );
                        let _ = socket.write_all(format!("{head}{body}").as_bytes()).await;
                    });
                }
            });
            (server, base)
        }

        fn serve(&self, path: &str, status: u16, body: &Value) {
            self.documents.lock().unwrap().insert(path.into(), (status, body.to_string()));
        }

        fn requests(&self) -> usize {
            self.requests.load(Ordering::SeqCst)
        }
    }

    fn jwk(key: &EncodingKey, alg: Algorithm, kid: &str) -> Value {
        let mut jwk = Jwk::from_encoding_key(key, alg).unwrap();
        jwk.common.key_id = Some(kid.into());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        serde_json::to_value(jwk).unwrap()
    }

    fn sign(alg: Algorithm, kid: &str, key: &EncodingKey, claims: &Value) -> String {
        let mut header = Header::new(alg);
        header.kid = Some(kid.into());
        format!("Bearer {}", jsonwebtoken::encode(&header, claims, key).unwrap())
    }

    fn id_token_claims(iss: &str) -> Value {
        json!({"sub":"u-1","iss":iss,"aud":CLIENT,"token_use":"id","cognito:username":"alice","exp":NOW + 3600})
    }

    fn verifier(issuers: &[&str]) -> Verifier {
        let issuers = issuers.iter().map(|iss| TrustedIssuer::new(*iss, vec![CLIENT.into()])).collect();
        Verifier::new(VerifierConfig::with_issuers(issuers), Arc::new(HttpJwks::new().unwrap()))
    }

    /// Issuer `{base}/a` with an RSA key `k-rsa` and an EC key `k-ec` at the default JWKS path.
    async fn issuer_a() -> (JwksServer, String) {
        let (server, base) = JwksServer::start().await;
        let keys = json!({"keys":[
            jwk(&EncodingKey::from_rsa_der(RSA_A), Algorithm::RS256, "k-rsa"),
            jwk(&EncodingKey::from_ec_der(EC), Algorithm::ES256, "k-ec"),
        ]});
        server.serve("/a/.well-known/jwks.json", 200, &keys);
        (server, format!("{base}/a"))
    }

    #[tokio::test]
    async fn valid_id_and_access_tokens_verify_against_the_served_jwks() {
        let (server, iss) = issuer_a().await;
        let verifier = verifier(&[&iss]);
        let id = sign(Algorithm::RS256, "k-rsa", &EncodingKey::from_rsa_der(RSA_A), &id_token_claims(&iss));
        let principal = verifier.verify(Some(&id), NOW).await.unwrap();
        assert_eq!((principal.subject.as_str(), principal.name.as_str()), ("u-1", "alice"));

        let access =
            json!({"sub":"u-2","iss":iss,"client_id":CLIENT,"token_use":"access","username":"bob","exp":NOW + 3600});
        let access = sign(Algorithm::ES256, "k-ec", &EncodingKey::from_ec_der(EC), &access);
        assert_eq!(verifier.verify(Some(&access), NOW).await.map(|p| p.name), Ok("bob".into()));
        assert_eq!(server.requests(), 1, "the JWKS is cached across invocations");
    }

    #[tokio::test]
    async fn an_unknown_kid_refetches_once_then_denies() {
        let (server, iss) = issuer_a().await;
        let verifier = verifier(&[&iss]);
        let known = sign(Algorithm::RS256, "k-rsa", &EncodingKey::from_rsa_der(RSA_A), &id_token_claims(&iss));
        assert!(verifier.verify(Some(&known), NOW).await.is_ok());
        assert_eq!(server.requests(), 1);

        let later = NOW + VerifierConfig::DEFAULT_REFETCH_INTERVAL;
        let unknown = sign(Algorithm::RS256, "k-gone", &EncodingKey::from_rsa_der(RSA_B), &id_token_claims(&iss));
        for _ in 0..3 {
            let result = verifier.verify(Some(&unknown), later).await;
            assert!(matches!(result, Err(AuthError::UnknownKey { .. })), "{result:?}");
        }
        assert_eq!(server.requests(), 2, "exactly one refetch for the unknown kid");
    }

    #[tokio::test]
    async fn a_second_issuer_reusing_the_first_issuers_kid_is_denied() {
        let (server, base) = JwksServer::start().await;
        let (a, b) = (EncodingKey::from_rsa_der(RSA_A), EncodingKey::from_rsa_der(RSA_B));
        server.serve("/a/.well-known/jwks.json", 200, &json!({"keys":[jwk(&a, Algorithm::RS256, "k1")]}));
        server.serve("/b/.well-known/jwks.json", 200, &json!({"keys":[jwk(&b, Algorithm::RS256, "k1")]}));
        let (iss_a, iss_b) = (format!("{base}/a"), format!("{base}/b"));

        // Only A trusted: B's token is refused whatever its kid.
        let from_b = sign(Algorithm::RS256, "k1", &b, &id_token_claims(&iss_b));
        let only_a = verifier(&[&iss_a]);
        assert!(matches!(only_a.verify(Some(&from_b), NOW).await, Err(AuthError::WrongIssuer(_))));

        // Both trusted, B's k1 cached first: B's key still cannot sign as A.
        let both = verifier(&[&iss_a, &iss_b]);
        assert!(both.verify(Some(&from_b), NOW).await.is_ok());
        let forged = sign(Algorithm::RS256, "k1", &b, &id_token_claims(&iss_a));
        assert_eq!(both.verify(Some(&forged), NOW).await, Err(AuthError::BadSignature));
        assert_eq!(server.requests(), 2, "A's own JWKS was fetched to check it");
    }

    #[tokio::test]
    async fn jwks_down_denies() {
        // Nothing listening: bind a port, then free it.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let iss = format!("http://{}/a", listener.local_addr().unwrap());
        drop(listener);
        let token = sign(Algorithm::RS256, "k-rsa", &EncodingKey::from_rsa_der(RSA_A), &id_token_claims(&iss));
        let result = verifier(&[&iss]).verify(Some(&token), NOW).await;
        assert!(matches!(result, Err(AuthError::KeysUnavailable(_))), "{result:?}");

        // Up but failing.
        let (server, base) = JwksServer::start().await;
        server.serve("/a/.well-known/jwks.json", 500, &json!({"message":"internal"}));
        let iss = format!("{base}/a");
        let token = sign(Algorithm::RS256, "k-rsa", &EncodingKey::from_rsa_der(RSA_A), &id_token_claims(&iss));
        let result = verifier(&[&iss]).verify(Some(&token), NOW).await;
        assert!(matches!(&result, Err(AuthError::KeysUnavailable(m)) if m.contains("500")), "{result:?}");
    }

    #[tokio::test]
    async fn a_jwks_failing_at_cold_start_is_asked_again_a_second_later() {
        let (server, base) = JwksServer::start().await;
        let iss = format!("{base}/a");
        server.serve("/a/.well-known/jwks.json", 503, &json!({"message":"unavailable"}));
        let verifier = verifier(&[&iss]);
        let token = sign(Algorithm::RS256, "k-rsa", &EncodingKey::from_rsa_der(RSA_A), &id_token_claims(&iss));
        assert!(matches!(verifier.verify(Some(&token), NOW).await, Err(AuthError::KeysUnavailable(_))));

        server.serve(
            "/a/.well-known/jwks.json",
            200,
            &json!({"keys":[jwk(&EncodingKey::from_rsa_der(RSA_A), Algorithm::RS256, "k-rsa")]}),
        );
        assert!(verifier.verify(Some(&token), NOW + 1).await.is_ok(), "not locked out for a minute");
        assert_eq!(server.requests(), 2);
    }

    #[tokio::test]
    async fn a_stalled_jwks_times_out() {
        // Accepts and never answers.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let jwks = HttpJwks::new().unwrap().with_timeout(Duration::from_millis(200));
        let started = std::time::Instant::now();
        let result = jwks.fetch(&url).await;
        assert!(matches!(&result, Err(JwksError(m)) if m.contains("within")), "{result:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn plain_http_is_refused_except_to_loopback() {
        let jwks = HttpJwks::new().unwrap();
        let result = jwks.fetch("http://issuer.example/.well-known/jwks.json").await;
        assert!(matches!(&result, Err(JwksError(m)) if m.contains("not https")), "{result:?}");
        assert!(jwks.fetch("ftp://issuer.example/jwks").await.is_err());
    }
}
