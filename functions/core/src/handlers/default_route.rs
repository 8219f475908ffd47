use chrono::{DateTime, Utc};

use super::lifecycle::folded_history;
use super::{
    Ending, HandlerError, MessageRequest, RouteSettings, heard_room, leave_room, not_registered_frame, sender,
    within_rate,
};
use crate::bounded::for_each_bounded;
use crate::coalesce::coalesce;
use crate::model::{Connection, LogEvent};
use crate::ports::{
    Bans, Bytes, ConnectionStore, LogCursor, LogQuery, MessageLog, PostError, ReadCursors, SocketPoster, Subscribed,
    UNREAD_CAP, count_unread, id_floor_at, reader_of,
};
use crate::protocol::{
    Command, PRESENCE_PAGE, RoomSummary, event_frame, forbidden_frame, history_end_frame, invalid_request_frame,
    last_room_frame, parse_command, presence_frame, protocol_error_frame, read_frame, rooms_frame, subscribed_frame,
    too_many_rooms_frame, unsubscribed_frame,
};
use crate::rate::Budget;
use crate::rights::{Right, Rights, RoomAccess};

/// Posts one reply may have in flight at once: a `history` answer to a
/// connection that does not coalesce is up to 200 frames, which one after
/// another would hold the invocation for 200 post round trips.
pub const REPLY_POSTS_IN_FLIGHT: usize = 32;

/// Rooms of one `rooms` answer counted at once (each is two Queries).
const ROOMS_COUNTED_AT_ONCE: usize = 16;

/// Log pages (of 200 events) read per room to count its unread lines: past
/// 800 events since the cursor, a room is "99+" whatever is in them.
const UNREAD_PAGES: usize = 4;

/// `$default`: everything API Gateway could not route to `sendmessage`. The
/// actions that answer the sender alone are served here (this function already
/// may post to the sender): `history`, `who`, `subscribe`, `unsubscribe`,
/// `rooms`, `read`, moderation (`delete`, `kick`, `ban`, `unban`, in
/// [`super::moderation`]) and a line's life (`edit`, `react`, `reply`, in [`super::lifecycle`]). Anything else gets the seed's "Invalid request" error.
///
/// Every action reads the sender's row first (one consistent GetItem: its
/// rooms, identity and whether it coalesces), so what a connection may read or
/// change comes from the connection, never from the frame; an unknown or
/// malformed request is one post and no read. Each action's own cost is on its method.
/// `history` and `who` first take a token from the user's reads bucket
/// ([`crate::rate`]); past it: `Rate limited` with `retryAfterMs`, one post, no read.
pub struct DefaultRoute<'a> {
    /// The room limit, and the default rights (which tell private rooms).
    pub settings: &'a RouteSettings,
    pub connections: &'a dyn ConnectionStore,
    pub cursors: &'a dyn ReadCursors,
    pub log: &'a dyn MessageLog,
    pub poster: &'a dyn SocketPoster,
    /// Who may not hear which room: checked on subscribe, written by moderators.
    pub bans: &'a dyn Bans,
}

