//! The narrow interfaces the handlers need from the outside world. Each has an
//! in-memory implementation in [`crate::memory`], a DynamoDB / API Gateway / S3 one
//! in `chat-aws`, and an embedded one in the local stack.

use async_trait::async_trait;
pub use bytes::Bytes;
use std::collections::HashMap;

use chrono::{DateTime, Utc};

use crate::model::{Ban, Connection, EventKind, LogEvent, Session, SessionEnd};

/// A storage call failed; the caller decides whether to retry or report.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("stored record is malformed: {0}")]
    Malformed(String),
}

/// One page of a paginated listing; `next` is the opaque token for the following page.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

/// What [`ConnectionStore::subscribe`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subscribed {
    /// A new membership: the caller announces the join.
    New,
    /// The connection was subscribed already: nothing changed, nothing to announce.
    Already,
    /// The connection holds `max_rooms` rooms already; nothing changed.
    Full,
    /// The connection's row is gone (it disconnected or was pruned); nothing changed.
    NotConnected,
}

impl Subscribed {
    /// The rule every store applies to the connection's `row` when it
    /// subscribes to `room`: the rooms the row lists afterwards, or why nothing
    /// changes. A room already listed is [`Subscribed::Already`] even at the limit.
    ///
    /// ```
    /// use chat_core::{Connection, Subscribed};
    /// let row = Connection::new("c", "ip", chrono::Utc::now()).in_room("a");
    /// assert_eq!(Subscribed::rooms_after(Some(&row), "b", 2), Ok(vec!["a".into(), "b".into()]));
    /// assert_eq!(Subscribed::rooms_after(Some(&row), "b", 1), Err(Subscribed::Full));
    /// assert_eq!(Subscribed::rooms_after(Some(&row), "a", 1), Err(Subscribed::Already));
    /// assert_eq!(Subscribed::rooms_after(None, "a", 1), Err(Subscribed::NotConnected));
    /// ```
    pub fn rooms_after(row: Option<&Connection>, room: &str, max_rooms: usize) -> Result<Vec<String>, Subscribed> {
        let row = row.ok_or(Subscribed::NotConnected)?;
        if row.is_subscribed_to(room) {
            return Err(Subscribed::Already);
        }
        let mut rooms = row.rooms();
        if rooms.len() >= max_rooms {
            return Err(Subscribed::Full);
        }
        rooms.push(room.to_owned());
        Ok(rooms)
    }
}

/// ActiveConnections and the Memberships they hear rooms through.
///
/// A connection row lists every room it is subscribed to (`rooms`); each of
/// those is also a membership, keyed `(room, connection_id)`, which is what a
/// room's listing reads — consistently, so a line sent right after a subscribe
/// reaches the new member. A membership is marked with its leave before it
/// is removed ([`mark_leaving`](ConnectionStore::mark_leaving)), so each join
/// has exactly one leave however many callers race to end a connection, and
/// whatever cuts one short. A subscribe's membership keeps its join's id and
/// time ([`Connection::join`]): it is written before the join is logged, so
/// whoever ends it in between logs that join (by id, once) before the leave
/// ([`crate::handlers::leave_room`]).
#[async_trait]
pub trait ConnectionStore: Send + Sync {
    /// Writes the connection's row and a membership in each of its [`Connection::rooms`].
    async fn put(&self, connection: &Connection) -> Result<(), StoreError>;
    /// The row of one connection, read consistently: how a handler learns its
    /// sender's rooms (API Gateway repeats neither the query string nor the room).
    async fn get(&self, connection_id: &str) -> Result<Option<Connection>, StoreError>;
    /// Deletes the row and returns it as it was (its rooms, to leave); `None`
    /// when there was none: disconnects repeat and race with pruning. The
    /// memberships stay until [`unsubscribe`](Self::unsubscribe)d.
    async fn delete(&self, connection_id: &str) -> Result<Option<Connection>, StoreError>;
    /// Adds `room` to the connection's rooms, unless it holds `max_rooms`
    /// already, and writes the membership: `connection`'s identity and
    /// delivery, and `join`'s id and time ([`Connection::with_join`]), the
    /// join the caller logs after a [`Subscribed::New`].
    ///
    /// Both writes are one atomic step ([`Subscribed::rooms_after`] decides
    /// it): a membership is never visible to a listing and then taken back.
    /// A departure racing the subscribe — it deletes the row, then ends the
    /// memberships the row listed — so finds either no membership or this
    /// one, and logs its join (if not yet) and one leave.
    async fn subscribe(
        &self,
        connection: &Connection,
        room: &str,
        max_rooms: usize,
        join: &LogEvent,
    ) -> Result<Subscribed, StoreError>;
    /// Marks the membership as ending with `leave`, unless it is marked
    /// already (then the first mark's leave stands): the membership as it is
    /// then, with its [`Connection::leaving`] and join; `None` when there is
    /// none. The first step of ending one ([`crate::handlers::leave_room`]):
    /// the leave is logged before the membership is removed, and a departure
    /// cut short in between leaves a marked membership that whoever ends it
    /// next finishes with the same leave.
    async fn mark_leaving(
        &self,
        connection_id: &str,
        room: &str,
        leave: &LogEvent,
    ) -> Result<Option<Connection>, StoreError>;
    /// Removes the membership and the room from the row (if the row is still
    /// there: never recreating a deleted row), once its leave is logged. The
    /// membership if this call removed it.
    async fn unsubscribe(&self, connection_id: &str, room: &str) -> Result<Option<Connection>, StoreError>;
    /// Removes the membership alone, for a departure (whose row is already
    /// deleted: updating it would be a write refused, and billed, per room).
    /// The membership if this call removed it, as [`unsubscribe`](Self::unsubscribe) gives it.
    async fn end_membership(&self, connection_id: &str, room: &str) -> Result<Option<Connection>, StoreError>;
    /// Up to `limit` of `room`'s members in id order, after the previous page's
    /// `next`, each as [`Connection::as_member_of`] `room`. A store may return
    /// fewer, even none with a `next` (DynamoDB stops at 1 MB, and leaves out
    /// rows past their `expires_at`).
    async fn list(&self, room: &str, after: Option<String>, limit: usize) -> Result<Page<Connection>, StoreError>;
    /// How many members `room` has (those `list` gives).
    async fn count(&self, room: &str) -> Result<usize, StoreError>;
}

