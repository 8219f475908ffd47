//! A line's life after it is sent, on `$default`: edits, reaction toggles and
//! replies. Each is an event appended to the line's room (the broadcaster
//! fans it out like a line; [`crate::fold`] turns a room's events into what it
//! shows). Rights come from the request context, never from the frame; each
//! write first takes a token from the user's send bucket, before any read.
//!
//! Refusals store nothing: a line that is not there for the asker (no such id,
//! not a chat line, another room's, one the asker cannot read) is `Not found`;
//! a deleted line `Deleted`; someone else's line on edit `Forbidden`
//! (`right: write`, only the author); no `w` in the room `Forbidden`.

use chrono::{DateTime, Utc};

use super::default_route::DefaultRoute;
use super::moderation::is_author;
use super::{HandlerError, MessageRequest};
use crate::fold::same_author;
use crate::model::{Connection, EventKind, LogEvent};
use crate::ports::{LogCursor, LogQuery, MessageLog, StoreError};
use crate::protocol::{ack_frame, deleted_frame, forbidden_frame, not_author_frame, not_found_frame};
use crate::rights::{Right, Rights};

/// Events after a parent read to find its latest edit for a reply's quote.
pub const QUOTE_SCAN: usize = 200;

/// Why a line cannot be acted on: the error frame for the asker.
pub(super) enum Refused {
    Frame(Vec<u8>),
    Store(StoreError),
}

impl From<StoreError> for Refused {
    fn from(error: StoreError) -> Self {
        Self::Store(error)
    }
}

/// Line `id`, when it is a chat line in a room `asker` hears and may read
/// (optionally: in `room`); else `Not found`. One consistent GetItem.
pub(super) async fn visible_line(
    log: &dyn MessageLog,
    asker: &Connection,
    id: &str,
    room: Option<&str>,
    rights: &Rights,
) -> Result<LogEvent, Refused> {
    match log.get(id).await? {
        Some(line)
            if line.kind == EventKind::Chat
                && room.is_none_or(|room| room == line.room)
                && asker.is_subscribed_to(&line.room)
                && rights.allows(&line.room, Right::Read) =>
        {
            Ok(line)
        }
        _ => Err(Refused::Frame(not_found_frame(id))),
    }
}

/// `parent`'s text now, for a reply's quote: `None` when deleted (one
/// consistent GetItem of its tombstone receipt), else the text after its
/// author's last edit among the [`QUOTE_SCAN`] events after it (one Query).
pub(super) async fn current_text(log: &dyn MessageLog, parent: &LogEvent) -> Result<Option<String>, StoreError> {
    if log.deleted(&parent.room, &parent.message_id).await? {
        return Ok(None);
    }
    let after = LogQuery {
        room: parent.room.clone(),
        after: Some(LogCursor::MessageId(parent.message_id.clone())),
        limit: QUOTE_SCAN,
    };
    let edits = log.read(&after).await?;
    let last_edit = edits
        .iter()
        .filter(|e| e.kind == EventKind::Edit && e.target.as_deref() == Some(&parent.message_id))
        .filter(|e| same_author(parent, e))
        .max_by(|a, b| a.message_id.cmp(&b.message_id));
    Ok(Some(last_edit.unwrap_or(parent).message.clone()))
}

/// A reply to `to` from `asker`, said in `room` (or, none, the parent's room):
/// the line to append, or why not. Used by `reply` and by `sendmessage` with `replyTo`.
pub(super) async fn reply_line(
    log: &dyn MessageLog,
    asker: &Connection,
    to: &str,
    room: Option<&str>,
    text: &str,
    rights: &Rights,
    at: DateTime<Utc>,
) -> Result<LogEvent, Refused> {
    let parent = visible_line(log, asker, to, room, rights).await?;
    rights.check(&parent.room, Right::Write).map_err(|refusal| Refused::Frame(forbidden_frame(&refusal)))?;
    let quote = current_text(log, &parent).await?;
    Ok(LogEvent::chat(&asker.connection_id, text, at)
        .in_room(&parent.room)
        .by(asker.identity().as_ref())
        .replying_to(to, quote.as_deref()))
}

