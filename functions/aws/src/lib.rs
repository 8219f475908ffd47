//! AWS implementations of the chat ports: DynamoDB tables through serde_dynamo,
//! socket posts through the API Gateway Management API, the archive on S3, the
//! events out on EventBridge, the fan-out queue of large rooms on SQS; and
//! the authorizer's JWK Sets over HTTPS and its shared secret from Secrets Manager.
//!
//! Every client honours the SDK's standard endpoint overrides (`AWS_ENDPOINT_URL`,
//! `AWS_ENDPOINT_URL_DYNAMODB`, ...), which is how tests point them at moto or
//! the local stack.

pub mod connections_api;
pub mod dynamodb;
pub mod eventbridge;
pub mod http_client;
pub mod jwks;
pub mod provision;
pub mod s3;
pub mod secrets;
pub mod sqs;
pub mod streams;

pub use connections_api::{ApiGatewayPoster, management_endpoint};
pub use dynamodb::{DynamoBans, DynamoConnections, DynamoCursors, DynamoLog, DynamoSessions, TableNames};
pub use eventbridge::EventBridgeSink;
pub use jwks::HttpJwks;
pub use s3::S3Archive;
pub use secrets::secret_string;
pub use sqs::SqsFanoutQueue;
pub use streams::{StartingPosition, StreamBatch, StreamReader};

use std::time::Duration;

use aws_sdk_dynamodb::error::DisplayErrorContext;
use chat_core::StoreError;

/// How long an SDK call may take, all retries included: well inside the
/// functions' 10 s Lambda timeout, so a stalled DynamoDB or @connections endpoint
/// makes a handler fail (API Gateway's `Internal server error`, a retried stream
/// batch) instead of hanging until Lambda kills it.
pub const SDK_OPERATION_TIMEOUT: Duration = Duration::from_secs(5);

/// Connect 1 s, one attempt 3 s (a loaded moto can be slow), the whole call [`SDK_OPERATION_TIMEOUT`].
pub fn sdk_timeouts() -> aws_config::timeout::TimeoutConfig {
    aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(1))
        .operation_attempt_timeout(Duration::from_secs(3))
        .operation_timeout(SDK_OPERATION_TIMEOUT)
        .build()
}

/// Loads region and credentials the standard way (env, profile, Lambda role),
/// with [`sdk_timeouts`].
pub async fn load_sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest()).timeout_config(sdk_timeouts()).load().await
}

/// The standard config with every service pointed at `endpoint` (moto, DynamoDB
/// Local, MinIO) when one is given.
pub async fn sdk_config_for(endpoint: Option<&str>) -> aws_config::SdkConfig {
    let sdk = load_sdk_config().await;
    match endpoint {
        Some(url) => sdk.to_builder().endpoint_url(url).build(),
        None => sdk,
    }
}

/// An SDK failure as the ports report it, with the full error chain in the text.
pub(crate) fn unavailable(error: impl std::error::Error) -> StoreError {
    StoreError::Unavailable(DisplayErrorContext(error).to_string())
}
