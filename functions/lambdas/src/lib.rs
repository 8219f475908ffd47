//! Wiring shared by the Lambda binaries: each binary builds its adapters once per
//! cold start with [`init`], then hands every event to a `chat_core` entrypoint.

use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use chat_aws::{
    ApiGatewayPoster, DynamoBans, DynamoConnections, DynamoCursors, DynamoLog, DynamoSessions, EventBridgeSink,
    S3Archive, SqsFanoutQueue, TableNames,
};
use chat_core::auth::VerifierConfig;
use chat_core::broadcaster::{FanoutConfig, RetryPolicy};
use chat_core::occupancy::{PresenceConfig, parse_presence_limit};
use chat_core::split::{DEFAULT_CHUNK, DEFAULT_SPLIT_ABOVE, Split};

pub mod emf;
pub mod logs;

use std::sync::Arc;
use std::time::Instant;

use aws_lambda_events::dynamodb::Event;
use aws_lambda_events::streams::DynamoDbEventResponse;
use chat_core::broadcaster::Broadcaster;
pub use chat_core::entrypoints::{events, expiry, fanout, stream, websocket};
pub use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use tracing::Instrument;

/// A WebSocket route invocation.
pub type WebsocketEvent = LambdaEvent<ApiGatewayWebsocketProxyRequest>;

/// The AWS configuration and DynamoDB client a function shares across invocations.
pub struct Aws {
    pub sdk: aws_config::SdkConfig,
    pub tables: TableNames,
    dynamodb: aws_sdk_dynamodb::Client,
}

/// Every function's logging: Lambda JSON lines on stdout (see [`logs`]), at
/// the level the function's logging config (or `RUST_LOG`) asks for.
pub fn init_logging() {
    let subscriber = logs::subscriber(std::io::stdout, logs::level_from_env());
    if tracing::subscriber::set_global_default(subscriber).is_err() {
        tracing::warn!("logging was already set up");
    }
}

/// Starts logging and loads the SDK config.
pub async fn init() -> Aws {
    init_logging();
    let sdk = chat_aws::load_sdk_config().await;
    Aws { dynamodb: aws_sdk_dynamodb::Client::new(&sdk), tables: TableNames::from_env(), sdk }
}

impl Aws {
    /// ActiveConnections and Memberships.
    pub fn connections(&self) -> DynamoConnections {
        DynamoConnections::new(self.dynamodb.clone(), &self.tables.connections, &self.tables.memberships)
    }

    pub fn cursors(&self) -> DynamoCursors {
        DynamoCursors::new(self.dynamodb.clone(), &self.tables.cursors)
    }

    pub fn sessions(&self) -> DynamoSessions {
        DynamoSessions::new(self.dynamodb.clone(), &self.tables.sessions)
    }

    pub fn bans(&self) -> DynamoBans {
        DynamoBans::new(self.dynamodb.clone(), &self.tables.bans)
    }

    pub fn log(&self) -> DynamoLog {
        DynamoLog::new(self.dynamodb.clone(), &self.tables.messages)
    }

    pub fn poster(&self, endpoint: &str) -> ApiGatewayPoster {
        ApiGatewayPoster::new(&self.sdk, endpoint)
    }

    /// The EventBridge bus the events out go to, when `EVENT_BUS_NAME` names one.
    pub fn event_bus(&self) -> Option<EventBridgeSink> {
        std::env::var("EVENT_BUS_NAME").ok().filter(|b| !b.is_empty()).map(|bus| EventBridgeSink::new(&self.sdk, bus))
    }

    /// The S3 archive, when `ARCHIVE_BUCKET` names one.
    pub fn archive(&self) -> Option<S3Archive> {
        std::env::var("ARCHIVE_BUCKET").ok().filter(|b| !b.is_empty()).map(|bucket| S3Archive::new(&self.sdk, bucket))
    }

    /// The fan-out queue of large rooms, when `FANOUT_QUEUE_URL` names one.
    pub fn fanout_queue(&self) -> Option<SqsFanoutQueue> {
        std::env::var("FANOUT_QUEUE_URL").ok().filter(|u| !u.is_empty()).map(|url| SqsFanoutQueue::new(&self.sdk, url))
    }
}

/// The span every log line of a WebSocket invocation is written in: its
/// connection id and route (the runtime's own span adds the request id).
pub fn websocket_span(event: &ApiGatewayWebsocketProxyRequest) -> tracing::Span {
    let context = &event.request_context;
    tracing::info_span!(
        "websocket",
        connectionId = context.connection_id.as_deref().unwrap_or_default(),
        routeKey = context.route_key.as_deref().unwrap_or_default(),
    )
}

/// Runs a WebSocket route's handler for every invocation, inside [`websocket_span`].
pub async fn run_websocket<H, F, R>(handler: H) -> Result<(), Error>
where
    H: Fn(WebsocketEvent) -> F,
    F: Future<Output = Result<R, Error>>,
    R: serde::Serialize,
{
    let handler = &handler;
    run(service_fn(move |event: WebsocketEvent| {
        let span = websocket_span(&event.payload);
        handler(event).instrument(span)
    }))
    .await
}

/// Broadcasts a stream batch and prints the invocation's EMF line (see [`emf`]):
/// `counts` is the tally of the broadcaster's [`emf::CountingPoster`].
pub async fn broadcast_with_metrics(
    event: &Event,
    broadcaster: &Broadcaster,
    counts: &emf::PostCounts,
) -> DynamoDbEventResponse {
    let (response, metrics) = measured_broadcast(event, broadcaster, counts).await;
    let function = std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|_| "broadcaster".into());
    // Straight to stdout, not through the log formatter: CloudWatch reads a line
    // as EMF only if the line is the document itself.
    println!("{}", emf::document(&function, &metrics, chrono::Utc::now().timestamp_millis()));
    response
}