impl DefaultRoute<'_> {
    pub async fn handle(&self, request: &MessageRequest) -> Result<(), HandlerError> {
        let connection_id = request.connection_id.as_str();
        let command = match parse_command(&request.body) {
            Ok(Command::SendMessage { .. } | Command::Ping | Command::Unknown) => {
                tracing::info!(connection_id, "unrecognized request");
                return self.reply(connection_id, invalid_request_frame()).await;
            }
            Ok(Command::Typing { room }) => return self.typing(request, room.as_deref()).await,
            Ok(command) => command,
            Err(refusal) => {
                tracing::info!(connection_id, %refusal, "malformed request");
                return self.reply(connection_id, protocol_error_frame(&refusal)).await;
            }
        };
        // The reads that cost a Query take a token before any read (the sender's row included).
        // Edits, reactions and replies write: they take a token from the send bucket, as a line does.
        let metered = match &command {
            Command::History { .. } => Some((Budget::Reads, "history", None)),
            Command::Who { .. } => Some((Budget::Reads, "who", None)),
            Command::Edit { .. } => Some((Budget::Sends, "edit", None)),
            Command::React { client_message_id, .. } => Some((Budget::Sends, "react", client_message_id.as_deref())),
            Command::Reply { client_message_id, .. } => Some((Budget::Sends, "reply", client_message_id.as_deref())),
            _ => None,
        };
        if let Some((budget, action, client_message_id)) = metered
            && let Err(refusal) = within_rate(request, &self.settings.rate, budget, action, client_message_id)
        {
            return self.reply(connection_id, refusal).await;
        }
        let Some(asker) = sender(connection_id, self.connections).await? else {
            return self.reply(connection_id, not_registered_frame()).await;
        };
        let (rights, at) = (&request.rights, request.received_at);
        match command {
            Command::History { limit, since, room, fold } => match self.heard(&asker, room, rights).await? {
                Some(room) if fold => folded_history(&asker, &room, limit, since, self.log, self.poster).await,
                Some(room) => history(&asker, &room, limit, since, self.log, self.poster).await,
                None => Ok(()),
            },
            Command::Who { after, room } => match self.heard(&asker, room, rights).await? {
                Some(room) => self.who(&asker, &room, after).await,
                None => Ok(()),
            },
            Command::Subscribe { room, since, limit } => match rights.check(&room, Right::Read) {
                Ok(()) if self.refused_as_banned(&asker, &room, at).await? => Ok(()),
                Ok(()) => self.subscribe(&asker, &room, since, limit, at, rights).await,
                Err(refusal) => {
                    tracing::info!(connection_id, room, "subscribe refused: no read right");
                    self.reply(connection_id, forbidden_frame(&refusal)).await
                }
            },
            Command::Unsubscribe { room } => self.unsubscribe(&asker, &room, at).await,
            Command::Rooms => self.rooms(&asker, rights).await,
            Command::Read { room, id } => self.read(&asker, &room, &id, rights).await,
            Command::Delete { id } => self.delete(&asker, &id, rights, at).await,
            Command::Kick { room, user } => self.kick(&asker, &room, &user, rights, at).await,
            Command::Ban { room, user, seconds, reason } => {
                self.ban(&asker, &room, &user, seconds, reason.as_deref(), rights, at).await
            }
            Command::Unban { room, user } => self.unban(&asker, &room, &user, rights, at).await,
            Command::Edit { id, text } => self.edit(request, &asker, &id, &text).await,
            Command::React { id, emoji, client_message_id } => {
                self.react(request, &asker, &id, &emoji, client_message_id.as_deref()).await
            }
            Command::Reply { to, text, client_message_id } => {
                self.reply_to(request, &asker, &to, &text, client_message_id.as_deref()).await
            }
            Command::SendMessage { .. } | Command::Ping | Command::Unknown | Command::Typing { .. } => {
                unreachable!("answered above")
            }
        }
    }

    /// The room a frame means (`requested`, or the home room), if the asker
    /// may read it and hears it; else tells the asker which room it may not
    /// read or does not hear.
    async fn heard(
        &self,
        asker: &Connection,
        requested: Option<String>,
        rights: &Rights,
    ) -> Result<Option<String>, HandlerError> {
        match heard_room(asker, requested.as_deref(), rights, Right::Read) {
            Ok(room) => Ok(Some(room.to_owned())),
            Err(refusal) => {
                self.reply(&asker.connection_id, refusal).await?;
                Ok(None)
            }
        }
    }

    /// Sends `asker` one page of who is in `room`, with `next` when there is more.
    ///
    /// Cost per call: one consistent Query of up to [`PRESENCE_PAGE`]
    /// memberships and one @connections post. Only the first page (no `next`
    /// cursor) also counts the room — a `Select=COUNT` Query that reads every
    /// membership of the room, paginated per 1 MB — and carries `count`: a
    /// client following `next` through a room of N does N / 100 page reads, not
    /// N / 100 recounts of N rows.
    async fn who(&self, asker: &Connection, room: &str, after: Option<String>) -> Result<(), HandlerError> {
        let connection_id = asker.connection_id.as_str();
        let count = match after {
            None => Some(self.connections.count(room).await?),
            Some(_) => None,
        };
        let page = self.connections.list(room, after, PRESENCE_PAGE).await?;
        tracing::info!(connection_id, room, count, members = page.items.len(), "presence served");
        let frame =
            presence_frame(room, count, &page.items, connection_id, asker.user_id.as_deref(), page.next.as_deref());
        self.reply(connection_id, frame).await
    }

    /// Subscribes `asker` to `room`: a new membership is announced with a join
    /// in `room` (one, however often the asker subscribes), then the asker gets
    /// `subscribed` with the room's member count and, with `since`, the gap
    /// since then as [`history`] answers it.
    ///
    /// The join is made first and its id and time kept in the membership, so
    /// a departure ending the membership before the join is logged logs the
    /// same join before its leave ([`super::leave_room`]); the append here is
    /// then a no-op.
    ///
    /// Cost per call: the membership write and the row's conditional update in
    /// one transaction (refused for a full or departed row: plus a read), a join append when
    /// new, a `Select=COUNT` Query of the room's memberships, one post; with
    /// `since`, what [`history`] costs.
    async fn subscribe(
        &self,
        asker: &Connection,
        room: &str,
        since: Option<LogCursor>,
        limit: usize,
        at: DateTime<Utc>,
        rights: &Rights,
    ) -> Result<(), HandlerError> {
        let connection_id = asker.connection_id.as_str();
        let join = LogEvent::join(connection_id, at).in_room(room).by(asker.identity().as_ref());
        match self.connections.subscribe(asker, room, self.settings.limits.max_rooms, &join).await? {
            Subscribed::NotConnected => return self.reply(connection_id, not_registered_frame()).await,
            Subscribed::Full => {
                tracing::info!(
                    connection_id,
                    room,
                    max_rooms = self.settings.limits.max_rooms,
                    "subscribe refused: too many rooms"
                );
                return self.reply(connection_id, too_many_rooms_frame(room, self.settings.limits.max_rooms)).await;
            }
            Subscribed::New => {
                self.log.append(&join).await?;
                tracing::info!(connection_id, room, "subscribed");
            }
            Subscribed::Already => tracing::info!(connection_id, room, "subscribed already"),
        }
        let count = self.connections.count(room).await?;
        let access = RoomAccess::of(rights, &self.settings.default_rights, room);
        self.reply(connection_id, subscribed_frame(room, count, access)).await?;
        match since {
            Some(since) => history(asker, room, limit, Some(since), self.log, self.poster).await,
            None => Ok(()),
        }
    }

    /// Ends `asker`'s membership of `room`, announcing a leave if there was one;
    /// answers `unsubscribed` either way (unsubscribing twice is harmless). The
    /// connection's only room is refused: a connection that hears nothing has
    /// no use, and its row could not say which rooms it left (a DynamoDB set
    /// cannot be empty; a row without one is a row from before channels).
    ///
    /// Cost per call: what [`super::leave_room`] costs (its removal: the
    /// membership's conditional delete, after a consistent GetItem of it on
    /// DynamoDB, and the row's update), or just its mark when there was no
    /// membership; one post.
    async fn unsubscribe(&self, asker: &Connection, room: &str, at: DateTime<Utc>) -> Result<(), HandlerError> {
        let connection_id = asker.connection_id.as_str();
        if asker.rooms() == [room] {
            tracing::info!(connection_id, room, "unsubscribe from the last room refused");
            return self.reply(connection_id, last_room_frame(room)).await;
        }
        let leave = LogEvent::leave(connection_id, at).in_room(room).by(asker.identity().as_ref());
        if leave_room(self.connections, self.log, connection_id, room, leave, Ending::Unsubscribe).await?.is_some() {
            tracing::info!(connection_id, room, "unsubscribed");
        }
        self.reply(connection_id, unsubscribed_frame(room)).await
    }

    /// Answers the asker's rooms — the home room first, then by name — each with
    /// its member count and the others' chat lines after the reader's cursor (the
    /// account's, so it follows the user across devices; an anonymous
    /// connection's own), up to [`UNREAD_CAP`]. A room never read counts the
    /// lines since the connection connected (since the start of that second:
    /// stored times are whole seconds).
    ///
    /// Cost per call: one consistent Query of the reader's cursors, and per room
    /// (at most the room limit, [`ROOMS_COUNTED_AT_ONCE`] at a time) a
    /// `Select=COUNT` Query of its memberships and a forward Query of its log
    /// from the cursor (200 events a page, at most [`UNREAD_PAGES`] pages); one post.
    async fn rooms(&self, asker: &Connection, rights: &Rights) -> Result<(), HandlerError> {
        let connection_id = asker.connection_id.as_str();
        let cursors = self.cursors.cursors(&reader_of(asker)).await?;
        let mut rooms = asker.rooms();
        rooms.sort_by(|a, b| (a != &asker.room, a).cmp(&(b != &asker.room, b)));
        let mut summaries: Vec<Option<Result<RoomSummary, HandlerError>>> = (0..rooms.len()).map(|_| None).collect();
        // The reader's own lines: its account's, or this connection's.
        let own = |event: &LogEvent| match asker.account() {
            Some(account) => event.user_id.as_deref() == Some(account),
            None => event.connection_id == asker.connection_id,
        };
        let counts = rooms.iter().enumerate().map(|(i, room)| {
            let after = match cursors.get(room) {
                Some(id) => LogCursor::MessageId(id.clone()),
                None => LogCursor::MessageId(id_floor_at(asker.connected_at)),
            };
            async move {
                let summary = async {
                    let count = self.connections.count(room).await?;
                    let unread = count_unread(self.log, room, after, own, UNREAD_CAP, UNREAD_PAGES).await?;
                    let access = RoomAccess::of(rights, &self.settings.default_rights, room);
                    Ok(RoomSummary { room: room.clone(), count, unread, access })
                };
                (i, summary.await)
            }
        });
        for_each_bounded(counts, ROOMS_COUNTED_AT_ONCE, |(i, summary)| summaries[i] = Some(summary)).await;
        let summaries = summaries.into_iter().flatten().collect::<Result<Vec<_>, HandlerError>>()?;
        tracing::info!(connection_id, rooms = summaries.len(), "rooms served");
        self.reply(connection_id, rooms_frame(&summaries)).await
    }

    /// Moves the reader's cursor in `room` to `id` (never back) and answers
    /// where it now is.
    ///
    /// Cost per call: one conditional UpdateItem, one post; when the cursor was
    /// already further (another device read on), one Query to report it.
    async fn read(&self, asker: &Connection, room: &str, id: &str, rights: &Rights) -> Result<(), HandlerError> {
        let connection_id = asker.connection_id.as_str();
        let Some(room) = self.heard(asker, Some(room.to_owned()), rights).await? else { return Ok(()) };
        let reader = reader_of(asker);
        // An anonymous connection's cursor is its own: forgotten after it.
        let expires_at = asker.account().is_none().then_some(asker.expires_at);
        let cursor = if self.cursors.advance(&reader, &room, id, expires_at).await? {
            id.to_owned()
        } else {
            self.cursors.cursors(&reader).await?.remove(&room).unwrap_or_else(|| id.to_owned())
        };
        tracing::info!(connection_id, room, moved = cursor == id, "read cursor set");
        self.reply(connection_id, read_frame(&room, &cursor)).await
    }

    pub(super) async fn reply(&self, connection_id: &str, frame: Vec<u8>) -> Result<(), HandlerError> {
        reply_to(connection_id, &Bytes::from(frame), self.poster).await
    }
}

