//! The verifier's trust from named settings: environment variables in a Lambda,
//! command-line flags in the local stack, one set of rules for both.

use super::{GroupRights, SharedSecret, TrustedIssuer, VerifierConfig};

/// A setting that cannot work; the stack refuses to start rather than deny every connection.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SettingsError(pub String);

/// The HS256 secret's minimum length, bytes (RFC 7518 §3.2: at least the hash size).
pub const MIN_SECRET_BYTES: usize = 32;

impl VerifierConfig {
    /// Reads the settings by name through `var` (blank counts as unset):
    ///
    /// | name | meaning |
    /// |---|---|
    /// | `OIDC_ISSUER` | issuer whose RS256/ES256 tokens are accepted (e.g. a Cognito user pool URL) |
    /// | `OIDC_AUDIENCE` | comma-separated app client ids; required with `OIDC_ISSUER` |
    /// | `JWKS_URL` | the issuer's JWKS, if not at `{OIDC_ISSUER}/.well-known/jwks.json` |
    /// | `JWT_SECRET` | HS256 shared secret, at least 32 bytes; HS256 is refused without it |
    /// | `JWT_ISSUER`, `JWT_AUDIENCE` | optional `iss` / audience required of HS256 tokens |
    /// | `JWT_LEEWAY_SECONDS` | clock skew on `exp`/`nbf` (default 30) |
    /// | `JWKS_REFETCH_SECONDS` | an unknown `kid` refetches at most this often (default 60) |
    /// | `JWKS_MAX_AGE_SECONDS` | keys older than this are refetched before use (default 3600) |
    /// | `DEFAULT_RIGHTS` | rights of a token without `chat.rights` ([`crate::rights`]; default `*=rw`) |
    /// | `GROUP_RIGHTS` | rights a token without `chat.rights` gains per `cognito:groups` entry ([`GroupRights`]) |
    ///
    /// At least one of `OIDC_ISSUER` and `JWT_SECRET` must be set.
    ///
    /// ```
    /// use chat_core::auth::VerifierConfig;
    /// let vars = |name: &str| (name == "JWT_SECRET").then(|| "a-test-secret-that-is-32-bytes!!".to_owned());
    /// assert!(VerifierConfig::from_settings(vars).unwrap().shared_secret.is_some());
    /// ```
    pub fn from_settings(var: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let var = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let list = |name: &str| -> Vec<String> {
            var(name)
                .map(|v| v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(Into::into).collect())
                .unwrap_or_default()
        };
        let refuse = |message: &str| Err(SettingsError(message.into()));
        let mut issuers = Vec::new();
        if let Some(issuer) = var("OIDC_ISSUER") {
            let audience = list("OIDC_AUDIENCE");
            if audience.is_empty() {
                return refuse("OIDC_AUDIENCE must name the app client id(s) accepted from OIDC_ISSUER");
            }
            let mut trusted = TrustedIssuer::new(issuer.trim(), audience);
            if let Some(url) = var("JWKS_URL") {
                trusted = trusted.with_jwks_url(url.trim());
            }
            issuers.push(trusted);
        } else if var("JWKS_URL").is_some() || var("OIDC_AUDIENCE").is_some() {
            return refuse("JWKS_URL and OIDC_AUDIENCE need OIDC_ISSUER");
        }
        let mut config = VerifierConfig::with_issuers(issuers);
        if let Some(secret) = var("JWT_SECRET") {
            if secret.len() < MIN_SECRET_BYTES {
                return refuse("JWT_SECRET must be at least 32 bytes");
            }
            let mut shared = SharedSecret::new(secret.as_bytes());
            shared.issuer = var("JWT_ISSUER");
            shared.audience = list("JWT_AUDIENCE");
            config.shared_secret = Some(shared);
        }
        if config.issuers.is_empty() && config.shared_secret.is_none() {
            return refuse("set OIDC_ISSUER (+ OIDC_AUDIENCE) and/or JWT_SECRET");
        }
        // A user id is `<iss>|<sub>`, split at the first `|`; and an issuer's
        // accounts are named by its own keys only, never by the shared secret.
        let jwt_issuer = config.shared_secret.as_ref().and_then(|shared| shared.issuer.as_deref());
        if config.issuers.iter().map(|t| t.issuer.as_str()).chain(jwt_issuer).any(|iss| iss.contains('|')) {
            return refuse("OIDC_ISSUER and JWT_ISSUER must not contain '|'");
        }
        if jwt_issuer.is_some_and(|iss| config.issuers.iter().any(|t| t.issuer == iss)) {
            return refuse("JWT_ISSUER must differ from OIDC_ISSUER: shared-secret tokens cannot speak for its users");
        }
        let seconds = |name: &str, default: i64| match var(name) {
            None => Ok(default),
            Some(v) => v
                .trim()
                .parse::<u32>()
                .map(i64::from)
                .map_err(|_| SettingsError(format!("{name} must be whole seconds"))),
        };
        config.leeway = seconds("JWT_LEEWAY_SECONDS", VerifierConfig::DEFAULT_LEEWAY)?;
        config.refetch_interval = seconds("JWKS_REFETCH_SECONDS", VerifierConfig::DEFAULT_REFETCH_INTERVAL)?;
        config.max_key_age = seconds("JWKS_MAX_AGE_SECONDS", VerifierConfig::DEFAULT_MAX_KEY_AGE)?;
        if config.max_key_age == 0 {
            return refuse("JWKS_MAX_AGE_SECONDS must be at least 1");
        }
        config.default_rights = crate::rights::Rights::default_from_settings(var).map_err(|e| SettingsError(e.0))?;
        config.group_rights = GroupRights::parse(&var("GROUP_RIGHTS").unwrap_or_default(), &config.default_rights)?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<VerifierConfig, SettingsError> {
        VerifierConfig::from_settings(|name| vars.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_string()))
    }

