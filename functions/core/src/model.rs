//! The records the product stores. Field names are the DynamoDB attribute names
//! of the seed's tables (`../shared/spec/protocol.md`), so serde_dynamo maps them
//! one to one.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::room::DEFAULT_ROOM;
use crate::time::iso_seconds;

/// Who is behind a connection: a display name, from a verified token (the
/// authorizer's context) or chosen by the client (`?name=`, unverified).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub verified: bool,
}

/// API Gateway closes every connection after 2 h; the TTL adds slack so a row
/// orphaned by a lost `$disconnect` expires soon after the socket is surely gone.
pub const CONNECTION_TTL: Duration = Duration::minutes(2 * 60 + 15);

/// A row of ActiveConnections: a socket that may receive broadcasts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connection {
    pub connection_id: String,
    #[serde(with = "iso_seconds")]
    pub connected_at: DateTime<Utc>,
    #[serde(default)]
    pub source_ip: String,
    /// Epoch seconds; the table's TTL attribute.
    pub expires_at: i64,
    /// The one room this connection hears; the partition key of the `room-index` GSI.
    #[serde(default = "default_room")]
    pub room: String,
    /// The display name, when the connection has one ([`Identity`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified: Option<bool>,
    /// Asked for coalesced delivery (`?batch=1`): all of one broadcaster
    /// invocation's events in as few `{"events":[…]}` frames as fit 32 KB.
    #[serde(default, skip_serializing_if = "is_false")]
    pub batch: bool,
}

fn is_false(value: &bool) -> bool {
    !value
}

impl Connection {
    /// A connection in the default room; see [`Connection::in_room`].
    pub fn new(connection_id: &str, source_ip: &str, connected_at: DateTime<Utc>) -> Self {
        Self {
            connection_id: connection_id.to_owned(),
            connected_at,
            source_ip: source_ip.to_owned(),
            expires_at: (connected_at + CONNECTION_TTL).timestamp(),
            room: DEFAULT_ROOM.to_owned(),
            user: None,
            verified: None,
            batch: false,
        }
    }

    /// The same connection, coalescing its broadcasts or not ([`Connection::batch`]).
    pub fn coalescing(mut self, batch: bool) -> Self {
        self.batch = batch;
        self
    }

    pub fn in_room(mut self, room: &str) -> Self {
        room.clone_into(&mut self.room);
        self
    }

    /// The same connection, of `identity` (none: anonymous, as the seed's).
    pub fn of(mut self, identity: Option<&Identity>) -> Self {
        (self.user, self.verified) = split(identity);
        self
    }

    pub fn identity(&self) -> Option<Identity> {
        joined(&self.user, self.verified)
    }
}

fn split(identity: Option<&Identity>) -> (Option<String>, Option<bool>) {
    identity.map_or((None, None), |i| (Some(i.user.clone()), Some(i.verified)))
}

fn joined(user: &Option<String>, verified: Option<bool>) -> Option<Identity> {
    user.as_ref().map(|user| Identity { user: user.clone(), verified: verified.unwrap_or(false) })
}

/// Rows written before rooms existed were all in the one chat there was.
fn default_room() -> String {
    DEFAULT_ROOM.to_owned()
}

/// A row of SessionHistory: one connection's life, completed on disconnect.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub connection_id: String,
    pub source_ip: String,
    #[serde(with = "iso_seconds")]
    pub connected_at: DateTime<Utc>,
    #[serde(default, with = "optional_iso_seconds", skip_serializing_if = "Option::is_none")]
    pub disconnected_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<i64>,
    /// Kept here so whoever ends the session knows where to announce the leave, and whose.
    #[serde(default = "default_room")]
    pub room: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified: Option<bool>,
    /// Epoch seconds; the table's TTL attribute. Only set when a retention is
    /// configured ([`Session::kept_for`]): the row holds the source IP, personal data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
}

impl Session {
    pub fn opened(connection: &Connection) -> Self {
        Self {
            connection_id: connection.connection_id.clone(),
            source_ip: connection.source_ip.clone(),
            connected_at: connection.connected_at,
            disconnected_at: None,
            duration_seconds: None,
            room: connection.room.clone(),
            user: connection.user.clone(),
            verified: connection.verified,
            expires_at: None,
        }
    }

    /// The same session, deleted by the store's TTL `retention` after it opened;
    /// none keeps it forever.
    pub fn kept_for(mut self, retention: Option<Duration>) -> Self {
        self.expires_at = retention.map(|retention| (self.connected_at + retention).timestamp());
        self
    }

    pub fn identity(&self) -> Option<Identity> {
        joined(&self.user, self.verified)
    }
}

/// What completing a session writes: the end time and the whole-second duration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionEnd {
    pub connection_id: String,
    pub disconnected_at: DateTime<Utc>,
    pub duration_seconds: i64,
}

impl SessionEnd {
    pub fn new(connection_id: &str, connected_at: DateTime<Utc>, disconnected_at: DateTime<Utc>) -> Self {
        Self {
            connection_id: connection_id.to_owned(),
            disconnected_at,
            duration_seconds: (disconnected_at - connected_at).num_seconds().max(0),
        }
    }
}

/// What happened: a chat line, or someone joining or leaving.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Chat,
    Join,
    Leave,
}

impl EventKind {
    /// The name frames and tables use for the kind (its serde name).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::Join => "join",
            Self::Leave => "leave",
        }
    }
}

/// Key prefix of the receipts of acknowledged sends (client message id → message
/// id). Where a store keeps them in MessageHistory itself (DynamoDB: one
/// transaction with the line), readers of the table and its stream skip them:
/// they are not events.
pub const RECEIPT_KEY_PREFIX: &str = "client#";