/// Sends `asker` past events of `room` in log order, each as the frame the
/// broadcaster sent originally (clients dedupe replays by `id`), then a
/// `history` frame saying how many came and whether there are more.
///
/// Cost per call: one Query of up to `limit + 1` events (DynamoDB pages at
/// 1 MB, so up to ~7 for 200 lines of 32 KB), and @connections posts:
/// - a coalescing connection (`batch`): the event frames and the closing
///   `history` frame packed by the broadcaster's [`coalesce`] into `{"events":[…]}`
///   frames of at most 32 KB — 200 short lines are one or two posts; only a
///   line too large to share a frame is posted alone;
/// - any other connection: one post per event plus the closing frame (`limit + 1`
///   at most), exactly the frames the seed's clients read.
///
/// Either way every frame but the last is posted concurrently
/// ([`REPLY_POSTS_IN_FLIGHT`] at a time), and the last — which carries the closing
/// `history` frame — only after all of them: API Gateway may deliver concurrent
/// posts out of order (clients order by `id`), but a client that reads the
/// closing frame as "this page is complete" (the web page's catch-up) must see it last.
pub async fn history(
    asker: &Connection,
    room: &str,
    limit: usize,
    since: Option<LogCursor>,
    log: &dyn MessageLog,
    poster: &dyn SocketPoster,
) -> Result<(), HandlerError> {
    let connection_id = asker.connection_id.as_str();
    let (events, more) = history_page(room, limit, since, log).await?;
    let mut frames: Vec<Bytes> = events.iter().map(|event| Bytes::from(event_frame(event))).collect();
    frames.push(Bytes::from(history_end_frame(room, events.len(), more)));
    if asker.batch {
        frames = coalesce(&frames).into_iter().map(|frame| frame.bytes).collect();
    }
    tracing::info!(connection_id, room, count = events.len(), more, posts = frames.len(), "history served");
    reply_with(connection_id, &frames, poster).await
}

/// One page of `room`'s log as `history` answers it: the newest `limit`
/// events, or the oldest `limit` after `since`; and whether there are more
/// (one event past the limit is read to tell).
pub(super) async fn history_page(
    room: &str,
    limit: usize,
    since: Option<LogCursor>,
    log: &dyn MessageLog,
) -> Result<(Vec<LogEvent>, bool), HandlerError> {
    let forward = since.is_some();
    let query = LogQuery { room: room.to_owned(), after: since, limit: limit + 1 };
    let mut events = log.read(&query).await?;
    let more = events.len() > limit;
    if more {
        // Forward pages keep the oldest; the newest-N answer keeps the newest.
        if forward {
            events.truncate(limit)
        } else {
            events.remove(0);
        }
    }
    Ok((events, more))
}

/// Posts `frames` to one connection: all but the last concurrently, the last
/// after every other has been answered, so that it arrives last.
pub(super) async fn reply_with(
    connection_id: &str,
    frames: &[Bytes],
    poster: &dyn SocketPoster,
) -> Result<(), HandlerError> {
    let Some((last, rest)) = frames.split_last() else { return Ok(()) };
    let posts: Vec<(&str, &Bytes)> = rest.iter().map(|frame| (connection_id, frame)).collect();
    for answer in poster.post_each(&posts, REPLY_POSTS_IN_FLIGHT).await {
        replied(answer)?;
    }
    reply_to(connection_id, last, poster).await
}

async fn reply_to(connection_id: &str, frame: &Bytes, poster: &dyn SocketPoster) -> Result<(), HandlerError> {
    replied(poster.post(connection_id, frame).await)
}

