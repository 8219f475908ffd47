//! JWT verification for the optional `$connect` authorizer, on the `jsonwebtoken`
//! crate. The seed page sends the token as the query parameter
//! `Authorization=Bearer <token>`.
//!
//! - RS256 and ES256 with keys from each trusted issuer's JWKS (Cognito user pools,
//!   any OIDC provider), fetched through the [`JwksSource`] port and cached per issuer.
//! - HS256 only when a shared secret is configured (the stack's `JWT_SECRET`).
//! - `exp` required and `nbf` honoured, with a small leeway; `iss` pinned; the
//!   audience checked as Cognito puts it (`aud` in ID tokens, `client_id` in access
//!   tokens, `token_use` when present); `sub` required (at most 255 bytes, no
//!   control or bidirectional formatting characters, as OIDC Core §2 bounds it).
//! - The principal is the issuer-qualified subject, `"<iss>|<sub>"`: a `sub` is
//!   unique only within its issuer, and the display name is not unique at all.
//! - Everything else fails closed: the caller logs the [`AuthError`] and denies.
//!
//! ```
//! # use std::sync::Arc;
//! # use chat_core::auth::{AuthError, JwksError, JwksSource, SharedSecret, Verifier, VerifierConfig};
//! # struct NoJwks;
//! # #[async_trait::async_trait]
//! # impl JwksSource for NoJwks {
//! #     async fn fetch(&self, _: &str) -> Result<Vec<u8>, JwksError> { Err(JwksError("none".into())) }
//! # }
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let config = VerifierConfig::with_shared_secret(SharedSecret::new(b"a-test-secret-that-is-32-bytes!!"));
//! let verifier = Verifier::new(config, Arc::new(NoJwks));
//! assert_eq!(verifier.verify(None, 0).await, Err(AuthError::Missing));
//! # });
//! ```

mod groups;
mod jwks;
mod settings;

use std::sync::Arc;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::identity::cleaned_name;
use crate::rights::Rights;
use crate::text::is_control_or_bidi;
pub use groups::GroupRights;
use jwks::{Freshness, KeyCache, KeyMiss};
pub use jwks::{JwksError, JwksSource};
pub use settings::{MIN_SECRET_BYTES, SettingsError};

/// API Gateway refuses longer identity sources anyway; a bound keeps parsing cheap.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// A display name longer than this is cut: it travels in every event's context.
pub const MAX_NAME_CHARS: usize = 64;
/// Longest `sub` accepted, bytes (OIDC Core §2: at most 255 ASCII characters).
/// Bounds the user id every row and receipt key carries.
pub const MAX_SUBJECT_BYTES: usize = 255;
/// The issuer a shared-secret token without `iss` speaks for, when no
/// `JWT_ISSUER` is configured: its user ids are `local|<sub>`.
pub const LOCAL_ISSUER: &str = "local";

/// Who a verified token speaks for; the authorizer hands it to every later route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The token's `sub`: stable, unique per issuer.
    pub subject: String,
    /// The account: `"<iss>|<sub>"`, with the verified issuer (for a shared-secret
    /// token without `iss`, the configured `JWT_ISSUER`, else [`LOCAL_ISSUER`]).
    /// Stable and unique across every trusted issuer; what tells users apart.
    pub user_id: String,
    /// What to show: `cognito:username` (ID tokens), else `username` (Cognito access
    /// tokens), else `preferred_username`, else `name`, else `sub`; without control
    /// or bidirectional formatting characters ([`crate::identity::cleaned_name`]).
    pub name: String,
    /// Always true here; later routes may also see unverified (anonymous) users.
    pub verified: bool,
    /// Rooms to subscribe the connection to at `$connect`: the `chat.rooms`
    /// claim's valid room names, each once, at most [`MAX_TOKEN_ROOMS`] and
    /// [`MAX_TOKEN_ROOMS_BYTES`] joined by commas.
    pub rooms: Vec<String>,
    /// What the connection may do where: the `chat.rights` claim, else the
    /// deployment's [`VerifierConfig::default_rights`] with the rights of each
    /// of the token's `cognito:groups` that [`VerifierConfig::group_rights`] maps.
    pub rights: Rights,
}

/// Rooms one token may list: the authorizer's context travels with every
/// event of the connection, so it is kept small.
pub const MAX_TOKEN_ROOMS: usize = crate::room::DEFAULT_MAX_ROOMS;