/// Connections per page when a caller wants them all.
pub const LIST_PAGE: usize = 1000;

/// Collects every page of [`ConnectionStore::list`] for `room`.
pub async fn list_all_connections(store: &dyn ConnectionStore, room: &str) -> Result<Vec<Connection>, StoreError> {
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let page = store.list(room, after, LIST_PAGE).await?;
        all.extend(page.items);
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(all),
        }
    }
}

/// ReadCursors: how far each reader has read each room, to count what is unread.
/// A reader is an account (`userId`, so the cursor follows the user across
/// devices) or, for an anonymous connection, the connection ([`reader_of`]).
#[async_trait]
pub trait ReadCursors: Send + Sync {
    /// Every room's cursor of `reader` (room → message id), read consistently.
    async fn cursors(&self, reader: &str) -> Result<HashMap<String, String>, StoreError>;
    /// Moves `reader`'s cursor in `room` to `message_id` if that is later than
    /// where it is (never back: two devices reading out of step keep the
    /// furthest). `true` if it moved. `expires_at` (epoch seconds) lets the
    /// store forget a connection's cursor after the connection.
    async fn advance(
        &self,
        reader: &str,
        room: &str,
        message_id: &str,
        expires_at: Option<i64>,
    ) -> Result<bool, StoreError>;
}

/// Whose cursors a connection reads and moves: its account when verified, else itself.
pub fn reader_of(connection: &Connection) -> String {
    match connection.account() {
        Some(account) => account.to_owned(),
        None => format!("connection#{}", connection.connection_id),
    }
}

/// Unread chat lines, counted up to a cap.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Unread {
    pub count: usize,
    /// There are more than `count` (the count stopped at the cap).
    pub more: bool,
}

/// The most unread lines counted per room ("99+" is shown from 100).
pub const UNREAD_CAP: usize = 100;

/// Events read per page while counting unread lines.
const UNREAD_PAGE: usize = 200;

/// Counts the chat lines of `room` after `after` that are not `own` (the
/// reader's own lines are read already), up to `cap`, reading the log forward a
/// page of [`UNREAD_PAGE`] events at a time (joins and leaves are read but not
/// counted). Stops at `cap` lines or after `max_pages` pages; either way `more`
/// says whether lines were left uncounted.
pub async fn count_unread(
    log: &dyn MessageLog,
    room: &str,
    after: LogCursor,
    own: impl Fn(&LogEvent) -> bool,
    cap: usize,
    max_pages: usize,
) -> Result<Unread, StoreError> {
    let mut unread = Unread::default();
    let mut cursor = after;
    for _ in 0..max_pages.max(1) {
        let page = log.read(&LogQuery { room: room.to_owned(), after: Some(cursor), limit: UNREAD_PAGE }).await?;
        for event in &page {
            if event.kind == EventKind::Chat && !own(event) {
                if unread.count == cap {
                    unread.more = true;
                    return Ok(unread);
                }
                unread.count += 1;
            }
        }
        match page.last() {
            Some(last) if page.len() == UNREAD_PAGE => cursor = LogCursor::MessageId(last.message_id.clone()),
            _ => return Ok(unread),
        }
    }
    // Pages left unread may hold more lines.
    unread.more = true;
    Ok(unread)
}

