//! Posting to sockets through the API Gateway Management (@connections) API.

use async_trait::async_trait;
use aws_sdk_apigatewaymanagement::Client;
use aws_sdk_apigatewaymanagement::error::DisplayErrorContext;
use aws_sdk_apigatewaymanagement::primitives::Blob;
use chat_core::ports::{Bytes, PostError, SocketPoster};

/// `https://{apiId}.execute-api.{region}.amazonaws.com/{stage}`, built from the
/// API id rather than the event's domainName, which is wrong behind a custom domain.
pub fn management_endpoint(api_id: &str, region: &str, stage: &str) -> String {
    format!("https://{api_id}.execute-api.{region}.amazonaws.com/{stage}")
}

/// A [`SocketPoster`] for one API stage.
#[derive(Clone, Debug)]
pub struct ApiGatewayPoster {
    client: Client,
}

impl ApiGatewayPoster {
    pub fn new(sdk: &aws_config::SdkConfig, endpoint: &str) -> Self {
        let config = aws_sdk_apigatewaymanagement::config::Builder::from(sdk).endpoint_url(endpoint).build();
        Self { client: Client::from_conf(config) }
    }
}

#[async_trait]
impl SocketPoster for ApiGatewayPoster {
    async fn post(&self, connection_id: &str, frame: &Bytes) -> Result<(), PostError> {
        let data = Blob::new(frame.to_vec());
        let result = self.client.post_to_connection().connection_id(connection_id).data(data).send().await;
        let Err(error) = result else { return Ok(()) };
        // Classified by the x-amzn-ErrorType the service sends, never by message text.
        Err(match error.as_service_error() {
            Some(e) if e.is_gone_exception() => PostError::Gone,
            Some(e) if e.is_limit_exceeded_exception() => PostError::Throttled,
            Some(e) if e.is_payload_too_large_exception() => PostError::PayloadTooLarge,
            _ => PostError::Other(DisplayErrorContext(error).to_string()),
        })
    }

    /// DeleteConnection: API Gateway closes the socket and invokes `$disconnect`.
    async fn close(&self, connection_id: &str) -> Result<(), PostError> {
        let result = self.client.delete_connection().connection_id(connection_id).send().await;
        let Err(error) = result else { return Ok(()) };
        Err(match error.as_service_error() {
            Some(e) if e.is_gone_exception() => PostError::Gone,
            Some(e) if e.is_limit_exceeded_exception() => PostError::Throttled,
            _ => PostError::Other(DisplayErrorContext(error).to_string()),
        })
    }
}
