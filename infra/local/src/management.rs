//! The @connections management API, wire-compatible with API Gateway's so the
//! official SDKs work against it with an endpoint override, and signed like it:
//! every request must carry a SigV4 signature by the configured key.

use std::sync::Arc;
use std::time::SystemTime;

use axum::body::{Body, Bytes};
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chat_core::ports::PostError;
use chrono::{TimeZone, Utc};

use crate::AppState;
use crate::signature::{self, SignatureError};
use crate::sockets::ServerClose;

/// An error with the `x-amzn-ErrorType` header the SDKs classify by.
fn service_error(status: StatusCode, error_type: &str) -> Response {
    error_with_message(status, error_type, error_type)
}

/// Every error this API sends, the web framework's own included, has this shape:
/// a JSON `{"message": …}` and the `x-amzn-ErrorType` header.
fn error_with_message(status: StatusCode, error_type: &str, message: &str) -> Response {
    let body = serde_json::json!({ "message": message }).to_string();
    (status, [("x-amzn-ErrorType", error_type), ("content-type", "application/json")], body).into_response()
}

fn gone() -> Response {
    service_error(StatusCode::GONE, "GoneException")
}

fn too_large() -> Response {
    error_with_message(StatusCode::PAYLOAD_TOO_LARGE, "PayloadTooLargeException", "Request entity too large")
}

/// What API Gateway answers for a path or method it has no route for (it never says 404 or 405).
pub async fn no_route() -> Response {
    error_with_message(StatusCode::FORBIDDEN, "MissingAuthenticationTokenException", "Missing Authentication Token")
}

/// API Gateway's 403 for a request that is not signed by the configured key.
fn unauthorized(error: &SignatureError) -> Response {
    error_with_message(StatusCode::FORBIDDEN, error.error_type(), &error.to_string())
}

/// Middleware on the @connections routes: the SigV4 signature is checked before
/// any handler runs. Headers first (a missing or foreign signature is refused
/// without reading the body), then the signature over the body, which the
/// handler then gets as it was sent.
pub async fn require_signature(State(app): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let key = &app.config.access_key;
    let (parts, body) = request.into_parts();
    let body = {
        let signed = match signature::verify_headers(&parts.headers, key, &app.config.region, SystemTime::now()) {
            Ok(signed) => signed,
            Err(refusal) => return unauthorized(&refusal),
        };
        // The route's DefaultBodyLimit (in the request's extensions) still applies.
        let request = Request::from_parts(parts.clone(), body);
        let body = match read_body(Bytes::from_request(request, &()).await) {
            Ok(body) => body,
            Err(refused) => return *refused,
        };
        if let Err(refusal) = signed.verify_signature(&parts.method, &parts.uri, &body, key) {
            tracing::info!(error_type = refusal.error_type(), path = %parts.uri.path(), "@connections request refused");
            return unauthorized(&refusal);
        }
        body
    };
    next.run(Request::from_parts(parts, Body::from(body))).await
}

/// The body, or API Gateway's answer to an unreadable one (413 over 128 KiB).
fn read_body(body: Result<Bytes, BytesRejection>) -> Result<Bytes, Box<Response>> {
    body.map_err(|rejection| {
        Box::new(if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            too_large()
        } else {
            error_with_message(StatusCode::BAD_REQUEST, "BadRequestException", &rejection.body_text())
        })
    })
}

/// The connection id, or the error to answer with: 400 if the path does not
/// decode (e.g. `%FF`), 403 unless the segment is `@connections` (the path
/// extractor has already decoded `%40`).
fn connection_id(path: Result<Path<(String, String)>, PathRejection>) -> Result<String, Box<Response>> {
    let Path((segment, connection_id)) = path.map_err(|rejection| {
        Box::new(error_with_message(StatusCode::BAD_REQUEST, "BadRequestException", &rejection.body_text()))
    })?;
    if segment == "@connections" {
        Ok(connection_id)
    } else {
        Err(Box::new(service_error(StatusCode::FORBIDDEN, "ForbiddenException")))
    }
}

/// `POST /{stage}/@connections/{id}`: the body is sent to the socket as a text frame.
/// The body is limited to API Gateway's 128 KiB (`DefaultBodyLimit` on the route),
/// and the extractor's refusals are answered in AWS's shape, not the framework's.
pub async fn post(
    State(app): State<Arc<AppState>>,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let connection_id = match connection_id(path) {
        Ok(id) => id,
        Err(refused) => return *refused,
    };
    let body = match read_body(body) {
        Ok(body) => body,
        Err(refused) => return *refused,
    };
    let sent = app.sockets.send(&connection_id, &body);
    crate::metrics::record_post(&sent);
    match sent {
        Ok(()) => StatusCode::OK.into_response(),
        Err(PostError::Gone) => gone(),
        Err(PostError::PayloadTooLarge) => too_large(),
        Err(PostError::Throttled) => service_error(StatusCode::TOO_MANY_REQUESTS, "LimitExceededException"),
        Err(PostError::Other(_)) => service_error(StatusCode::BAD_REQUEST, "BadRequestException"),
    }
}

fn iso_millis(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// `GET /{stage}/@connections/{id}`: when it connected, when it was last active, who it is.
pub async fn get(State(app): State<Arc<AppState>>, path: Result<Path<(String, String)>, PathRejection>) -> Response {
    let connection_id = match connection_id(path) {
        Ok(id) => id,
        Err(refused) => return *refused,
    };
    let Some(info) = app.sockets.info(&connection_id) else { return gone() };
    let body = serde_json::json!({
        "connectedAt": iso_millis(info.connected_at_ms),
        "lastActiveAt": iso_millis(info.last_active_ms.load(std::sync::atomic::Ordering::Relaxed)),
        "identity": { "sourceIp": info.source_ip, "userAgent": info.user_agent },
    });
    (StatusCode::OK, [("content-type", "application/json")], body.to_string()).into_response()
}

/// `DELETE /{stage}/@connections/{id}`: closes the socket (status 1000 in its `$disconnect`).
pub async fn delete(State(app): State<Arc<AppState>>, path: Result<Path<(String, String)>, PathRejection>) -> Response {
    let connection_id = match connection_id(path) {
        Ok(id) => id,
        Err(refused) => return *refused,
    };
    if app.sockets.close(&connection_id, ServerClose::Deleted) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        gone()
    }
}