/// A reply's post answer: a sender that left meanwhile is nobody to tell, not an error.
fn replied(answer: Result<(), PostError>) -> Result<(), HandlerError> {
    match answer {
        Ok(()) | Err(PostError::Gone) => Ok(()),
        Err(error) => Err(error.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coalesce::COALESCED_FRAME_BYTES;
    use crate::handlers::testing::{Ports, at};
    use crate::handlers::{DisconnectRequest, depart, disconnect};
    use crate::memory::{MemoryBans, MemoryConnections, MemoryCursors, MemoryLog, RecordingPoster};
    use crate::model::{Connection, EventKind, Identity, LogEvent, SessionEnd};
    use crate::ports::{Page, StoreError};
    use crate::protocol::MAX_HISTORY_LIMIT;

    /// `connection_id` sends `body` on `$default` at 10:30, with a fresh set of cursors.
    async fn default_route(
        connection_id: &str,
        body: &str,
        connections: &dyn ConnectionStore,
        log: &dyn MessageLog,
        poster: &dyn SocketPoster,
    ) -> Result<(), HandlerError> {
        let cursors = MemoryCursors::default();
        let settings = RouteSettings::default();
        let bans = MemoryBans::default();
        let route = DefaultRoute { settings: &settings, connections, cursors: &cursors, log, poster, bans: &bans };
        let request = MessageRequest {
            connection_id: connection_id.into(),
            body: body.into(),
            received_at: at("2026-11-24T10:30:00Z"),
            rights: Rights::default(),
            account: None,
        };
        route.handle(&request).await
    }

    /// `c1` asks, from the lobby; `o1` and `o2` are in room `ops`.
    async fn connections() -> MemoryConnections {
        let store = MemoryConnections::default();
        let at = at("2026-11-24T09:00:00Z");
        store.put(&Connection::new("c1", "ip", at)).await.unwrap();
        for id in ["o1", "o2"] {
            store.put(&Connection::new(id, "ip", at).in_room("ops")).await.unwrap();
        }
        store
    }

    async fn ask(body: &str, log: &MemoryLog) -> RecordingPoster {
        let poster = RecordingPoster::default();
        default_route("c1", body, &connections().await, log, &poster).await.unwrap();
        poster
    }

    #[tokio::test]
    async fn unknown_actions_get_the_seed_error() {
        let (connections, log, poster) = (connections().await, MemoryLog::default(), RecordingPoster::default());
        for body in ["not json", r#"{"action":"dance"}"#, "{}"] {
            default_route("c1", body, &connections, &log, &poster).await.unwrap();
        }
        let frames = poster.frames_to("c1");
        assert_eq!(frames.len(), 3);
        for frame in frames {
            assert_eq!(
                frame,
                serde_json::json!({"error":"Invalid request","message":"The requested action is not recognized. Please check your WebSocket commands."})
            );
        }
    }

    /// `n` lobby lines `m0..`, each followed by a line in `ops` the lobby must never see.
    async fn log_of(n: usize) -> MemoryLog {
        let log = MemoryLog::default();
        for i in 0..n {
            log.append(&LogEvent::chat("c0", &format!("m{i}"), at("2026-11-24T10:00:00Z"))).await.unwrap();
            log.append(&LogEvent::chat("o1", &format!("secret{i}"), at("2026-11-24T10:00:00Z")).in_room("ops"))
                .await
                .unwrap();
        }
        log
    }

    fn texts(poster: &RecordingPoster) -> Vec<String> {
        poster.frames_to("c1").iter().filter_map(|f| f["text"].as_str().map(str::to_owned)).collect()
    }

    fn end_of(poster: &RecordingPoster) -> serde_json::Value {
        let frames = poster.frames_to("c1");
        let last = frames.last().expect("an answer").clone();
        assert_eq!(last["kind"], "history", "history ends with its summary frame");
        last
    }

    #[tokio::test]
    async fn history_sends_the_newest_events_of_the_room_in_order() {
        let poster = ask(r#"{"action":"history","limit":3}"#, &log_of(5).await).await;
        assert_eq!(texts(&poster), ["m2", "m3", "m4"]);
        assert_eq!(end_of(&poster), serde_json::json!({"kind":"history","room":"lobby","count":3,"more":true}));
        let all = ask(r#"{"action":"history","limit":5}"#, &log_of(5).await).await;
        assert_eq!(end_of(&all)["more"], false);
    }

    #[tokio::test]
    async fn history_pages_forward_from_a_message_id() {
        let log = log_of(5).await;
        let since = log.events()[2].message_id.clone(); // m1
        let poster = ask(&format!(r#"{{"action":"history","limit":2,"since":"{since}"}}"#), &log).await;
        assert_eq!(texts(&poster), ["m2", "m3"]);
        assert_eq!(end_of(&poster)["more"], true);
        let last = log.events()[6].message_id.clone(); // m3
        let rest = ask(&format!(r#"{{"action":"history","limit":2,"since":"{last}"}}"#), &log).await;
        assert_eq!(texts(&rest), ["m4"]);
        assert_eq!(end_of(&rest)["more"], false);
    }

    #[tokio::test]
    async fn another_rooms_id_as_since_reads_only_this_room() {
        let log = log_of(3).await;
        let theirs = log.events()[1].message_id.clone(); // secret0, in ops
        let poster = ask(&format!(r#"{{"action":"history","since":"{theirs}"}}"#), &log).await;
        assert_eq!(texts(&poster), ["m1", "m2"]);
    }

    #[tokio::test]
    async fn bad_history_arguments_get_a_clear_error() {
        let body = format!(r#"{{"action":"history","limit":{}}}"#, MAX_HISTORY_LIMIT + 1);
        let frames = ask(&body, &log_of(1).await).await.frames_to("c1");
        assert_eq!(frames[0]["error"], "Invalid message");
        assert!(frames[0]["message"].as_str().unwrap().contains("limit"));
    }

    #[tokio::test]
    async fn who_lists_the_senders_room_in_pages() {
        let poster = ask(r#"{"action":"who"}"#, &MemoryLog::default()).await;
        let frame = &poster.frames_to("c1")[0];
        assert_eq!(frame["kind"], "presence");
        assert_eq!(frame["room"], "lobby");
        assert_eq!(frame["count"], 1);
        assert_eq!(frame["members"], serde_json::json!([{"connectionId":"c1","connectedAt":"2026-11-24T09:00:00Z"}]));
        assert_eq!(frame["you"], "c1", "the asker learns its own connection id");

        let crowd = MemoryConnections::default();
        for i in 0..(PRESENCE_PAGE + 1) {
            crowd.put(&Connection::new(&format!("m{i:03}"), "ip", at("2026-11-24T09:00:00Z"))).await.unwrap();
        }
        let poster = RecordingPoster::default();
        default_route("m000", r#"{"action":"who"}"#, &crowd, &MemoryLog::default(), &poster).await.unwrap();
        let first = &poster.frames_to("m000")[0];
        assert_eq!(first["count"], PRESENCE_PAGE + 1);
        assert_eq!(first["members"].as_array().unwrap().len(), PRESENCE_PAGE);
        let next = first["next"].as_str().unwrap();
        let body = format!(r#"{{"action":"who","next":"{next}"}}"#);
        default_route("m000", &body, &crowd, &MemoryLog::default(), &poster).await.unwrap();
        let second = &poster.frames_to("m000")[1];
        assert_eq!(
            second["members"],
            serde_json::json!([{"connectionId":"m100","connectedAt":"2026-11-24T09:00:00Z"}])
        );
        assert!(second.get("next").is_none());
    }

    #[tokio::test]
    async fn who_counts_the_room_only_on_the_first_page() {
        let crowd = MemoryConnections::default();
        for i in 0..(2 * PRESENCE_PAGE + 1) {
            crowd.put(&Connection::new(&format!("m{i:03}"), "ip", at("2026-11-24T09:00:00Z"))).await.unwrap();
        }
        let poster = RecordingPoster::default();
        let mut body = r#"{"action":"who"}"#.to_owned();
        for page in 0..3 {
            default_route("m000", &body, &crowd, &MemoryLog::default(), &poster).await.unwrap();
            let frame = poster.frames_to("m000").pop().unwrap();
            assert_eq!(crowd.counts(), 1, "counted once, on the first page (page {page})");
            match page {
                0 => assert_eq!(frame["count"], 2 * PRESENCE_PAGE + 1),
                _ => assert!(frame.get("count").is_none(), "page {page} carries no count: {frame}"),
            }
            if let Some(next) = frame["next"].as_str() {
                body = format!(r#"{{"action":"who","next":"{next}"}}"#);
            }
        }
        assert_eq!(poster.delivered().len(), 3, "one post per page");
    }

    /// `c1` (in the lobby, coalescing or not) asks `history limit:200` of a
    /// lobby of 200 lines of about 400 bytes.
    async fn history_of_200(batch: bool, poster: &RecordingPoster) -> MemoryLog {
        let connections = MemoryConnections::default();
        connections.put(&Connection::new("c1", "ip", at("2026-11-24T09:00:00Z")).coalescing(batch)).await.unwrap();
        let log = MemoryLog::default();
        for i in 0..200 {
            let text = format!("line {i:03} {}", "x".repeat(300));
            log.append(&LogEvent::chat("c0", &text, at("2026-11-24T10:00:00Z"))).await.unwrap();
        }
        default_route("c1", r#"{"action":"history","limit":200}"#, &connections, &log, poster).await.unwrap();
        log
    }

    #[tokio::test]
    async fn history_to_a_coalescing_connection_is_a_few_frames_of_at_most_32_kb() {
        let poster = RecordingPoster::default();
        let log = history_of_200(true, &poster).await;
        let posts = poster.delivered();
        // 200 lines of ~650 bytes as frames: ~160 KB, so five frames of 32 KB.
        let bytes: usize = posts.iter().map(|(_, frame)| frame.len()).sum();
        assert!(posts.len() <= bytes / COALESCED_FRAME_BYTES + 1, "{} posts, {bytes} bytes", posts.len());
        assert!(posts.len() <= 5, "{} posts for 200 lines", posts.len());
        assert!(posts.iter().all(|(_, frame)| frame.len() <= COALESCED_FRAME_BYTES));
        let unpacked: Vec<serde_json::Value> = poster
            .frames_to("c1")
            .into_iter()
            .flat_map(|frame| frame["events"].as_array().expect("packed").clone())
            .collect();
        let (end, lines) = unpacked.split_last().unwrap();
        assert_eq!(*end, serde_json::json!({"kind":"history","room":"lobby","count":200,"more":false}));
        let ids: Vec<String> = log.events().into_iter().map(|e| e.message_id).collect();
        assert_eq!(lines.iter().map(|l| l["id"].as_str().unwrap()).collect::<Vec<_>>(), ids, "in log order");
    }

    #[tokio::test]
    async fn history_to_a_plain_connection_posts_each_line_concurrently_then_the_end() {
        let poster = RecordingPoster::with_latency(std::time::Duration::from_millis(2));
        let log = history_of_200(false, &poster).await;
        let mut frames = poster.frames_to("c1");
        assert_eq!(frames.len(), 201, "one frame per line, and the end");
        assert!(poster.max_in_flight() > 1, "posted concurrently, not one after another");
        assert!(poster.max_in_flight() <= REPLY_POSTS_IN_FLIGHT);
        let end = frames.pop().unwrap();
        assert_eq!(
            end,
            serde_json::json!({"kind":"history","room":"lobby","count":200,"more":false}),
            "the end comes last"
        );
        assert!(frames.iter().all(|f| f.get("events").is_none() && f["kind"] == "chat"), "the seed's frames, unpacked");
        let mut got: Vec<String> = frames.iter().map(|f| f["id"].as_str().unwrap().to_owned()).collect();
        got.sort();
        let ids: Vec<String> = log.events().into_iter().map(|e| e.message_id).collect();
        assert_eq!(got, ids, "every line once");
    }

    #[tokio::test]
    async fn who_tells_accounts_apart_and_the_asker_its_own() {
        let store = MemoryConnections::default();
        let at = at("2026-11-24T09:00:00Z");
        let (alice_a, alice_b) = (
            crate::model::Identity::verified("alice", "https://a.example|1"),
            crate::model::Identity::verified("alice", "https://b.example|1"),
        );
        store.put(&Connection::new("c1", "ip", at).of(Some(&alice_a))).await.unwrap();
        store.put(&Connection::new("c2", "ip", at).of(Some(&alice_b))).await.unwrap();
        let poster = RecordingPoster::default();
        default_route("c2", r#"{"action":"who"}"#, &store, &MemoryLog::default(), &poster).await.unwrap();
        let frame = &poster.frames_to("c2")[0];
        let ids: Vec<_> = frame["members"].as_array().unwrap().iter().map(|m| m["userId"].clone()).collect();
        assert_eq!(ids, [serde_json::json!("https://a.example|1"), serde_json::json!("https://b.example|1")]);
        assert_eq!((frame["you"].as_str(), frame["youUserId"].as_str()), (Some("c2"), Some("https://b.example|1")));
    }

    #[tokio::test]
    async fn garbage_who_fields_get_a_clear_error() {
        let frames = ask(r#"{"action":"who","next":{"$ne":null}}"#, &MemoryLog::default()).await.frames_to("c1");
        assert_eq!(frames[0]["error"], "Invalid message");
        assert!(frames[0]["message"].as_str().unwrap().contains("next"));
    }

    #[tokio::test]
    async fn an_unregistered_sender_is_told_so() {
        let poster = RecordingPoster::default();
        let none = MemoryConnections::default();
        default_route("c1", r#"{"action":"who"}"#, &none, &MemoryLog::default(), &poster).await.unwrap();
        assert_eq!(poster.frames_to("c1")[0]["error"], "Not connected");
    }

    #[tokio::test]
    async fn a_departed_sender_is_not_an_error() {
        let (log, poster) = (MemoryLog::default(), RecordingPoster::default());
        poster.mark_gone("c1");
        default_route("c1", "nonsense", &connections().await, &log, &poster).await.unwrap();
    }

    /// One connection's `$default` session against shared stores, at a clock the test moves.
    struct Session(Ports);

    impl std::ops::Deref for Session {
        type Target = Ports;
        fn deref(&self) -> &Ports {
            &self.0
        }
    }

    impl std::ops::DerefMut for Session {
        fn deref_mut(&mut self) -> &mut Ports {
            &mut self.0
        }
    }

    impl Session {
        /// `c1` (anonymous, home `lobby`, connected 09:00) and `o1` (in `ops`).
        async fn new() -> Self {
            let ports = Ports::default();
            let t = at("2026-11-24T09:00:00Z");
            ports.connections.put(&Connection::new("c1", "ip", t)).await.unwrap();
            ports.connections.put(&Connection::new("o1", "ip", t).in_room("ops")).await.unwrap();
            Self(ports)
        }

        async fn send(&self, from: &str, body: serde_json::Value) -> serde_json::Value {
            let frames = self.handle(from, body, "2026-11-24T10:30:00Z", Rights::default()).await;
            assert!(!frames.is_empty(), "every action is answered");
            frames[0].clone()
        }

        /// (kind, room) of every logged event.
        fn said(&self) -> Vec<(EventKind, String)> {
            self.log.events().iter().map(|e| (e.kind, e.room.clone())).collect()
        }

        async fn line(&self, room: &str, text: &str) -> String {
            let line = LogEvent::chat("o1", text, at("2026-11-24T10:00:00Z")).in_room(room);
            self.log.append(&line).await.unwrap();
            line.message_id
        }

        /// `n` lines in `room`, in order; their ids.
        async fn lines(&self, room: &str, n: usize) -> Vec<String> {
            let mut ids = Vec::new();
            for i in 0..n {
                ids.push(self.line(room, &format!("m{i}")).await);
            }
            ids
        }
    }

    #[tokio::test]
    async fn history_and_who_share_a_reads_bucket_per_user_and_past_it_nothing_is_read() {
        let session = Session::new().await;
        session.lines("lobby", 3).await;
        // The bucket holds 10 (2/s): history and who alike take from it, all at 10:30:00.
        for n in 0..10 {
            let action = if n % 2 == 0 { "history" } else { "who" };
            let answer = session.send("c1", serde_json::json!({"action": action})).await;
            assert!(answer.get("error").is_none(), "read {n}: {answer}");
        }
        for action in ["history", "who"] {
            let refused = session.send("c1", serde_json::json!({"action": action, "limit": 5})).await;
            assert_eq!(refused["error"], "Rate limited", "{refused}");
            assert_eq!((&refused["retryAfterMs"], &refused["action"]), (&500.into(), &action.into()), "{refused}");
            assert!(refused["message"].as_str().unwrap().contains("500 ms"), "{refused}");
            assert!(refused.get("clientMessageId").is_none());
        }
        // Other actions are not metered, and another user has its own bucket.
        let rooms = session.send("c1", serde_json::json!({"action":"rooms"})).await;
        assert_eq!(rooms["kind"], "rooms", "{rooms}");
        let other = session.send("o1", serde_json::json!({"action":"who"})).await;
        assert_eq!(other["kind"], "presence", "{other}");
        // Checked before the sender's row is read: a connection with no row is
        // told to wait, not "Not connected", once its bucket is empty.
        for _ in 0..10 {
            session.send("gone", serde_json::json!({"action":"who"})).await;
        }
        let refused = session.send("gone", serde_json::json!({"action":"who"})).await;
        assert_eq!(refused["error"], "Rate limited", "{refused}");
    }

    #[tokio::test]
    async fn subscribing_joins_once_and_answers_the_count() {
        let session = Session::new().await;
        let answer = session.send("c1", serde_json::json!({"action":"subscribe","room":"ops"})).await;
        let expected = serde_json::json!({"kind":"subscribed","room":"ops","count":2,"rights":"rw","private":false});
        assert_eq!(answer, expected, "the open default: read and write, and nothing private");
        let again = session.send("c1", serde_json::json!({"action":"subscribe","room":"ops"})).await;
        assert_eq!(again["count"], 2, "subscribing twice is harmless");
        assert_eq!(session.said(), [(EventKind::Join, "ops".to_owned())], "one join");
        assert_eq!(session.connections.get("c1").unwrap().rooms, ["lobby", "ops"]);
        assert!(session.connections.memberships().contains(&("ops".to_owned(), "c1".to_owned())));
    }

    /// The connection store, pausing each subscribe after it wrote the
    /// membership (before the handler logs the join) until `resume`.
    struct PausedAfterWrite<'a> {
        inner: &'a MemoryConnections,
        written: tokio::sync::Notify,
        resume: tokio::sync::Notify,
    }

    #[async_trait::async_trait]
    impl ConnectionStore for PausedAfterWrite<'_> {
        async fn put(&self, connection: &Connection) -> Result<(), StoreError> {
            self.inner.put(connection).await
        }
        async fn get(&self, connection_id: &str) -> Result<Option<Connection>, StoreError> {
            ConnectionStore::get(self.inner, connection_id).await
        }
        async fn delete(&self, connection_id: &str) -> Result<Option<Connection>, StoreError> {
            self.inner.delete(connection_id).await
        }
        async fn subscribe(
            &self,
            connection: &Connection,
            room: &str,
            max_rooms: usize,
            join: &LogEvent,
        ) -> Result<Subscribed, StoreError> {
            let subscribed = self.inner.subscribe(connection, room, max_rooms, join).await;
            self.written.notify_one();
            self.resume.notified().await;
            subscribed
        }
        async fn mark_leaving(
            &self,
            connection_id: &str,
            room: &str,
            leave: &LogEvent,
        ) -> Result<Option<Connection>, StoreError> {
            self.inner.mark_leaving(connection_id, room, leave).await
        }
        async fn unsubscribe(&self, connection_id: &str, room: &str) -> Result<Option<Connection>, StoreError> {
            self.inner.unsubscribe(connection_id, room).await
        }
        async fn end_membership(&self, connection_id: &str, room: &str) -> Result<Option<Connection>, StoreError> {
            self.inner.end_membership(connection_id, room).await
        }
        async fn list(&self, room: &str, after: Option<String>, limit: usize) -> Result<Page<Connection>, StoreError> {
            self.inner.list(room, after, limit).await
        }
        async fn count(&self, room: &str) -> Result<usize, StoreError> {
            self.inner.count(room).await
        }
    }

    /// Ends `c1`'s membership of `ops` at `when` the way `how` names.
    async fn end_membership(session: &Session, how: &str, when: &str) {
        let (connected_at, sessions) = (at("2026-11-24T09:00:00Z"), crate::memory::MemorySessions::default());
        match how {
            "disconnect" => {
                let bye = DisconnectRequest { connection_id: "c1".into(), connected_at, disconnected_at: at(when) };
                disconnect(&bye, &session.connections, &sessions, &session.log).await.unwrap();
            }
            "unsubscribe" => {
                let unsubscribe = serde_json::json!({"action":"unsubscribe","room":"ops"});
                session.handle("c1", unsubscribe, when, Rights::default()).await;
            }
            "kick" => {
                let kick = serde_json::json!({"action":"kick","room":"ops","user":"c1"});
                session.handle("o1", kick, when, Rights::parse("ops=rwm").unwrap()).await;
            }
            _ => {
                // The broadcaster's 410 prune of the member it listed.
                let member = Connection::new("c1", "ip", connected_at).as_member_of("ops");
                let end = SessionEnd::new("c1", connected_at, at(when));
                depart(&end, Some(&member), &session.connections, &sessions, &session.log).await.unwrap();
            }
        }
    }

    /// `c1` subscribes to `ops`; between its membership write and its join's
    /// append, each way a membership ends runs: the log still shows one join,
    /// then the leave (in append order and in id order), and no ghost member.
    #[tokio::test]
    async fn a_departure_between_a_subscribes_write_and_its_join_logs_that_join_first() {
        for departure in ["disconnect", "unsubscribe", "kick", "prune"] {
            let session = Session::new().await;
            let paused = PausedAfterWrite {
                inner: &session.connections,
                written: tokio::sync::Notify::new(),
                resume: tokio::sync::Notify::new(),
            };
            let route = DefaultRoute {
                settings: &session.settings,
                connections: &paused,
                cursors: &session.cursors,
                log: &session.log,
                poster: &session.poster,
                bans: &session.bans,
            };
            let subscribe = MessageRequest {
                connection_id: "c1".into(),
                body: r#"{"action":"subscribe","room":"ops"}"#.into(),
                received_at: at("2026-11-24T10:30:00Z"),
                rights: Rights::default(),
                account: None,
            };
            let departing = async {
                paused.written.notified().await;
                end_membership(&session, departure, "2026-11-24T10:30:01Z").await;
                paused.resume.notify_one();
            };
            let (subscribed, ()) = tokio::join!(route.handle(&subscribe), departing);
            subscribed.unwrap();

            let said = |events: Vec<LogEvent>| -> Vec<EventKind> {
                events.into_iter().filter(|e| e.connection_id == "c1" && e.room == "ops").map(|e| e.kind).collect()
            };
            let appended = session.log.events();
            assert_eq!(said(appended.clone()), [EventKind::Join, EventKind::Leave], "{departure}: in append order");
            let by_id = session.log.read(&LogQuery { room: "ops".into(), after: None, limit: 100 }).await.unwrap();
            assert_eq!(said(by_id), [EventKind::Join, EventKind::Leave], "{departure}: in id order");
            let join = appended.iter().find(|e| e.kind == EventKind::Join).unwrap();
            assert_eq!(
                (join.timestamp, join.user.as_deref()),
                (at("2026-11-24T10:30:00Z"), None),
                "the subscribe's own join"
            );
            assert!(!session.connections.memberships().contains(&("ops".into(), "c1".into())), "{departure}: no ghost");
        }
    }

    /// A membership from `$connect` (or from before joins were kept on it)
    /// ends with its leave alone; a subscribe's, logged already, with no second join.
    #[tokio::test]
    async fn ending_a_membership_logs_no_second_join() {
        let session = Session::new().await;
        session.send("c1", serde_json::json!({"action":"subscribe","room":"ops"})).await;
        end_membership(&session, "disconnect", "2026-11-24T10:31:00Z").await;
        let said: Vec<(&str, String)> = session.said().into_iter().map(|(kind, room)| (kind.as_str(), room)).collect();
        let expected = [("join", "ops"), ("leave", "lobby"), ("leave", "ops")];
        assert_eq!(said, expected.map(|(kind, room)| (kind, room.to_owned())), "the lobby's join was $connect's");
    }

    #[tokio::test]
    async fn subscribing_with_since_sends_the_gap_after_the_answer() {
        let session = Session::new().await;
        let first = session.line("ops", "before").await;
        session.line("ops", "missed 1").await;
        session.line("lobby", "elsewhere").await;
        session.line("ops", "missed 2").await;
        session.send("c1", serde_json::json!({"action":"subscribe","room":"ops","since":first})).await;
        let frames = session.poster.frames_to("c1");
        assert_eq!(frames[0]["kind"], "subscribed");
        let texts: Vec<_> = frames.iter().filter_map(|f| f["text"].as_str()).collect();
        assert_eq!(texts, ["missed 1", "missed 2"]);
        assert_eq!(
            frames.last().unwrap(),
            &serde_json::json!({"kind":"history","room":"ops","count":3,"more":false}),
            "the two lines and the subscriber's own join, logged before the gap is read"
        );
    }

    #[tokio::test]
    async fn past_the_room_limit_a_subscribe_is_refused_and_nothing_changes() {
        let mut session = Session::new().await;
        session.settings.limits = crate::room::RoomLimits { max_rooms: 2 };
        session.send("c1", serde_json::json!({"action":"subscribe","room":"a"})).await;
        let refusal = session.send("c1", serde_json::json!({"action":"subscribe","room":"b"})).await;
        assert_eq!((refusal["error"].as_str(), refusal["room"].as_str()), (Some("Too many rooms"), Some("b")));
        assert_eq!(session.connections.get("c1").unwrap().rooms, ["lobby", "a"]);
        assert_eq!(session.said(), [(EventKind::Join, "a".to_owned())]);
        let gone = session.send("ghost", serde_json::json!({"action":"subscribe","room":"a"})).await;
        assert_eq!(gone["error"], "Not connected");
    }

    #[tokio::test]
    async fn unsubscribing_leaves_once_and_is_idempotent() {
        let session = Session::new().await;
        session.send("c1", serde_json::json!({"action":"subscribe","room":"ops"})).await;
        for _ in 0..2 {
            let answer = session.send("c1", serde_json::json!({"action":"unsubscribe","room":"ops"})).await;
            assert_eq!(answer, serde_json::json!({"kind":"unsubscribed","room":"ops"}));
        }
        assert_eq!(session.said(), [(EventKind::Join, "ops".to_owned()), (EventKind::Leave, "ops".to_owned())]);
        assert!(!session.connections.memberships().contains(&("ops".to_owned(), "c1".to_owned())));
        let refusal = session.send("c1", serde_json::json!({"action":"who","room":"ops"})).await;
        assert_eq!(refusal["error"], "Not subscribed", "it hears ops no more");
        let last = session.send("c1", serde_json::json!({"action":"unsubscribe","room":"lobby"})).await;
        assert_eq!((last["error"].as_str(), last["room"].as_str()), (Some("Last room"), Some("lobby")));
        assert_eq!(session.said().len(), 2, "no leave: it still hears the lobby");
        assert!(session.connections.get("c1").unwrap().is_subscribed_to("lobby"));
    }

    #[tokio::test]
    async fn history_and_who_of_a_room_not_heard_are_refused_naming_it_and_leak_nothing() {
        let session = Session::new().await;
        session.line("ops", "secret").await;
        for action in ["history", "who"] {
            let refusal = session.send("c1", serde_json::json!({"action":action,"room":"ops"})).await;
            assert_eq!((refusal["error"].as_str(), refusal["room"].as_str()), (Some("Not subscribed"), Some("ops")));
            assert!(refusal.get("count").is_none() && refusal.get("members").is_none());
        }
        assert_eq!(session.poster.frames_to("c1").len(), 2, "one refusal each, nothing else");
        let own = session.send("c1", serde_json::json!({"action":"who","room":"lobby"})).await;
        assert_eq!((own["room"].as_str(), own["count"].as_u64()), (Some("lobby"), Some(1)), "the home room by name");
    }

    #[tokio::test]
    async fn rooms_lists_home_first_with_counts_and_unread_since_the_cursor() {
        let session = Session::new().await;
        for room in ["zeta", "ops", "alpha"] {
            session.send("c1", serde_json::json!({"action":"subscribe","room":room})).await;
        }
        let ids = session.lines("ops", 5).await;
        let own = LogEvent::chat("c1", "mine", at("2026-11-24T10:00:00Z")).in_room("ops");
        session.log.append(&own).await.unwrap();
        session.lines("alpha", UNREAD_CAP + 1).await;
        let answer = session.send("c1", serde_json::json!({"action":"rooms"})).await;
        let summary =
            |room: &str| answer["rooms"].as_array().unwrap().iter().find(|r| r["room"] == room).unwrap().clone();
        let order: Vec<_> = answer["rooms"].as_array().unwrap().iter().map(|r| r["room"].clone()).collect();
        assert_eq!(order, ["lobby", "alpha", "ops", "zeta"]);
        assert_eq!(
            summary("ops"),
            serde_json::json!({"room":"ops","count":2,"unread":5,"more":false,"rights":"rw","private":false}),
            "joins are not unread"
        );
        assert_eq!((summary("alpha")["unread"].as_u64(), summary("alpha")["more"].as_bool()), (Some(100), Some(true)));

        let read = session.send("c1", serde_json::json!({"action":"read","room":"ops","id":ids[2]})).await;
        assert_eq!(read, serde_json::json!({"kind":"read","room":"ops","id":ids[2]}));
        let back = session.send("c1", serde_json::json!({"action":"read","room":"ops","id":ids[0]})).await;
        assert_eq!(back["id"], ids[2].as_str(), "a cursor never moves back");
        let answer = session.send("c1", serde_json::json!({"action":"rooms"})).await;
        let ops = answer["rooms"].as_array().unwrap().iter().find(|r| r["room"] == "ops").unwrap().clone();
        assert_eq!(ops["unread"], 2);
        let refusal = session.send("c1", serde_json::json!({"action":"read","room":"nowhere","id":ids[0]})).await;
        assert_eq!(refusal["error"], "Not subscribed");
    }

    #[tokio::test]
    async fn an_accounts_cursor_follows_it_to_another_connection() {
        let session = Session::new().await;
        let ada = Identity::verified("Ada", "iss|ada");
        let t = at("2026-11-24T09:00:00Z");
        for id in ["phone", "laptop"] {
            session.connections.put(&Connection::new(id, "ip", t).in_room("ops").of(Some(&ada))).await.unwrap();
        }
        let ids = session.lines("ops", 3).await;
        session.send("phone", serde_json::json!({"action":"read","room":"ops","id":ids[1]})).await;
        let laptop = session.send("laptop", serde_json::json!({"action":"rooms"})).await;
        assert_eq!(laptop["rooms"][0]["unread"], 1, "read on the phone, counted on the laptop");
        session.connections.put(&Connection::new("x1", "ip", t).in_room("ops")).await.unwrap();
        let anonymous = session.send("x1", serde_json::json!({"action":"rooms"})).await;
        assert_eq!(anonymous["rooms"][0]["unread"], 3, "an anonymous connection has its own cursor");
        let speaker = session.send("o1", serde_json::json!({"action":"rooms"})).await;
        assert_eq!(speaker["rooms"][0]["unread"], 0, "one's own lines are never unread");
    }

    #[tokio::test]
    async fn bad_channel_frames_get_clear_errors() {
        let session = Session::new().await;
        for body in [
            serde_json::json!({"action":"subscribe"}),
            serde_json::json!({"action":"subscribe","room":"no spaces"}),
            serde_json::json!({"action":"unsubscribe","room":5}),
            serde_json::json!({"action":"read","room":"lobby","id":"yesterday"}),
            serde_json::json!({"action":"history","room":"x".repeat(65)}),
        ] {
            let refusal = session.send("c1", body.clone()).await;
            assert_eq!(refusal["error"], "Invalid message", "{body}");
        }
        assert!(session.log.events().is_empty(), "nothing stored");
    }
}