/// [`broadcast_with_metrics`] without the printing: the response and what the invocation did.
pub async fn measured_broadcast(
    event: &Event,
    broadcaster: &Broadcaster,
    counts: &emf::PostCounts,
) -> (DynamoDbEventResponse, emf::BroadcastMetrics) {
    let started = Instant::now();
    let report = stream::broadcast_records(event, broadcaster).await;
    let fanout = started.elapsed();
    let now = chrono::Utc::now();
    let newest = event.records.iter().map(|r| r.change.approximate_creation_date_time).max();
    let metrics = emf::BroadcastMetrics {
        records: event.records.len(),
        posts: counts.take(),
        fanout,
        // A record stamped ahead of this clock is no lag at all.
        lag: newest.map(|newest| (now - newest).to_std().unwrap_or_default()),
        report: report.clone(),
    };
    (stream::batch_response(report), metrics)
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
/// `FANOUT_MAX_FAILED_SHARE`, each defaulting to [`FanoutConfig::default`], and
/// its presence policy ([`presence_config_from`]), which must be valid: a stack
/// with a mistyped `PresenceLimit` fails at cold start, not silently.
pub fn fanout_config_from_env() -> Result<FanoutConfig, Error> {
    let defaults = FanoutConfig::default();
    Ok(FanoutConfig {
        max_in_flight: env_or("FANOUT_CONCURRENCY", defaults.max_in_flight),
        retry: RetryPolicy {
            max_attempts: env_or("FANOUT_MAX_ATTEMPTS", defaults.retry.max_attempts),
            ..defaults.retry
        },
        max_failed_share: env_or("FANOUT_MAX_FAILED_SHARE", defaults.max_failed_share),
        presence: presence_config_from(|name| std::env::var(name).ok())?,
        split: None,
    })
}

/// When joins and leaves give way to occupancy frames: `PRESENCE_LIMIT` (members
/// ≥ 1, or `off`; default [`chat_core::occupancy::DEFAULT_PRESENCE_LIMIT`]) and
/// `STREAM_BATCH_SIZE` (the event source mapping's `BatchSize`: a batch that
/// full is followed at once, so it does not wait to announce what it held back).
pub fn presence_config_from(get: impl Fn(&str) -> Option<String>) -> Result<PresenceConfig, Error> {
    let mut config = PresenceConfig::default();
    if let Some(limit) = get("PRESENCE_LIMIT") {
        config.limit = parse_presence_limit(&limit).map_err(|error| format!("PRESENCE_LIMIT: {error}"))?;
    }
    if let Some(size) = get("STREAM_BATCH_SIZE") {
        let size = size.trim().parse::<usize>().ok().filter(|&size| size >= 1);
        config.full_batch = Some(size.ok_or("STREAM_BATCH_SIZE must be a number of records from 1 up")?);
    }
    Ok(config)
}

/// How large rooms are split ([`chat_core::split`]): onto `queue` above
/// `FANOUT_SPLIT_ABOVE` recipients (default [`DEFAULT_SPLIT_ABOVE`]; 0 never
/// splits), in jobs of at most `FANOUT_CHUNK` members (default [`DEFAULT_CHUNK`]).
pub fn split_from_env(queue: SqsFanoutQueue) -> Option<Split> {
    let above = env_or("FANOUT_SPLIT_ABOVE", DEFAULT_SPLIT_ABOVE);
    let chunk = env_or("FANOUT_CHUNK", DEFAULT_CHUNK).max(1);
    (above > 0).then(|| Split { queue: Arc::new(queue), above, chunk })
}

/// The variable parsed as `T`; unset or unparsable (logged) gives `default`.
fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    let Ok(text) = std::env::var(name) else { return default };
    text.parse().unwrap_or_else(|_| {
        tracing::warn!(name, value = %text, "ignoring unparsable setting");
        default
    })
}

/// The authorizer's trust, from the environment (see [`VerifierConfig::from_settings`]
/// for the variables); a misconfigured stack fails at cold start rather than on every
/// connection. `JWT_SECRET_ARN` names a Secrets Manager secret to read `JWT_SECRET` from.
pub async fn verifier_config_from_env() -> Result<VerifierConfig, Error> {
    let secret = match std::env::var("JWT_SECRET_ARN").ok().filter(|arn| !arn.is_empty()) {
        Some(arn) => Some(chat_aws::secret_string(&chat_aws::load_sdk_config().await, &arn).await?),
        None => None,
    };
    let config = VerifierConfig::from_settings(|name| match name {
        "JWT_SECRET" if secret.is_some() => secret.clone(),
        _ => std::env::var(name).ok(),
    })?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_presence_limit_comes_from_the_environment_and_a_bad_one_is_refused() {
        let settings = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| pairs.iter().find(|(n, _)| *n == name).map(|(_, v)| (*v).to_owned())
        };
        assert_eq!(presence_config_from(settings(&[])).unwrap(), PresenceConfig::default());
        let config =
            presence_config_from(settings(&[("PRESENCE_LIMIT", "250"), ("STREAM_BATCH_SIZE", "100")])).unwrap();
        assert_eq!((config.limit, config.full_batch), (Some(250), Some(100)));
        assert_eq!(presence_config_from(settings(&[("PRESENCE_LIMIT", "off")])).unwrap().limit, None);
        let error = presence_config_from(settings(&[("PRESENCE_LIMIT", "0")])).unwrap_err().to_string();
        assert!(error.starts_with("PRESENCE_LIMIT: presence limit \"0\" is not a number"), "{error}");
        assert!(presence_config_from(settings(&[("STREAM_BATCH_SIZE", "lots")])).is_err());
    }
}
