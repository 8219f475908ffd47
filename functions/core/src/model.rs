//! The records the product stores. Field names are the DynamoDB attribute names
//! of the seed's tables (`../shared/spec/protocol.md`), so serde_dynamo maps them
//! one to one.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::room::DEFAULT_ROOM;
use crate::time::iso_seconds;

/// Who is behind a connection: a display name, from a verified token (the
/// authorizer's context) or chosen by the client (`?name=`, unverified).
///
/// The name is only a label: identity providers let users pick it, and two
/// accounts may share it. A verified identity also has a [`user_id`](Self::user_id),
/// `"<iss>|<sub>"`, which is stable and unique; whatever must tell users apart
/// ("(you)", idempotency receipts, moderation) keys on that.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub verified: bool,
    /// The issuer-qualified subject of a verified token; `None` for a chosen name.
    pub user_id: Option<String>,
}

impl Identity {
    /// A name the client chose: a label, not an account.
    pub fn chosen(user: &str) -> Self {
        Self { user: user.to_owned(), verified: false, user_id: None }
    }

    /// A name from a verified token, with its account's stable id.
    pub fn verified(user: &str, user_id: &str) -> Self {
        Self { user: user.to_owned(), verified: true, user_id: Some(user_id.to_owned()) }
    }
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
    /// The home room: the one `?room=` named (default `lobby`), where a frame
    /// that names no room goes. Listed members carry the room they are listed for.
    #[serde(default = "default_room")]
    pub room: String,
    /// Every room the connection is subscribed to, the home room included (a
    /// string set in DynamoDB), so whoever ends it leaves each room. Empty on
    /// rows from before channels (then the home room alone, see [`Connection::rooms`])
    /// and on listed members.
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "serde_dynamo::string_set")]
    pub rooms: Vec<String>,
    /// The display name, when the connection has one ([`Identity`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified: Option<bool>,
    /// The account's stable id (`"<iss>|<sub>"`), when the identity is verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// Asked for coalesced delivery (`?batch=1`): all of one broadcaster
    /// invocation's events in as few `{"events":[…]}` frames as fit 32 KB.
    #[serde(default, skip_serializing_if = "is_false")]
    pub batch: bool,
    /// On a membership a subscribe made: the id of the join announcing it, so
    /// whoever ends the membership logs that same join before its leave
    /// ([`Connection::join`]). None on rows, on `$connect`'s memberships and
    /// on memberships from before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join_id: Option<String>,
    /// That join's time.
    #[serde(default, with = "optional_iso_seconds", skip_serializing_if = "Option::is_none")]
    pub joined_at: Option<DateTime<Utc>>,
    /// On a membership being ended: the leave that ends it, as the first to
    /// end it marked it ([`crate::ports::ConnectionStore::mark_leaving`]), so
    /// whoever finishes the departure (the same call, a retry, a racing prune)
    /// logs that same leave, once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leaving: Option<Box<LogEvent>>,
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
            rooms: vec![DEFAULT_ROOM.to_owned()],
            user: None,
            verified: None,
            user_id: None,
            batch: false,
            join_id: None,
            joined_at: None,
            leaving: None,
        }
    }

    /// The same connection, coalescing its broadcasts or not ([`Connection::batch`]).
    pub fn coalescing(mut self, batch: bool) -> Self {
        self.batch = batch;
        self
    }

    /// The same connection with `room` as its home room and only room.
    pub fn in_room(mut self, room: &str) -> Self {
        room.clone_into(&mut self.room);
        self.rooms = vec![room.to_owned()];
        self
    }

    /// The same connection, also subscribed to `rooms` (after the home room,
    /// each once, in the order given).
    pub fn also_in<'r>(mut self, rooms: impl IntoIterator<Item = &'r str>) -> Self {
        for room in rooms {
            if !self.rooms.iter().any(|r| r == room) {
                self.rooms.push(room.to_owned());
            }
        }
        self
    }

    /// Every room the connection is subscribed to: the stored set, or for a
    /// row from before channels, its home room.
    pub fn rooms(&self) -> Vec<String> {
        if self.rooms.is_empty() { vec![self.room.clone()] } else { self.rooms.clone() }
    }

    /// The account behind the connection (its `userId`), when its identity is verified.
    pub fn account(&self) -> Option<&str> {
        self.user_id.as_deref().filter(|_| self.verified == Some(true))
    }

    /// Whether the connection hears `room`.
    pub fn is_subscribed_to(&self, room: &str) -> bool {
        if self.rooms.is_empty() { self.room == room } else { self.rooms.iter().any(|r| r == room) }
    }

    /// The row a room's listing gives for this connection: what fan-out and
    /// `who` need, listed for `room` (no source IP, no room set).
    pub fn as_member_of(&self, room: &str) -> Self {
        Self { source_ip: String::new(), room: room.to_owned(), rooms: Vec::new(), ..self.clone() }
    }

    /// The same membership, announced by `join`: it keeps the join's id and time.
    pub fn with_join(mut self, join: &LogEvent) -> Self {
        (self.join_id, self.joined_at) = (Some(join.message_id.clone()), Some(join.timestamp));
        self
    }

    /// The join a membership was announced with, as its subscribe logs it
    /// (same id, time, room and identity); `None` when it kept none.
    ///
    /// ```
    /// use chat_core::{Connection, LogEvent};
    /// let at = chrono::Utc::now();
    /// let join = LogEvent::join("c", at).in_room("ops");
    /// let member = Connection::new("c", "ip", at).as_member_of("ops").with_join(&join);
    /// assert_eq!(member.join(), Some(join));
    /// assert_eq!(Connection::new("c", "ip", at).as_member_of("ops").join(), None);
    /// ```
    pub fn join(&self) -> Option<LogEvent> {
        let (id, at) = (self.join_id.as_ref()?, self.joined_at?);
        let join = LogEvent::join(&self.connection_id, at).in_room(&self.room).by(self.identity().as_ref());
        Some(LogEvent { message_id: id.clone(), ..join })
    }

    /// The same connection, of `identity` (none: anonymous, as the seed's).
    pub fn of(mut self, identity: Option<&Identity>) -> Self {
        (self.user, self.verified, self.user_id) = split(identity);
        self
    }

    pub fn identity(&self) -> Option<Identity> {
        joined(&self.user, self.verified, &self.user_id)
    }
}

