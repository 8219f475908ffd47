//! Moderation on `$default`: deleting a line, kicking, banning and unbanning a
//! member. Every step is an event in the room's log (the audit trail, and how
//! members learn of it: the broadcaster fans it out like a line); the rights
//! come from the connection's request context, never from the frame.
//!
//! A member is named by its account (`userId`) or, anonymous, by its
//! connection id: a name is only a label, two accounts may share it.

use chrono::{DateTime, Duration, Utc};

use super::default_route::DefaultRoute;
use super::{Ending, HandlerError, leave_room};
use crate::model::{Ban, Connection, EventKind, LogEvent, Receipt};
use crate::ports::{Bytes, PostError, list_all_connections};
use crate::protocol::{Removal, banned_frame, forbidden_frame, moderated_frame, not_found_frame, removed_frame};
use crate::rights::{Right, Rights};

/// Whether the listed `member` is who a moderation frame's `user` names: its
/// account when verified, else its connection id.
pub fn is_member(member: &Connection, user: &str) -> bool {
    match member.account() {
        Some(account) => account == user,
        None => member.connection_id == user,
    }
}

/// Whose bans a connection is checked against: its account when verified, else
/// itself (an anonymous ban holds for that connection only: a new connection is
/// nobody known).
pub fn ban_key(connection: &Connection) -> &str {
    connection.account().unwrap_or(&connection.connection_id)
}

/// Whether `asker` wrote `line`: the same account, or — both anonymous — the same connection.
pub(super) fn is_author(asker: &Connection, line: &LogEvent) -> bool {
    match asker.account() {
        Some(account) => line.verified == Some(true) && line.user_id.as_deref() == Some(account),
        None => line.verified != Some(true) && line.connection_id == asker.connection_id,
    }
}

/// Who acted, as the `removed` frame and a ban name them: the moderator's name, else its connection id.
fn moderator_name(asker: &Connection) -> String {
    asker.user.clone().unwrap_or_else(|| asker.connection_id.clone())
}

