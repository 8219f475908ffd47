//! The wire protocol (`../shared/spec/protocol.md`): inbound JSON frames parsed
//! into a typed [`Command`], outbound frames rendered exactly as the seed's
//! clients expect (`{"message": "..."}` plus optional fields richer clients use).

use serde::Serialize;
use serde_json::{Map, Value};

use crate::model::{Connection, DELETED_NOTICE, EventKind, LogEvent};
pub use crate::model::{join_notice, leave_notice};
use crate::ports::{LogCursor, Unread};
use crate::rights::RoomAccess;
use crate::room::{BadRoom, valid_room};
use crate::time::{format_iso, parse_iso};

/// The seed's heartbeat text; answered with [`PONG`] and never stored.
pub const PING: &str = "ping";
/// API Gateway refuses @connections posts over 128 KiB.
pub const MAX_FRAME_BYTES: usize = 128 * 1024;
/// Longest chat text accepted (one 32 KB API Gateway message unit).
pub const MAX_TEXT_BYTES: usize = 32 * 1024;
/// Default and maximum number of events one `history` request returns.
pub const DEFAULT_HISTORY_LIMIT: usize = 50;
pub const MAX_HISTORY_LIMIT: usize = 200;
/// Members per `who` answer; more come with a `next` cursor.
pub const PRESENCE_PAGE: usize = 100;
/// Longest `next` cursor accepted from a client (cursors are connection ids).
const MAX_CURSOR_LEN: usize = 128;

/// What a client asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `{"action":"sendmessage","message":"..."}` (or `"data"`, the AWS sample's name),
    /// with an optional `"clientMessageId"` (a UUID) that asks for an ack and makes
    /// a resend idempotent.
    /// `"room"` names one of the connection's rooms; none means its home room.
    /// `"replyTo"` (a message id) makes it a reply to that line.
    SendMessage { text: String, client_message_id: Option<String>, room: Option<String>, reply_to: Option<String> },
    /// `{"action":"sendmessage","message":"ping"}`, the seed page's heartbeat.
    Ping,
    /// `{"action":"history","limit":50,"since":"<id or ISO time>"}`.
    /// `"fold":true` answers folded lines ([`crate::fold`]) instead of raw events.
    History { limit: usize, since: Option<LogCursor>, room: Option<String>, fold: bool },
    /// `{"action":"who","next":"<cursor>"}`: who is in the sender's room.
    Who { after: Option<String>, room: Option<String> },
    /// `{"action":"subscribe","room":R,"since":"<id or ISO time>","limit":N}`:
    /// hear R too; with `since`, the gap since then, paged like `history`.
    Subscribe { room: String, since: Option<LogCursor>, limit: usize },
    /// `{"action":"unsubscribe","room":R}`.
    Unsubscribe { room: String },
    /// `{"action":"rooms"}`: the connection's rooms, members and unread counts.
    Rooms,
    /// `{"action":"read","room":R,"id":"<message id>"}`: moves the read cursor.
    Read { room: String, id: String },
    /// `{"action":"delete","id":"<message id>"}`: a tombstone for one's own line (`w`) or anyone's (`m`).
    Delete { id: String },
    /// `{"action":"kick","room":R,"user":U}`: U's connections leave R (`m` in R).
    Kick { room: String, user: String },
    /// `{"action":"ban","room":R,"user":U,"seconds"?:N,"reason"?:TEXT}`: a kick, and
    /// U may not hear R again for `seconds` ([`DEFAULT_BAN_SECONDS`] unless given).
    Ban { room: String, user: String, seconds: i64, reason: Option<String> },
    /// `{"action":"unban","room":R,"user":U}`.
    Unban { room: String, user: String },
    /// `{"action":"edit","id":ID,"message":TEXT}`: the author's new text for its line.
    Edit { id: String, text: String },
    /// `{"action":"react","id":ID,"emoji":E,"clientMessageId"?}`: toggles E on the line.
    React { id: String, emoji: String, client_message_id: Option<String> },
    /// `{"action":"reply","to":ID,"message":TEXT,"clientMessageId"?}`: a line quoting line ID.
    Reply { to: String, text: String, client_message_id: Option<String> },
    /// `{"action":"typing","room"?:R}`: a hint to R's other members, never stored
    /// (see [`crate::handlers`]' typing module).
    Typing { room: Option<String> },
    /// Anything API Gateway would route to `$default`: not JSON, no action, unknown action.
    Unknown,
}

/// A ban's length when the frame gives none: an hour.
pub const DEFAULT_BAN_SECONDS: i64 = 3600;
/// The shortest ban: a minute.
pub const MIN_BAN_SECONDS: i64 = 60;
/// The longest ban: 30 days (a longer one is a matter for the identity provider).
pub const MAX_BAN_SECONDS: i64 = 30 * 24 * 3600;
/// Longest ban reason, in characters.
pub const MAX_REASON_CHARS: usize = 200;
/// Longest member a moderation frame may name (a `userId` is `<issuer URL>|<subject>`).
pub const MAX_MEMBER_LEN: usize = 512;

/// A well-routed frame whose fields are wrong; answered with an error frame.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("Field \"message\" (text) is required.")]
    MissingText,
    #[error("Message must not be empty.")]
    EmptyText,
    #[error("Message is {0} bytes as JSON; the limit is {MAX_TEXT_BYTES}.")]
    TextTooLong(usize),
    #[error("Field \"{0}\" has the wrong type.")]
    WrongType(&'static str),
    #[error("Field \"limit\" must be between 1 and {MAX_HISTORY_LIMIT}.")]
    BadLimit,
    #[error("Field \"since\" must be a message id or an ISO-8601 time.")]
    BadSince,
    #[error("Field \"next\" must be the cursor a previous answer gave.")]
    BadCursor,
    #[error("Field \"clientMessageId\" must be a UUID.")]
    BadClientMessageId,
    #[error("Field \"{0}\" is required.")]
    Missing(&'static str),
    #[error("{0}")]
    BadRoom(#[from] BadRoom),
    #[error("Field \"id\" must be a message id.")]
    BadMessageId,
    #[error(
        "Field \"user\" must be a member's userId, or an anonymous member's connectionId (1 to {MAX_MEMBER_LEN} characters)."
    )]
    BadMember,
    #[error("Field \"seconds\" must be whole seconds from {MIN_BAN_SECONDS} to {MAX_BAN_SECONDS} (30 days).")]
    BadSeconds,
    #[error("Field \"reason\" is {0} characters; the limit is {MAX_REASON_CHARS}.")]
    ReasonTooLong(usize),
    #[error(
        "Field \"emoji\" must be one emoji (a single emoji grapheme, at most {} bytes).",
        crate::reaction::MAX_EMOJI_BYTES
    )]
    BadEmoji,
    #[error("Field \"{0}\" must be a message id.")]
    BadLineId(&'static str),
}