/// An identity as the three optional columns every table stores it in.
fn split(identity: Option<&Identity>) -> (Option<String>, Option<bool>, Option<String>) {
    identity.map_or((None, None, None), |i| (Some(i.user.clone()), Some(i.verified), i.user_id.clone()))
}

fn joined(user: &Option<String>, verified: Option<bool>, user_id: &Option<String>) -> Option<Identity> {
    user.as_ref().map(|user| Identity {
        user: user.clone(),
        verified: verified.unwrap_or(false),
        user_id: user_id.clone(),
    })
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
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
            user_id: connection.user_id.clone(),
        }
    }

    /// The same session, deleted by the store's TTL `retention` after it opened;
    /// none keeps it forever.
    pub fn kept_for(mut self, retention: Option<Duration>) -> Self {
        self.expires_at = retention.map(|retention| (self.connected_at + retention).timestamp());
        self
    }

    pub fn identity(&self) -> Option<Identity> {
        joined(&self.user, self.verified, &self.user_id)
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

/// What happened: a chat line, someone joining or leaving, or a moderation
/// step — a line deleted (`target`), a member kicked, banned or unbanned
/// (`member`; a ban's `until` and `reason`). Moderation events are the audit
/// trail: they ride the same log, stream and broadcaster as the lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Chat,
    Join,
    Leave,
    Delete,
    Kick,
    Ban,
    Unban,
    /// A line's new text (`target`, `message`), by its author.
    Edit,
    /// A reaction toggled on a line (`target`, `emoji`, `on`, `counts`).
    Reaction,
}

