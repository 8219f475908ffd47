//! The publish API's edge: an API Gateway HTTP API event (payload format 2.0)
//! of `POST /rooms/{room}/messages`, IAM-authorized, in; its response out. The
//! local stack builds the same event for its own route and calls this too.

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_lambda_events::encodings::Body;
use aws_lambda_events::http::{HeaderMap, HeaderValue, header};
use base64::Engine;
use chrono::{DateTime, Utc};

use crate::handlers::publish::{MAX_PUBLISH_BODY_BYTES, PublishRequest, PublishResponse, publish};
use crate::ports::MessageLog;
use crate::time::from_epoch_millis;

/// The header a caller may give a single line's idempotency key in.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

/// `POST /rooms/{room}/messages`: the room from the path parameter, the body
/// (base64-decoded when API Gateway encoded it), the `Idempotency-Key` header,
/// and the caller from `requestContext.authorizer.iam.userArn` (set by the
/// route's `AWS_IAM` authorization: a request without it never got here
/// deployed, and is refused 403 if one does). Never fails: a store failure is
/// API Gateway's own `500 {"message":"Internal Server Error"}`.
///
/// Cost per call: what [`publish`] costs (see [`crate::handlers::publish`]).
pub async fn on_publish(event: &ApiGatewayV2httpRequest, log: &dyn MessageLog) -> ApiGatewayV2httpResponse {
    let answer = match decoded_body(event) {
        Ok(body) => {
            let request = PublishRequest {
                room: event.path_parameters.get("room").map_or("", String::as_str),
                body: &body,
                idempotency_key: header_text(&event.headers, IDEMPOTENCY_KEY_HEADER),
                principal: principal(event).unwrap_or_default(),
                received_at: received_at(event),
            };
            match publish(&request, log).await {
                Ok(answer) => answer,
                Err(error) => {
                    tracing::error!(%error, "publish failed");
                    PublishResponse::internal_error()
                }
            }
        }
        Err(answer) => answer,
    };
    response(answer)
}

/// The caller's IAM ARN, as API Gateway's IAM authorization gives it.
pub fn principal(event: &ApiGatewayV2httpRequest) -> Option<String> {
    event.request_context.authorizer.as_ref()?.iam.as_ref()?.user_arn.clone()
}

/// The body as sent: decoded from base64 when flagged, checked for size first
/// (a base64 text is 4/3 of its bytes, so a huge one is refused undecoded).
fn decoded_body(event: &ApiGatewayV2httpRequest) -> Result<Vec<u8>, PublishResponse> {
    let text = event.body.as_deref().unwrap_or_default();
    if !event.is_base64_encoded {
        return Ok(text.as_bytes().to_vec());
    }
    if text.len() > MAX_PUBLISH_BODY_BYTES.div_ceil(3) * 4 {
        return Err(PublishResponse::error(413, "Request Entity Too Large"));
    }
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|_| PublishResponse::error(400, "Body is flagged base64 but does not decode."))
}

fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).and_then(|value| value.to_str().ok()).map(str::to_owned)
}

/// When API Gateway received the request; now if the event does not say.
fn received_at(event: &ApiGatewayV2httpRequest) -> DateTime<Utc> {
    Some(event.request_context.time_epoch).filter(|ms| *ms > 0).and_then(from_epoch_millis).unwrap_or_else(Utc::now)
}

/// The proxy response: the status and the JSON body, typed as JSON.
pub fn response(answer: PublishResponse) -> ApiGatewayV2httpResponse {
    let mut response = ApiGatewayV2httpResponse::default();
    response.status_code = answer.status.into();
    response.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response.body = Some(Body::Text(answer.body));
    response
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::memory::MemoryLog;

    /// An event as API Gateway delivers it (payload 2.0, IAM authorization).
    fn event(body: &str, base64: bool, key: Option<&str>) -> ApiGatewayV2httpRequest {
        let mut headers = json!({"content-type": "application/json"});
        if let Some(key) = key {
            headers["idempotency-key"] = json!(key);
        }
        serde_json::from_value(json!({
            "version": "2.0",
            "routeKey": "POST /rooms/{room}/messages",
            "rawPath": "/rooms/ops/messages",
            "rawQueryString": "",
            "headers": headers,
            "pathParameters": {"room": "ops"},
            "requestContext": {
                "accountId": "123456789012", "apiId": "abc123", "stage": "$default",
                "requestId": "r1", "routeKey": "POST /rooms/{room}/messages",
                "time": "24/Nov/2026:10:15:32 +0000", "timeEpoch": 1795515332000_i64,
                "domainName": "abc123.execute-api.us-east-1.amazonaws.com", "domainPrefix": "abc123",
                "http": {"method": "POST", "path": "/rooms/ops/messages", "protocol": "HTTP/1.1",
                         "sourceIp": "203.0.113.7", "userAgent": "curl/8"},
                "authorizer": {"iam": {"accessKey": "AKIAEXAMPLE", "accountId": "123456789012",
                    "callerId": "AIDAEXAMPLE", "principalOrgId": null,
                    "userArn": "arn:aws:iam::123456789012:user/ci-bot", "userId": "AIDAEXAMPLE"}}
            },
            "body": body,
            "isBase64Encoded": base64
        }))
        .expect("the shape AWS documents")
    }

    fn json_of(response: &ApiGatewayV2httpResponse) -> serde_json::Value {
        match &response.body {
            Some(Body::Text(text)) => serde_json::from_str(text).unwrap(),
            other => panic!("a text body, not {other:?}"),
        }
    }

    #[tokio::test]
    async fn an_iam_signed_event_publishes_as_its_principal() {
        let log = MemoryLog::default();
        let response = on_publish(&event(r#"{"message":"hi"}"#, false, None), &log).await;
        assert_eq!(response.status_code, 201);
        assert_eq!(response.headers["content-type"], "application/json");
        let line = &log.events()[0];
        assert_eq!(json_of(&response)["id"], line.message_id.as_str());
        assert_eq!(line.principal.as_deref(), Some("arn:aws:iam::123456789012:user/ci-bot"));
        assert_eq!(line.timestamp, from_epoch_millis(1_795_515_332_000).unwrap(), "API Gateway's time");
    }

    #[tokio::test]
    async fn a_base64_body_and_the_idempotency_key_header_are_read() {
        let log = MemoryLog::default();
        let body = base64::engine::general_purpose::STANDARD.encode(r#"{"message":"once"}"#);
        let first = on_publish(&event(&body, true, Some("job-9")), &log).await;
        let again = on_publish(&event(&body, true, Some("job-9")), &log).await;
        assert_eq!((first.status_code, again.status_code), (201, 200));
        assert_eq!(json_of(&first), json_of(&again));
        assert_eq!(log.events().len(), 1);
        assert_eq!(on_publish(&event("%%%", true, None), &log).await.status_code, 400);
    }

    #[tokio::test]
    async fn no_principal_is_403_and_an_outage_is_500() {
        let log = MemoryLog::default();
        let mut unsigned = event(r#"{"message":"hi"}"#, false, None);
        unsigned.request_context.authorizer = None;
        assert_eq!(on_publish(&unsigned, &log).await.status_code, 403);
        log.outage.set(true);
        let failed = on_publish(&event(r#"{"message":"hi"}"#, false, None), &log).await;
        assert_eq!((failed.status_code, json_of(&failed)), (500, json!({"message": "Internal Server Error"})));
    }
}