/// The most bytes the token's rooms take in the context, commas included: with
/// the rights ([`crate::rights::MAX_RIGHTS_BYTES`]), the name and the user id,
/// the context stays under API Gateway's 8 KB (100 rooms of 50 characters fit).
pub const MAX_TOKEN_ROOMS_BYTES: usize = 5 * 1024;

/// The `chat.rooms` claim's rooms. The claim is the issuer's to get right: a
/// name that is not a valid room, or a claim of the wrong shape, is left out
/// and logged rather than refusing the user.
fn token_rooms(chat: Option<&serde_json::Value>) -> Vec<String> {
    let Some(listed) = chat.and_then(|chat| chat.get("rooms")) else { return Vec::new() };
    let Some(listed) = listed.as_array() else {
        tracing::warn!("the token's chat.rooms is not a list; ignored");
        return Vec::new();
    };
    let mut rooms: Vec<String> = Vec::new();
    for room in listed {
        match room.as_str().map(crate::room::valid_room) {
            Some(Ok(room)) if !rooms.iter().any(|r| r == room) => rooms.push(room.to_owned()),
            Some(Ok(_)) => {}
            _ => tracing::warn!(%room, "a room of the token's chat.rooms is not a valid room name; left out"),
        }
    }
    let (mut kept, mut bytes) = (0, 0);
    for room in &rooms {
        let more = room.len() + usize::from(kept > 0);
        if kept == MAX_TOKEN_ROOMS || bytes + more > MAX_TOKEN_ROOMS_BYTES {
            break;
        }
        (kept, bytes) = (kept + 1, bytes + more);
    }
    if kept < rooms.len() {
        tracing::warn!(listed = rooms.len(), kept, "the token lists too many rooms; the rest left out");
        rooms.truncate(kept);
    }
    rooms
}

/// The `chat.rights` claim's rights, else the default with the rights of the
/// token's mapped `cognito:groups` ([`GroupRights`]). A claim that cannot be
/// read refuses the token: leaving out one bad grant could open a room a
/// more specific grant was meant to shut.
fn token_rights(
    chat: Option<&serde_json::Value>,
    groups: Option<&serde_json::Value>,
    config: &VerifierConfig,
) -> Result<Rights, AuthError> {
    match chat.and_then(|chat| chat.get("rights")) {
        Some(claim) => Rights::from_claim(claim).map_err(|e| AuthError::BadRights(e.0)),
        None if config.group_rights.is_empty() => Ok(config.default_rights.clone()),
        None => Ok(config.group_rights.rights_of(&config.default_rights, groups::token_groups(groups))),
    }
}

/// Why a token was refused. The authorizer logs it and denies; the client only sees 403.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no Authorization parameter")]
    Missing,
    #[error("Authorization is not `Bearer <token>`")]
    NotBearer,
    #[error("token is {0} bytes, over the {MAX_TOKEN_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("algorithm refused: {0}")]
    UnsupportedAlgorithm(String),
    #[error("token has no kid")]
    MissingKeyId,
    #[error("issuer {issuer} has no key {kid}")]
    UnknownKey { issuer: String, kid: String },
    #[error("{0}")]
    KeysUnavailable(String),
    #[error("bad signature")]
    BadSignature,
    #[error("token expired")]
    Expired,
    #[error("token not valid yet")]
    NotYetValid,
    #[error("issuer not trusted: {0}")]
    WrongIssuer(String),
    #[error("audience not accepted")]
    WrongAudience,
    #[error("token_use {0:?} not accepted")]
    WrongTokenUse(String),
    #[error("token has no sub: without a stable subject there is no account to name")]
    MissingSubject,
    #[error("sub refused: {0}")]
    BadSubject(&'static str),
    #[error("chat.rights refused: {0}")]
    BadRights(String),
}

/// An OIDC issuer whose RS256/ES256 tokens are accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustedIssuer {
    /// Exactly the token's `iss`, e.g. `https://cognito-idp.{region}.amazonaws.com/{poolId}`.
    pub issuer: String,
    /// Accepted `aud` (ID tokens) / `client_id` (Cognito access tokens): the app client ids.
    pub audience: Vec<String>,
    /// Where its JWKS lives; [`TrustedIssuer::new`] uses `{issuer}/.well-known/jwks.json`.
    pub jwks_url: String,
}

impl TrustedIssuer {
    pub fn new(issuer: impl Into<String>, audience: Vec<String>) -> Self {
        let issuer = issuer.into();
        let jwks_url = format!("{}/.well-known/jwks.json", issuer.trim_end_matches('/'));
        Self { issuer, audience, jwks_url }
    }