impl EventKind {
    /// The name frames and tables use for the kind (its serde name).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::Join => "join",
            Self::Leave => "leave",
            Self::Delete => "delete",
            Self::Kick => "kick",
            Self::Ban => "ban",
            Self::Unban => "unban",
            Self::Edit => "edit",
            Self::Reaction => "reaction",
        }
    }

    /// The kind a name (its serde name) stands for, as tables store it.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == name)
    }

    /// Every kind.
    pub const ALL: [EventKind; 9] = [
        Self::Chat,
        Self::Join,
        Self::Leave,
        Self::Delete,
        Self::Kick,
        Self::Ban,
        Self::Unban,
        Self::Edit,
        Self::Reaction,
    ];
}

/// Key prefix of the receipts of acknowledged sends (a [`Receipt`] key → message
/// id). Where a store keeps them in MessageHistory itself (DynamoDB: one
/// transaction with the line), readers of the table and its stream skip them:
/// they are not events.
pub const RECEIPT_KEY_PREFIX: &str = "client#";

/// A room's member counter: one item of the Memberships table per room, under
/// this sort key (it sorts before every connection id, which are base64), that
/// holds the room's member count in [`ROOM_COUNTER_ATTRIBUTE`]. Every membership
/// write changes it in the same transaction, so its stream records' old and new
/// counts say exactly when a room became occupied (0 → 1) or vacated (1 → 0).
/// Listings of a room never return it.
pub const ROOM_COUNTER_ID: &str = "#members";

/// The counter item's count attribute (a number).
pub const ROOM_COUNTER_ATTRIBUTE: &str = "members";

/// The resend window: for this long after a send, resending its
/// `clientMessageId` (from the same sender, to the same room) is answered with
/// the first line's ack instead of storing it again. A client that still has an
/// unacknowledged line after a day sends a new line. Receipts carry
/// `expires_at` = send time + this: DynamoDB's TTL deletes them (eventually, so
/// stores also ignore an expired receipt), the local store purges them.
pub const RECEIPT_TTL: Duration = Duration::hours(24);

/// How long a line's tombstone receipt says "deleted already" (ten years:
/// as good as forever, yet a TTL DynamoDB accepts).
pub const TOMBSTONE_TTL: Duration = Duration::days(3650);

/// The receipt an acknowledged send claims: whose send, in which room, and until
/// when it dedupes resends.
///
/// Keyed by sender and room, so a receipt is never answered to anyone else: a
/// verified sender's by its account ([`Identity::user_id`]), which no other
/// account can present; an anonymous sender's by room and client message id
/// alone, so the page's outbox still dedupes a resend from a new connection
/// after a reconnect (the client message id is a random UUID that only its
/// sender ever sees: it is in the ack, never in a broadcast, history or replay);
/// a publish API caller's by its IAM principal, so two callers' keys never meet.
/// A resend after a room switch is a new line in the new room.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// `client#<room>#<clientMessageId>`, with `#<userId>` after it for a verified
    /// sender, or `#<principal ARN>` for a line of the publish API. Room names,
    /// client message ids and ARNs hold no `#`, and a `userId` always holds a `|`
    /// (`<iss>|<sub>`) where an ARN never does, so keys never collide.
    pub key: String,
    /// The send's time, epoch seconds: a stored receipt counts while it expires later.
    pub sent_at: i64,
    /// Epoch seconds, [`RECEIPT_TTL`] after the send (DynamoDB's TTL attribute).
    pub expires_at: i64,
}

