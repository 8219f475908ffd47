//! Signing keys from JWK Sets, cached per issuer across warm invocations.
//!
//! Keys are filed under their issuer and then their `kid`, never under the `kid`
//! alone: two issuers may publish the same `kid`, and a shared kid-keyed cache
//! would let one issuer's key verify tokens that name the other.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use jsonwebtoken::jwk::{JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use tokio::sync::Mutex;

/// Fetching a JWK Set failed; the verifier denies (fails closed).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("JWKS unavailable: {0}")]
pub struct JwksError(pub String);

/// Where JWK Sets come from: HTTPS on Lambda (`chat-aws`), a fixed document in
/// tests. Kept to one call so the domain needs no HTTP client.
#[async_trait]
pub trait JwksSource: Send + Sync {
    /// The body of the JWK Set document at `url`.
    async fn fetch(&self, url: &str) -> Result<Vec<u8>, JwksError>;
}

/// A verification key and the algorithm its JWK pins, if any.
#[derive(Clone)]
pub(crate) struct CachedKey {
    pub key: DecodingKey,
    pub alg: Option<Algorithm>,
}

/// The keys of one issuer and when its JWKS was last requested.
#[derive(Default)]
struct IssuerKeys {
    by_kid: HashMap<String, CachedKey>,
    /// Epoch seconds of the last fetch attempt, successful or not.
    fetched_at: Option<i64>,
}

/// Why no key was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum KeyMiss {
    /// The JWKS was fetched (now or within the refetch interval) and has no such kid.
    Unknown,
    /// The JWKS could not be fetched or parsed.
    Unavailable(String),
}

/// The per-issuer key cache. One fetch at a time (the lock is held across it),
/// so a burst of tokens with a new `kid` causes one request, not one each.
pub(crate) struct KeyCache {
    source: Arc<dyn JwksSource>,
    refetch_interval: i64,
    issuers: Mutex<HashMap<String, IssuerKeys>>,
}

impl KeyCache {
    pub fn new(source: Arc<dyn JwksSource>, refetch_interval: i64) -> Self {
        Self { source, refetch_interval, issuers: Mutex::default() }
    }

    /// `issuer`'s key `kid` at `now` (epoch seconds). An unknown kid refetches
    /// `url` at most once per refetch interval (key rotation), so a flood of
    /// made-up kids cannot turn into a flood of requests.
    pub async fn key(&self, issuer: &str, url: &str, kid: &str, now: i64) -> Result<CachedKey, KeyMiss> {
        let mut issuers = self.issuers.lock().await;
        let keys = issuers.entry(issuer.to_owned()).or_default();
        if let Some(key) = keys.by_kid.get(kid) {
            return Ok(key.clone());
        }
        if keys.fetched_at.is_some_and(|at| now - at < self.refetch_interval) {
            return Err(KeyMiss::Unknown);
        }
        keys.fetched_at = Some(now);
        let body = self.source.fetch(url).await.map_err(|e| KeyMiss::Unavailable(e.0))?;
        let set: JwkSet =
            serde_json::from_slice(&body).map_err(|e| KeyMiss::Unavailable(format!("malformed JWKS: {e}")))?;
        // Replace rather than merge: a key the issuer withdrew stops verifying.
        keys.by_kid = usable_keys(&set);
        tracing::info!(issuer, keys = keys.by_kid.len(), "fetched JWKS");
        keys.by_kid.get(kid).cloned().ok_or(KeyMiss::Unknown)
    }
}

/// The signing keys of `set` that have a kid and a supported type; others are skipped.
fn usable_keys(set: &JwkSet) -> HashMap<String, CachedKey> {
    let mut keys = HashMap::new();
    for jwk in &set.keys {
        let Some(kid) = &jwk.common.key_id else { continue };
        if jwk.common.public_key_use.as_ref().is_some_and(|u| *u != PublicKeyUse::Signature) {
            continue;
        }
        let alg = match jwk.common.key_algorithm.map(|a| a.to_string().parse::<Algorithm>()) {
            None => None,
            Some(Ok(alg)) => Some(alg),
            Some(Err(_)) => continue,
        };
        match DecodingKey::from_jwk(jwk) {
            Ok(key) => {
                keys.insert(kid.clone(), CachedKey { key, alg });
            }
            Err(error) => tracing::warn!(kid, %error, "skipping unusable JWK"),
        }
    }
    keys
}