    /// The same issuer with its JWKS at `url` (providers that publish it elsewhere).
    pub fn with_jwks_url(mut self, url: impl Into<String>) -> Self {
        self.jwks_url = url.into();
        self
    }
}

/// The HS256 shared secret and what its tokens must carry.
#[derive(Clone, PartialEq, Eq)]
pub struct SharedSecret {
    pub secret: Vec<u8>,
    /// When set, `iss` must equal it.
    pub issuer: Option<String>,
    /// When not empty, the audience must be one of these (as for [`TrustedIssuer`]).
    pub audience: Vec<String>,
}

impl SharedSecret {
    pub fn new(secret: &[u8]) -> Self {
        Self { secret: secret.to_vec(), issuer: None, audience: Vec::new() }
    }
}

impl std::fmt::Debug for SharedSecret {
    // The secret never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedSecret").field("issuer", &self.issuer).field("audience", &self.audience).finish()
    }
}

/// What the [`Verifier`] trusts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifierConfig {
    pub issuers: Vec<TrustedIssuer>,
    /// `None`: HS256 tokens are refused.
    pub shared_secret: Option<SharedSecret>,
    /// Clock skew allowed on `exp` and `nbf`, seconds.
    pub leeway: i64,
    /// An unknown `kid` refetches its issuer's JWKS at most once per this many
    /// seconds after a successful fetch (a failed one is retried after 1 s, 2 s,
    /// … up to 30 s).
    pub refetch_interval: i64,
    /// A JWKS older than this many seconds is refetched before its keys are used
    /// again; if that fails, it is served until twice this age.
    pub max_key_age: i64,
    /// The rights of a token without a `chat.rights` claim (`DEFAULT_RIGHTS`).
    pub default_rights: Rights,
    /// What a token without `chat.rights` gains for each of its `cognito:groups`
    /// (`GROUP_RIGHTS`); empty: groups grant nothing.
    pub group_rights: GroupRights,
}

impl VerifierConfig {
    pub const DEFAULT_LEEWAY: i64 = 30;
    pub const DEFAULT_REFETCH_INTERVAL: i64 = 60;
    pub const DEFAULT_MAX_KEY_AGE: i64 = 3600;

    pub fn with_issuers(issuers: Vec<TrustedIssuer>) -> Self {
        Self {
            issuers,
            shared_secret: None,
            leeway: Self::DEFAULT_LEEWAY,
            refetch_interval: Self::DEFAULT_REFETCH_INTERVAL,
            max_key_age: Self::DEFAULT_MAX_KEY_AGE,
            default_rights: Rights::default(),
            group_rights: GroupRights::default(),
        }
    }

    pub fn with_shared_secret(secret: SharedSecret) -> Self {
        Self { shared_secret: Some(secret), ..Self::with_issuers(Vec::new()) }
    }
}

/// Verifies tokens; build it once per cold start so its key cache stays warm.
pub struct Verifier {
    config: VerifierConfig,
    keys: KeyCache,
}

/// The claims this module reads; the library checks the signature, `alg` and `iss`.
#[derive(Deserialize)]
struct Claims {
    /// Required; missing reads as empty, refused as [`AuthError::MissingSubject`].
    #[serde(default)]
    sub: String,
    iss: Option<String>,
    exp: i64,
    nbf: Option<i64>,
    #[serde(default)]
    aud: Audience,
    client_id: Option<String>,
    token_use: Option<String>,
    #[serde(rename = "cognito:username")]
    cognito_username: Option<String>,
    username: Option<String>,
    preferred_username: Option<String>,
    name: Option<String>,
    /// The product's own claim: `{"rights":{…},"rooms":[…]}`.
    chat: Option<serde_json::Value>,
    /// The user pool groups the user is in (Cognito ID and access tokens): read
    /// leniently, see [`groups::token_groups`].
    #[serde(rename = "cognito:groups")]
    cognito_groups: Option<serde_json::Value>,
}

#[derive(Default, Deserialize)]
#[serde(untagged)]
enum Audience {
    #[default]
    None,
    One(String),
    Many(Vec<String>),
}

impl Audience {
    fn contains_any(&self, accepted: &[String]) -> bool {
        match self {
            Audience::None => false,
            Audience::One(aud) => accepted.contains(aud),
            Audience::Many(auds) => auds.iter().any(|aud| accepted.contains(aud)),
        }
    }
}

