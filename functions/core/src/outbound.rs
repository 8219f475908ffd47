//! What the world outside the chat hears: one event per line, join, leave, and
//! per room becoming occupied or vacated. Derived from the streams (the log's and
//! the room member counters'), so delivery is at least once: receivers dedupe on
//! [`OutboundEvent::id`], which is the same on every redelivery.
//!
//! Deployed, the events go to EventBridge (`source` + `detail-type` + `detail`);
//! locally, each is POSTed to a webhook with exactly this JSON as its body.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::model::{EventKind, LogEvent};
use crate::time::format_iso;

/// EventBridge's `source` of every event.
pub const SOURCE: &str = "websocket-chat";

/// EventBridge's `detail-type`: what happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum DetailType {
    #[serde(rename = "chat.message.created")]
    MessageCreated,
    #[serde(rename = "chat.member.joined")]
    MemberJoined,
    #[serde(rename = "chat.member.left")]
    MemberLeft,
    /// A room's members went from 0 to at least 1.
    #[serde(rename = "chat.room.occupied")]
    RoomOccupied,
    /// A room's last member left.
    #[serde(rename = "chat.room.vacated")]
    RoomVacated,
}

impl DetailType {
    pub const ALL: [Self; 5] =
        [Self::MessageCreated, Self::MemberJoined, Self::MemberLeft, Self::RoomOccupied, Self::RoomVacated];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::MessageCreated => "chat.message.created",
            Self::MemberJoined => "chat.member.joined",
            Self::MemberLeft => "chat.member.left",
            Self::RoomOccupied => "chat.room.occupied",
            Self::RoomVacated => "chat.room.vacated",
        }
    }
}

/// One event out, in EventBridge's envelope (the webhook body is this JSON).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OutboundEvent {
    /// Stable across redeliveries: a log event's message id, or for a room
    /// transition the room and the counter record's sequence number.
    pub id: String,
    pub source: &'static str,
    #[serde(rename = "detail-type")]
    pub detail_type: DetailType,
    /// When it happened (RFC 3339, seconds).
    pub time: String,
    pub detail: Detail,
}

/// What the event is about. Fields a kind has no use for are left out.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Detail {
    pub room: String,
    /// The log event's id (lines, joins, leaves).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// The speaker's or member's connection (`api` for a published line).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The account, when the authorizer vouched for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// The IAM principal of a line published through the publish API.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    /// A line's text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The line a reply answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    /// Why a member left (`kicked`, `banned`), when not by itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The room's members after an occupied or vacated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub members: Option<u64>,
}

impl OutboundEvent {
    /// The event of a log event, if the world outside hears of its kind: chat
    /// lines, joins and leaves. Edits, deletes, reactions and moderation stay inside.
    pub fn of_log_event(event: &LogEvent) -> Option<Self> {
        let detail_type = match event.kind {
            EventKind::Chat => DetailType::MessageCreated,
            EventKind::Join => DetailType::MemberJoined,
            EventKind::Leave => DetailType::MemberLeft,
            _ => return None,
        };
        let line = detail_type == DetailType::MessageCreated;
        let detail = Detail {
            room: event.room.clone(),
            message_id: Some(event.message_id.clone()),
            connection_id: Some(event.connection_id.clone()),
            user: event.user.clone(),
            user_id: event.user_id.clone(),
            principal: event.principal.clone(),
            message: line.then(|| event.message.clone()),
            reply_to: event.reply_to.clone(),
            reason: event.reason.clone(),
            members: None,
        };
        Some(Self {
            id: event.message_id.clone(),
            source: SOURCE,
            detail_type,
            time: format_iso(&event.timestamp),
            detail,
        })
    }

    /// The event of a room's member count changing from `before` to `after`:
    /// occupied when it leaves 0, vacated when it reaches 0, none otherwise.
    /// `change_id` names the change (the counter record's sequence number), so
    /// a redelivered record yields the same id.
    pub fn of_room_count(room: &str, before: u64, after: u64, at: DateTime<Utc>, change_id: &str) -> Option<Self> {
        let detail_type = match (before, after) {
            (0, 1..) => DetailType::RoomOccupied,
            (1.., 0) => DetailType::RoomVacated,
            _ => return None,
        };
        Some(Self {
            id: format!("{room}#{change_id}"),
            source: SOURCE,
            detail_type,
            time: format_iso(&at),
            detail: Detail { room: room.to_owned(), members: Some(after), ..Detail::default() },
        })
    }