/// Parses one inbound text frame.
///
/// ```
/// use chat_core::protocol::{parse_command, Command};
/// assert_eq!(parse_command(r#"{"action":"sendmessage","message":"ping"}"#), Ok(Command::Ping));
/// assert_eq!(parse_command("not json"), Ok(Command::Unknown));
/// ```
pub fn parse_command(body: &str) -> Result<Command, ProtocolError> {
    let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(body) else {
        return Ok(Command::Unknown);
    };
    match route_key(&fields) {
        Some("sendmessage") => parse_send_message(&fields),
        Some("history") => parse_history(&fields),
        Some("who") => parse_who(&fields),
        Some("subscribe") => parse_subscribe(&fields),
        Some("unsubscribe") => Ok(Command::Unsubscribe { room: required_room(&fields)? }),
        Some("rooms") => Ok(Command::Rooms),
        Some("read") => parse_read(&fields),
        Some("delete") => Ok(Command::Delete { id: required_message_id(&fields)? }),
        Some("kick") => Ok(Command::Kick { room: required_room(&fields)?, user: required_member(&fields)? }),
        Some("ban") => parse_ban(&fields),
        Some("unban") => Ok(Command::Unban { room: required_room(&fields)?, user: required_member(&fields)? }),
        Some("edit") => Ok(Command::Edit { id: required_message_id(&fields)?, text: required_text(&fields)? }),
        Some("react") => parse_react(&fields),
        Some("reply") => Ok(Command::Reply {
            to: required_line_id(&fields, "to")?.ok_or(ProtocolError::Missing("to"))?,
            text: required_text(&fields)?,
            client_message_id: client_message_id(&fields)?,
        }),
        Some("typing") => Ok(Command::Typing { room: optional_room(&fields)? }),
        _ => Ok(Command::Unknown),
    }
}

/// The route API Gateway selects with `$request.body.action`, if the frame names one.
pub fn route_key(fields: &Map<String, Value>) -> Option<&str> {
    fields.get("action").and_then(Value::as_str)
}

fn parse_send_message(fields: &Map<String, Value>) -> Result<Command, ProtocolError> {
    let text = match (fields.get("message"), fields.get("data")) {
        (Some(Value::String(text)), _) | (None, Some(Value::String(text))) => text,
        (None, None) | (Some(Value::Null), None) => return Err(ProtocolError::MissingText),
        (Some(_), _) => return Err(ProtocolError::WrongType("message")),
        (None, Some(_)) => return Err(ProtocolError::WrongType("data")),
    };
    if text == PING {
        return Ok(Command::Ping);
    }
    validate_text(text)?;
    Ok(Command::SendMessage {
        text: text.clone(),
        client_message_id: client_message_id(fields)?,
        room: optional_room(fields)?,
        reply_to: required_line_id(fields, "replyTo")?,
    })
}

/// A frame's `"clientMessageId"`, if any: a UUID, normalized, so "ABC…" and "abc…" are the same send.
fn client_message_id(fields: &Map<String, Value>) -> Result<Option<String>, ProtocolError> {
    match fields.get("clientMessageId") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(id)) => {
            Ok(Some(uuid::Uuid::parse_str(id).map_err(|_| ProtocolError::BadClientMessageId)?.to_string()))
        }
        Some(_) => Err(ProtocolError::WrongType("clientMessageId")),
    }
}

/// A message id in field `name` (normalized), if the frame has one.
fn required_line_id(fields: &Map<String, Value>, name: &'static str) -> Result<Option<String>, ProtocolError> {
    match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(id)) => {
            Ok(Some(uuid::Uuid::parse_str(id).map_err(|_| ProtocolError::BadLineId(name))?.to_string()))
        }
        Some(_) => Err(ProtocolError::WrongType(name)),
    }
}

/// An edit's or reply's `"message"`: text as a send's (not empty, within the size).
fn required_text(fields: &Map<String, Value>) -> Result<String, ProtocolError> {
    match fields.get("message") {
        None | Some(Value::Null) => Err(ProtocolError::MissingText),
        Some(Value::String(text)) => validate_text(text).map(|()| text.clone()),
        Some(_) => Err(ProtocolError::WrongType("message")),
    }
}

fn parse_react(fields: &Map<String, Value>) -> Result<Command, ProtocolError> {
    let id = required_message_id(fields)?;
    let emoji = match fields.get("emoji") {
        None | Some(Value::Null) => return Err(ProtocolError::Missing("emoji")),
        Some(Value::String(emoji)) if crate::reaction::valid_emoji(emoji) => emoji.clone(),
        Some(Value::String(_)) => return Err(ProtocolError::BadEmoji),
        Some(_) => return Err(ProtocolError::WrongType("emoji")),
    };
    Ok(Command::React { id, emoji, client_message_id: client_message_id(fields)? })
}

/// The `"room"` a frame names, checked; `None` when it names none (the home room).
fn optional_room(fields: &Map<String, Value>) -> Result<Option<String>, ProtocolError> {
    match fields.get("room") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(room)) => Ok(Some(valid_room(room)?.to_owned())),
        Some(_) => Err(ProtocolError::WrongType("room")),
    }
}

fn required_room(fields: &Map<String, Value>) -> Result<String, ProtocolError> {
    optional_room(fields)?.ok_or(ProtocolError::Missing("room"))
}

fn parse_subscribe(fields: &Map<String, Value>) -> Result<Command, ProtocolError> {
    let room = required_room(fields)?;
    let (limit, since) = (parse_limit(fields)?, parse_since(fields)?);
    Ok(Command::Subscribe { room, since, limit })
}

fn parse_read(fields: &Map<String, Value>) -> Result<Command, ProtocolError> {
    let room = required_room(fields)?;
    Ok(Command::Read { room, id: required_message_id(fields)? })
}

/// The `"id"` a frame names: a message id (a UUID, normalized).
fn required_message_id(fields: &Map<String, Value>) -> Result<String, ProtocolError> {
    match fields.get("id") {
        None | Some(Value::Null) => Err(ProtocolError::Missing("id")),
        Some(Value::String(id)) => Ok(uuid::Uuid::parse_str(id).map_err(|_| ProtocolError::BadMessageId)?.to_string()),
        Some(_) => Err(ProtocolError::WrongType("id")),
    }
}

/// The `"user"` a moderation frame names, as given (a `userId` or a connection id).
fn required_member(fields: &Map<String, Value>) -> Result<String, ProtocolError> {
    match fields.get("user") {
        None | Some(Value::Null) => Err(ProtocolError::Missing("user")),
        Some(Value::String(user)) if (1..=MAX_MEMBER_LEN).contains(&user.len()) && user.trim() == user => {
            Ok(user.clone())
        }
        Some(Value::String(_)) => Err(ProtocolError::BadMember),
        Some(_) => Err(ProtocolError::WrongType("user")),
    }
}