/// SessionHistory: one row per connection, completed when it ends.
#[async_trait]
pub trait SessionLog: Send + Sync {
    async fn open(&self, session: &Session) -> Result<(), StoreError>;
    /// Completes an open session and returns it as completed. `None` (not an
    /// error) when there is no open session for the id: exactly one caller
    /// completes a session, so repeated or racing disconnects stay harmless.
    async fn close(&self, end: &SessionEnd) -> Result<Option<Session>, StoreError>;
}

/// Which slice of one room's log to read, oldest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogQuery {
    pub room: String,
    /// Only events after this point; `None` means the newest `limit` events.
    pub after: Option<LogCursor>,
    pub limit: usize,
}

impl LogQuery {
    /// Applies the query to events sorted by id; for logs that read everything anyway.
    pub fn select(&self, sorted: &[LogEvent]) -> Vec<LogEvent> {
        let in_room = sorted.iter().filter(|e| e.room == self.room);
        match &self.after {
            Some(cursor) => in_room.filter(|e| cursor.is_before(e)).take(self.limit).cloned().collect(),
            None => {
                let mut newest: Vec<LogEvent> = in_room.rev().take(self.limit).cloned().collect();
                newest.reverse();
                newest
            }
        }
    }
}

/// A position in the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogCursor {
    /// Strictly after the event with this id (UUIDv7 ids sort by time).
    MessageId(String),
    /// Strictly after this time.
    Time(DateTime<Utc>),
}

impl LogCursor {
    /// Whether `event` lies after this position.
    pub fn is_before(&self, event: &LogEvent) -> bool {
        match self {
            LogCursor::MessageId(id) => event.message_id.as_str() > id.as_str(),
            LogCursor::Time(at) => event.timestamp > *at,
        }
    }

    /// A message id below every event this cursor selects, for stores that can
    /// only range over the id (a DynamoDB key condition): a message id is made a
    /// moment after the request time its event carries, and hosts' clocks differ,
    /// so the bound starts [`ID_CLOCK_SLACK`] earlier and the time is then filtered.
    pub fn id_floor(&self) -> String {
        match self {
            LogCursor::MessageId(id) => id.clone(),
            LogCursor::Time(at) => id_floor_at(*at - ID_CLOCK_SLACK),
        }
    }
}

/// The smallest message id (UUIDv7) made at or after `at`'s millisecond.
pub fn id_floor_at(at: DateTime<Utc>) -> String {
    let millis = at.timestamp_millis().max(0) as u64;
    uuid::Builder::from_unix_timestamp_millis(millis, &[0; 10]).into_uuid().to_string()
}

/// How far apart an event's id time and its `timestamp` may be (see [`LogCursor::id_floor`]).
pub const ID_CLOCK_SLACK: chrono::Duration = chrono::Duration::seconds(60);

/// MessageHistory: the append-only event log.
#[async_trait]
pub trait MessageLog: Send + Sync {
    /// Appends `event` unless its id is already logged, so re-publishing is a
    /// no-op. `true` if the event is new.
    async fn append(&self, event: &LogEvent) -> Result<bool, StoreError>;
    /// Appends `event` unless its sender already sent `client_message_id` to its
    /// room within the resend window, atomically with a receipt for the send
    /// ([`Receipt::for_send`](crate::model::Receipt::for_send): keyed by the
    /// event's room, speaker and client message id, expiring
    /// [`RECEIPT_TTL`](crate::model::RECEIPT_TTL) after the event's time; an
    /// expired receipt is ignored, then replaced). Returns the id the line is
    /// stored under: `event`'s, or the earlier line's.
    async fn append_once(&self, event: &LogEvent, client_message_id: &str) -> Result<String, StoreError>;
    async fn read(&self, query: &LogQuery) -> Result<Vec<LogEvent>, StoreError>;
    /// The event with this id (read consistently: a line just sent can be
    /// deleted at once); `None` when there is none. Receipts are not events.
    async fn get(&self, message_id: &str) -> Result<Option<LogEvent>, StoreError>;
    /// Toggles `reaction`'s emoji ([`LogEvent::reaction`]) on its target for
    /// its reactor ([`reactor_of`](crate::reaction::reactor_of)) and appends
    /// it, deciding `on` and the line's `counts` ([`decided`](crate::reaction::decided))
    /// atomically with the append: two racing toggles by one reactor are one on
    /// and one off, and each event's counts are the line's after it. With
    /// `client_message_id`, a resend (as [`append_once`](Self::append_once)
    /// tells it) toggles nothing and returns the first toggle's event.
    /// Whether line `id` of `room` is deleted: its tombstone receipt
    /// ([`Receipt::tombstone_key`](crate::model::Receipt::tombstone_key)) is
    /// stored. One consistent read.
    async fn deleted(&self, room: &str, id: &str) -> Result<bool, StoreError>;
    async fn toggle_reaction(
        &self,
        reaction: &LogEvent,
        client_message_id: Option<&str>,
    ) -> Result<LogEvent, StoreError>;
}

