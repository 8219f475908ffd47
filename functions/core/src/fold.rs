//! The visible state of a room: one pure fold of its events into lines.
//!
//! Everything a user does to a line is an event in the log (an edit, a
//! tombstone, a reaction toggle, a reply); what a room shows is this fold,
//! used by `history` with `fold:true`, `replay --fold` and the tests. It takes
//! events in any order (it sorts them by id, the log's order) and re-checks
//! what it can without rights: an edit by anyone but the line's author is
//! ignored, and so is an edit or reaction after the line's delete. A delete is
//! always applied (a moderator's is valid; rights were checked when it was
//! appended).
//!
//! Reactions fold by parity: the store decides toggles one at a time per
//! (line, emoji, reactor) ([`crate::reaction`]), so each stored toggle flips
//! the reactor's state, and an odd number of toggles means "on" — whatever the
//! order the events arrive in.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};

use crate::model::{EventKind, LogEvent};
use crate::reaction::reactor_of;

/// One visible line of a room, as its events leave it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    /// The line as sent (its id, author, time, room, reply fields); `message`
    /// is its text as sent, [`text`](Self::text) its current text.
    pub sent: LogEvent,
    /// The text after the last edit by its author; `None` when deleted.
    pub text: Option<String>,
    /// When it was last edited.
    pub edited_at: Option<DateTime<Utc>>,
    pub deleted: bool,
    /// Emoji → who has it on (accounts, or anonymous connections).
    pub reactions: BTreeMap<String, BTreeSet<String>>,
    /// The reply's quote; `None` when the parent is deleted (or it is no reply).
    pub quote: Option<String>,
}

/// Whether `edit` is by the author of `line`: the same account, or — both
/// anonymous — the same connection (the rule the edit handler applies).
pub fn same_author(line: &LogEvent, edit: &LogEvent) -> bool {
    match (line.verified, line.user_id.as_deref()) {
        (Some(true), Some(account)) => edit.verified == Some(true) && edit.user_id.as_deref() == Some(account),
        _ => edit.verified != Some(true) && edit.connection_id == line.connection_id,
    }
}

/// Folds `events` (any order) into the visible chat lines, in id order.
///
/// ```
/// use chat_core::{fold::fold, LogEvent};
/// let at = chat_core::time::parse_iso("2026-11-24T10:00:00Z").unwrap();
/// let line = LogEvent::chat("c1", "helo", at);
/// let edit = LogEvent::edit("c1", &line.message_id, "hello", at);
/// let lines = fold(&[edit, line]);
/// assert_eq!(lines[0].text.as_deref(), Some("hello"));
/// ```
pub fn fold(events: &[LogEvent]) -> Vec<Line> {
    let mut sorted: Vec<&LogEvent> = events.iter().collect();
    sorted.sort_by(|a, b| a.message_id.cmp(&b.message_id));
    sorted.dedup_by(|a, b| a.message_id == b.message_id);
    let mut lines: Vec<Line> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    // (line, emoji, reactor) → toggles seen.
    let mut toggles: BTreeMap<(usize, String, String), usize> = BTreeMap::new();
    for event in sorted {
        let target = event.target.as_deref().and_then(|target| index.get(target).copied());
        match (event.kind, target) {
            (EventKind::Chat, _) => {
                index.insert(event.message_id.clone(), lines.len());
                lines.push(Line {
                    sent: event.clone(),
                    text: Some(event.message.clone()),
                    edited_at: None,
                    deleted: false,
                    reactions: BTreeMap::new(),
                    quote: event.quote.clone(),
                });
            }
            (EventKind::Edit, Some(i)) if !lines[i].deleted && same_author(&lines[i].sent, event) => {
                lines[i].text = Some(event.message.clone());
                lines[i].edited_at = Some(event.timestamp);
            }
            (EventKind::Delete, Some(i)) => {
                lines[i].deleted = true;
                lines[i].text = None;
            }
            (EventKind::Reaction, Some(i)) if !lines[i].deleted => {
                let emoji = event.emoji.clone().unwrap_or_default();
                *toggles.entry((i, emoji, reactor_of(event).to_owned())).or_default() += 1;
            }
            _ => {}
        }
    }
    for ((i, emoji, reactor), count) in toggles {
        if count % 2 == 1 && !lines[i].deleted {
            lines[i].reactions.entry(emoji).or_default().insert(reactor);
        }
    }
    let deleted: BTreeSet<String> =
        lines.iter().filter(|line| line.deleted).map(|line| line.sent.message_id.clone()).collect();
    for line in &mut lines {
        if line.sent.reply_to.as_ref().is_some_and(|parent| deleted.contains(parent)) {
            line.quote = None;
        }
    }
    lines
}
