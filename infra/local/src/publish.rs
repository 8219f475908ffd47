//! The publish API's route on the local stack, `POST /rooms/{room}/messages`,
//! as the template's IAM-authorized HTTP API serves it: signed with SigV4 by
//! the stack's key (the @connections middleware, [`management::require_signature`],
//! runs first), throttled by a token bucket as the stage's `PublishThrottling*`
//! parameters, then turned into the HTTP API's payload-2.0 event and handed to
//! [`chat_core::entrypoints::publish::on_publish`], the Lambda's own entrypoint.
//!
//! [`management::require_signature`]: crate::management::require_signature

use std::sync::Arc;

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_lambda_events::encodings::Body as EventBody;
use axum::body::{Body, Bytes};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chat_core::entrypoints::publish::{IDEMPOTENCY_KEY_HEADER, on_publish};
use chat_core::handlers::publish::PublishResponse;

use crate::AppState;

/// The route, as the template's `RouteKey` names it (after `POST `).
pub const ROUTE_PATH: &str = "/rooms/{room}/messages";

/// The account of the principal every local caller is (the one key it signs with).
pub const LOCAL_ACCOUNT: &str = "000000000000";

/// The IAM principal a request signed with access key `key_id` stands for:
/// `arn:aws:iam::000000000000:user/<key id>`, as a deployment's `userArn` is
/// the signing user's.
pub fn principal(key_id: &str) -> String {
    format!("arn:aws:iam::{LOCAL_ACCOUNT}:user/{key_id}")
}

/// `POST /rooms/{room}/messages`, signature already checked.
pub async fn post(
    State(app): State<Arc<AppState>>,
    room: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !app.throttles.publish() {
        return http_response(PublishResponse::too_many_requests());
    }
    let Ok(Path(room)) = room else {
        return http_response(PublishResponse::error(400, "The room in the path does not decode."));
    };
    let event = event(&room, &headers, &body, &principal(&app.config.access_key.id));
    let response = on_publish(&event, &*app.functions.tables.log).await;
    proxy_response(response)
}

/// What API Gateway HTTP APIs answer a method or path they have no route for.
pub async fn no_route() -> Response {
    http_response(PublishResponse::error(404, "Not Found"))
}

/// The payload-2.0 event API Gateway sends for this route, built as its JSON so
/// that what the Lambda parses is what the local stack gives it.
fn event(room: &str, headers: &HeaderMap, body: &[u8], principal: &str) -> ApiGatewayV2httpRequest {
    let mut event_headers = serde_json::Map::new();
    for name in ["content-type", IDEMPOTENCY_KEY_HEADER, "user-agent"] {
        if let Some(value) = headers.get(name).and_then(|v| v.to_str().ok()) {
            event_headers.insert(name.to_owned(), value.into());
        }
    }
    // Text bodies travel as text, anything else base64-encoded, as API Gateway does.
    let (body, base64) = match std::str::from_utf8(body) {
        Ok(text) => (text.to_owned(), false),
        Err(_) => (base64::Engine::encode(&base64::engine::general_purpose::STANDARD, body), true),
    };
    let now = chrono::Utc::now();
    let path = format!("/rooms/{room}/messages");
    let json = serde_json::json!({
        "version": "2.0",
        "routeKey": format!("POST {ROUTE_PATH}"),
        "rawPath": path,
        "rawQueryString": "",
        "headers": event_headers,
        "pathParameters": {"room": room},
        "requestContext": {
            "accountId": LOCAL_ACCOUNT, "apiId": "local", "stage": "$default",
            "requestId": uuid_like(), "routeKey": format!("POST {ROUTE_PATH}"),
            "time": now.format("%d/%b/%Y:%H:%M:%S +0000").to_string(), "timeEpoch": now.timestamp_millis(),
            "http": {"method": "POST", "path": path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1",
                     "userAgent": headers.get("user-agent").and_then(|v| v.to_str().ok()).unwrap_or_default()},
            "authorizer": {"iam": {"accountId": LOCAL_ACCOUNT, "userArn": principal}}
        },
        "body": body,
        "isBase64Encoded": base64
    });
    serde_json::from_value(json).unwrap_or_default()
}

fn uuid_like() -> String {
    format!("{:032x}", fastrand::u128(..))
}

/// The Lambda's proxy response as the HTTP API returns it.
fn proxy_response(response: ApiGatewayV2httpResponse) -> Response {
    let status = u16::try_from(response.status_code).ok().and_then(|s| StatusCode::from_u16(s).ok());
    let body = match response.body {
        Some(EventBody::Text(text)) => text.into_bytes(),
        Some(EventBody::Binary(bytes)) => bytes,
        _ => Vec::new(),
    };
    let mut answer = (status.unwrap_or(StatusCode::BAD_GATEWAY), Body::from(body)).into_response();
    for (name, value) in &response.headers {
        answer.headers_mut().insert(name, value.clone());
    }
    answer
}

fn http_response(answer: PublishResponse) -> Response {
    proxy_response(chat_core::entrypoints::publish::response(answer))
}
