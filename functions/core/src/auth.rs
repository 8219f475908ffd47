//! HS256 JWT verification for the optional `$connect` authorizer. The seed page
//! sends the token as the query parameter `Authorization=Bearer <token>`.
//!
//! Only what a chat room needs: the header must say `HS256`, the signature must
//! verify (in constant time), `exp` is required and `nbf` honoured; `sub`, if
//! present, becomes the principal.
//!
//! ```
//! # use chat_core::auth::{verify_bearer, AuthError};
//! assert_eq!(verify_bearer(None, b"secret", 0), Err(AuthError::Missing));
//! ```

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use sha2::Sha256;

/// The verified claims the authorizer passes on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claims {
    pub subject: Option<String>,
    /// Epoch seconds.
    pub expires_at: i64,
}

/// Why a token was refused. The authorizer logs it and denies; the client only sees 403.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no Authorization parameter")]
    Missing,
    #[error("Authorization is not `Bearer <token>`")]
    NotBearer,
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    #[error("unsupported algorithm {0:?} (only HS256)")]
    UnsupportedAlgorithm(String),
    #[error("bad signature")]
    BadSignature,
    #[error("token expired")]
    Expired,
    #[error("token not valid yet")]
    NotYetValid,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
}

#[derive(Deserialize)]
struct Payload {
    exp: Option<i64>,
    nbf: Option<i64>,
    sub: Option<String>,
}

/// Verifies `Bearer <token>` (the scheme is case-insensitive) at `now` (epoch seconds).
pub fn verify_bearer(authorization: Option<&str>, secret: &[u8], now: i64) -> Result<Claims, AuthError> {
    let value = authorization.map(str::trim).filter(|v| !v.is_empty()).ok_or(AuthError::Missing)?;
    let (scheme, token) = value.split_once(' ').ok_or(AuthError::NotBearer)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::NotBearer);
    }
    verify_hs256(token.trim(), secret, now)
}

/// Verifies a compact HS256 JWT at `now` (epoch seconds).
pub fn verify_hs256(token: &str, secret: &[u8], now: i64) -> Result<Claims, AuthError> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Malformed("not three dot-separated parts"));
    };
    let header: Header = decode_json(header, "header")?;
    if header.alg != "HS256" {
        return Err(AuthError::UnsupportedAlgorithm(header.alg));
    }
    let signature =
        URL_SAFE_NO_PAD.decode(signature).map_err(|_| AuthError::Malformed("signature is not base64url"))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| AuthError::BadSignature)?;
    mac.update(&token.as_bytes()[..token.rfind('.').unwrap_or_default()]);
    mac.verify_slice(&signature).map_err(|_| AuthError::BadSignature)?;

    let payload: Payload = decode_json(payload, "payload")?;
    let expires_at = payload.exp.ok_or(AuthError::Malformed("no exp claim"))?;
    if now >= expires_at {
        return Err(AuthError::Expired);
    }
    if payload.nbf.is_some_and(|nbf| now < nbf) {
        return Err(AuthError::NotYetValid);
    }
    Ok(Claims { subject: payload.sub, expires_at })
}

fn decode_json<T: for<'de> Deserialize<'de>>(part: &str, what: &'static str) -> Result<T, AuthError> {
    let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|_| AuthError::Malformed(what))?;
    serde_json::from_slice(&bytes).map_err(|_| AuthError::Malformed(what))
}

/// Signs `claims` (a JSON object) as an HS256 JWT; for tests and for minting
/// tokens to try a deployment with.
pub fn sign_hs256(claims: &serde_json::Value, secret: &[u8]) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signing_input = format!("{header}.{payload}");
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(signing_input.as_bytes());
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SECRET: &[u8] = b"a-test-secret-that-is-32-bytes!!";
    const NOW: i64 = 1_795_515_330;

    fn bearer(claims: serde_json::Value) -> String {
        format!("Bearer {}", sign_hs256(&claims, SECRET))
    }

    #[test]
    fn a_valid_token_passes_with_its_subject() {
        let value = bearer(json!({"sub":"alice","exp":NOW + 60}));
        let claims = verify_bearer(Some(&value), SECRET, NOW).unwrap();
        assert_eq!(claims, Claims { subject: Some("alice".into()), expires_at: NOW + 60 });
        let lower = value.replacen("Bearer", "bearer", 1);
        assert!(verify_bearer(Some(&lower), SECRET, NOW).is_ok(), "the scheme is case-insensitive");
    }

    #[test]
    fn an_expired_token_is_refused() {
        let value = bearer(json!({"sub":"alice","exp":NOW}));
        assert_eq!(verify_bearer(Some(&value), SECRET, NOW), Err(AuthError::Expired));
        assert!(verify_bearer(Some(&value), SECRET, NOW - 1).is_ok());
    }

    #[test]
    fn a_token_without_expiry_or_before_nbf_is_refused() {
        assert_eq!(
            verify_bearer(Some(&bearer(json!({"sub":"alice"}))), SECRET, NOW),
            Err(AuthError::Malformed("no exp claim"))
        );
        let early = bearer(json!({"exp":NOW + 60,"nbf":NOW + 10}));
        assert_eq!(verify_bearer(Some(&early), SECRET, NOW), Err(AuthError::NotYetValid));
    }

    #[test]
    fn a_bad_signature_is_refused() {
        let other = format!("Bearer {}", sign_hs256(&json!({"exp":NOW + 60}), b"another-secret-another-secret!!!"));
        assert_eq!(verify_bearer(Some(&other), SECRET, NOW), Err(AuthError::BadSignature));
        // A payload swapped under a valid signature.
        let good = sign_hs256(&json!({"sub":"alice","exp":NOW + 60}), SECRET);
        let forged_payload = URL_SAFE_NO_PAD.encode(json!({"sub":"admin","exp":NOW + 60}).to_string());
        let parts: Vec<&str> = good.split('.').collect();
        let forged = format!("Bearer {}.{forged_payload}.{}", parts[0], parts[2]);
        assert_eq!(verify_bearer(Some(&forged), SECRET, NOW), Err(AuthError::BadSignature));
    }

    #[test]
    fn missing_and_malformed_values_are_refused() {
        assert_eq!(verify_bearer(None, SECRET, NOW), Err(AuthError::Missing));
        assert_eq!(verify_bearer(Some("  "), SECRET, NOW), Err(AuthError::Missing));
        assert_eq!(verify_bearer(Some("Basic abc"), SECRET, NOW), Err(AuthError::NotBearer));
        assert_eq!(verify_bearer(Some("token-without-scheme"), SECRET, NOW), Err(AuthError::NotBearer));
        assert!(matches!(verify_bearer(Some("Bearer a.b"), SECRET, NOW), Err(AuthError::Malformed(_))));
        assert!(matches!(verify_bearer(Some("Bearer a.b.c.d"), SECRET, NOW), Err(AuthError::Malformed(_))));
        assert!(matches!(verify_bearer(Some("Bearer !!.e30.sig"), SECRET, NOW), Err(AuthError::Malformed(_))));
        // The seed fixture's placeholder token: valid shape, nonsense signature.
        assert!(verify_bearer(Some("Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig"), SECRET, NOW).is_err());
    }

    #[test]
    fn other_algorithms_are_refused_even_unsigned() {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#);
        let payload = URL_SAFE_NO_PAD.encode(json!({"exp":NOW + 60}).to_string());
        let value = format!("Bearer {header}.{payload}.");
        assert_eq!(verify_bearer(Some(&value), SECRET, NOW), Err(AuthError::UnsupportedAlgorithm("none".into())));
    }
}
