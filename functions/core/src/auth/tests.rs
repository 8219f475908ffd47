//! The verifier against an in-memory JWKS (fetches counted). The same paths over
//! real HTTP on a loopback server are in `chat-aws`'s `jwks` tests.

use std::sync::Arc;

use jsonwebtoken::jwk::{Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use super::*;
use crate::memory::MemoryJwks;

// Test-only keys (see testdata/jwt/README.md).
const RSA_A: &[u8] = include_bytes!("../../testdata/jwt/rsa-a.pkcs1.der");
const RSA_B: &[u8] = include_bytes!("../../testdata/jwt/rsa-b.pkcs1.der");
const RSA_A_PUBLIC_PEM: &[u8] = include_bytes!("../../testdata/jwt/rsa-a.public.pem");
const EC: &[u8] = include_bytes!("../../testdata/jwt/ec-p256.pkcs8.der");

const SECRET: &[u8] = b"a-test-secret-that-is-32-bytes!!";
const NOW: i64 = 1_795_515_330;
const ISS_A: &str = "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_AAAAAAAAA";
const ISS_B: &str = "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_BBBBBBBBB";
const CLIENT: &str = "client-a";

fn jwks_url(issuer: &str) -> String {
    format!("{issuer}/.well-known/jwks.json")
}

/// The public JWK of a private test key, as an issuer publishes it.
fn jwk(key: &EncodingKey, alg: Algorithm, kid: &str) -> Value {
    let mut jwk = Jwk::from_encoding_key(key, alg).unwrap();
    jwk.common.key_id = Some(kid.into());
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    serde_json::to_value(jwk).unwrap()
}

fn sign(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(Into::into);
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

fn rsa_a() -> EncodingKey {
    EncodingKey::from_rsa_der(RSA_A)
}
fn rsa_b() -> EncodingKey {
    EncodingKey::from_rsa_der(RSA_B)
}
fn ec() -> EncodingKey {
    EncodingKey::from_ec_der(EC)
}

/// A Cognito ID token's claims.
fn id_claims(iss: &str) -> Value {
    json!({"sub":"u-1","iss":iss,"aud":CLIENT,"token_use":"id","cognito:username":"alice",
           "name":"Alice A.","iat":NOW,"exp":NOW + 3600})
}

/// A Cognito access token's claims: `client_id`, no `aud`.
fn access_claims(iss: &str) -> Value {
    json!({"sub":"u-2","iss":iss,"client_id":CLIENT,"token_use":"access","username":"bob",
           "iat":NOW,"exp":NOW + 3600})
}

struct Fixture {
    jwks: Arc<MemoryJwks>,
    verifier: Verifier,
}

impl Fixture {
    /// Issuer A publishes an RSA key `k-rsa` and an EC key `k-ec`.
    fn new() -> Self {
        Self::with(VerifierConfig::with_issuers(vec![TrustedIssuer::new(ISS_A, vec![CLIENT.into()])]))
    }

    fn with(config: VerifierConfig) -> Self {
        let jwks = Arc::new(MemoryJwks::default());
        jwks.publish(
            &jwks_url(ISS_A),
            &json!({"keys":[jwk(&rsa_a(), Algorithm::RS256, "k-rsa"), jwk(&ec(), Algorithm::ES256, "k-ec")]}),
        );
        Self { verifier: Verifier::new(config, jwks.clone()), jwks }
    }

    async fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        self.verifier.verify(Some(&format!("Bearer {token}")), NOW).await
    }
}

fn hs256(claims: &Value) -> String {
    sign(Algorithm::HS256, None, &EncodingKey::from_secret(SECRET).unwrap(), claims)
}

fn hs256_verifier() -> Verifier {
    Verifier::new(VerifierConfig::with_shared_secret(SharedSecret::new(SECRET)), Arc::new(MemoryJwks::default()))
}

// ------------------------------------------------------------------ HS256

#[tokio::test]
async fn hs256_a_valid_token_passes_with_its_subject() {
    let verifier = hs256_verifier();
    let token = hs256(&json!({"sub":"alice","exp":NOW + 60}));
    let expected = Principal {
        subject: "alice".into(),
        user_id: "local|alice".into(),
        name: "alice".into(),
        verified: true,
        rooms: vec![],
        rights: Rights::default(),
    };
    assert_eq!(verifier.verify(Some(&format!("Bearer {token}")), NOW).await, Ok(expected.clone()));
    assert_eq!(verifier.verify(Some(&format!("bearer  {token} ")), NOW).await, Ok(expected.clone()), "any case");
    assert_eq!(verifier.verify(Some(&token), NOW).await, Ok(expected), "a bare token");
}

#[tokio::test]
async fn hs256_expiry_and_nbf_are_checked_with_the_leeway() {
    let verifier = hs256_verifier();
    let leeway = VerifierConfig::DEFAULT_LEEWAY;
    let token = hs256(&json!({"sub":"alice","exp":NOW}));
    assert!(verifier.verify(Some(&token), NOW + leeway - 1).await.is_ok(), "within the leeway");
    assert_eq!(verifier.verify(Some(&token), NOW + leeway).await, Err(AuthError::Expired));

    let early = hs256(&json!({"sub":"alice","exp":NOW + 600,"nbf":NOW + 100}));
    assert_eq!(verifier.verify(Some(&early), NOW).await, Err(AuthError::NotYetValid));
    assert!(verifier.verify(Some(&early), NOW + 100 - leeway).await.is_ok(), "within the leeway");

    let no_exp = verifier.verify(Some(&hs256(&json!({"sub":"alice"}))), NOW).await;
    assert!(matches!(&no_exp, Err(AuthError::Malformed(m)) if m.contains("exp")), "{no_exp:?}");
    let no_sub = verifier.verify(Some(&hs256(&json!({"exp":NOW + 60}))), NOW).await;
    assert_eq!(no_sub, Err(AuthError::MissingSubject));
}

#[tokio::test]
async fn the_user_id_is_the_issuer_qualified_subject() {
    let verifier = hs256_verifier();
    let user_id = async |claims: Value| verifier.verify(Some(&hs256(&claims)), NOW).await.map(|p| p.user_id);
    assert_eq!(user_id(json!({"sub":"a","exp":NOW + 60})).await, Ok("local|a".into()), "no iss: the local issuer");
    assert_eq!(user_id(json!({"sub":"a","iss":"chat","exp":NOW + 60})).await, Ok("chat|a".into()));
    assert_eq!(user_id(json!({"sub":"auth0|a","iss":"chat","exp":NOW + 60})).await, Ok("chat|auth0|a".into()));
    let piped = user_id(json!({"sub":"a","iss":"chat|auth0","exp":NOW + 60})).await;
    assert!(matches!(piped, Err(AuthError::WrongIssuer(_))), "an iss with '|' could pose as another: {piped:?}");
    let reversed = user_id(json!({"sub":"a","iss":"chat\u{202e}","exp":NOW + 60})).await;
    assert!(matches!(reversed, Err(AuthError::WrongIssuer(_))), "the id is shown: no bidi controls: {reversed:?}");

    // The same sub and the same display name at two issuers are two accounts.
    let fixture = Fixture::with(VerifierConfig {
        shared_secret: Some(SharedSecret::new(SECRET)),
        ..VerifierConfig::with_issuers(vec![TrustedIssuer::new(ISS_A, vec![CLIENT.into()])])
    });
    let from_pool = fixture.verify(&sign(Algorithm::RS256, Some("k-rsa"), &rsa_a(), &id_claims(ISS_A))).await.unwrap();
    let from_secret = fixture.verify(&hs256(&json!({"sub":"u-1","name":"alice","exp":NOW + 60}))).await.unwrap();
    assert_eq!((from_pool.name.as_str(), from_secret.name.as_str()), ("alice", "alice"));
    assert_eq!(from_pool.user_id, format!("{ISS_A}|u-1"));
    assert_eq!(from_secret.user_id, "local|u-1");
    // Whoever holds the secret cannot mint the pool's accounts.
    let impostor = fixture.verify(&hs256(&json!({"sub":"u-1","iss":ISS_A,"exp":NOW + 60}))).await;
    assert!(matches!(impostor, Err(AuthError::WrongIssuer(_))), "{impostor:?}");
}

#[tokio::test]
async fn a_subject_must_be_present_short_and_printable() {
    let verifier = hs256_verifier();
    let verdict = async |sub: Value| verifier.verify(Some(&hs256(&json!({"sub":sub,"exp":NOW + 60}))), NOW).await;
    assert_eq!(verdict(json!("")).await, Err(AuthError::MissingSubject));
    assert!(matches!(verdict(json!("x".repeat(MAX_SUBJECT_BYTES + 1))).await, Err(AuthError::BadSubject(_))));
    assert!(verdict(json!("x".repeat(MAX_SUBJECT_BYTES))).await.is_ok());
    // Bidi controls too: a token without a name claim is shown by its `sub`.
    for control in ["a\u{1b}b", "a\nb", "\u{7}", "eve\u{202e}cilA", "\u{2066}x"] {
        assert!(matches!(verdict(json!(control)).await, Err(AuthError::BadSubject(_))), "{control:?}");
    }
    assert!(matches!(verdict(json!(42)).await, Err(AuthError::Malformed(_))), "a sub is a string");
}

#[tokio::test]
async fn hs256_a_bad_signature_is_refused() {
    let verifier = hs256_verifier();
    let other = sign(
        Algorithm::HS256,
        None,
        &EncodingKey::from_secret(b"another-secret-another-secret!!!").unwrap(),
        &json!({"sub":"alice","exp":NOW + 60}),
    );
    assert_eq!(verifier.verify(Some(&other), NOW).await, Err(AuthError::BadSignature));
    // A payload swapped under a valid signature.
    let good = hs256(&json!({"sub":"alice","exp":NOW + 60}));
    let forged = hs256(&json!({"sub":"admin","exp":NOW + 60}));
    let good: Vec<&str> = good.split('.').collect();
    let forged: Vec<&str> = forged.split('.').collect();
    let swapped = format!("{}.{}.{}", good[0], forged[1], good[2]);
    assert_eq!(verifier.verify(Some(&swapped), NOW).await, Err(AuthError::BadSignature));
}

#[tokio::test]
async fn missing_malformed_and_oversized_values_are_refused() {
    let verifier = hs256_verifier();
    assert_eq!(verifier.verify(None, NOW).await, Err(AuthError::Missing));
    assert_eq!(verifier.verify(Some("  "), NOW).await, Err(AuthError::Missing));
    assert_eq!(verifier.verify(Some("Basic abc"), NOW).await, Err(AuthError::NotBearer));
    for value in ["token-without-scheme", "Bearer a.b", "Bearer a.b.c.d", "Bearer !!.e30.sig"] {
        let result = verifier.verify(Some(value), NOW).await;
        assert!(matches!(result, Err(AuthError::Malformed(_))), "{value}: {result:?}");
    }
    // The seed fixture's placeholder token: valid shape, nonsense signature.
    assert!(verifier.verify(Some("Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig"), NOW).await.is_err());
    // Over 8 KB: refused before any parsing, even when validly signed.
    let padding = "x".repeat(MAX_TOKEN_BYTES);
    let huge = hs256(&json!({"sub":"alice","exp":NOW + 60,"pad":padding}));
    assert_eq!(verifier.verify(Some(&huge), NOW).await, Err(AuthError::TooLarge(huge.len())));
}

#[tokio::test]
async fn alg_none_is_refused() {
    use base64::Engine;
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let claims = json!({"sub":"alice","iss":ISS_A,"aud":CLIENT,"exp":NOW + 60});
    for verifier in [hs256_verifier(), Fixture::new().verifier] {
        for header in [json!({"alg":"none"}), json!({"alg":"none","kid":"k-rsa"}), json!({"alg":"None"})] {
            let token = format!("{}.{}.", b64(&header), b64(&claims));
            let result = verifier.verify(Some(&token), NOW).await;
            assert!(
                matches!(&result, Err(AuthError::Malformed(m)) if m.to_lowercase().contains("`none`")),
                "{header}: {result:?}"
            );
        }
    }
}

#[tokio::test]
async fn hs256_is_refused_without_a_shared_secret() {
    let fixture = Fixture::new();
    let token = hs256(&json!({"sub":"alice","iss":ISS_A,"aud":CLIENT,"exp":NOW + 60}));
    assert!(matches!(fixture.verify(&token).await, Err(AuthError::UnsupportedAlgorithm(_))));
    assert_eq!(fixture.jwks.fetches(), 0, "no key lookup for a refused algorithm");
}

#[tokio::test]
async fn hs256_checks_issuer_and_audience_when_configured() {
    let mut shared = SharedSecret::new(SECRET);
    shared.issuer = Some("chat".into());
    shared.audience = vec!["web".into()];
    let verifier = Verifier::new(VerifierConfig::with_shared_secret(shared), Arc::new(MemoryJwks::default()));
    let token = |claims: Value| hs256(&claims);
    let ok = token(json!({"sub":"a","iss":"chat","aud":"web","exp":NOW + 60}));
    assert!(verifier.verify(Some(&ok), NOW).await.is_ok());
    let no_iss = token(json!({"sub":"a","aud":"web","exp":NOW + 60}));
    assert!(matches!(verifier.verify(Some(&no_iss), NOW).await, Err(AuthError::Malformed(_))));
    let other_iss = token(json!({"sub":"a","iss":"else","aud":"web","exp":NOW + 60}));
    assert!(matches!(verifier.verify(Some(&other_iss), NOW).await, Err(AuthError::WrongIssuer(_))));
    let other_aud = token(json!({"sub":"a","iss":"chat","aud":"app","exp":NOW + 60}));
    assert_eq!(verifier.verify(Some(&other_aud), NOW).await, Err(AuthError::WrongAudience));
}

// ------------------------------------------------------- RS256 / ES256 + JWKS

#[tokio::test]
async fn valid_id_and_access_tokens_pass_with_their_names() {
    let fixture = Fixture::new();
    let id = sign(Algorithm::RS256, Some("k-rsa"), &rsa_a(), &id_claims(ISS_A));
    let principal = fixture.verify(&id).await.unwrap();
    let user_id = format!("{ISS_A}|u-1");
    assert_eq!(
        principal,
        Principal {
            subject: "u-1".into(),
            user_id,
            name: "alice".into(),
            verified: true,
            rooms: vec![],
            rights: Rights::default()
        }
    );

    let access = sign(Algorithm::ES256, Some("k-ec"), &ec(), &access_claims(ISS_A));
    let principal = fixture.verify(&access).await.unwrap();
    assert_eq!(principal.subject, "u-2");
    assert_eq!(principal.name, "bob", "Cognito access tokens name the user in `username`");
    assert_eq!(fixture.jwks.fetches(), 1, "one JWKS fetch serves both keys and later invocations");
}

#[tokio::test]
async fn the_display_name_prefers_cognito_then_preferred_then_name_then_sub() {
    let fixture = Fixture::new();
    let mut claims = id_claims(ISS_A);
    let name_of = async |claims: &Value| {
        fixture.verify(&sign(Algorithm::RS256, Some("k-rsa"), &rsa_a(), claims)).await.unwrap().name
    };
    claims["preferred_username"] = json!("ally");
    assert_eq!(name_of(&claims).await, "alice");
    claims.as_object_mut().unwrap().remove("cognito:username");
    assert_eq!(name_of(&claims).await, "ally");
    claims.as_object_mut().unwrap().remove("preferred_username");
    assert_eq!(name_of(&claims).await, "Alice A.");
    claims["name"] = json!("   ");
    assert_eq!(name_of(&claims).await, "u-1", "a blank name is no name");
    claims["name"] = json!("é".repeat(100));
    assert_eq!(name_of(&claims).await, "é".repeat(MAX_NAME_CHARS), "cut to a bounded length");
    claims["name"] = json!("\u{202E}ecila\u{2066}\n");
    assert_eq!(name_of(&claims).await, "ecila", "no bidi overrides, isolates or controls from a token");
    claims["name"] = json!("\u{202E}\u{200F}");
    assert_eq!(name_of(&claims).await, "u-1", "nothing printable left is no name");
}

#[tokio::test]
async fn expired_and_not_yet_valid_tokens_are_refused() {
    let fixture = Fixture::new();
    let leeway = VerifierConfig::DEFAULT_LEEWAY;
    let mut claims = id_claims(ISS_A);
    claims["exp"] = json!(NOW - leeway);
    let expired = sign(Algorithm::RS256, Some("k-rsa"), &rsa_a(), &claims);
    assert_eq!(fixture.verify(&expired).await, Err(AuthError::Expired));
    claims["exp"] = json!(NOW + 3600);
    claims["nbf"] = json!(NOW + leeway + 1);
    let early = sign(Algorithm::ES256, Some("k-ec"), &ec(), &claims);
    assert_eq!(fixture.verify(&early).await, Err(AuthError::NotYetValid));
}

#[tokio::test]
async fn a_wrong_or_missing_issuer_is_refused() {
    let fixture = Fixture::new();
    // Signed with A's own key, so only the issuer check can refuse them.
    let other = sign(Algorithm::RS256, Some("k-rsa"), &rsa_a(), &id_claims("https://evil.example"));
    assert_eq!(fixture.verify(&other).await, Err(AuthError::WrongIssuer("https://evil.example".into())));
    let mut claims = id_claims(ISS_A);
    claims.as_object_mut().unwrap().remove("iss");
    let none = sign(Algorithm::RS256, Some("k-rsa"), &rsa_a(), &claims);
    assert!(matches!(fixture.verify(&none).await, Err(AuthError::WrongIssuer(_))));
    claims["iss"] = json!(format!("{ISS_A}/"));
    let near = sign(Algorithm::RS256, Some("k-rsa"), &rsa_a(), &claims);
    assert!(matches!(fixture.verify(&near).await, Err(AuthError::WrongIssuer(_))), "exact match only");
}

#[tokio::test]
async fn a_wrong_audience_is_refused() {
    let fixture = Fixture::new();
    let signed = |claims: &Value| sign(Algorithm::RS256, Some("k-rsa"), &rsa_a(), claims);
    let mut id = id_claims(ISS_A);
    id["aud"] = json!("client-b");
    assert_eq!(fixture.verify(&signed(&id)).await, Err(AuthError::WrongAudience));
    id["aud"] = json!(["client-b", CLIENT]);
    assert!(fixture.verify(&signed(&id)).await.is_ok(), "one of several audiences suffices");
    id.as_object_mut().unwrap().remove("aud");
    assert_eq!(fixture.verify(&signed(&id)).await, Err(AuthError::WrongAudience), "an ID token needs aud");

    let mut access = access_claims(ISS_A);
    access["client_id"] = json!("client-b");
    assert_eq!(fixture.verify(&signed(&access)).await, Err(AuthError::WrongAudience));
    // An access token is judged by client_id, not by an aud it should not have.
    access["aud"] = json!(CLIENT);
    assert_eq!(fixture.verify(&signed(&access)).await, Err(AuthError::WrongAudience));
    let mut other_use = id_claims(ISS_A);
    other_use["token_use"] = json!("refresh");
    assert_eq!(fixture.verify(&signed(&other_use)).await, Err(AuthError::WrongTokenUse("refresh".into())));
    // Without token_use (other OIDC providers) the aud decides.
    let mut plain = id_claims(ISS_A);
    plain.as_object_mut().unwrap().remove("token_use");
    assert!(fixture.verify(&signed(&plain)).await.is_ok());
}

#[tokio::test]
async fn an_issuer_without_an_audience_accepts_nobody() {
    let fixture = Fixture::with(VerifierConfig::with_issuers(vec![TrustedIssuer::new(ISS_A, Vec::new())]));
    let id = sign(Algorithm::RS256, Some("k-rsa"), &rsa_a(), &id_claims(ISS_A));
    assert_eq!(fixture.verify(&id).await, Err(AuthError::WrongAudience));
}

#[tokio::test]
async fn an_unknown_kid_refetches_once_per_interval_then_denies() {
    let fixture = Fixture::new();
    let rotated = sign(Algorithm::RS256, Some("k-new"), &rsa_b(), &id_claims(ISS_A));
    let unknown = || AuthError::UnknownKey { issuer: ISS_A.into(), kid: "k-new".into() };
    assert_eq!(fixture.verify(&rotated).await, Err(unknown()));
    assert_eq!(fixture.jwks.fetches(), 1);
    for _ in 0..5 {
        assert_eq!(fixture.verify(&rotated).await, Err(unknown()));
    }
    assert_eq!(fixture.jwks.fetches(), 1, "repeats within the interval fetch nothing");
    let valid = sign(Algorithm::RS256, Some("k-rsa"), &rsa_a(), &id_claims(ISS_A));
    assert!(fixture.verify(&valid).await.is_ok(), "known keys keep working");

    // The issuer rotates in the new key; after the interval it is picked up.
    fixture.jwks.publish(&jwks_url(ISS_A), &json!({"keys":[jwk(&rsa_b(), Algorithm::RS256, "k-new")]}));
    let later = NOW + VerifierConfig::DEFAULT_REFETCH_INTERVAL;
    let bearer = format!("Bearer {rotated}");
    assert_eq!(fixture.verifier.verify(Some(&bearer), later - 1).await, Err(unknown()));
    assert_eq!(fixture.jwks.fetches(), 1);
    assert!(fixture.verifier.verify(Some(&bearer), later).await.is_ok());
    assert_eq!(fixture.jwks.fetches(), 2);
    let old = format!("Bearer {valid}");
    let withdrawn = fixture.verifier.verify(Some(&old), later).await;
    assert!(matches!(withdrawn, Err(AuthError::UnknownKey { .. })), "a withdrawn key stops verifying");
}

#[tokio::test]
async fn a_token_without_kid_is_refused() {
    let fixture = Fixture::new();
    let token = sign(Algorithm::RS256, None, &rsa_a(), &id_claims(ISS_A));
    assert_eq!(fixture.verify(&token).await, Err(AuthError::MissingKeyId));
}

#[tokio::test]
async fn hs256_signed_with_the_rsa_public_key_is_refused() {
    // Algorithm confusion: the attacker HMACs with the public key (PEM text or
    // the JWK's modulus) and names the RSA key's kid.
    let n = match jwk(&rsa_a(), Algorithm::RS256, "k-rsa")["n"].as_str() {
        Some(n) => n.as_bytes().to_vec(),
        None => panic!("an RSA JWK has n"),
    };
    let with_secret = VerifierConfig {
        shared_secret: Some(SharedSecret::new(SECRET)),
        ..VerifierConfig::with_issuers(vec![TrustedIssuer::new(ISS_A, vec![CLIENT.into()])])
    };
    for config in [Fixture::new().verifier.config().clone(), with_secret] {
        let fixture = Fixture::with(config);
        for public in [RSA_A_PUBLIC_PEM, n.as_slice()] {
            let forged =
                sign(Algorithm::HS256, Some("k-rsa"), &EncodingKey::from_secret(public).unwrap(), &id_claims(ISS_A));
            let result = fixture.verify(&forged).await;
            // With a shared secret too, HS256 claiming the JWKS issuer is refused first.
            let refused = matches!(
                result,
                Err(AuthError::UnsupportedAlgorithm(_) | AuthError::BadSignature | AuthError::WrongIssuer(_))
            );
            assert!(refused, "{result:?}");
        }
    }
}

#[tokio::test]
async fn a_key_is_used_only_with_its_own_algorithm() {
    let fixture = Fixture::new();
    // ES256 naming the RSA key, RS256 naming the EC key: refused before any crypto.
    let es_on_rsa = sign(Algorithm::ES256, Some("k-rsa"), &ec(), &id_claims(ISS_A));
    assert!(matches!(fixture.verify(&es_on_rsa).await, Err(AuthError::UnsupportedAlgorithm(_))));
    let rs_on_ec = sign(Algorithm::RS256, Some("k-ec"), &rsa_a(), &id_claims(ISS_A));
    assert!(matches!(fixture.verify(&rs_on_ec).await, Err(AuthError::UnsupportedAlgorithm(_))));
    // Algorithms outside RS256/ES256, even from a well-formed RSA key.
    let ps = sign(Algorithm::PS256, Some("k-rsa"), &rsa_a(), &id_claims(ISS_A));
    assert!(matches!(fixture.verify(&ps).await, Err(AuthError::UnsupportedAlgorithm(_))));
}

#[tokio::test]
async fn a_second_issuer_reusing_a_kid_cannot_sign_for_the_first() {
    // Both issuers trusted, both publish kid "k1", with different keys.
    let config = VerifierConfig::with_issuers(vec![
        TrustedIssuer::new(ISS_A, vec![CLIENT.into()]),
        TrustedIssuer::new(ISS_B, vec![CLIENT.into()]),
    ]);
    let fixture = Fixture::with(config);
    fixture.jwks.publish(&jwks_url(ISS_A), &json!({"keys":[jwk(&rsa_a(), Algorithm::RS256, "k1")]}));
    fixture.jwks.publish(&jwks_url(ISS_B), &json!({"keys":[jwk(&rsa_b(), Algorithm::RS256, "k1")]}));

    // B's key is cached first, as the attacker would arrange.
    let from_b = sign(Algorithm::RS256, Some("k1"), &rsa_b(), &id_claims(ISS_B));
    assert_eq!(fixture.verify(&from_b).await.map(|p| p.subject), Ok("u-1".into()));
    // B's key, claiming to be A: A's own k1 verifies it, and refuses it.
    let forged = sign(Algorithm::RS256, Some("k1"), &rsa_b(), &id_claims(ISS_A));
    assert_eq!(fixture.verify(&forged).await, Err(AuthError::BadSignature));
    let from_a = sign(Algorithm::RS256, Some("k1"), &rsa_a(), &id_claims(ISS_A));
    assert!(fixture.verify(&from_a).await.is_ok());
    assert_eq!(fixture.jwks.fetches(), 2, "one JWKS per issuer");
}

#[tokio::test]
async fn jwks_down_denies() {
    let fixture = Fixture::new();
    fixture.jwks.outage.set(true);
    let id = sign(Algorithm::RS256, Some("k-rsa"), &rsa_a(), &id_claims(ISS_A));
    assert!(matches!(fixture.verify(&id).await, Err(AuthError::KeysUnavailable(_))));
    // A JWKS that is not JSON is as good as none.
    let garbage = Arc::new(MemoryJwks::default());
    garbage.publish(&jwks_url(ISS_A), &json!("<html>maintenance</html>"));
    let verifier = Verifier::new(fixture.verifier.config().clone(), garbage);
    let result = verifier.verify(Some(&id), NOW).await;
    assert!(matches!(&result, Err(AuthError::KeysUnavailable(m)) if m.contains("malformed JWKS")), "{result:?}");
}

/// An ID token from A valid for three hours: these tests outlive a key set's age.
fn long_lived_id_token() -> String {
    let mut claims = id_claims(ISS_A);
    claims["exp"] = json!(NOW + 3 * VerifierConfig::DEFAULT_MAX_KEY_AGE);
    format!("Bearer {}", sign(Algorithm::RS256, Some("k-rsa"), &rsa_a(), &claims))
}

#[tokio::test]
async fn keys_older_than_the_maximum_age_are_refetched() {
    let fixture = Fixture::new();
    let id = long_lived_id_token();
    let at = |seconds: i64| fixture.verifier.verify(Some(&id), NOW + seconds);
    assert!(at(0).await.is_ok());
    assert!(at(VerifierConfig::DEFAULT_MAX_KEY_AGE - 1).await.is_ok());
    assert_eq!(fixture.jwks.fetches(), 1, "a set younger than an hour is used as it is");
    // The issuer withdraws k-rsa: an hour after the fetch, a warm instance notices.
    fixture.jwks.publish(&jwks_url(ISS_A), &json!({"keys":[jwk(&rsa_b(), Algorithm::RS256, "k-new")]}));
    let withdrawn = at(VerifierConfig::DEFAULT_MAX_KEY_AGE).await;
    assert!(matches!(withdrawn, Err(AuthError::UnknownKey { .. })), "{withdrawn:?}");
    assert_eq!(fixture.jwks.fetches(), 2);
}

#[tokio::test]
async fn a_failed_first_fetch_is_retried_after_a_short_back_off_not_a_minute() {
    let fixture = Fixture::new();
    let id = long_lived_id_token();
    fixture.jwks.outage.set(true);
    assert!(matches!(fixture.verifier.verify(Some(&id), NOW).await, Err(AuthError::KeysUnavailable(_))));
    fixture.jwks.outage.set(false);
    // Within the back-off: still denied, and the JWKS is not asked again.
    assert!(matches!(fixture.verifier.verify(Some(&id), NOW).await, Err(AuthError::KeysUnavailable(_))));
    assert_eq!(fixture.jwks.fetches(), 1);
    // A second later it is, and the token passes.
    assert!(fixture.verifier.verify(Some(&id), NOW + 1).await.is_ok());
    assert_eq!(fixture.jwks.fetches(), 2);
}

#[tokio::test]
async fn failures_back_off_exponentially_up_to_a_cap() {
    let fixture = Fixture::new();
    let id = long_lived_id_token();
    fixture.jwks.outage.set(true);
    // One verification a second for two minutes while the JWKS is down.
    let mut fetched_at = Vec::new();
    for second in 0..120 {
        let before = fixture.jwks.fetches();
        assert!(fixture.verifier.verify(Some(&id), NOW + second).await.is_err());
        if fixture.jwks.fetches() > before {
            fetched_at.push(second);
        }
    }
    // Waits of 1, 2, 4, 8, 16, then 30 s at most.
    assert_eq!(fetched_at, [0, 1, 3, 7, 15, 31, 61, 91]);
}

#[tokio::test]
async fn a_failed_refetch_serves_the_old_keys_until_twice_the_maximum_age() {
    let fixture = Fixture::new();
    let id = long_lived_id_token();
    let max_age = VerifierConfig::DEFAULT_MAX_KEY_AGE;
    assert!(fixture.verifier.verify(Some(&id), NOW).await.is_ok());
    fixture.jwks.outage.set(true);
    // Stale and the issuer unreachable: the old set still verifies (and the refetch is retried).
    assert!(fixture.verifier.verify(Some(&id), NOW + max_age).await.is_ok());
    assert!(fixture.verifier.verify(Some(&id), NOW + 2 * max_age - 1).await.is_ok());
    assert!(fixture.jwks.fetches() > 2, "retried while stale");
    // Past twice the age: nothing is trusted any more.
    let result = fixture.verifier.verify(Some(&id), NOW + 2 * max_age).await;
    assert!(matches!(result, Err(AuthError::KeysUnavailable(_))), "{result:?}");
    // Once the issuer answers again, all is well.
    fixture.jwks.outage.set(false);
    assert!(fixture.verifier.verify(Some(&id), NOW + 2 * max_age + 60).await.is_ok());
}

// ----------------------------------------------------------------- rights

#[tokio::test]
async fn the_rights_claim_is_the_principals_and_a_bad_one_refuses_the_token() {
    let verifier = &hs256_verifier();
    let verify = |claims: serde_json::Value| {
        let token = hs256(&claims);
        async move { verifier.verify(Some(&token), NOW).await }
    };
    let rights = json!({"lobby":"rw","team-*":"rw","announcements":"r","mods":"rwm"});
    let principal = verify(json!({"sub":"a","exp":NOW + 60,"chat":{"rights":rights}})).await.unwrap();
    assert_eq!(principal.rights.to_string(), "announcements=r;lobby=rw;mods=rwm;team-*=rw");
    let none = verify(json!({"sub":"a","exp":NOW + 60,"chat":{"rooms":["ops"]}})).await.unwrap();
    assert_eq!(none.rights, Rights::default(), "no claim: the deployment's default");
    for bad in [json!({"lobby": "rx"}), json!(["lobby"]), json!({"no spaces": "r"})] {
        let refused = verify(json!({"sub":"a","exp":NOW + 60,"chat":{"rights":bad}})).await;
        assert!(matches!(refused, Err(AuthError::BadRights(_))), "{bad}: {refused:?}");
    }
}

#[tokio::test]
async fn a_token_without_the_claim_gets_the_configured_default() {
    let mut config = VerifierConfig::with_shared_secret(SharedSecret::new(SECRET));
    config.default_rights = Rights::parse("*=r").unwrap();
    let verifier = Verifier::new(config, Arc::new(MemoryJwks::default()));
    let principal = verifier.verify(Some(&hs256(&json!({"sub":"a","exp":NOW + 60}))), NOW).await.unwrap();
    assert_eq!(principal.rights.to_string(), "*=r");
}

#[tokio::test]
async fn the_tokens_rooms_stay_within_their_share_of_the_context() {
    let verifier = hs256_verifier();
    let long: Vec<String> = (0..80).map(|i| format!("{i:0>64}")).collect();
    let token = hs256(&json!({"sub":"a","exp":NOW + 60,"chat":{"rooms":long}}));
    let rooms = verifier.verify(Some(&token), NOW).await.unwrap().rooms;
    assert_eq!(rooms.join(",").len(), 78 * 65 - 1, "78 names of 64 characters fit in 5 KB");
    assert!(rooms.join(",").len() <= crate::auth::MAX_TOKEN_ROOMS_BYTES);
}

// ---------------------------------------------------------- group rights

/// Issuer A's verifier with a closed default and `GROUP_RIGHTS` as a user pool would map them.
fn grouped() -> Fixture {
    let mut config = VerifierConfig::with_issuers(vec![TrustedIssuer::new(ISS_A, vec![CLIENT.into()])]);
    config.default_rights = Rights::parse("lobby=rw;announcements=r").unwrap();
    let mapping = "moderators:*=rwm staff:team-*=rw;announcements=rw org:readers:*=r";
    config.group_rights = GroupRights::parse(mapping, &config.default_rights).unwrap();
    Fixture::with(config)
}

/// A Cognito ID token of issuer A with `extra` claims merged in.
fn id_token_with(extra: Value) -> String {
    let mut claims = id_claims(ISS_A);
    claims.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    sign(Algorithm::RS256, Some("k-rsa"), &rsa_a(), &claims)
}

#[tokio::test]
async fn a_token_without_the_claim_gets_the_default_and_its_groups_rights() {
    let fixture = grouped();
    let rights = |extra: Value| {
        let token = id_token_with(extra);
        let fixture = &fixture;
        async move { fixture.verify(&token).await.unwrap().rights.to_string() }
    };
    assert_eq!(rights(json!({})).await, "announcements=r;lobby=rw", "no groups: the default");
    assert_eq!(rights(json!({"cognito:groups": []})).await, "announcements=r;lobby=rw");
    assert_eq!(rights(json!({"cognito:groups": ["strangers"]})).await, "announcements=r;lobby=rw", "unmapped");
    assert_eq!(rights(json!({"cognito:groups": ["staff"]})).await, "announcements=rw;lobby=rw;team-*=rw");
    assert_eq!(
        rights(json!({"cognito:groups": ["org:readers", "staff"]})).await,
        "announcements=rw;lobby=rw;team-*=rw;*=r",
        "a group name holding ':'; two groups' union"
    );
    assert_eq!(rights(json!({"cognito:groups": ["moderators"]})).await, "announcements=rwm;lobby=rwm;*=rwm");
    // A claim of the wrong shape is the issuer's mistake: it takes rights away, never refuses.
    assert_eq!(rights(json!({"cognito:groups": "moderators"})).await, "announcements=r;lobby=rw");
    assert_eq!(rights(json!({"cognito:groups": [7, "staff"]})).await, "announcements=rw;lobby=rw;team-*=rw");
}

#[tokio::test]
async fn the_rights_claim_alone_decides_whatever_the_groups() {
    let fixture = grouped();
    let token = id_token_with(json!({"cognito:groups": ["moderators"], "chat": {"rights": {"lobby": "r"}}}));
    assert_eq!(fixture.verify(&token).await.unwrap().rights.to_string(), "lobby=r");
    // Access tokens carry the groups too.
    let mut access = access_claims(ISS_A);
    access["cognito:groups"] = json!(["staff"]);
    let token = sign(Algorithm::RS256, Some("k-rsa"), &rsa_a(), &access);
    assert!(fixture.verify(&token).await.unwrap().rights.allows("team-x", crate::rights::Right::Write));
}

#[test]
fn group_rights_are_read_from_the_settings_with_the_default() {
    let vars = |group_rights: &str| {
        let group_rights = group_rights.to_owned();
        move |name: &str| match name {
            "JWT_SECRET" => Some("a-test-secret-that-is-32-bytes!!".to_owned()),
            "DEFAULT_RIGHTS" => Some("lobby=rw".to_owned()),
            "GROUP_RIGHTS" => Some(group_rights.clone()),
            _ => None,
        }
    };
    let config = VerifierConfig::from_settings(vars("moderators:*=rwm")).unwrap();
    let mods = config.group_rights.rights_of(&config.default_rights, ["moderators"]);
    assert_eq!(mods.to_string(), "lobby=rwm;*=rwm");
    assert!(VerifierConfig::from_settings(vars("   ")).unwrap().group_rights.is_empty(), "blank: none");
    let error = VerifierConfig::from_settings(vars("moderators=rwm")).unwrap_err().0;
    assert!(error.starts_with("GROUP_RIGHTS: \"moderators=rwm\" is not group:rights"), "{error}");
    let too_many = (0..32).map(|i| format!("g{i}:room{i}=r")).collect::<Vec<_>>().join(" ");
    let error = VerifierConfig::from_settings(vars(&too_many)).unwrap_err().0;
    assert!(error.contains("33 grants; at most 32"), "lobby and 32 groups' rooms: {error}");
}
