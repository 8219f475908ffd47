//! The publish API, `POST /rooms/{room}/messages`: a backend (a bot, a CI
//! notifier, a moderation service) says a line into a room. Like
//! [`send_message`](super::send_message) it only appends to MessageHistory;
//! the broadcaster delivers it. The caller is the IAM principal that signed the
//! request (SigV4, verified by API Gateway or the local stack before this runs):
//! its ARN is kept on the event ([`LogEvent::principal`]), which marks the line
//! as a server sender's (`"server":true` in client frames; the ARN itself never
//! reaches a client).
//!
//! HTTP-shaped and pure: bytes and a principal in, a status and a JSON body out,
//! the same for the Lambda ([`crate::entrypoints::publish`]) and the local stack.
//! Errors are `{"message":"…"}`, the shape API Gateway HTTP APIs answer with.
//!
//! | request | answer |
//! |---|---|
//! | `{"message","user"?,"clientMessageId"?}` | `201 {"id"}`; a retry with the same key: `200 {"id"}` (the first id) |
//! | `{"messages":[… up to 25]}` | `200 {"results":[{"status":201,"id"} \| {"status":200,"id"} \| {"status":400,"error"}]}` |
//! | bad room, body not a JSON object, missing or empty message, more than 25 | `400 {"message": reason}` |
//! | body over 128 KiB | `413` |
//!
//! Cost per call (DynamoDB on demand, items under 1 KB): a line without a key
//! is one conditional PutItem, 1 write unit, plus 1 for the room index: 2 write
//! units. With a key (`clientMessageId` or `Idempotency-Key`): one consistent
//! GetItem of the receipt (1 read unit) and one TransactWriteItems of the line
//! and its receipt (4 write units) plus the room index (1): 5 write units and 1
//! read unit; a retry answered from the receipt costs the read unit alone. A
//! batch costs the sum of its accepted lines; refused items cost nothing. Then
//! the broadcaster's fan-out of each new line, as for any line.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use super::HandlerError;
use crate::identity::{MAX_NAME_CHARS, chosen_identity, cleaned_name};
use crate::model::LogEvent;
use crate::ports::MessageLog;
use crate::protocol::{ProtocolError, validate_text};
use crate::room::valid_room;

/// The largest body accepted, as API Gateway's payload limit for this API: 128 KiB.
pub const MAX_PUBLISH_BODY_BYTES: usize = 128 * 1024;
/// Lines one batch may hold (as SQS's and EventBridge's batch APIs cap theirs).
pub const MAX_BATCH: usize = 25;
/// Longest idempotency key (`clientMessageId` or `Idempotency-Key`), in bytes.
pub const MAX_KEY_LEN: usize = 128;
/// The `connection_id` of every published line: it came on no connection.
pub const API_CONNECTION_ID: &str = "api";
/// The label of a line whose principal's ARN gives none (nothing printable after its last `/`).
pub const DEFAULT_LABEL: &str = "server";

/// One call of the publish API, as the edge received it.
#[derive(Clone, Debug)]
pub struct PublishRequest<'a> {
    /// The `{room}` path parameter, as decoded by the gateway; checked here.
    pub room: &'a str,
    /// The body as sent (the edge decodes base64).
    pub body: &'a [u8],
    /// The `Idempotency-Key` header, if any: a single line's `clientMessageId`.
    pub idempotency_key: Option<String>,
    /// The ARN of the IAM principal that signed the request.
    pub principal: String,
    pub received_at: DateTime<Utc>,
}

/// The answer: an HTTP status and its JSON body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishResponse {
    pub status: u16,
    pub body: String,
}

impl PublishResponse {
    fn json(status: u16, body: &Value) -> Self {
        Self { status, body: body.to_string() }
    }

    /// An error as API Gateway HTTP APIs shape theirs: `{"message": …}`.
    pub fn error(status: u16, message: &str) -> Self {
        Self::json(status, &json!({ "message": message }))
    }