/// Just the issuer, read before verification to pick whose keys verify the token.
#[derive(Deserialize)]
struct IssuerOnly {
    iss: Option<String>,
}

impl Verifier {
    pub fn new(config: VerifierConfig, jwks: Arc<dyn JwksSource>) -> Self {
        let freshness = Freshness { refetch_interval: config.refetch_interval, max_age: config.max_key_age };
        let keys = KeyCache::new(jwks, freshness);
        Self { config, keys }
    }

    pub fn config(&self) -> &VerifierConfig {
        &self.config
    }

    /// Verifies `Bearer <token>` (scheme case-insensitive) or a bare token at `now`
    /// (epoch seconds).
    pub async fn verify(&self, authorization: Option<&str>, now: i64) -> Result<Principal, AuthError> {
        let value = authorization.map(str::trim).filter(|v| !v.is_empty()).ok_or(AuthError::Missing)?;
        let token = match value.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
            Some(_) => return Err(AuthError::NotBearer),
            None => value,
        };
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::TooLarge(token.len()));
        }
        // An unknown `alg` (such as "none") fails here, naming it.
        let header = jsonwebtoken::decode_header(token).map_err(|e| AuthError::Malformed(format!("header: {e}")))?;
        let (key, mut validation, audience, required_audience) = match header.alg {
            Algorithm::HS256 => {
                let shared = self.config.shared_secret.as_ref().ok_or_else(|| {
                    AuthError::UnsupportedAlgorithm("HS256 without a configured shared secret".into())
                })?;
                let key = DecodingKey::from_secret(&shared.secret)
                    .map_err(|_| AuthError::UnsupportedAlgorithm("HS256 with an empty secret".into()))?;
                let mut validation = Validation::new(Algorithm::HS256);
                if let Some(issuer) = &shared.issuer {
                    validation.set_issuer(&[issuer]);
                    validation.required_spec_claims.insert("iss".into());
                }
                // Whoever holds the secret must not mint ids of a JWKS issuer's users.
                if let Some(iss) = self.claimed_issuer(token)?.filter(|iss| self.is_jwks_issuer(iss)) {
                    return Err(AuthError::WrongIssuer(format!("{iss} signs with its JWKS, not the shared secret")));
                }
                (key, validation, shared.audience.as_slice(), false)
            }
            alg @ (Algorithm::RS256 | Algorithm::ES256) => {
                let kid = header.kid.as_deref().ok_or(AuthError::MissingKeyId)?;
                let trusted = self.trusted_issuer(token)?;
                let cached =
                    self.keys.key(&trusted.issuer, &trusted.jwks_url, kid, now).await.map_err(|miss| match miss {
                        KeyMiss::Unknown => {
                            AuthError::UnknownKey { issuer: trusted.issuer.clone(), kid: kid.to_owned() }
                        }
                        KeyMiss::Unavailable(reason) => AuthError::KeysUnavailable(reason),
                    })?;
                // The key decides the algorithm, not the token: an RSA key never
                // verifies as ES256, a key pinned to RS256 never as anything else.
                if cached.key.family() != alg.family() || cached.alg.is_some_and(|pinned| pinned != alg) {
                    return Err(AuthError::UnsupportedAlgorithm(format!("{alg:?} does not match key {kid}")));
                }
                let mut validation = Validation::new(alg);
                validation.set_issuer(&[&trusted.issuer]);
                validation.required_spec_claims.insert("iss".into());
                (cached.key, validation, trusted.audience.as_slice(), true)
            }
            other => return Err(AuthError::UnsupportedAlgorithm(format!("{other:?}"))),
        };
        // Time is checked below against the caller's clock, the audience by token_use.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.insert("sub".into());
        let claims = jsonwebtoken::decode::<Claims>(token, &key, &validation).map_err(refusal)?.claims;

        if now >= claims.exp.saturating_add(self.config.leeway) {
            return Err(AuthError::Expired);
        }
        if claims.nbf.is_some_and(|nbf| now.saturating_add(self.config.leeway) < nbf) {
            return Err(AuthError::NotYetValid);
        }
        check_audience(&claims, audience, required_audience)?;
        check_subject(&claims.sub)?;
        let name = [&claims.cognito_username, &claims.username, &claims.preferred_username, &claims.name]
            .into_iter()
            .flatten()
            .map(|n| cleaned_name(n))
            .find(|n| !n.is_empty())
            .unwrap_or_else(|| claims.sub.clone())
            .chars()
            .take(MAX_NAME_CHARS)
            .collect();
        let user_id = user_id(claims.iss.as_deref(), &claims.sub)?;
        let rooms = token_rooms(claims.chat.as_ref());
        let rights = token_rights(claims.chat.as_ref(), claims.cognito_groups.as_ref(), &self.config)?;
        Ok(Principal { subject: claims.sub, user_id, name, verified: true, rooms, rights })
    }

    /// The trusted issuer the token names; its keys alone may verify it.
    fn trusted_issuer(&self, token: &str) -> Result<&TrustedIssuer, AuthError> {
        let iss = self.claimed_issuer(token)?.ok_or_else(|| AuthError::WrongIssuer("no iss claim".into()))?;
        self.config.issuers.iter().find(|t| t.issuer == iss).ok_or(AuthError::WrongIssuer(iss))
    }

    /// The `iss` a token claims, read before its signature is checked.
    fn claimed_issuer(&self, token: &str) -> Result<Option<String>, AuthError> {
        let claims: IssuerOnly = jsonwebtoken::dangerous::insecure_decode_claims(token)
            .map_err(|e| AuthError::Malformed(format!("claims: {e}")))?;
        Ok(claims.iss)
    }

    fn is_jwks_issuer(&self, iss: &str) -> bool {
        self.config.issuers.iter().any(|t| t.issuer == iss)
    }
}

