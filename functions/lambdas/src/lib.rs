//! Wiring shared by the Lambda binaries: each binary builds its adapters once per
//! cold start with [`init`], then hands every event to a `chat_core` entrypoint.

use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use chat_aws::{ApiGatewayPoster, DynamoConnections, DynamoLog, DynamoSessions, S3Archive, TableNames};
use chat_core::auth::{SharedSecret, TrustedIssuer, VerifierConfig};
use chat_core::broadcaster::{FanoutConfig, RetryPolicy};

pub use chat_core::entrypoints::{expiry, stream, websocket};
pub use lambda_runtime::{Error, LambdaEvent, run, service_fn};

/// A WebSocket route invocation.
pub type WebsocketEvent = LambdaEvent<ApiGatewayWebsocketProxyRequest>;

/// The AWS configuration and DynamoDB client a function shares across invocations.
pub struct Aws {
    pub sdk: aws_config::SdkConfig,
    pub tables: TableNames,
    dynamodb: aws_sdk_dynamodb::Client,
}

/// Starts logging (JSON when the function's log format is JSON) and loads the SDK config.
pub async fn init() -> Aws {
    lambda_runtime::tracing::init_default_subscriber();
    let sdk = chat_aws::load_sdk_config().await;
    Aws { dynamodb: aws_sdk_dynamodb::Client::new(&sdk), tables: TableNames::from_env(), sdk }
}

impl Aws {
    pub fn connections(&self) -> DynamoConnections {
        DynamoConnections::new(self.dynamodb.clone(), &self.tables.connections)
    }

    pub fn sessions(&self) -> DynamoSessions {
        DynamoSessions::new(self.dynamodb.clone(), &self.tables.sessions)
    }

    pub fn log(&self) -> DynamoLog {
        DynamoLog::new(self.dynamodb.clone(), &self.tables.messages)
    }

    pub fn poster(&self, endpoint: &str) -> ApiGatewayPoster {
        ApiGatewayPoster::new(&self.sdk, endpoint)
    }

    /// The S3 archive, when `ARCHIVE_BUCKET` names one.
    pub fn archive(&self) -> Option<S3Archive> {
        std::env::var("ARCHIVE_BUCKET").ok().filter(|b| !b.is_empty()).map(|bucket| S3Archive::new(&self.sdk, bucket))
    }
}

/// The @connections endpoint: `CONNECTIONS_ENDPOINT` if set, else built from the
/// event's API id and stage and the function's region.
pub fn connections_endpoint(event: &ApiGatewayWebsocketProxyRequest) -> String {
    if let Ok(endpoint) = std::env::var("CONNECTIONS_ENDPOINT") {
        return endpoint;
    }
    let context = &event.request_context;
    let region = std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".into());
    chat_aws::management_endpoint(
        context.apiid.as_deref().unwrap_or_default(),
        &region,
        context.stage.as_deref().unwrap_or_default(),
    )
}

/// The broadcaster's policy from `FANOUT_CONCURRENCY`, `FANOUT_MAX_ATTEMPTS` and
/// `FANOUT_MAX_FAILED_SHARE`, each defaulting to [`FanoutConfig::default`].
pub fn fanout_config_from_env() -> FanoutConfig {
    let defaults = FanoutConfig::default();
    FanoutConfig {
        max_in_flight: env_or("FANOUT_CONCURRENCY", defaults.max_in_flight),
        retry: RetryPolicy {
            max_attempts: env_or("FANOUT_MAX_ATTEMPTS", defaults.retry.max_attempts),
            ..defaults.retry
        },
        max_failed_share: env_or("FANOUT_MAX_FAILED_SHARE", defaults.max_failed_share),
    }
}

/// The variable parsed as `T`; unset or unparsable (logged) gives `default`.
fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    let Ok(text) = std::env::var(name) else { return default };
    text.parse().unwrap_or_else(|_| {
        tracing::warn!(name, value = %text, "ignoring unparsable setting");
        default
    })
}

/// The authorizer's trust, from the environment; a misconfigured stack fails at
/// cold start rather than on every connection.
///
/// | variable | meaning |
/// |---|---|
/// | `OIDC_ISSUER` | issuer whose RS256/ES256 tokens are accepted (e.g. a Cognito user pool URL) |
/// | `OIDC_AUDIENCE` | comma-separated app client ids; required with `OIDC_ISSUER` |
/// | `JWKS_URL` | the issuer's JWKS, if not at `{OIDC_ISSUER}/.well-known/jwks.json` |
/// | `JWT_SECRET` | HS256 shared secret, at least 32 bytes; HS256 is refused without it |
/// | `JWT_ISSUER`, `JWT_AUDIENCE` | optional `iss` / audience required of HS256 tokens |
/// | `JWT_LEEWAY_SECONDS` | clock skew on `exp`/`nbf` (default 30) |
/// | `JWKS_REFETCH_SECONDS` | an unknown `kid` refetches at most this often (default 60) |
///
/// At least one of `OIDC_ISSUER` and `JWT_SECRET` must be set.
pub fn verifier_config_from_env() -> Result<VerifierConfig, Error> {
    verifier_config(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
}

fn verifier_config(var: impl Fn(&str) -> Option<String>) -> Result<VerifierConfig, Error> {
    let list = |name: &str| -> Vec<String> {
        var(name)
            .map(|v| v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(Into::into).collect())
            .unwrap_or_default()
    };
    let mut issuers = Vec::new();
    if let Some(issuer) = var("OIDC_ISSUER") {
        let audience = list("OIDC_AUDIENCE");
        if audience.is_empty() {
            return Err("OIDC_AUDIENCE must name the app client id(s) accepted from OIDC_ISSUER".into());
        }
        let mut trusted = TrustedIssuer::new(issuer.trim(), audience);
        if let Some(url) = var("JWKS_URL") {
            trusted = trusted.with_jwks_url(url.trim());
        }
        issuers.push(trusted);
    }
    let mut config = VerifierConfig::with_issuers(issuers);
    if let Some(secret) = var("JWT_SECRET") {
        if secret.len() < 32 {
            return Err("JWT_SECRET must be at least 32 bytes".into());
        }
        let mut shared = SharedSecret::new(secret.as_bytes());
        shared.issuer = var("JWT_ISSUER");
        shared.audience = list("JWT_AUDIENCE");
        config.shared_secret = Some(shared);
    }
    if config.issuers.is_empty() && config.shared_secret.is_none() {
        return Err("set OIDC_ISSUER (+ OIDC_AUDIENCE) and/or JWT_SECRET".into());
    }
    let seconds = |name: &str, default: i64| -> Result<i64, Error> {
        match var(name) {
            None => Ok(default),
            Some(v) => {
                v.trim().parse::<u32>().map(i64::from).map_err(|_| format!("{name} must be whole seconds").into())
            }
        }
    };
    config.leeway = seconds("JWT_LEEWAY_SECONDS", VerifierConfig::DEFAULT_LEEWAY)?;
    config.refetch_interval = seconds("JWKS_REFETCH_SECONDS", VerifierConfig::DEFAULT_REFETCH_INTERVAL)?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<VerifierConfig, Error> {
        verifier_config(|name| vars.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_string()))
    }

    #[test]
    fn the_existing_stack_passes_only_jwt_secret() {
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
    fn nothing_trusted_or_a_short_secret_refuses_to_start() {
        assert!(config(&[]).is_err());
        assert!(config(&[("JWT_SECRET", "short")]).is_err());
        assert!(config(&[("JWT_SECRET", "a-test-secret-that-is-32-bytes!!"), ("JWT_LEEWAY_SECONDS", "-1")]).is_err());
    }
}