    /// API Gateway's answer to a call past the stage's throttling.
    pub fn too_many_requests() -> Self {
        Self::error(429, "Too Many Requests")
    }

    /// API Gateway's answer when the integration failed.
    pub fn internal_error() -> Self {
        Self::error(500, "Internal Server Error")
    }
}

/// Why one line was refused: its `400` reason.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
enum Refusal {
    #[error("{0}")]
    Text(#[from] ProtocolError),
    #[error("Field \"user\" must be 1-{MAX_NAME_CHARS} printable characters.")]
    BadUser,
    #[error("Field \"clientMessageId\" must be 1-{MAX_KEY_LEN} printable ASCII characters without '#'.")]
    BadClientMessageId,
    #[error("A message must be a JSON object with a \"message\" field.")]
    NotAnObject,
    #[error("Header Idempotency-Key and field \"clientMessageId\" differ; send one, or the same in both.")]
    KeysDiffer,
}

/// One line, parsed: what to append and under which key.
struct Line {
    text: String,
    label: String,
    key: Option<String>,
}

/// Handles one call; see the module doc for the answers. A store failure is an
/// `Err` (the edge answers 500, as API Gateway does when its integration
/// fails); in a batch, it is that item's `{"status":500}` and the others go on.
pub async fn publish(request: &PublishRequest<'_>, log: &dyn MessageLog) -> Result<PublishResponse, HandlerError> {
    if request.body.len() > MAX_PUBLISH_BODY_BYTES {
        return Ok(PublishResponse::error(413, "Request Entity Too Large"));
    }
    if request.principal.trim().is_empty() {
        // The route is IAM-authorized: no principal means no signature was checked.
        return Ok(PublishResponse::error(403, "Forbidden"));
    }
    let room = match valid_room(request.room) {
        Ok(room) => room,
        Err(bad) => return Ok(PublishResponse::error(400, &bad.to_string())),
    };
    let header_key = match request.idempotency_key.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(key) if valid_key(key) => Some(key),
        Some(_) => {
            let reason =
                format!("Header Idempotency-Key must be 1-{MAX_KEY_LEN} printable ASCII characters without '#'.");
            return Ok(PublishResponse::error(400, &reason));
        }
    };
    let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(request.body) else {
        return Ok(PublishResponse::error(
            400,
            r#"Body must be a JSON object: {"message":"…"} or {"messages":[{"message":"…"},…]}."#,
        ));
    };
    let Some(batch) = fields.get("messages") else {
        return match parse_line(&fields, header_key, &request.principal) {
            Ok(line) => {
                let (status, id) = append(request, room, &line, log).await?;
                Ok(PublishResponse::json(status, &json!({ "id": id })))
            }
            Err(refusal) => Ok(PublishResponse::error(400, &refusal.to_string())),
        };
    };
    let items = match batch {
        Value::Array(items) if (1..=MAX_BATCH).contains(&items.len()) => items,
        Value::Array(items) => {
            let reason = format!("Field \"messages\" must hold 1 to {MAX_BATCH} messages; it holds {}.", items.len());
            return Ok(PublishResponse::error(400, &reason));
        }
        _ => return Ok(PublishResponse::error(400, "Field \"messages\" must be an array of messages.")),
    };
    if header_key.is_some() {
        let reason = "Header Idempotency-Key applies to a single message; give each message of a batch its own \"clientMessageId\".";
        return Ok(PublishResponse::error(400, reason));
    }
    let mut results = Vec::with_capacity(items.len());
    for item in items {
        let parsed = match item {
            Value::Object(fields) => parse_line(fields, None, &request.principal),
            _ => Err(Refusal::NotAnObject),
        };
        results.push(match parsed {
            Ok(line) => match append(request, room, &line, log).await {
                Ok((status, id)) => json!({ "status": status, "id": id }),
                Err(error) => {
                    tracing::error!(%error, room, "published line not stored");
                    json!({ "status": 500, "error": "Internal Server Error" })
                }
            },
            Err(refusal) => json!({ "status": 400, "error": refusal.to_string() }),
        });
    }
    Ok(PublishResponse::json(200, &json!({ "results": results })))
}