impl Receipt {
    /// The receipt of sending `event` (its room, speaker and time) as `client_message_id`.
    ///
    /// ```
    /// use chat_core::model::{Identity, LogEvent, Receipt};
    /// let at = chat_core::time::parse_iso("2026-11-24T10:00:00Z").unwrap();
    /// let line = LogEvent::chat("c1", "hi", at).in_room("ops");
    /// assert_eq!(Receipt::for_send(&line, "k").key, "client#ops#k");
    /// let ada = line.by(Some(&Identity::verified("Ada", "https://id.example|u-1")));
    /// assert_eq!(Receipt::for_send(&ada, "k").key, "client#ops#k#https://id.example|u-1");
    /// let bot = LogEvent::chat("api", "hi", at).in_room("ops").published_by("arn:aws:iam::123456789012:user/ci");
    /// assert_eq!(Receipt::for_send(&bot, "k").key, "client#ops#k#arn:aws:iam::123456789012:user/ci");
    /// ```
    ///
    /// A tombstone ([`EventKind::Delete`], sent as [`Receipt::tombstone_id`] of
    /// its target) is claimed once per line whoever deletes it, and for
    /// [`TOMBSTONE_TTL`]: a second delete of the line finds it deleted.
    pub fn for_send(event: &LogEvent, client_message_id: &str) -> Self {
        let mut key = format!("{RECEIPT_KEY_PREFIX}{}#{client_message_id}", event.room);
        let tombstone = event.kind == EventKind::Delete;
        if let (Some(true), Some(user_id), false) = (event.verified, &event.user_id, tombstone) {
            key.push('#');
            key.push_str(user_id);
        } else if let (Some(principal), false) = (&event.principal, tombstone) {
            key.push('#');
            key.push_str(principal);
        }
        let ttl = if tombstone { TOMBSTONE_TTL } else { RECEIPT_TTL };
        Self { key, sent_at: event.timestamp.timestamp(), expires_at: (event.timestamp + ttl).timestamp() }
    }

    /// The `client_message_id` a delete of line `target` is appended once as
    /// (client message ids are UUIDs: no `#`, so never this).
    pub fn tombstone_id(target: &str) -> String {
        format!("delete#{target}")
    }

    /// The key of line `target`'s tombstone receipt in `room` (what
    /// [`Receipt::for_send`] gives the line's delete): present once it is deleted.
    pub fn tombstone_key(room: &str, target: &str) -> String {
        format!("{RECEIPT_KEY_PREFIX}{room}#{}", Self::tombstone_id(target))
    }

    /// Whether a stored receipt expiring at `stored_expires_at` still answers this send.
    pub fn is_held_by(&self, stored_expires_at: i64) -> bool {
        stored_expires_at > self.sent_at
    }
}

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
    /// The speaker's account ([`Identity::user_id`]), when verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// The line a `delete`, `edit` or `reaction` is about: its message id (the
    /// line itself stays in the log as it was).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// A `kick`'s, `ban`'s or `unban`'s member: a `userId`, or an anonymous member's connection id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
    /// A `ban`'s end.
    #[serde(default, with = "optional_iso_seconds", skip_serializing_if = "Option::is_none")]
    pub until: Option<DateTime<Utc>>,
    /// Why: a ban's reason as the moderator gave it, or a leave's `kicked` / `banned`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A `reaction`'s emoji (one grapheme, [`crate::reaction::valid_emoji`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emoji: Option<String>,
    /// A `reaction`'s toggle: `true` added, `false` removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on: Option<bool>,
    /// A `reaction`'s line's counts after it (emoji → reactors; none at 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counts: Option<BTreeMap<String, u32>>,
    /// A reply's parent line (a chat line of the same room).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    /// A reply's quote of its parent: the parent's text when replied to, first
    /// [`QUOTE_CHARS`] characters (none when the parent was deleted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quote: Option<String>,
    /// The IAM principal (its ARN) that published the line through the publish
    /// API ([`crate::handlers::publish`]); its presence marks a server sender.
    /// Kept in the log and handed to integrations, never sent to clients (their
    /// frames carry only `"server":true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
}