/// Bans: who may not hear a room, until when. Read at `$connect` (the home
/// room and the token's rooms) and on `subscribe`; written by moderators.
#[async_trait]
pub trait Bans: Send + Sync {
    /// Stores `ban`, replacing an earlier ban of the same user from the same room.
    async fn ban(&self, ban: &Ban) -> Result<(), StoreError>;
    /// Lifts `user`'s ban from `room`; `true` if there was one (ended or not).
    async fn unban(&self, room: &str, user: &str) -> Result<bool, StoreError>;
    /// `user`'s ban from `room` if it holds at `now` (a ban past its end, not
    /// yet deleted by the TTL, is none).
    async fn active(&self, room: &str, user: &str, now: DateTime<Utc>) -> Result<Option<Ban>, StoreError>;
}

/// Why a post to a socket failed, as the @connections API reports it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PostError {
    /// 410: the socket is closed; the connection row is stale.
    #[error("connection is gone")]
    Gone,
    /// 429: retry later.
    #[error("throttled")]
    Throttled,
    /// 413: the frame is over 128 KiB; retrying cannot help.
    #[error("payload too large")]
    PayloadTooLarge,
    /// 403 and anything else, possibly transient (5xx, network).
    #[error("post failed: {0}")]
    Other(String),
}

/// How one post ended, in the words operators' metrics use: `ok`, `gone`,
/// `throttled` or `failed`.
pub fn post_outcome(result: &Result<(), PostError>) -> &'static str {
    match result {
        Ok(()) => "ok",
        Err(PostError::Gone) => "gone",
        Err(PostError::Throttled) => "throttled",
        Err(PostError::PayloadTooLarge | PostError::Other(_)) => "failed",
    }
}

/// The @connections management API, reduced to what the product does with it.
#[async_trait]
pub trait SocketPoster: Send + Sync {
    /// `frame` is shared by every recipient of a broadcast: cloning it is cheap.
    async fn post(&self, connection_id: &str, frame: &Bytes) -> Result<(), PostError>;

    /// Makes each post of `posts` (a connection id and its frame) once, without
    /// retries: one answer per post, in the same order. By default one
    /// [`post`](Self::post) each, at most `max_in_flight` at a time (API Gateway
    /// has no bulk call); a poster that holds the sockets itself answers them
    /// all in one pass, with no future per post.
    async fn post_each(&self, posts: &[(&str, &Bytes)], max_in_flight: usize) -> Vec<Result<(), PostError>> {
        let mut answers = vec![Ok(()); posts.len()];
        let tasks = posts.iter().enumerate().map(|(i, &(id, frame))| async move { (i, self.post(id, frame).await) });
        crate::bounded::for_each_bounded(tasks, max_in_flight, |(i, answer)| answers[i] = answer).await;
        answers
    }

    /// Closes the socket (DeleteConnection): its `$disconnect` follows, as
    /// when the client leaves. [`PostError::Gone`] when it is closed already.
    async fn close(&self, connection_id: &str) -> Result<(), PostError>;
}

/// Where batches of the log are archived (S3 when deployed).
#[async_trait]
pub trait Archive: Send + Sync {
    /// Writes `body` under `key`, replacing what was there (retries overwrite).
    async fn put(&self, key: &str, body: Vec<u8>) -> Result<(), StoreError>;
}

/// The current time, injectable so tests are deterministic.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

/// The real clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::parse_iso;

    #[test]
    fn a_time_cursor_floors_ids_a_minute_early_and_an_id_cursor_is_itself() {
        let at = parse_iso("2026-11-24T10:00:00Z").unwrap();
        let floor = LogCursor::Time(at).id_floor();
        let id_at = |t: DateTime<Utc>| {
            uuid::Uuid::new_v7(uuid::Timestamp::from_unix(uuid::NoContext, t.timestamp() as u64, 0)).to_string()
        };
        assert!(floor < id_at(at - ID_CLOCK_SLACK + chrono::Duration::milliseconds(1)));
        assert!(floor > id_at(at - ID_CLOCK_SLACK - chrono::Duration::seconds(1)));
        let id = "019ab5e1-3c44-7d2a-9f1e-2b7c1d0e4a55";
        assert_eq!(LogCursor::MessageId(id.into()).id_floor(), id);
    }
}