impl DefaultRoute<'_> {
    /// The refusal's frame to the asker, or the store's error.
    async fn refused(&self, asker: &Connection, refused: Refused, action: &str) -> Result<(), HandlerError> {
        match refused {
            Refused::Frame(frame) => {
                tracing::info!(connection_id = %asker.connection_id, action, "refused");
                self.reply(&asker.connection_id, frame).await
            }
            Refused::Store(error) => Err(error.into()),
        }
    }

    /// `{"action":"edit","id","message"}`: appends an `edit` (`target` = id, the
    /// new text in `message`) in the line's room. Only the author (the same
    /// account; anonymous: the same connection) with `w` there; not a deleted line.
    /// No direct answer: the author hears the edit with the room.
    ///
    /// Cost per call: a send token; one consistent GetItem of the line, one of
    /// its tombstone receipt, one PutItem (1 WCU per KB), then the room's
    /// fan-out of one event (N posts, by the broadcaster). A refusal is one post.
    pub(super) async fn edit(
        &self,
        request: &MessageRequest,
        asker: &Connection,
        id: &str,
        text: &str,
    ) -> Result<(), HandlerError> {
        let refused = match self.edited(request, asker, id, text).await {
            Ok(()) => return Ok(()),
            Err(refused) => refused,
        };
        self.refused(asker, refused, "edit").await
    }

    async fn edited(&self, request: &MessageRequest, asker: &Connection, id: &str, text: &str) -> Result<(), Refused> {
        let line = visible_line(self.log, asker, id, None, &request.rights).await?;
        if self.log.deleted(&line.room, id).await? {
            return Err(Refused::Frame(deleted_frame(id)));
        }
        if !is_author(asker, &line) {
            return Err(Refused::Frame(not_author_frame(&line.room, id)));
        }
        request.rights.check(&line.room, Right::Write).map_err(|r| Refused::Frame(forbidden_frame(&r)))?;
        let edit = LogEvent::edit(&asker.connection_id, id, text, request.received_at)
            .in_room(&line.room)
            .by(asker.identity().as_ref());
        self.log.append(&edit).await?;
        tracing::info!(connection_id = %asker.connection_id, id, edit = %edit.message_id, "line edited");
        Ok(())
    }

    /// `{"action":"react","id","emoji","clientMessageId"?}`: toggles `emoji` on
    /// the line for the asker (its account, else its connection), `w` in the
    /// line's room; not on a deleted line. The store decides the toggle
    /// atomically with the append ([`MessageLog::toggle_reaction`]); a resend
    /// with the same `clientMessageId` toggles once. With a `clientMessageId`,
    /// the asker gets `{"ack":<event id>,"clientMessageId"}`.
    ///
    /// Cost per call: a send token; one consistent GetItem of the line and one
    /// of its tombstone receipt; the toggle: consistent GetItems of the line's
    /// counts item and the reactor's state item (and of the receipt with a
    /// `clientMessageId`), then one TransactWriteItems of the event, the state
    /// item (Put or Delete) and the counts item (and the receipt): 3–4 items,
    /// 6–8 WCU; then the room's fan-out of one event. A refusal is one post.
    pub(super) async fn react(
        &self,
        request: &MessageRequest,
        asker: &Connection,
        id: &str,
        emoji: &str,
        client_message_id: Option<&str>,
    ) -> Result<(), HandlerError> {
        let reacted = async {
            let line = visible_line(self.log, asker, id, None, &request.rights).await?;
            request.rights.check(&line.room, Right::Write).map_err(|r| Refused::Frame(forbidden_frame(&r)))?;
            if self.log.deleted(&line.room, id).await? {
                return Err(Refused::Frame(deleted_frame(id)));
            }
            let reaction = LogEvent::reaction(&asker.connection_id, id, emoji, request.received_at)
                .in_room(&line.room)
                .by(asker.identity().as_ref());
            Ok(self.log.toggle_reaction(&reaction, client_message_id).await?)
        };
        match reacted.await {
            Ok(stored) => {
                tracing::info!(connection_id = %asker.connection_id, id, on = ?stored.on, "reaction toggled");
                match client_message_id {
                    Some(client_message_id) => {
                        self.reply(&asker.connection_id, ack_frame(&stored.message_id, client_message_id)).await
                    }
                    None => Ok(()),
                }
            }
            Err(refused) => self.refused(asker, refused, "react").await,
        }
    }

    /// `{"action":"reply","to","message","clientMessageId"?}`: a chat line in
    /// the parent's room with `reply_to` and `quote` (the parent's current text,
    /// first 80 characters; none when it is deleted). `w` in that room.
    /// Answers an ack with a `clientMessageId` (a resend is stored once).
    ///
    /// Cost per call: a send token; one consistent GetItem of the parent, one
    /// of its tombstone receipt, one Query of up to [`QUOTE_SCAN`] events after
    /// it (its edits), one PutItem (with a `clientMessageId`: a GetItem and a
    /// two-Put transaction, as a send's), then the room's fan-out of one event.
    pub(super) async fn reply_to(
        &self,
        request: &MessageRequest,
        asker: &Connection,
        to: &str,
        text: &str,
        client_message_id: Option<&str>,
    ) -> Result<(), HandlerError> {
        let line = match reply_line(self.log, asker, to, None, text, &request.rights, request.received_at).await {
            Ok(line) => line,
            Err(refused) => return self.refused(asker, refused, "reply").await,
        };
        let Some(client_message_id) = client_message_id else {
            self.log.append(&line).await?;
            return Ok(());
        };
        let stored = self.log.append_once(&line, client_message_id).await?;
        self.reply(&asker.connection_id, ack_frame(&stored, client_message_id)).await
    }
}

/// `{"action":"history","fold":true}`: the room's events as [`history`](super::history)
/// reads them (the newest `limit`, or `limit` from `since`), folded
/// ([`crate::fold`]) into `{"kind":"line"}` frames in id order, then the usual
/// closing `history` frame (its `count` is the events read). A line's edits,
/// deletes and reactions fold in when they are in the same page; the raw
/// `history` stays the log in order.
///
/// Cost per call: what `history` costs (one Query of up to `limit + 1`
/// events), with one post per folded line plus the closing frame (coalesced
/// into `{"events":[…]}` frames for a `batch` connection).
pub async fn folded_history(
    asker: &Connection,
    room: &str,
    limit: usize,
    since: Option<LogCursor>,
    log: &dyn MessageLog,
    poster: &dyn crate::ports::SocketPoster,
) -> Result<(), HandlerError> {
    let (events, more) = super::default_route::history_page(room, limit, since, log).await?;
    let mut frames: Vec<crate::ports::Bytes> =
        crate::fold::fold(&events).iter().map(|line| crate::protocol::line_frame(line).into()).collect();
    frames.push(crate::protocol::history_end_frame(room, events.len(), more).into());
    if asker.batch {
        frames = crate::coalesce::coalesce(&frames).into_iter().map(|frame| frame.bytes).collect();
    }
    tracing::info!(connection_id = %asker.connection_id, room, events = events.len(), more, "folded history served");
    super::default_route::reply_with(&asker.connection_id, &frames, poster).await
}

#[cfg(test)]
mod tests;