/// How much of its parent a reply quotes, in characters.
pub const QUOTE_CHARS: usize = 80;

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

    /// A tombstone: `target`'s line is deleted from view, by whoever `by` names.
    pub fn delete(connection_id: &str, target: &str, at: DateTime<Utc>) -> Self {
        let mut event = Self::new(EventKind::Delete, connection_id, DELETED_NOTICE.to_owned(), at);
        event.target = Some(target.to_owned());
        event
    }

    /// `target`'s line now reads `text` (only its author edits: the handler and the fold check it).
    pub fn edit(connection_id: &str, target: &str, text: &str, at: DateTime<Utc>) -> Self {
        let mut event = Self::new(EventKind::Edit, connection_id, text.to_owned(), at);
        event.target = Some(target.to_owned());
        event
    }

    /// A toggle of `emoji` on `target`'s line, before the store decides it:
    /// [`MessageLog::toggle_reaction`](crate::ports::MessageLog::toggle_reaction)
    /// sets `on`, `counts` and the notice.
    pub fn reaction(connection_id: &str, target: &str, emoji: &str, at: DateTime<Utc>) -> Self {
        let mut event = Self::new(EventKind::Reaction, connection_id, String::new(), at);
        (event.target, event.emoji) = (Some(target.to_owned()), Some(emoji.to_owned()));
        event
    }

    /// The same line, a reply to `parent` (its id; the quote is its current
    /// text cut to [`QUOTE_CHARS`], none when it is deleted).
    pub fn replying_to(mut self, parent: &str, quote: Option<&str>) -> Self {
        self.reply_to = Some(parent.to_owned());
        self.quote = quote.map(|text| text.chars().take(QUOTE_CHARS).collect());
        self
    }

    /// `member` was removed from the room by a moderator (`by` names them).
    pub fn kick(connection_id: &str, member: &str, at: DateTime<Utc>) -> Self {
        let mut event = Self::new(EventKind::Kick, connection_id, format!("{member} was removed from the room."), at);
        event.member = Some(member.to_owned());
        event
    }

    /// `member` is banned from the room until `until`, for `reason` if given.
    pub fn ban(
        connection_id: &str,
        member: &str,
        until: DateTime<Utc>,
        reason: Option<&str>,
        at: DateTime<Utc>,
    ) -> Self {
        let notice = format!("{member} is banned from the room until {}.", crate::time::format_iso(&until));
        let mut event = Self::new(EventKind::Ban, connection_id, notice, at);
        (event.member, event.until, event.reason) = (Some(member.to_owned()), Some(until), reason.map(str::to_owned));
        event
    }

    /// `member`'s ban from the room is lifted.
    pub fn unban(connection_id: &str, member: &str, at: DateTime<Utc>) -> Self {
        let mut event = Self::new(EventKind::Unban, connection_id, format!("{member} may join the room again."), at);
        event.member = Some(member.to_owned());
        event
    }

    /// The same event, giving `reason` (a leave's `kicked` or `banned`).
    pub fn because(mut self, reason: &str) -> Self {
        self.reason = Some(reason.to_owned());
        self
    }

    /// The same event under a new id (a retried reaction toggle takes one
    /// per try, so ids follow the order toggles are decided in, nearly).
    pub fn renewed(mut self) -> Self {
        self.message_id = Uuid::now_v7().to_string();
        self
    }

    /// The same event, under a new id that sorts after `earlier`'s if its own
    /// does not: ids come from each host's clock, and a leave made on a host
    /// whose clock lags the one that made its join must still follow it.
    pub fn after(mut self, earlier: &LogEvent) -> Self {
        if self.message_id > earlier.message_id {
            return self;
        }
        let Some(millis) = Uuid::parse_str(&earlier.message_id).ok().and_then(|id| id.get_timestamp()).map(|t| {
            let (seconds, nanos) = t.to_unix();
            seconds.saturating_mul(1000).saturating_add(u64::from(nanos / 1_000_000))
        }) else {
            return self; // not a UUIDv7: nothing to order by
        };
        // The event's own random bits, so the same two events always give the
        // same id: racing departures log one leave, not one each.
        let own = Uuid::parse_str(&self.message_id).map(|id| *id.as_bytes()).unwrap_or_default();
        let random: [u8; 10] = std::array::from_fn(|i| own[6 + i]);
        self.message_id =
            uuid::Builder::from_unix_timestamp_millis(millis.saturating_add(1), &random).into_uuid().to_string();
        self
    }

    /// The same event said in `room` (constructors start in the default room).
    pub fn in_room(mut self, room: &str) -> Self {
        room.clone_into(&mut self.room);
        self
    }

    /// The same event, said by `identity` (none: anonymous).
    pub fn by(mut self, identity: Option<&Identity>) -> Self {
        (self.user, self.verified, self.user_id) = split(identity);
        self
    }

    /// The same line, published by the IAM `principal` (an ARN) through the publish API.
    pub fn published_by(mut self, principal: &str) -> Self {
        self.principal = Some(principal.to_owned());
        self
    }

    /// Who said it, if anyone known.
    pub fn identity(&self) -> Option<Identity> {
        joined(&self.user, self.verified, &self.user_id)
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
            user_id: None,
            target: None,
            member: None,
            until: None,
            reason: None,
            emoji: None,
            on: None,
            counts: None,
            reply_to: None,
            quote: None,
            principal: None,
        }
    }
}

