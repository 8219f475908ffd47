//! The @connections management API, wire-compatible with API Gateway's so the
//! official SDKs work against it with an endpoint override.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chat_core::ports::PostError;
use chrono::{TimeZone, Utc};

use crate::AppState;
use crate::sockets::ServerClose;

/// An error with the `x-amzn-ErrorType` header the SDKs classify by.
fn service_error(status: StatusCode, error_type: &str) -> Response {
    let body = serde_json::json!({ "message": error_type }).to_string();
    (status, [("x-amzn-ErrorType", error_type), ("content-type", "application/json")], body).into_response()
}

fn gone() -> Response {
    service_error(StatusCode::GONE, "GoneException")
}

/// A 403 unless the segment is `@connections` (the path extractor has already decoded `%40`).
fn connections_path(segment: &str) -> Result<(), Box<Response>> {
    if segment == "@connections" {
        Ok(())
    } else {
        Err(Box::new(service_error(StatusCode::FORBIDDEN, "ForbiddenException")))
    }
}

/// `POST /{stage}/@connections/{id}`: the body is sent to the socket as a text frame.
pub async fn post(
    State(app): State<Arc<AppState>>,
    Path((segment, connection_id)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    if let Err(refused) = connections_path(&segment) {
        return *refused;
    }
    match app.sockets.send(&connection_id, &body) {
        Ok(()) => StatusCode::OK.into_response(),
        Err(PostError::Gone) => gone(),
        Err(PostError::PayloadTooLarge) => service_error(StatusCode::PAYLOAD_TOO_LARGE, "PayloadTooLargeException"),
        Err(PostError::Throttled) => service_error(StatusCode::TOO_MANY_REQUESTS, "LimitExceededException"),
        Err(PostError::Other(_)) => service_error(StatusCode::BAD_REQUEST, "BadRequestException"),
    }
}

fn iso_millis(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// `GET /{stage}/@connections/{id}`: when it connected, when it was last active, who it is.
pub async fn get(State(app): State<Arc<AppState>>, Path((segment, connection_id)): Path<(String, String)>) -> Response {
    if let Err(refused) = connections_path(&segment) {
        return *refused;
    }
    let Some(info) = app.sockets.info(&connection_id) else { return gone() };
    let body = serde_json::json!({
        "connectedAt": iso_millis(info.connected_at_ms),
        "lastActiveAt": iso_millis(info.last_active_ms.load(std::sync::atomic::Ordering::Relaxed)),
        "identity": { "sourceIp": info.source_ip, "userAgent": info.user_agent },
    });
    (StatusCode::OK, [("content-type", "application/json")], body.to_string()).into_response()
}

/// `DELETE /{stage}/@connections/{id}`: closes the socket (status 1000 in its `$disconnect`).
pub async fn delete(
    State(app): State<Arc<AppState>>,
    Path((segment, connection_id)): Path<(String, String)>,
) -> Response {
    if let Err(refused) = connections_path(&segment) {
        return *refused;
    }
    if app.sockets.close(&connection_id, ServerClose::Deleted) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        gone()
    }
}