fn parse_ban(fields: &Map<String, Value>) -> Result<Command, ProtocolError> {
    let (room, user) = (required_room(fields)?, required_member(fields)?);
    let seconds = match fields.get("seconds") {
        None | Some(Value::Null) => DEFAULT_BAN_SECONDS,
        Some(Value::Number(n)) => {
            n.as_i64().filter(|n| (MIN_BAN_SECONDS..=MAX_BAN_SECONDS).contains(n)).ok_or(ProtocolError::BadSeconds)?
        }
        Some(_) => return Err(ProtocolError::WrongType("seconds")),
    };
    let reason = match fields.get("reason") {
        None | Some(Value::Null) => None,
        Some(Value::String(reason)) => {
            let chars = reason.chars().count();
            if chars > MAX_REASON_CHARS {
                return Err(ProtocolError::ReasonTooLong(chars));
            }
            Some(reason.trim().to_owned()).filter(|reason| !reason.is_empty())
        }
        Some(_) => return Err(ProtocolError::WrongType("reason")),
    };
    Ok(Command::Ban { room, user, seconds, reason })
}

/// Checks a chat line's text as `sendmessage` does: not blank, at most
/// [`MAX_TEXT_BYTES`] as JSON.
pub fn validate_text(text: &str) -> Result<(), ProtocolError> {
    if text.trim().is_empty() {
        return Err(ProtocolError::EmptyText);
    }
    // Measured escaped, so that the text (which a chat frame carries twice) can
    // never push a frame past what @connections accepts.
    let encoded = encoded_len(text);
    if encoded > MAX_TEXT_BYTES {
        return Err(ProtocolError::TextTooLong(encoded));
    }
    Ok(())
}

fn encoded_len(text: &str) -> usize {
    serde_json::to_string(text).map_or(usize::MAX, |quoted| quoted.len() - 2)
}

fn parse_history(fields: &Map<String, Value>) -> Result<Command, ProtocolError> {
    let (limit, since) = (parse_limit(fields)?, parse_since(fields)?);
    let fold = match fields.get("fold") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(fold)) => *fold,
        Some(_) => return Err(ProtocolError::WrongType("fold")),
    };
    Ok(Command::History { limit, since, room: optional_room(fields)?, fold })
}

fn parse_limit(fields: &Map<String, Value>) -> Result<usize, ProtocolError> {
    Ok(match fields.get("limit") {
        None | Some(Value::Null) => DEFAULT_HISTORY_LIMIT,
        Some(Value::Number(n)) => {
            n.as_u64().filter(|n| (1..=MAX_HISTORY_LIMIT as u64).contains(n)).ok_or(ProtocolError::BadLimit)? as usize
        }
        Some(_) => return Err(ProtocolError::WrongType("limit")),
    })
}

fn parse_since(fields: &Map<String, Value>) -> Result<Option<LogCursor>, ProtocolError> {
    match fields.get("since") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(parse_cursor(s).ok_or(ProtocolError::BadSince)?)),
        Some(_) => Err(ProtocolError::WrongType("since")),
    }
}

fn parse_who(fields: &Map<String, Value>) -> Result<Command, ProtocolError> {
    let after = match fields.get("next") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if (1..=MAX_CURSOR_LEN).contains(&s.len()) => Some(s.clone()),
        Some(Value::String(_)) => return Err(ProtocolError::BadCursor),
        Some(_) => return Err(ProtocolError::WrongType("next")),
    };
    Ok(Command::Who { after, room: optional_room(fields)? })
}

/// Reads a log position: an ISO-8601 time, or a message id (a UUID).
pub fn parse_cursor(text: &str) -> Option<LogCursor> {
    if let Some(at) = parse_iso(text) {
        return Some(LogCursor::Time(at));
    }
    uuid::Uuid::parse_str(text).ok().map(|id| LogCursor::MessageId(id.to_string()))
}

/// The seed's chat line: `[<time> - UTC]\n <sender>  <text>\n`.
pub fn chat_line(event: &LogEvent) -> String {
    format!("[{} - UTC]\n {}  {}\n", format_iso(&event.timestamp), event.connection_id, event.message)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EventFrame<'a> {
    message: String,
    id: &'a str,
    connection_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
    timestamp: String,
    kind: EventKind,
    room: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    verified: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    member: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    until: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    edited_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    emoji: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    on: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    counts: Option<&'a std::collections::BTreeMap<String, u32>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reply_to: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    quote: Option<&'a str>,
    /// A line of the publish API: a server sender (its principal stays in the log).
    #[serde(skip_serializing_if = "Option::is_none")]
    server: Option<bool>,
}

/// Renders the frame every connection receives for `event`. Old clients read only
/// `message`; the other fields let richer clients dedupe by `id` and style by `kind`,
/// and tell speakers apart by `userId` (the account; `user` is only its label).
pub fn event_frame(event: &LogEvent) -> Vec<u8> {
    let (message, text) = match event.kind {
        EventKind::Chat => (chat_line(event), Some(event.message.as_str())),
        EventKind::Join => (join_notice(&event.connection_id), None),
        EventKind::Leave => (leave_notice(&event.connection_id), None),
        EventKind::Delete => (DELETED_NOTICE.to_owned(), None),
        // A plain client shows the new text as a line of its own, marked.
        EventKind::Edit => (edited_line(event), Some(event.message.as_str())),
        EventKind::Kick | EventKind::Ban | EventKind::Unban | EventKind::Reaction => (event.message.clone(), None),
    };
    let frame = EventFrame {
        message,
        id: &event.message_id,
        connection_id: &event.connection_id,
        text,
        timestamp: format_iso(&event.timestamp),
        kind: event.kind,
        room: &event.room,
        user: event.user.as_deref(),
        verified: event.verified,
        user_id: event.user_id.as_deref(),
        target: event.target.as_deref(),
        member: event.member.as_deref(),
        until: event.until.as_ref().map(format_iso),
        reason: event.reason.as_deref(),
        edited_at: (event.kind == EventKind::Edit).then(|| format_iso(&event.timestamp)),
        emoji: event.emoji.as_deref(),
        on: event.on,
        counts: event.counts.as_ref(),
        reply_to: event.reply_to.as_deref(),
        quote: event.quote.as_deref(),
        server: event.principal.as_ref().map(|_| true),
    };
    serde_json::to_vec(&frame).expect("a struct of strings always serializes")
}

/// An edit as the seed's chat line shows it: the new text, marked `(edited)`.
pub fn edited_line(event: &LogEvent) -> String {
    format!("[{} - UTC]\n {}  {} (edited)\n", format_iso(&event.timestamp), event.connection_id, event.message)
}

/// One folded line ([`crate::fold`]) of a `history` with `fold:true`:
/// `{"kind":"line","id","room","connectionId","timestamp","user"?,"userId"?,
/// "text"|"deleted":true,"editedAt"?,"reactions":[{"emoji","count","users"}],"replyTo"?,"quote"?}`.
pub fn line_frame(line: &crate::fold::Line) -> Vec<u8> {
    let sent = &line.sent;
    let mut frame = serde_json::json!({
        "kind": "line", "id": sent.message_id, "room": sent.room, "connectionId": sent.connection_id,
        "timestamp": format_iso(&sent.timestamp),
        "reactions": line.reactions.iter().map(|(emoji, users)| serde_json::json!({
            "emoji": emoji, "count": users.len(), "users": users,
        })).collect::<Vec<_>>(),
    });
    let fields = [
        ("user", sent.user.clone()),
        ("userId", sent.user_id.clone()),
        ("text", line.text.clone()),
        ("editedAt", line.edited_at.as_ref().map(format_iso)),
        ("replyTo", sent.reply_to.clone()),
        ("quote", line.quote.clone()),
    ];
    for (name, value) in fields {
        if let Some(value) = value {
            frame[name] = value.into();
        }
    }
    if line.deleted {
        frame["deleted"] = true.into();
    }
    if sent.principal.is_some() {
        frame["server"] = true.into(); // as its event frame: the mark, never the ARN
    }
    serde_json::to_vec(&frame).expect("strings always serialize")
}