/// A row of Bans: `user` may not hear `room` until `until` (partition key
/// `room`, sort key `user`; `expires_at`, the table's TTL attribute, lets the
/// store forget it after it ends — eventually, so readers also compare `until`).
/// `user` is an account's `userId`, or an anonymous connection's id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ban {
    pub room: String,
    pub user: String,
    #[serde(with = "iso_seconds")]
    pub until: DateTime<Utc>,
    /// The moderator's name (or connection id), as the removed frame shows it.
    pub by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Epoch seconds of `until`.
    pub expires_at: i64,
}

impl Ban {
    pub fn new(room: &str, user: &str, until: DateTime<Utc>, by: &str, reason: Option<&str>) -> Self {
        Self {
            room: room.to_owned(),
            user: user.to_owned(),
            until,
            by: by.to_owned(),
            reason: reason.map(str::to_owned),
            expires_at: until.timestamp(),
        }
    }

    /// Whether the ban still holds at `now`.
    pub fn holds_at(&self, now: DateTime<Utc>) -> bool {
        self.until > now
    }
}

/// The `message` of a `delete` event, what a client that knows no tombstones shows.
pub const DELETED_NOTICE: &str = "A message was deleted.";

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
    fn an_event_made_after_another_on_a_lagging_clock_still_sorts_after_it() {
        let at = from_epoch_millis(0).unwrap();
        let lagging = LogEvent::leave("c", at);
        let join = LogEvent::join("c", at);
        let leave = lagging.clone().after(&join);
        assert!(leave.message_id > join.message_id, "{} after {}", leave.message_id, join.message_id);
        assert_eq!(
            LogEvent { message_id: lagging.message_id.clone(), ..leave.clone() },
            lagging,
            "only the id changes"
        );
        let id = |e: &LogEvent| Uuid::parse_str(&e.message_id).unwrap();
        assert_eq!(id(&leave).get_version_num(), 7);
        let ms = |e: &LogEvent| id(e).get_timestamp().unwrap().to_unix();
        assert!(ms(&leave) > ms(&join), "a millisecond later");
        assert_eq!(lagging.clone().after(&join), leave, "the same two events, the same id: racing departures agree");
        let later = LogEvent::leave("c", at);
        assert_eq!(later.clone().after(&join), later, "an id that sorts after already is kept");
        let seed = LogEvent { message_id: "not-a-uuid".into(), ..join };
        assert_eq!(lagging.clone().after(&seed).message_id, lagging.message_id, "bad input never panics");
    }

    #[test]
    fn a_membership_gives_back_the_join_its_subscribe_logged() {
        let at = crate::time::parse_iso("2026-11-24T10:15:30Z").unwrap();
        let ada = Identity::verified("Ada", "iss|ada");
        let row = Connection::new("c", "ip", at - Duration::minutes(5)).of(Some(&ada));
        let join = LogEvent::join("c", at).in_room("ops").by(Some(&ada));
        let member = row.as_member_of("ops").with_join(&join);
        assert_eq!((member.room.as_str(), member.join()), ("ops", Some(join.clone())));
        let stored: Connection = serde_json::from_value(serde_json::to_value(&member).unwrap()).unwrap();
        assert_eq!(stored.join(), Some(join), "kept through storage (times in whole seconds)");
        assert!(serde_json::to_value(&row).unwrap().get("join_id").is_none(), "nothing on a row");
        let half = Connection { joined_at: None, ..member };
        assert_eq!(half.join(), None, "an id without a time is no join");
    }

    #[test]
    fn seed_rows_without_kind_are_chat() {
        let row = r#"{"message_id":"m","connection_id":"c","message":"hi","timestamp":"2026-11-24T10:15:32Z"}"#;
        let event: LogEvent = serde_json::from_str(row).unwrap();
        assert_eq!(event.kind, EventKind::Chat);
        assert_eq!(event.room, "lobby", "the seed had one chat: the default room");
    }

    #[test]
    fn a_verified_identity_is_stored_with_its_account_on_every_row() {
        let at = from_epoch_millis(0).unwrap();
        let ada = Identity::verified("alice", "https://id.example|u-1");
        let connection = Connection::new("c", "ip", at).of(Some(&ada));
        let event = LogEvent::join("c", at).by(Some(&ada));
        assert_eq!(
            [connection.identity(), Session::opened(&connection).identity(), event.identity()],
            [Some(ada.clone()), Some(ada.clone()), Some(ada)]
        );
        let row = serde_json::to_value(&event).unwrap();
        assert_eq!(row["user_id"], "https://id.example|u-1", "the attribute name the tables use");
        let anonymous = serde_json::to_value(LogEvent::join("c", at)).unwrap();
        assert!(anonymous.get("user_id").is_none(), "nothing stored for an anonymous connection");
    }

    #[test]
    fn receipts_are_keyed_by_sender_and_room_and_expire_after_the_window() {
        let at = from_epoch_millis(1_795_515_330_000).unwrap();
        let line = LogEvent::chat("c", "hi", at);
        let key = |identity: Option<&Identity>, room: &str| {
            Receipt::for_send(&line.clone().by(identity).in_room(room), "k").key
        };
        let (ada, eve) = (Identity::verified("alice", "iss|ada"), Identity::verified("alice", "iss|eve"));
        let keys = [
            key(None, "lobby"),
            key(None, "ops"),
            key(Some(&Identity::chosen("alice")), "lobby"),
            key(Some(&ada), "lobby"),
            key(Some(&eve), "lobby"),
            key(Some(&ada), "ops"),
        ];
        assert_eq!(keys[0], "client#lobby#k");
        assert_eq!(keys[2], keys[0], "a chosen name is anonymous: the name is no account");
        let distinct: std::collections::HashSet<_> = keys.iter().collect();
        assert_eq!(distinct.len(), keys.len() - 1, "every other sender and room has its own: {keys:?}");

        let receipt = Receipt::for_send(&line, "k");
        assert_eq!(receipt.expires_at - receipt.sent_at, RECEIPT_TTL.num_seconds());
        let later = |by: Duration| Receipt::for_send(&LogEvent::chat("c", "hi", at + by), "k");
        assert!(later(RECEIPT_TTL - Duration::seconds(1)).is_held_by(receipt.expires_at));
        assert!(!later(RECEIPT_TTL).is_held_by(receipt.expires_at), "expired at the end of the window");
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