    /// The `detail` as EventBridge takes it: a JSON text.
    pub fn detail_json(&self) -> String {
        serde_json::to_string(&self.detail).expect("a struct of strings and numbers always serializes")
    }

    /// The whole event as JSON: the webhook's body.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a struct of strings and numbers always serializes")
    }
}

/// Why a sink did not take every event of a `put`.
#[derive(Debug, thiserror::Error)]
#[error("{delivered} of the events were delivered, then: {reason}")]
pub struct SinkError {
    /// How many leading events were delivered: the rest must be put again.
    pub delivered: usize,
    pub reason: String,
}

/// Where events go: EventBridge deployed, a webhook queue locally.
#[async_trait]
pub trait EventSink: Send + Sync {
    /// Delivers `events` (in order, as far as the sink keeps order). On error,
    /// the events from [`SinkError::delivered`] on were not delivered.
    async fn put(&self, events: &[OutboundEvent]) -> Result<(), SinkError>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::from_epoch_millis;

    fn at() -> DateTime<Utc> {
        from_epoch_millis(1_795_515_330_000).unwrap()
    }

    #[test]
    fn lines_joins_and_leaves_go_out_and_other_kinds_stay_inside() {
        let mut line = LogEvent::chat("c1", "hello", at());
        line.room = "lobby".into();
        line.user = Some("ana".into());
        let created = OutboundEvent::of_log_event(&line).unwrap();
        assert_eq!(created.detail_type, DetailType::MessageCreated);
        assert_eq!(created.id, line.message_id);
        let json: serde_json::Value = serde_json::from_str(&created.to_json()).unwrap();
        assert_eq!(json["detail-type"], "chat.message.created");
        assert_eq!(json["source"], "websocket-chat");
        assert_eq!(json["detail"]["room"], "lobby");
        assert_eq!(json["detail"]["message"], "hello");
        assert_eq!(json["detail"]["user"], "ana");
        assert_eq!(json["detail"]["connectionId"], "c1");
        assert!(json["detail"].get("members").is_none());

        let join = LogEvent::join("c1", at());
        let joined = OutboundEvent::of_log_event(&join).unwrap();
        assert_eq!(joined.detail_type, DetailType::MemberJoined);
        assert_eq!(joined.detail.message, None, "a notice's text is not a message");
        let leave = LogEvent::leave("c1", at());
        assert_eq!(OutboundEvent::of_log_event(&leave).unwrap().detail_type, DetailType::MemberLeft);

        let inside = [
            LogEvent::delete("c1", "m1", at()),
            LogEvent::edit("c1", "m1", "hi", at()),
            LogEvent::reaction("c1", "m1", "👍", at()),
            LogEvent::kick("c1", "u2", at()),
            LogEvent::unban("c1", "u2", at()),
        ];
        for event in inside {
            assert_eq!(OutboundEvent::of_log_event(&event), None, "{:?}", event.kind);
        }
    }

    #[test]
    fn only_the_first_arrival_and_the_last_departure_change_occupancy() {
        let of = |before, after| OutboundEvent::of_room_count("lobby", before, after, at(), "7").map(|e| e.detail_type);
        assert_eq!(of(0, 1), Some(DetailType::RoomOccupied));
        assert_eq!(of(0, 3), Some(DetailType::RoomOccupied), "a connect with several memberships in one write");
        assert_eq!(of(1, 0), Some(DetailType::RoomVacated));
        assert_eq!(of(1, 2), None);
        assert_eq!(of(2, 1), None);
        assert_eq!(of(0, 0), None);
        let vacated = OutboundEvent::of_room_count("lobby", 1, 0, at(), "7").unwrap();
        assert_eq!(vacated.id, "lobby#7", "a redelivered record gives the same id");
        assert_eq!(vacated.detail.members, Some(0));
        let detail: serde_json::Value = serde_json::from_str(&vacated.detail_json()).unwrap();
        assert_eq!(detail, serde_json::json!({"room": "lobby", "members": 0}));
    }

    #[test]
    fn detail_types_are_named_as_the_spec_says() {
        for detail_type in DetailType::ALL {
            assert_eq!(serde_json::to_value(detail_type).unwrap(), detail_type.as_str());
        }
    }
}