    #[test]
    fn a_shared_secret_alone_trusts_hs256_only() {
        let hs256 = config(&[("JWT_SECRET", "a-test-secret-that-is-32-bytes!!")]).unwrap();
        assert!(hs256.issuers.is_empty());
        let shared = hs256.shared_secret.unwrap();
        assert_eq!(
            (shared.secret.as_slice(), shared.issuer, shared.audience.len()),
            (&b"a-test-secret-that-is-32-bytes!!"[..], None, 0)
        );
    }

    #[test]
    fn a_cognito_pool_needs_its_client_ids() {
        let pool = "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_AAAAAAAAA";
        let cognito =
            config(&[("OIDC_ISSUER", pool), ("OIDC_AUDIENCE", "c1, c2"), ("JWKS_REFETCH_SECONDS", "120")]).unwrap();
        assert_eq!(cognito.issuers[0].audience, ["c1", "c2"]);
        assert_eq!(cognito.max_key_age, 3600, "keys are refetched hourly by default");
        let ten_minutes = [("OIDC_ISSUER", pool), ("OIDC_AUDIENCE", "c1"), ("JWKS_MAX_AGE_SECONDS", "600")];
        assert_eq!(config(&ten_minutes).unwrap().max_key_age, 600);
        let never_fresh = [("OIDC_ISSUER", pool), ("OIDC_AUDIENCE", "c1"), ("JWKS_MAX_AGE_SECONDS", "0")];
        assert!(config(&never_fresh).is_err(), "a key set that is never fresh would fetch on every token");
        assert_eq!(cognito.issuers[0].jwks_url, format!("{pool}/.well-known/jwks.json"));
        assert_eq!(
            (cognito.shared_secret, cognito.refetch_interval, cognito.leeway),
            (None, 120, VerifierConfig::DEFAULT_LEEWAY)
        );
        let custom =
            config(&[("OIDC_ISSUER", pool), ("OIDC_AUDIENCE", "c1"), ("JWKS_URL", "https://keys.example/jwks")]);
        assert_eq!(custom.unwrap().issuers[0].jwks_url, "https://keys.example/jwks");
        assert!(config(&[("OIDC_ISSUER", pool)]).is_err(), "no audience: refuse to start");
    }

    #[test]
    fn nothing_trusted_a_short_secret_or_stray_settings_refuse_to_start() {
        assert!(config(&[]).is_err());
        assert!(config(&[("JWT_SECRET", "   ")]).is_err(), "blank is unset");
        assert!(config(&[("JWT_SECRET", "short")]).is_err());
        assert!(config(&[("JWT_SECRET", "a-test-secret-that-is-32-bytes!!"), ("JWT_LEEWAY_SECONDS", "-1")]).is_err());
        let stray = [("JWT_SECRET", "a-test-secret-that-is-32-bytes!!"), ("OIDC_AUDIENCE", "c1")];
        assert!(config(&stray).is_err(), "an audience without an issuer is a mistake, not ignored");
        let secret = ("JWT_SECRET", "a-test-secret-that-is-32-bytes!!");
        assert!(config(&[secret, ("JWT_ISSUER", "a|b")]).is_err(), "'|' separates issuer and subject");
        let pool = "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_AAAAAAAAA";
        let same = [secret, ("JWT_ISSUER", pool), ("OIDC_ISSUER", pool), ("OIDC_AUDIENCE", "c1")];
        assert!(config(&same).is_err(), "the secret may not mint the pool's users");
    }
}