/// One page of `who`: `{"kind":"presence","room","count"?,"members":[…],"you","youUserId"?,"next"?}`,
/// `count` being the whole room's (on the first page only: counting reads every
/// row of the room, so later pages do not repeat it), `you` the asker's own
/// connection id (a client learns it no other way before it sends a line) and
/// `youUserId` its account when verified, so a page marks "(you)" on every
/// connection of it and on no one else's, whatever their names.
pub fn presence_frame(
    room: &str,
    count: Option<usize>,
    members: &[Connection],
    you: &str,
    you_user_id: Option<&str>,
    next: Option<&str>,
) -> Vec<u8> {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Member<'a> {
        connection_id: &'a str,
        connected_at: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        user: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        verified: Option<bool>,
        #[serde(skip_serializing_if = "Option::is_none")]
        user_id: Option<&'a str>,
    }
    let members: Vec<Member> = members
        .iter()
        .map(|c| Member {
            connection_id: &c.connection_id,
            connected_at: format_iso(&c.connected_at),
            user: c.user.as_deref(),
            verified: c.verified,
            user_id: c.user_id.as_deref(),
        })
        .collect();
    let mut frame = serde_json::json!({ "kind": "presence", "room": room, "members": members, "you": you });
    if let Some(count) = count {
        frame["count"] = count.into();
    }
    if let Some(user_id) = you_user_id {
        frame["youUserId"] = user_id.into();
    }
    if let Some(next) = next {
        frame["next"] = next.into();
    }
    serde_json::to_vec(&frame).expect("strings and numbers always serialize")
}

/// The aggregated presence of a room above the presence limit
/// ([`crate::occupancy`]): `{"message","kind":"occupancy","room","count","joined","left","recent":[{"connectionId","user"?}]}`.
/// `count` is the room's members now; `joined`/`left` what happened since the
/// room's previous occupancy frame; `recent` the latest joiners among `joined`.
/// `message` keeps a seed client's page readable: one line a second instead of
/// a notice per join.
pub fn occupancy_frame(room: &str, count: usize, changes: &crate::occupancy::Changes) -> Vec<u8> {
    let recent: Vec<serde_json::Value> = changes
        .recent
        .iter()
        .map(|joiner| {
            let mut entry = serde_json::json!({ "connectionId": joiner.connection_id });
            if let Some(user) = &joiner.user {
                entry["user"] = user.as_str().into();
            }
            entry
        })
        .collect();
    let message = format!("{count} here in {room}: {} joined, {} left", changes.joined, changes.left);
    serde_json::to_vec(&serde_json::json!({
        "message": message, "kind": "occupancy", "room": room, "count": count,
        "joined": changes.joined, "left": changes.left, "recent": recent,
    }))
    .expect("strings and numbers always serialize")
}

/// Ends a `history` answer: `{"kind":"history","room","count","more"}`. `more`
/// says a further request (`since` the last id) has events to give, so a client
/// recovering a gap knows when it has caught up.
pub fn history_end_frame(room: &str, count: usize, more: bool) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "kind": "history", "room": room, "count": count, "more": more }))
        .expect("strings and numbers always serialize")
}

/// The answer to `subscribe`: `{"kind":"subscribed","room","count"}`, `count`
/// being the room's members, the new one included.
pub fn subscribed_frame(room: &str, count: usize, access: RoomAccess) -> Vec<u8> {
    let (rights, private) = (access.rights.to_string(), access.private);
    serde_json::to_vec(
        &serde_json::json!({ "kind": "subscribed", "room": room, "count": count, "rights": rights, "private": private }),
    )
    .expect("strings and numbers always serialize")
}

/// The answer to `unsubscribe`: `{"kind":"unsubscribed","room"}`.
pub fn unsubscribed_frame(room: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "kind": "unsubscribed", "room": room })).expect("strings always serialize")
}

/// One room of a `rooms` answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomSummary {
    pub room: String,
    pub count: usize,
    pub unread: Unread,
    pub access: RoomAccess,
}

/// The answer to `rooms`:
/// `{"kind":"rooms","rooms":[{"room","count","unread","more","rights","private"}…]}`.
pub fn rooms_frame(rooms: &[RoomSummary]) -> Vec<u8> {
    let rooms: Vec<Value> = rooms
        .iter()
        .map(|r| {
            serde_json::json!({
                "room": r.room, "count": r.count, "unread": r.unread.count, "more": r.unread.more,
                "rights": r.access.rights.to_string(), "private": r.access.private,
            })
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({ "kind": "rooms", "rooms": rooms }))
        .expect("strings and numbers always serialize")
}

/// The answer to `read`: `{"kind":"read","room","id"}`, `id` being where the
/// cursor now is (a later one, if another device read further).
pub fn read_frame(room: &str, id: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "kind": "read", "room": room, "id": id }))
        .expect("strings always serialize")
}

/// A frame named a room the connection does not hear: `{"error":"Not subscribed","room","message"}`.
pub fn not_subscribed_frame(room: &str) -> Vec<u8> {
    let detail = format!(
        "This connection is not subscribed to room \"{room}\"; send {{\"action\":\"subscribe\",\"room\":\"{room}\"}} first."
    );
    serde_json::to_vec(&serde_json::json!({ "error": "Not subscribed", "room": room, "message": detail }))
        .expect("strings always serialize")
}

/// A right the connection lacks in a room (from its token or the deployment's
/// default): `{"error":"Forbidden","room","right","message"}`, `right` one of
/// `read`, `write`, `moderate`. Nothing was stored.
pub fn forbidden_frame(refusal: &crate::rights::Forbidden<'_>) -> Vec<u8> {
    let (room, right) = (refusal.room, refusal.right.as_str());
    let detail = format!("This connection may not {right} in room \"{room}\".");
    serde_json::to_vec(&serde_json::json!({ "error": "Forbidden", "room": room, "right": right, "message": detail }))
        .expect("strings always serialize")
}

/// An unsubscribe from the connection's only room: `{"error":"Last room","room","message"}`.
pub fn last_room_frame(room: &str) -> Vec<u8> {
    let detail =
        format!("A connection hears at least one room: subscribe to another first, or disconnect to leave \"{room}\".");
    serde_json::to_vec(&serde_json::json!({ "error": "Last room", "room": room, "message": detail }))
        .expect("strings always serialize")
}

/// A subscribe past the limit: `{"error":"Too many rooms","room","message"}`.
pub fn too_many_rooms_frame(room: &str, max_rooms: usize) -> Vec<u8> {
    let detail = format!(
        "A connection may hear at most {max_rooms} rooms; unsubscribe from one before subscribing to \"{room}\"."
    );
    serde_json::to_vec(&serde_json::json!({ "error": "Too many rooms", "room": room, "message": detail }))
        .expect("strings always serialize")
}