impl DefaultRoute<'_> {
    /// Deletes line `id`: appends a `delete` event (`target` = `id`) in the
    /// line's room, by the asker, which the broadcaster fans out to the room like
    /// a line; the line itself stays in the log and the archive. Allowed to the
    /// line's author with `w` in the room, and to anyone with `m` there; the
    /// asker must hear the room. A line that is not there for the asker — no
    /// such id, not a chat line, deleted already (by anyone), or in a room the
    /// asker does not hear — is `Not found` (which tells nothing of other rooms);
    /// a line the asker may not delete is `Forbidden` (`moderate`).
    ///
    /// Cost per call (besides the sender's row): one consistent GetItem of the
    /// line; when allowed, one consistent GetItem of the line's tombstone receipt
    /// and one TransactWriteItems of two Puts (tombstone + receipt, 4 write units),
    /// then the room's fan-out of one event (N posts, by the broadcaster). No
    /// direct answer: the asker hears the tombstone with the room. A refusal is one post.
    pub(super) async fn delete(
        &self,
        asker: &Connection,
        id: &str,
        rights: &Rights,
        at: DateTime<Utc>,
    ) -> Result<(), HandlerError> {
        let connection_id = asker.connection_id.as_str();
        let line = match self.log.get(id).await? {
            Some(line)
                if line.kind == EventKind::Chat
                    && asker.is_subscribed_to(&line.room)
                    && rights.allows(&line.room, Right::Read) =>
            {
                line
            }
            _ => {
                tracing::info!(connection_id, id, "delete refused: no such line here");
                return self.reply(connection_id, not_found_frame(id)).await;
            }
        };
        let may = (is_author(asker, &line) && rights.allows(&line.room, Right::Write))
            || rights.allows(&line.room, Right::Moderate);
        if !may {
            tracing::info!(connection_id, id, room = %line.room, "delete refused: not the author, no moderate right");
            let refusal = crate::rights::Forbidden { room: &line.room, right: Right::Moderate };
            return self.reply(connection_id, forbidden_frame(&refusal)).await;
        }
        let tombstone = LogEvent::delete(connection_id, id, at).in_room(&line.room).by(asker.identity().as_ref());
        let stored = self.log.append_once(&tombstone, &Receipt::tombstone_id(id)).await?;
        if stored != tombstone.message_id {
            tracing::info!(connection_id, id, "delete refused: deleted already");
            return self.reply(connection_id, not_found_frame(id)).await;
        }
        tracing::info!(connection_id, id, room = %line.room, tombstone = %tombstone.message_id, "line deleted");
        Ok(())
    }

    /// Kicks `user` from `room` (`m` in `room`): a `kick` event in the room,
    /// then each of the member's connections there is told (`removed`) and
    /// leaves, with one `leave` (`reason: kicked`) per membership this call
    /// ended; a connection whose only room was `room` is closed. Answers
    /// `kicked` with how many connections left. The member may subscribe again.
    ///
    /// Cost per call: the kick append; a consistent Query of the room's
    /// memberships (all pages: N/~9000 per 1 MB); per connection of the member,
    /// one post, a GetItem of its row, what [`super::leave_room`] costs (the
    /// mark, a read of the join, the leave append, the membership's delete
    /// after a consistent GetItem of it, and the row's update when it keeps
    /// other rooms), and for a last room a DeleteConnection; one post to
    /// answer. A refusal is one post.
    pub(super) async fn kick(
        &self,
        asker: &Connection,
        room: &str,
        user: &str,
        rights: &Rights,
        at: DateTime<Utc>,
    ) -> Result<(), HandlerError> {
        let connection_id = asker.connection_id.as_str();
        if !self.moderates(asker, room, rights, "kick").await? {
            return Ok(());
        }
        let kick = LogEvent::kick(connection_id, user, at).in_room(room).by(asker.identity().as_ref());
        self.log.append(&kick).await?;
        let removed = self.remove(asker, room, user, Removal::Kicked, None, at).await?;
        tracing::info!(connection_id, room, user, removed, "member kicked");
        self.reply(connection_id, moderated_frame("kicked", room, user, removed, None)).await
    }

    /// Bans `user` from `room` for `seconds` (`m` in `room`): the ban is stored
    /// first (so a subscribe racing the kick is refused), a `ban` event goes in
    /// the room (`member`, `until`, `reason`), then the member is removed as by
    /// [`kick`](Self::kick), with `reason: banned` and the end time. Answers
    /// `banned` with the connections removed and `until`. Banning again
    /// replaces the ban (a shorter one shortens it).
    ///
    /// Cost per call: one PutItem on Bans, the ban append, then what a kick's
    /// removal costs (the room's membership Query, per connection of the member
    /// a post, two GetItems, one or two writes, a read of the join and a leave
    /// append, maybe a DeleteConnection); one post to answer.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn ban(
        &self,
        asker: &Connection,
        room: &str,
        user: &str,
        seconds: i64,
        reason: Option<&str>,
        rights: &Rights,
        at: DateTime<Utc>,
    ) -> Result<(), HandlerError> {
        let connection_id = asker.connection_id.as_str();
        if !self.moderates(asker, room, rights, "ban").await? {
            return Ok(());
        }
        let until = at + Duration::seconds(seconds);
        self.bans.ban(&Ban::new(room, user, until, &moderator_name(asker), reason)).await?;
        let ban = LogEvent::ban(connection_id, user, until, reason, at).in_room(room).by(asker.identity().as_ref());
        self.log.append(&ban).await?;
        let removed = self.remove(asker, room, user, Removal::Banned, Some(&until), at).await?;
        tracing::info!(connection_id, room, user, removed, %until, "member banned");
        self.reply(connection_id, moderated_frame("banned", room, user, removed, Some(&until))).await
    }

    /// Lifts `user`'s ban from `room` (`m` in `room`); an `unban` event in the
    /// room when there was a ban. Answers `unbanned` either way (`connections`: 0).
    ///
    /// Cost per call: one DeleteItem on Bans (ReturnValues: the old item), an
    /// unban append when there was one, one post.
    pub(super) async fn unban(
        &self,
        asker: &Connection,
        room: &str,
        user: &str,
        rights: &Rights,
        at: DateTime<Utc>,
    ) -> Result<(), HandlerError> {
        let connection_id = asker.connection_id.as_str();
        if !self.moderates(asker, room, rights, "unban").await? {
            return Ok(());
        }
        if self.bans.unban(room, user).await? {
            let unban = LogEvent::unban(connection_id, user, at).in_room(room).by(asker.identity().as_ref());
            self.log.append(&unban).await?;
            tracing::info!(connection_id, room, user, "member unbanned");
        }
        self.reply(connection_id, moderated_frame("unbanned", room, user, 0, None)).await
    }

    /// Whether `rights` hold `m` in `room`; if not, `asker` is told (`Forbidden`)
    /// that it may not `action` there.
    async fn moderates(
        &self,
        asker: &Connection,
        room: &str,
        rights: &Rights,
        action: &str,
    ) -> Result<bool, HandlerError> {
        let Err(refusal) = rights.check(room, Right::Moderate) else { return Ok(true) };
        tracing::info!(connection_id = %asker.connection_id, room, action, "refused: no moderate right");
        self.reply(&asker.connection_id, forbidden_frame(&refusal)).await?;
        Ok(false)
    }

    /// Whether `asker` is banned from `room` at `at`; if so it is told
    /// (`Banned`, with the end). One GetItem on Bans.
    pub(super) async fn refused_as_banned(
        &self,
        asker: &Connection,
        room: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, HandlerError> {
        let Some(ban) = self.bans.active(room, ban_key(asker), at).await? else { return Ok(false) };
        tracing::info!(connection_id = %asker.connection_id, room, until = %ban.until, "subscribe refused: banned");
        self.reply(&asker.connection_id, banned_frame(room, &ban.until)).await?;
        Ok(true)
    }

    /// Removes every connection of `user` from `room`, each told first (a
    /// `removed` frame: once out of the room it hears nothing of it). A
    /// membership's removal has one winner (as a departure's has), so a
    /// connection leaving at the same moment is announced once. A connection
    /// whose only room this was is closed rather than left hearing nothing: its
    /// row still lists the room, so its `$disconnect` finds no membership to
    /// end and announces nothing. Returns how many connections left.
    async fn remove(
        &self,
        asker: &Connection,
        room: &str,
        user: &str,
        reason: Removal,
        until: Option<&DateTime<Utc>>,
        at: DateTime<Utc>,
    ) -> Result<usize, HandlerError> {
        let members: Vec<Connection> =
            list_all_connections(self.connections, room).await?.into_iter().filter(|m| is_member(m, user)).collect();
        let notice = Bytes::from(removed_frame(room, reason, &moderator_name(asker), until));
        let mut removed = 0;
        for member in &members {
            let id = member.connection_id.as_str();
            unless_gone(self.poster.post(id, &notice).await, id, "telling a removed member failed");
            let row = self.connections.get(id).await?;
            let last_room = row.as_ref().is_some_and(|row| row.rooms() == [room]);
            let ending = if row.is_some() && !last_room { Ending::Unsubscribe } else { Ending::Departure };
            let leave = LogEvent::leave(id, at).in_room(room).by(member.identity().as_ref()).because(reason.as_str());
            if leave_room(self.connections, self.log, id, room, leave, ending).await? != Some(true) {
                continue;
            }
            removed += 1;
            if last_room {
                unless_gone(self.poster.close(id).await, id, "closing a removed member failed");
            }
        }
        Ok(removed)
    }
}

/// A post or close to a member being removed: one already gone is fine; any
/// other failure is logged, not fatal (the membership still ends).
fn unless_gone(answer: Result<(), PostError>, connection_id: &str, what: &str) {
    match answer {
        Ok(()) | Err(PostError::Gone) => {}
        Err(error) => tracing::warn!(connection_id, %error, "{what}"),
    }
}

#[cfg(test)]
mod tests;