/// `"<iss>|<sub>"`. For JWKS issuers the library has checked `iss`; a
/// shared-secret token's is pinned when `JWT_ISSUER` is set (so a token without
/// one was refused), else it is the secret holder's word, [`LOCAL_ISSUER`] when
/// absent. An `iss` never holds `|`, so the id splits at its first `|` and no two
/// (iss, sub) pairs share one (a `sub` may hold `|`: Auth0's do).
fn user_id(iss: Option<&str>, sub: &str) -> Result<String, AuthError> {
    let issuer = iss.filter(|iss| !iss.is_empty()).unwrap_or(LOCAL_ISSUER);
    if issuer.contains('|') || issuer.len() > MAX_SUBJECT_BYTES || issuer.chars().any(is_control_or_bidi) {
        return Err(AuthError::WrongIssuer(
            "iss must be at most 255 bytes, without '|', control or bidirectional formatting characters".into(),
        ));
    }
    Ok(format!("{issuer}|{sub}"))
}

/// A `sub` fit to name an account in every row and receipt key.
fn check_subject(sub: &str) -> Result<(), AuthError> {
    if sub.is_empty() {
        Err(AuthError::MissingSubject)
    } else if sub.len() > MAX_SUBJECT_BYTES {
        Err(AuthError::BadSubject("longer than 255 bytes"))
    } else if sub.chars().any(is_control_or_bidi) {
        // The name falls back to `sub`, and the id is shown too: neither may
        // carry what reorders the text around it (OIDC subs are ASCII anyway).
        Err(AuthError::BadSubject("contains control or bidirectional formatting characters"))
    } else {
        Ok(())
    }
}

/// Cognito ID tokens carry `aud`, its access tokens `client_id` and no `aud`;
/// other providers' tokens have no `token_use` and carry `aud`. An empty
/// `accepted` list checks nothing where the audience is optional (shared secret)
/// and accepts nothing where it is `required` (JWKS issuers).
fn check_audience(claims: &Claims, accepted: &[String], required: bool) -> Result<(), AuthError> {
    if accepted.is_empty() && !required {
        return Ok(());
    }
    let ok = match claims.token_use.as_deref() {
        None | Some("id") => claims.aud.contains_any(accepted),
        Some("access") => claims.client_id.as_ref().is_some_and(|id| accepted.contains(id)),
        Some(other) => return Err(AuthError::WrongTokenUse(other.to_owned())),
    };
    if ok { Ok(()) } else { Err(AuthError::WrongAudience) }
}

/// The library's verdict in this module's terms.
fn refusal(error: jsonwebtoken::errors::Error) -> AuthError {
    match error.kind() {
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::InvalidIssuer => AuthError::WrongIssuer("iss does not match".into()),
        ErrorKind::MissingRequiredClaim(claim) if claim == "sub" => AuthError::MissingSubject,
        ErrorKind::InvalidAlgorithm | ErrorKind::UnsupportedAlgorithm => {
            AuthError::UnsupportedAlgorithm(error.to_string())
        }
        _ => AuthError::Malformed(error.to_string()),
    }
}

#[cfg(test)]
mod tests;