/// A `delete` of a line that is not there for the asker: no such id, not a
/// chat line, deleted already, or in a room the asker does not hear (which
/// says nothing of that room): `{"error":"Not found","id","message"}`.
pub fn not_found_frame(id: &str) -> Vec<u8> {
    let detail = format!("There is no chat line {id} in a room this connection hears.");
    serde_json::to_vec(&serde_json::json!({ "error": "Not found", "id": id, "message": detail }))
        .expect("strings always serialize")
}

/// An edit, reaction or reply to a deleted line: `{"error":"Deleted","id","message"}`. Nothing was stored.
pub fn deleted_frame(id: &str) -> Vec<u8> {
    let detail = format!("Chat line {id} was deleted.");
    serde_json::to_vec(&serde_json::json!({ "error": "Deleted", "id": id, "message": detail }))
        .expect("strings always serialize")
}

/// An edit of someone else's line: `{"error":"Forbidden","room","right":"write","id","message"}`. Nothing was stored.
pub fn not_author_frame(room: &str, id: &str) -> Vec<u8> {
    let detail = format!("Only the author of chat line {id} may edit it.");
    serde_json::to_vec(&serde_json::json!({
        "error": "Forbidden", "room": room, "right": "write", "id": id, "message": detail
    }))
    .expect("strings always serialize")
}

/// A subscribe (or `$connect`) to a room the account is banned from:
/// `{"error":"Banned","room","until","message"}`.
pub fn banned_frame(room: &str, until: &chrono::DateTime<chrono::Utc>) -> Vec<u8> {
    let until = format_iso(until);
    let detail = banned_notice(room, &until);
    serde_json::to_vec(&serde_json::json!({ "error": "Banned", "room": room, "until": until, "message": detail }))
        .expect("strings always serialize")
}

/// Why a banned connection may not hear `room`, in words (also the `$connect` refusal's body).
pub fn banned_notice(room: &str, until: &str) -> String {
    format!("Banned from room \"{room}\" until {until}.")
}

/// Why a connection was removed from a room.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Removal {
    Kicked,
    Banned,
}

impl Removal {
    /// The name frames and leave events carry (`reason`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kicked => "kicked",
            Self::Banned => "banned",
        }
    }
}

/// Told to each connection a moderator removes, before it is removed:
/// `{"kind":"removed","room","reason":"kicked"|"banned","by","until"?}`.
pub fn removed_frame(room: &str, reason: Removal, by: &str, until: Option<&chrono::DateTime<chrono::Utc>>) -> Vec<u8> {
    let mut frame = serde_json::json!({ "kind": "removed", "room": room, "reason": reason.as_str(), "by": by });
    if let Some(until) = until {
        frame["until"] = format_iso(until).into();
    }
    serde_json::to_vec(&frame).expect("strings always serialize")
}

/// What a moderator did, answered to the moderator:
/// `{"kind":"kicked"|"banned"|"unbanned","room","user","connections","until"?}`,
/// `connections` being how many of the member's connections left the room.
pub fn moderated_frame(
    kind: &str,
    room: &str,
    user: &str,
    connections: usize,
    until: Option<&chrono::DateTime<chrono::Utc>>,
) -> Vec<u8> {
    let mut frame = serde_json::json!({ "kind": kind, "room": room, "user": user, "connections": connections });
    if let Some(until) = until {
        frame["until"] = format_iso(until).into();
    }
    serde_json::to_vec(&frame).expect("strings and numbers always serialize")
}

/// The route response to a send that carried a `clientMessageId`, once the line
/// is in the log: `{"ack":"<message id>","clientMessageId":"…"}`.
pub fn ack_frame(message_id: &str, client_message_id: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "ack": message_id, "clientMessageId": client_message_id }))
        .expect("strings always serialize")
}

/// A request over its user's rate limit ([`crate::rate`]):
/// `{"error":"Rate limited","retryAfterMs":N,"action","clientMessageId"?,"message"}`,
/// `action` the refused one (`sendmessage`, `history`, `who`); a send's
/// `clientMessageId` comes back so an outbox knows which line to retry after
/// `retryAfterMs`. Nothing was stored or read.
pub fn rate_limited_frame(action: &str, retry_after_ms: u64, client_message_id: Option<&str>) -> Vec<u8> {
    let detail = format!("Too many requests from this user; try again in {retry_after_ms} ms.");
    let mut frame = serde_json::json!({
        "error": "Rate limited", "retryAfterMs": retry_after_ms, "action": action, "message": detail
    });
    if let Some(id) = client_message_id {
        frame["clientMessageId"] = id.into();
    }
    serde_json::to_vec(&frame).expect("strings always serialize")
}

/// `{"kind":"typing","room":R,"connectionId":C,"user"?:NAME,"userId"?:ID}`: someone in
/// R is typing (told to R's other members, never stored).
pub fn typing_frame(room: &str, typist: &Connection) -> Vec<u8> {
    let mut frame = serde_json::json!({"kind": "typing", "room": room, "connectionId": typist.connection_id});
    if let Some(user) = &typist.user {
        frame["user"] = user.as_str().into();
    }
    if let Some(account) = typist.account() {
        frame["userId"] = account.into();
    }
    serde_json::to_vec(&frame).expect("strings always serialize")
}

/// The answer to a sender whose connection row is gone.
pub fn not_registered_frame() -> Vec<u8> {
    error_frame("Not connected", "This connection is no longer registered; reconnect to keep chatting.")
}

/// The heartbeat answer, `{"message":"pong"}`.
pub fn pong_frame() -> Vec<u8> {
    br#"{"message":"pong"}"#.to_vec()
}

/// The seed's answer to anything `$default` receives.
pub fn invalid_request_frame() -> Vec<u8> {
    error_frame("Invalid request", "The requested action is not recognized. Please check your WebSocket commands.")
}

/// `{"error": kind, "message": detail}`, the shape of every error the sender gets.
pub fn error_frame(kind: &str, detail: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "error": kind, "message": detail })).expect("strings always serialize")
}

