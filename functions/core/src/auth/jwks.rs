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

/// When a key set is refetched, as a policy of seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Freshness {
    /// After a successful fetch, an unknown `kid` refetches at most this often
    /// (key rotation), so a flood of made-up kids cannot become a flood of requests.
    pub refetch_interval: i64,
    /// A key set older than this is refetched on the next verification, so a
    /// key the issuer withdrew stops verifying on a warm instance too. When that
    /// refetch fails the old set is still served for as long again (see
    /// [`KeyCache::key`]), never longer.
    pub max_age: i64,
}

/// After a failed fetch the next one waits this long, doubling per further
/// failure up to [`RETRY_CAP`]: a JWKS that was down for a moment (a cold start
/// during a blip) costs a second of denials, not a minute, and one that stays
/// down is asked a few times a minute rather than on every token.
const FIRST_RETRY: i64 = 1;
const RETRY_CAP: i64 = 30;

/// The keys of one issuer, when they were fetched and how fetching has gone since.
#[derive(Default)]
struct IssuerKeys {
    by_kid: HashMap<String, CachedKey>,
    /// Epoch seconds of the last successful fetch.
    fetched_at: Option<i64>,
    /// Failed fetches since the last success, the time of the last, and why.
    failures: u32,
    failed_at: i64,
    failure: String,
}

impl IssuerKeys {
    /// Seconds to wait after the last failure before fetching again.
    fn retry_delay(&self) -> i64 {
        let doublings = self.failures.saturating_sub(1).min(16);
        (FIRST_RETRY << doublings).min(RETRY_CAP)
    }
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
    freshness: Freshness,
    issuers: Mutex<HashMap<String, IssuerKeys>>,
}

impl KeyCache {
    pub fn new(source: Arc<dyn JwksSource>, freshness: Freshness) -> Self {
        Self { source, freshness, issuers: Mutex::default() }
    }

    /// `issuer`'s key `kid` at `now` (epoch seconds), fetching `url` when the
    /// set is missing, older than the maximum age, or lacks `kid` (at most once
    /// per refetch interval after a success, after a short growing back-off
    /// after a failure).
    ///
    /// A failed refetch keeps the set it meant to replace in service until it
    /// is twice the maximum age old (logged as a warning on each failure): a
    /// JWKS outage of under an hour locks nobody out, and a withdrawn key
    /// outlives its withdrawal by at most that long, and only while the issuer
    /// cannot be reached. Past that, or with no set at all, tokens are denied.
    pub async fn key(&self, issuer: &str, url: &str, kid: &str, now: i64) -> Result<CachedKey, KeyMiss> {
        let Freshness { refetch_interval, max_age } = self.freshness;
        let mut issuers = self.issuers.lock().await;
        let keys = issuers.entry(issuer.to_owned()).or_default();
        let age = keys.fetched_at.map(|at| now - at);
        let fresh = age.is_some_and(|age| age < max_age);
        if fresh && let Some(key) = keys.by_kid.get(kid) {
            return Ok(key.clone());
        }
        let may_fetch = if keys.failures > 0 {
            now - keys.failed_at >= keys.retry_delay()
        } else {
            !fresh || age.is_some_and(|age| age >= refetch_interval)
        };
        if may_fetch {
            match self.fetch(url).await {
                Ok(by_kid) => {
                    // Replace rather than merge: a key the issuer withdrew stops verifying.
                    *keys = IssuerKeys { by_kid, fetched_at: Some(now), ..IssuerKeys::default() };
                    tracing::info!(issuer, keys = keys.by_kid.len(), "fetched JWKS");
                }
                Err(reason) => {
                    keys.failures += 1;
                    keys.failed_at = now;
                    keys.failure = reason;
                    tracing::warn!(
                        issuer,
                        failures = keys.failures,
                        retry_in_seconds = keys.retry_delay(),
                        serving_set_aged_seconds = ?age,
                        reason = %keys.failure,
                        "JWKS fetch failed"
                    );
                }
            }
        }
        let served = keys.fetched_at.is_some_and(|at| now - at < max_age.saturating_mul(2));
        if !served {
            keys.by_kid.clear();
            keys.fetched_at = None;
        }
        match keys.by_kid.get(kid) {
            Some(key) => Ok(key.clone()),
            None if keys.failures > 0 => Err(KeyMiss::Unavailable(keys.failure.clone())),
            None => Err(KeyMiss::Unknown),
        }
    }

    /// The usable keys of the JWK Set at `url`.
    async fn fetch(&self, url: &str) -> Result<HashMap<String, CachedKey>, String> {
        let body = self.source.fetch(url).await.map_err(|e| e.0)?;
        let set: JwkSet = serde_json::from_slice(&body).map_err(|e| format!("malformed JWKS: {e}"))?;
        Ok(usable_keys(&set))
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