/// A row of MessageHistory, the event log every broadcast and replay comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEvent {
    /// UUIDv7, so ids sort by time and clients can dedupe redeliveries.
    pub message_id: String,
    pub connection_id: String,
    /// The chat text, or for join/leave the notice a plain reader of the table sees.
    pub message: String,
    #[serde(with = "iso_seconds")]
    pub timestamp: DateTime<Utc>,
    /// Rows written by the seed have no kind; they are all chat lines.
    #[serde(default = "chat_kind")]
    pub kind: EventKind,
    /// Where it was said; the partition key of the `room-index` GSI.
    #[serde(default = "default_room")]
    pub room: String,
    /// Whose it is, when the connection had an [`Identity`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified: Option<bool>,
}

fn chat_kind() -> EventKind {
    EventKind::Chat
}

impl LogEvent {
    pub fn chat(connection_id: &str, text: &str, at: DateTime<Utc>) -> Self {
        Self::new(EventKind::Chat, connection_id, text.to_owned(), at)
    }

    pub fn join(connection_id: &str, at: DateTime<Utc>) -> Self {
        Self::new(EventKind::Join, connection_id, join_notice(connection_id), at)
    }

    pub fn leave(connection_id: &str, at: DateTime<Utc>) -> Self {
        Self::new(EventKind::Leave, connection_id, leave_notice(connection_id), at)
    }

    /// The same event said in `room` (constructors start in the default room).
    pub fn in_room(mut self, room: &str) -> Self {
        room.clone_into(&mut self.room);
        self
    }

    /// The same event, said by `identity` (none: anonymous).
    pub fn by(mut self, identity: Option<&Identity>) -> Self {
        (self.user, self.verified) = split(identity);
        self
    }

    fn new(kind: EventKind, connection_id: &str, message: String, at: DateTime<Utc>) -> Self {
        Self {
            message_id: Uuid::now_v7().to_string(),
            connection_id: connection_id.to_owned(),
            message,
            timestamp: at,
            kind,
            room: DEFAULT_ROOM.to_owned(),
            user: None,
            verified: None,
        }
    }
}

/// The seed's join notice.
pub fn join_notice(connection_id: &str) -> String {
    format!("A new user has joined the chat - {connection_id}")
}

/// The seed's leave notice.
pub fn leave_notice(connection_id: &str) -> String {
    format!("User {connection_id} has left the chat.")
}

mod optional_iso_seconds {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(at: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match at {
            Some(at) => super::iso_seconds::serialize(at, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        #[derive(Deserialize)]
        struct Wrapped(#[serde(with = "super::iso_seconds")] DateTime<Utc>);
        Ok(Option::<Wrapped>::deserialize(d)?.map(|Wrapped(at)| at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::from_epoch_millis;

    #[test]
    fn connection_expires_after_the_gateway_limit_plus_slack() {
        let at = from_epoch_millis(1_795_515_330_123).unwrap();
        let c = Connection::new("CXzQ2cJjoAMCJ6g=", "203.0.113.7", at);
        assert_eq!(c.expires_at - at.timestamp(), 2 * 3600 + 15 * 60);
    }

    #[test]
    fn a_kind_is_named_as_serde_names_it() {
        for kind in [EventKind::Chat, EventKind::Join, EventKind::Leave] {
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
        }
    }

    #[test]
    fn session_duration_is_whole_seconds_and_never_negative() {
        let start = from_epoch_millis(1_795_515_330_123).unwrap();
        let end = from_epoch_millis(1_795_515_400_870).unwrap();
        assert_eq!(SessionEnd::new("c", start, end).duration_seconds, 70);
        assert_eq!(SessionEnd::new("c", end, start).duration_seconds, 0);
    }

    #[test]
    fn log_ids_sort_by_creation() {
        let at = from_epoch_millis(0).unwrap();
        let first = LogEvent::chat("a", "x", at);
        let second = LogEvent::chat("a", "y", at);
        assert!(first.message_id < second.message_id);
    }

    #[test]
    fn seed_rows_without_kind_are_chat() {
        let row = r#"{"message_id":"m","connection_id":"c","message":"hi","timestamp":"2026-11-24T10:15:32Z"}"#;
        let event: LogEvent = serde_json::from_str(row).unwrap();
        assert_eq!(event.kind, EventKind::Chat);
        assert_eq!(event.room, "lobby", "the seed had one chat: the default room");
    }

    #[test]
    fn sessions_remember_the_room_of_their_connection() {
        let at = from_epoch_millis(0).unwrap();
        let connection = Connection::new("c", "ip", at).in_room("ops");
        assert_eq!(Session::opened(&connection).room, "ops");
        let seed_row = r#"{"connection_id":"c","connected_at":"2026-11-24T10:15:32Z","expires_at":1}"#;
        assert_eq!(serde_json::from_str::<Connection>(seed_row).unwrap().room, "lobby");
    }

    #[test]
    fn a_session_expires_only_when_a_retention_is_set() {
        let at = crate::time::parse_iso("2026-11-24T10:15:30Z").unwrap();
        let session = Session::opened(&Connection::new("c", "203.0.113.7", at));
        let kept = serde_json::to_value(session.clone().kept_for(None)).unwrap();
        assert!(kept.get("expires_at").is_none(), "no attribute: the TTL never deletes it");
        let thirty_days = session.kept_for(Some(Duration::days(30)));
        let expected = crate::time::parse_iso("2026-12-24T10:15:30Z").unwrap().timestamp();
        assert_eq!(thirty_days.expires_at, Some(expected));
        assert_eq!(serde_json::to_value(&thirty_days).unwrap()["expires_at"], expected, "epoch seconds, a number");
    }
}