/// The error frame for a malformed but routed command.
pub fn protocol_error_frame(error: &ProtocolError) -> Vec<u8> {
    error_frame("Invalid message", &error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send(text: &str) -> Result<Command, ProtocolError> {
        parse_command(&serde_json::json!({"action":"sendmessage","message":text}).to_string())
    }

    #[test]
    fn parses_seed_and_aws_sample_sends() {
        let chat = |text: &str| {
            Ok(Command::SendMessage { text: text.into(), client_message_id: None, room: None, reply_to: None })
        };
        assert_eq!(send("hello"), chat("hello"));
        assert_eq!(parse_command(r#"{"action":"sendmessage","data":"hi"}"#), chat("hi"));
        assert_eq!(send("ping"), Ok(Command::Ping));
        assert_eq!(send(" ping "), chat(" ping "));
    }

    #[test]
    fn a_client_message_id_is_a_normalized_uuid() {
        let id = "0192F3A4-5B6C-7D8E-9F01-23456789ABCD";
        let body = format!(r#"{{"action":"sendmessage","message":"hi","clientMessageId":"{id}"}}"#);
        assert_eq!(
            parse_command(&body),
            Ok(Command::SendMessage {
                text: "hi".into(),
                client_message_id: Some(id.to_lowercase()),
                room: None,
                reply_to: None
            })
        );
        for bad in [r#""nope""#, r#""""#, "7"] {
            let body = format!(r#"{{"action":"sendmessage","message":"hi","clientMessageId":{bad}}}"#);
            assert!(parse_command(&body).is_err(), "{bad}");
        }
        let ack: Value = serde_json::from_slice(&ack_frame("m1", "c1")).unwrap();
        assert_eq!(ack, serde_json::json!({"ack":"m1","clientMessageId":"c1"}));
    }

    #[test]
    fn rejects_bad_send_fields() {
        assert_eq!(parse_command(r#"{"action":"sendmessage"}"#), Err(ProtocolError::MissingText));
        assert_eq!(parse_command(r#"{"action":"sendmessage","message":5}"#), Err(ProtocolError::WrongType("message")));
        assert_eq!(send("  \n\t"), Err(ProtocolError::EmptyText));
        let long = "x".repeat(MAX_TEXT_BYTES + 1);
        assert_eq!(send(&long), Err(ProtocolError::TextTooLong(MAX_TEXT_BYTES + 1)));
        let quotes = "\"".repeat(MAX_TEXT_BYTES / 2 + 1);
        assert_eq!(send(&quotes), Err(ProtocolError::TextTooLong(MAX_TEXT_BYTES + 2)));
        assert!(send(&"x".repeat(MAX_TEXT_BYTES)).is_ok());
    }

    #[test]
    fn unroutable_frames_are_unknown() {
        for body in ["", "hello", "[1,2]", "{}", r#"{"action":5}"#, r#"{"action":"dance"}"#] {
            assert_eq!(parse_command(body), Ok(Command::Unknown), "{body:?}");
        }
    }

    #[test]
    fn parses_history_with_defaults_and_bounds() {
        assert_eq!(
            parse_command(r#"{"action":"history"}"#),
            Ok(Command::History { limit: DEFAULT_HISTORY_LIMIT, since: None, room: None, fold: false })
        );
        assert_eq!(
            parse_command(r#"{"action":"history","limit":3,"since":"2026-11-24T00:00:00Z"}"#),
            Ok(Command::History {
                limit: 3,
                since: Some(LogCursor::Time(parse_iso("2026-11-24T00:00:00Z").unwrap())),
                room: None,
                fold: false
            })
        );
        let id = "019ab5e1-3c44-7d2a-9f1e-2b7c1d0e4a55";
        assert_eq!(
            parse_command(&format!(r#"{{"action":"history","since":"{id}"}}"#)),
            Ok(Command::History {
                limit: DEFAULT_HISTORY_LIMIT,
                since: Some(LogCursor::MessageId(id.into())),
                room: None,
                fold: false
            })
        );
        assert_eq!(parse_command(r#"{"action":"history","since":"last tuesday"}"#), Err(ProtocolError::BadSince));
        for bad in ["0", "201", "-1", "1.5"] {
            let body = format!(r#"{{"action":"history","limit":{bad}}}"#);
            assert_eq!(parse_command(&body), Err(ProtocolError::BadLimit), "{bad}");
        }
        assert_eq!(parse_command(r#"{"action":"history","limit":"9"}"#), Err(ProtocolError::WrongType("limit")));
    }

    fn event(kind: EventKind, message: &str) -> LogEvent {
        let mut event = LogEvent::chat("CXzQ2cJjoAMCJ6g=", message, parse_iso("2026-11-24T10:15:30Z").unwrap());
        event.message_id = "019ab5e1-3c44-7d2a-9f1e-2b7c1d0e4a55".into();
        event.kind = kind;
        event
    }

    fn frame_json(event: &LogEvent) -> Value {
        serde_json::from_slice(&event_frame(event)).unwrap()
    }

    #[test]
    fn chat_frame_is_seed_exact_with_extra_fields() {
        let frame = frame_json(&event(EventKind::Chat, "hello"));
        assert_eq!(frame["message"], "[2026-11-24T10:15:30Z - UTC]\n CXzQ2cJjoAMCJ6g=  hello\n");
        assert_eq!(frame["id"], "019ab5e1-3c44-7d2a-9f1e-2b7c1d0e4a55");
        assert_eq!(frame["connectionId"], "CXzQ2cJjoAMCJ6g=");
        assert_eq!(frame["text"], "hello");
        assert_eq!(frame["timestamp"], "2026-11-24T10:15:30Z");
        assert_eq!(frame["kind"], "chat");
        assert_eq!(frame["room"], "lobby");
        assert!(
            ["user", "verified", "userId"].iter().all(|field| frame.get(field).is_none()),
            "anonymous: no name fields"
        );
    }

    /// Issue #25 adds event kinds and fields; a row stored before it, and the
    /// frames of chat, join and leave, must not change by a byte.
    #[test]
    fn old_rows_and_the_seeds_frames_are_unchanged_byte_for_byte() {
        let seed_row = r#"{"message_id":"019ab5e1-3c44-7d2a-9f1e-2b7c1d0e4a55","connection_id":"CXzQ2cJjoAMCJ6g=","message":"hello","timestamp":"2026-11-24T10:15:30Z"}"#;
        let old: LogEvent = serde_json::from_str(seed_row).unwrap();
        assert_eq!(
            String::from_utf8(event_frame(&old)).unwrap(),
            r#"{"message":"[2026-11-24T10:15:30Z - UTC]\n CXzQ2cJjoAMCJ6g=  hello\n","id":"019ab5e1-3c44-7d2a-9f1e-2b7c1d0e4a55","connectionId":"CXzQ2cJjoAMCJ6g=","text":"hello","timestamp":"2026-11-24T10:15:30Z","kind":"chat","room":"lobby"}"#
        );
        assert_eq!(
            serde_json::to_string(&old).unwrap(),
            r#"{"message_id":"019ab5e1-3c44-7d2a-9f1e-2b7c1d0e4a55","connection_id":"CXzQ2cJjoAMCJ6g=","message":"hello","timestamp":"2026-11-24T10:15:30Z","kind":"chat","room":"lobby"}"#,
            "a line stored today has the attributes it had"
        );
        let join = String::from_utf8(event_frame(&event(EventKind::Join, "x"))).unwrap();
        assert_eq!(
            join,
            r#"{"message":"A new user has joined the chat - CXzQ2cJjoAMCJ6g=","id":"019ab5e1-3c44-7d2a-9f1e-2b7c1d0e4a55","connectionId":"CXzQ2cJjoAMCJ6g=","timestamp":"2026-11-24T10:15:30Z","kind":"join","room":"lobby"}"#
        );
        let leave = frame_json(&event(EventKind::Leave, "x"));
        assert_eq!(leave["message"], "User CXzQ2cJjoAMCJ6g= has left the chat.");
        for field in ["editedAt", "emoji", "on", "counts", "replyTo", "quote"] {
            assert!(leave.get(field).is_none(), "{field}");
        }
    }

    #[test]
    fn named_lines_carry_the_user_and_keep_the_seed_line() {
        let named = event(EventKind::Chat, "hi").by(Some(&crate::model::Identity::chosen("Ada")));
        let frame = frame_json(&named);
        assert_eq!((frame["user"].as_str(), frame["verified"].as_bool()), (Some("Ada"), Some(false)));
        assert!(frame.get("userId").is_none(), "a chosen name is no account");
        assert_eq!(
            frame["message"], "[2026-11-24T10:15:30Z - UTC]\n CXzQ2cJjoAMCJ6g=  hi\n",
            "the seed line is unchanged"
        );
    }

    #[test]
    fn a_published_line_is_marked_server_and_never_carries_its_principal() {
        let arn = "arn:aws:iam::123456789012:user/ci-bot";
        let published = event(EventKind::Chat, "deployed").published_by(arn);
        let frame = frame_json(&published);
        assert_eq!(frame["server"], true);
        assert!(!String::from_utf8(event_frame(&published)).unwrap().contains("arn:aws"), "{frame}");
        assert!(frame_json(&event(EventKind::Chat, "hi")).get("server").is_none(), "a member's line: no field");
        let folded = crate::fold::fold(std::slice::from_ref(&published)).remove(0);
        let line: Value = serde_json::from_slice(&line_frame(&folded)).unwrap();
        assert_eq!(line["server"], true, "a folded history line too");
        assert!(!line.to_string().contains("arn:aws"), "{line}");
        let row = serde_json::to_value(&published).unwrap();
        assert_eq!(row["principal"], arn, "the log keeps it");
        assert_eq!(serde_json::from_value::<LogEvent>(row).unwrap(), published, "and reads it back");
    }

    #[test]
    fn verified_events_and_members_carry_the_account() {
        let ada = crate::model::Identity::verified("Ada", "https://id.example|u-1");
        for kind in [EventKind::Chat, EventKind::Join, EventKind::Leave] {
            let frame = frame_json(&event(kind, "hi").by(Some(&ada)));
            assert_eq!(
                (frame["user"].as_str(), frame["userId"].as_str()),
                (Some("Ada"), Some("https://id.example|u-1"))
            );
        }
        let at = parse_iso("2026-11-24T10:15:30Z").unwrap();
        let members = [Connection::new("a", "ip", at).of(Some(&ada)), Connection::new("b", "ip", at)];
        let frame: Value = serde_json::from_slice(&presence_frame(
            "lobby",
            Some(2),
            &members,
            "a",
            Some("https://id.example|u-1"),
            None,
        ))
        .unwrap();
        assert_eq!(frame["members"][0]["userId"], "https://id.example|u-1");
        assert!(frame["members"][1].get("userId").is_none(), "anonymous: none");
        assert_eq!((frame["you"].as_str(), frame["youUserId"].as_str()), (Some("a"), Some("https://id.example|u-1")));
    }

    #[test]
    fn parses_who_and_refuses_garbage_cursors() {
        assert_eq!(parse_command(r#"{"action":"who"}"#), Ok(Command::Who { after: None, room: None }));
        assert_eq!(
            parse_command(r#"{"action":"who","next":"abc=","junk":[1]}"#),
            Ok(Command::Who { after: Some("abc=".into()), room: None })
        );
        assert_eq!(parse_command(r#"{"action":"who","next":5}"#), Err(ProtocolError::WrongType("next")));
        assert_eq!(parse_command(r#"{"action":"who","next":""}"#), Err(ProtocolError::BadCursor));
        let long = format!(r#"{{"action":"who","next":"{}"}}"#, "x".repeat(129));
        assert_eq!(parse_command(&long), Err(ProtocolError::BadCursor));
    }

    #[test]
    fn occupancy_frames_carry_the_count_the_changes_and_the_latest_joiners() {
        use crate::occupancy::{Changes, Joiner};
        let changes = Changes {
            joined: 12,
            left: 3,
            recent: vec![
                Joiner { connection_id: "a=".into(), user: Some("Ada".into()) },
                Joiner { connection_id: "b=".into(), user: None },
            ],
        };
        let frame: Value = serde_json::from_slice(&occupancy_frame("ops", 301, &changes)).unwrap();
        assert_eq!(
            frame,
            serde_json::json!({"message":"301 here in ops: 12 joined, 3 left","kind":"occupancy","room":"ops",
                "count":301,"joined":12,"left":3,"recent":[{"connectionId":"a=","user":"Ada"},{"connectionId":"b="}]})
        );
    }

    #[test]
    fn presence_and_history_end_frames() {
        let at = parse_iso("2026-11-24T10:15:30Z").unwrap();
        let members = [Connection::new("a", "ip", at).in_room("ops")];
        let frame: Value =
            serde_json::from_slice(&presence_frame("ops", Some(101), &members, "b", None, Some("a"))).unwrap();
        assert_eq!(
            frame,
            serde_json::json!({"kind":"presence","room":"ops","count":101,
                "members":[{"connectionId":"a","connectedAt":"2026-11-24T10:15:30Z"}],"you":"b","next":"a"})
        );
        let last: Value = serde_json::from_slice(&presence_frame("ops", None, &members, "b", None, None)).unwrap();
        assert!(last.get("next").is_none());
        assert!(last.get("count").is_none(), "a later page does not recount the room");
        let end: Value = serde_json::from_slice(&history_end_frame("ops", 3, false)).unwrap();
        assert_eq!(end, serde_json::json!({"kind":"history","room":"ops","count":3,"more":false}));
    }

    #[test]
    fn notices_are_seed_exact() {
        let join = frame_json(&event(EventKind::Join, "ignored"));
        assert_eq!(join["message"], "A new user has joined the chat - CXzQ2cJjoAMCJ6g=");
        assert_eq!(join["kind"], "join");
        assert!(join.get("text").is_none());
        let leave = frame_json(&event(EventKind::Leave, "ignored"));
        assert_eq!(leave["message"], "User CXzQ2cJjoAMCJ6g= has left the chat.");
    }

    #[test]
    fn fixed_frames_are_seed_exact() {
        assert_eq!(pong_frame(), br#"{"message":"pong"}"#);
        let error: Value = serde_json::from_slice(&invalid_request_frame()).unwrap();
        assert_eq!(
            error,
            serde_json::json!({"error":"Invalid request","message":"The requested action is not recognized. Please check your WebSocket commands."})
        );
    }

    #[test]
    fn user_text_is_escaped_not_injected() {
        let frame = frame_json(&event(EventKind::Chat, "\"},{\"kind\":\"join"));
        assert_eq!(frame["text"], "\"},{\"kind\":\"join");
        assert_eq!(frame["kind"], "chat");
    }

    #[test]
    fn largest_accepted_text_fits_one_post_even_when_escaped() {
        // A control character escapes to six bytes, and a chat frame carries the text twice.
        for unit in ["x", "\"", "\u{1}", "é"] {
            let fit = MAX_TEXT_BYTES / encoded_len(unit);
            assert!(send(&unit.repeat(fit + 1)).is_err(), "{unit:?}");
            let text = unit.repeat(fit);
            assert!(send(&text).is_ok(), "{unit:?}");
            assert!(event_frame(&event(EventKind::Chat, &text)).len() <= MAX_FRAME_BYTES);
        }
    }

    #[test]
    fn channel_actions_name_a_valid_room() {
        let id = "019ab5e1-3c44-7d2a-9f1e-2b7c1d0e4a55";
        assert_eq!(
            parse_command(r#"{"action":"subscribe","room":"ops"}"#),
            Ok(Command::Subscribe { room: "ops".into(), since: None, limit: DEFAULT_HISTORY_LIMIT })
        );
        assert_eq!(
            parse_command(&format!(r#"{{"action":"subscribe","room":"ops","since":"{id}","limit":7}}"#)),
            Ok(Command::Subscribe { room: "ops".into(), since: Some(LogCursor::MessageId(id.into())), limit: 7 })
        );
        assert_eq!(
            parse_command(r#"{"action":"unsubscribe","room":"ops"}"#),
            Ok(Command::Unsubscribe { room: "ops".into() })
        );
        assert_eq!(parse_command(r#"{"action":"rooms"}"#), Ok(Command::Rooms));
        assert_eq!(
            parse_command(&format!(r#"{{"action":"read","room":"ops","id":"{}"}}"#, id.to_uppercase())),
            Ok(Command::Read { room: "ops".into(), id: id.into() })
        );
        assert_eq!(
            parse_command(r#"{"action":"sendmessage","message":"hi","room":"ops"}"#),
            Ok(Command::SendMessage {
                text: "hi".into(),
                client_message_id: None,
                room: Some("ops".into()),
                reply_to: None
            })
        );
        assert_eq!(
            parse_command(r#"{"action":"who","room":"ops"}"#),
            Ok(Command::Who { after: None, room: Some("ops".into()) })
        );
        let refusals = [
            (r#"{"action":"subscribe"}"#, ProtocolError::Missing("room")),
            (r#"{"action":"unsubscribe","room":7}"#, ProtocolError::WrongType("room")),
            (r#"{"action":"subscribe","room":"a b"}"#, ProtocolError::BadRoom(BadRoom)),
            (r#"{"action":"history","room":""}"#, ProtocolError::BadRoom(BadRoom)),
            (r#"{"action":"sendmessage","message":"x","room":"<b>"}"#, ProtocolError::BadRoom(BadRoom)),
            (r#"{"action":"subscribe","room":"ops","limit":0}"#, ProtocolError::BadLimit),
            (r#"{"action":"read","room":"ops"}"#, ProtocolError::Missing("id")),
            (r#"{"action":"read","room":"ops","id":"last"}"#, ProtocolError::BadMessageId),
        ];
        for (body, refusal) in refusals {
            assert_eq!(parse_command(body), Err(refusal), "{body}");
        }
    }

    #[test]
    fn moderation_events_carry_their_fields_and_old_events_none() {
        let at = parse_iso("2026-11-24T10:15:30Z").unwrap();
        let plain = frame_json(&event(EventKind::Chat, "hi"));
        assert!(["target", "member", "until", "reason"].iter().all(|f| plain.get(f).is_none()), "{plain}");
        let row = serde_json::to_value(event(EventKind::Leave, "x")).unwrap();
        assert!(["target", "member", "until", "reason"].iter().all(|f| row.get(f).is_none()), "stored rows unchanged");

        let ban = LogEvent::ban("m1", "iss|ann", at + chrono::Duration::hours(1), Some("spam"), at).in_room("ops");
        let frame = frame_json(&ban);
        assert_eq!(
            (frame["kind"].as_str(), frame["member"].as_str(), frame["until"].as_str(), frame["reason"].as_str()),
            (Some("ban"), Some("iss|ann"), Some("2026-11-24T11:15:30Z"), Some("spam"))
        );
        assert_eq!(frame["message"], "iss|ann is banned from the room until 2026-11-24T11:15:30Z.");
        let stored: LogEvent = serde_json::from_value(serde_json::to_value(&ban).unwrap()).unwrap();
        assert_eq!(stored, ban, "round-trips through a table row");
        let leave = frame_json(&LogEvent::leave("c1", at).because("kicked"));
        assert_eq!(
            (leave["reason"].as_str(), leave["message"].as_str()),
            (Some("kicked"), Some("User c1 has left the chat."))
        );
        let tombstone = frame_json(&LogEvent::delete("m1", "019ab5e1-3c44-7d2a-9f1e-2b7c1d0e4a55", at));
        assert_eq!(
            (tombstone["kind"].as_str(), tombstone["message"].as_str()),
            (Some("delete"), Some("A message was deleted."))
        );
        for kind in EventKind::ALL {
            assert_eq!(EventKind::parse(kind.as_str()), Some(kind));
        }

        let json = |frame: Vec<u8>| serde_json::from_slice::<Value>(&frame).unwrap();
        assert_eq!(
            json(removed_frame("ops", Removal::Banned, "Mo", Some(&at))),
            serde_json::json!({"kind":"removed","room":"ops","reason":"banned","by":"Mo","until":"2026-11-24T10:15:30Z"})
        );
        assert_eq!(
            json(moderated_frame("kicked", "ops", "iss|ann", 2, None)),
            serde_json::json!({"kind":"kicked","room":"ops","user":"iss|ann","connections":2})
        );
        let banned = json(banned_frame("ops", &at));
        assert_eq!(
            (banned["error"].as_str(), banned["until"].as_str()),
            (Some("Banned"), Some("2026-11-24T10:15:30Z"))
        );
        assert_eq!(json(not_found_frame("x"))["error"], "Not found");
    }

    #[test]
    fn channel_frames() {
        let json = |frame: Vec<u8>| serde_json::from_slice::<Value>(&frame).unwrap();
        let rights = crate::rights::Rights::parse("ops=r").unwrap();
        let access = RoomAccess::of(&rights, &rights, "ops");
        assert_eq!(
            json(subscribed_frame("ops", 3, access)),
            serde_json::json!({"kind":"subscribed","room":"ops","count":3,"rights":"r","private":false})
        );
        assert_eq!(json(unsubscribed_frame("ops")), serde_json::json!({"kind":"unsubscribed","room":"ops"}));
        let access = RoomAccess::of(&rights, &crate::rights::Rights::none(), "ops");
        let rooms = [RoomSummary { room: "ops".into(), count: 2, unread: Unread { count: 100, more: true }, access }];
        assert_eq!(
            json(rooms_frame(&rooms)),
            serde_json::json!({"kind":"rooms","rooms":[
                {"room":"ops","count":2,"unread":100,"more":true,"rights":"r","private":true}
            ]})
        );
        let refusal = json(not_subscribed_frame("ops"));
        assert_eq!((refusal["error"].as_str(), refusal["room"].as_str()), (Some("Not subscribed"), Some("ops")));
        assert!(refusal["message"].as_str().unwrap().contains("\"ops\""));
        assert_eq!(json(too_many_rooms_frame("ops", 100))["error"], "Too many rooms");
    }
}