/// Appends one line: `(201, its id)`, or for a retry of a key `(200, the first line's id)`.
async fn append(
    request: &PublishRequest<'_>,
    room: &str,
    line: &Line,
    log: &dyn MessageLog,
) -> Result<(u16, String), HandlerError> {
    let mut event = LogEvent::chat(API_CONNECTION_ID, &line.text, request.received_at)
        .in_room(room)
        .published_by(&request.principal);
    // Only a label: no `verified` (a person's mark) and no account; the
    // principal says who it is.
    event.user = Some(line.label.clone());
    let Some(key) = &line.key else {
        log.append(&event).await?;
        tracing::info!(message_id = %event.message_id, room, principal = %request.principal, "line published");
        return Ok((201, event.message_id));
    };
    let stored = log.append_once(&event, key).await?;
    let first = stored == event.message_id;
    tracing::info!(message_id = %stored, room, principal = %request.principal, client_message_id = %key, retry = !first, "line published");
    Ok((if first { 201 } else { 200 }, stored))
}

/// One line's fields: `message` (text as `sendmessage`'s), `user` (a label
/// as a chosen name; default: the principal's last ARN segment),
/// `clientMessageId` (or the `Idempotency-Key` header; the same if both).
fn parse_line(fields: &Map<String, Value>, header_key: Option<&str>, principal: &str) -> Result<Line, Refusal> {
    let text = match fields.get("message") {
        None | Some(Value::Null) => return Err(ProtocolError::MissingText.into()),
        Some(Value::String(text)) => text,
        Some(_) => return Err(ProtocolError::WrongType("message").into()),
    };
    validate_text(text)?;
    let label = match fields.get("user") {
        None | Some(Value::Null) => default_label(principal),
        Some(Value::String(user)) => chosen_identity(Some(user)).ok().flatten().ok_or(Refusal::BadUser)?.user,
        Some(_) => return Err(Refusal::BadUser),
    };
    let body_key = match fields.get("clientMessageId") {
        None | Some(Value::Null) => None,
        Some(Value::String(key)) if valid_key(key) => Some(key.as_str()),
        Some(_) => return Err(Refusal::BadClientMessageId),
    };
    let key = match (body_key, header_key) {
        (Some(body), Some(header)) if body != header => return Err(Refusal::KeysDiffer),
        (body, header) => body.or(header).map(str::to_owned),
    };
    Ok(Line { text: text.clone(), label, key })
}

/// A key fits a receipt key's segment: printable ASCII without `#` (the separator).
fn valid_key(key: &str) -> bool {
    (1..=MAX_KEY_LEN).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic() && b != b'#')
}

/// The label of a line that names none: the last segment of the principal's
/// ARN (`…:user/ci-bot` → `ci-bot`, `…:assumed-role/Deployer/session-1` →
/// `session-1`), cleaned and cut as a name.
///
/// ```
/// use chat_core::handlers::publish::default_label;
/// assert_eq!(default_label("arn:aws:iam::123456789012:user/ci-bot"), "ci-bot");
/// assert_eq!(default_label("arn:aws:iam::123456789012:root"), "root");
/// assert_eq!(default_label("arn:aws:iam::1:user/"), "server");
/// ```
pub fn default_label(principal: &str) -> String {
    let last = principal.rsplit(['/', ':']).next().unwrap_or_default();
    let label: String = cleaned_name(last).chars().take(MAX_NAME_CHARS).collect();
    let label = label.trim();
    if label.is_empty() { DEFAULT_LABEL.to_owned() } else { label.to_owned() }
}

#[cfg(test)]
mod tests;
