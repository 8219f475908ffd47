//! Reactions: which emoji a reaction may carry, and how a toggle is decided.
//!
//! A toggle is decided by the store, atomically with its append
//! ([`MessageLog::toggle_reaction`](crate::ports::MessageLog::toggle_reaction)):
//! it keeps one state item per (line, emoji, reactor) and one counts item per
//! line, and writes both with the event in one transaction, so two racing
//! toggles by one user end consistent and every event's `counts` is the line's
//! after it. This module holds the pure part both stores share.

use std::collections::BTreeMap;

use crate::model::{LogEvent, RECEIPT_KEY_PREFIX, Receipt};

/// Longest emoji accepted, in UTF-8 bytes (a family or a flag with tags fits).
pub const MAX_EMOJI_BYTES: usize = 32;

/// Whether `emoji` is one emoji: a single grapheme of emoji presentation — a
/// pictograph (a BMP symbol only with emoji presentation: its own, or U+FE0F),
/// with skin tones, variation selectors and tags, joined by ZWJ into one
/// sequence; a flag (two regional indicators); or a keycap — at most
/// [`MAX_EMOJI_BYTES`]. Text, two emoji, or a lone modifier are not.
///
/// ```
/// use chat_core::reaction::valid_emoji;
/// for ok in ["👍", "👍🏽", "❤️", "👩‍👩‍👧", "🇫🇷", "#️⃣", "⭐"] { assert!(valid_emoji(ok), "{ok}"); }
/// for bad in ["", "a", "👍👍", "🏽", "❤", "👍 ", "‍👍", "🇫"] { assert!(!valid_emoji(bad), "{bad}"); }
/// ```
pub fn valid_emoji(emoji: &str) -> bool {
    if emoji.is_empty() || emoji.len() > MAX_EMOJI_BYTES {
        return false;
    }
    let chars: Vec<char> = emoji.chars().collect();
    let mut i = 0;
    loop {
        // One element: a flag, a keycap, or a pictograph with its modifiers.
        let Some(&base) = chars.get(i) else { return false };
        i += 1;
        if is_regional_indicator(base) {
            if !chars.get(i).is_some_and(|&c| is_regional_indicator(c)) {
                return false;
            }
            i += 1;
        } else if base.is_ascii_digit() || base == '#' || base == '*' {
            if chars.get(i..i + 2) != Some(&['\u{FE0F}', '\u{20E3}']) {
                return false;
            }
            i += 2;
        } else if is_pictograph(base) {
            let presented = (base as u32) >= 0x1F000 || DEFAULT_EMOJI_BMP.contains(&base);
            let mut selected = false;
            while let Some(&c) = chars.get(i) {
                match c {
                    '\u{FE0F}' => selected = true,
                    c if is_skin_tone(c) || ('\u{E0020}'..='\u{E007F}').contains(&c) => {}
                    _ => break,
                }
                i += 1;
            }
            if !presented && !selected {
                return false;
            }
        } else {
            return false;
        }
        match chars.get(i) {
            None => return true,
            Some('\u{200D}') => i += 1,
            Some(_) => return false,
        }
    }
}

fn is_regional_indicator(c: char) -> bool {
    ('\u{1F1E6}'..='\u{1F1FF}').contains(&c)
}

fn is_skin_tone(c: char) -> bool {
    ('\u{1F3FB}'..='\u{1F3FF}').contains(&c)
}

/// Symbols that have emoji forms (the Extended_Pictographic blocks), modifiers aside.
fn is_pictograph(c: char) -> bool {
    let u = c as u32;
    !is_skin_tone(c)
        && !is_regional_indicator(c)
        && (matches!(u, 0x1F000..=0x1FAFF | 0x2190..=0x21FF | 0x2300..=0x23FF | 0x25A0..=0x27BF | 0x2900..=0x297F)
            || matches!(u, 0x2B00..=0x2BFF | 0x3030 | 0x303D | 0x3297 | 0x3299 | 0xA9 | 0xAE | 0x203C | 0x2049)
            || matches!(u, 0x2122 | 0x2139 | 0x24C2))
}

/// BMP symbols whose default presentation is emoji (Emoji_Presentation=Yes):
/// they need no U+FE0F. Every other BMP symbol is text unless selected.
const DEFAULT_EMOJI_BMP: &[char] = &[
    '⌚', '⌛', '⏩', '⏪', '⏫', '⏬', '⏰', '⏳', '◽', '◾', '☔', '☕', '♈', '♉', '♊', '♋', '♌', '♍', '♎',
    '♏', '♐', '♑', '♒', '♓', '♿', '⚓', '⚡', '⚪', '⚫', '⚽', '⚾', '⛄', '⛅', '⛎', '⛔', '⛪', '⛲', '⛳',
    '⛵', '⛺', '⛽', '✅', '✊', '✋', '✨', '❌', '❎', '❓', '❔', '❕', '❗', '➕', '➖', '➗', '➰', '➿', '⬛',
    '⬜', '⭐', '⭕',
];

/// Who reacted: the account when verified, else the connection — the key a
/// toggle is decided on and the fold counts.
pub fn reactor_of(event: &LogEvent) -> &str {
    match (event.verified, event.user_id.as_deref()) {
        (Some(true), Some(account)) => account,
        _ => &event.connection_id,
    }
}

/// What a store decides a toggle on: the line, the emoji, the reactor, and
/// the receipt a `clientMessageId` claims (so a resend toggles once).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Toggle {
    pub target: String,
    pub emoji: String,
    pub reactor: String,
    pub receipt: Option<Receipt>,
}

impl Toggle {
    /// The toggle `reaction` ([`LogEvent::reaction`]) asks for, sent as `client_message_id`.
    pub fn of(reaction: &LogEvent, client_message_id: Option<&str>) -> Self {
        Self {
            target: reaction.target.clone().unwrap_or_default(),
            emoji: reaction.emoji.clone().unwrap_or_default(),
            reactor: reactor_of(reaction).to_owned(),
            receipt: client_message_id.map(|id| Receipt::for_send(reaction, id)),
        }
    }
}

/// The key of the state item saying `reactor` has `emoji` on line `target`
/// (in MessageHistory next to the receipts: the prefix keeps it out of every
/// reader, and `~` is in no room name, so it is no receipt's key).
pub fn state_key(target: &str, emoji: &str, reactor: &str) -> String {
    format!("{RECEIPT_KEY_PREFIX}~reaction#{target}#{emoji}#{reactor}")
}

/// The key of line `target`'s counts item.
pub fn counts_key(target: &str) -> String {
    format!("{RECEIPT_KEY_PREFIX}~counts#{target}")
}

/// The toggle decided: `reaction` (from [`LogEvent::reaction`]) with `on`
/// (whether the reactor now has the emoji: it had not, `was_on` false) and the
/// line's `counts` after it (from `before`; an emoji at 0 is dropped), and the
/// notice a plain client shows as `message`.
pub fn decided(mut reaction: LogEvent, was_on: bool, mut before: BTreeMap<String, u32>) -> LogEvent {
    let emoji = reaction.emoji.clone().unwrap_or_default();
    let count = before.entry(emoji.clone()).or_insert(0);
    *count = if was_on { count.saturating_sub(1) } else { *count + 1 };
    before.retain(|_, count| *count > 0);
    let who = reaction.user.clone().unwrap_or_else(|| reaction.connection_id.clone());
    reaction.message = if was_on { format!("{who} removed {emoji}") } else { format!("{who} reacted {emoji}") };
    (reaction.on, reaction.counts) = (Some(!was_on), Some(before));
    reaction
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::parse_iso;

    #[test]
    fn a_toggle_adds_then_removes_and_drops_an_emoji_at_zero() {
        let at = parse_iso("2026-11-24T10:00:00Z").unwrap();
        let reaction = LogEvent::reaction("c1", "line", "👍", at);
        let on = decided(reaction.clone(), false, BTreeMap::from([("🎉".to_owned(), 2)]));
        assert_eq!(on.on, Some(true));
        assert_eq!(on.counts, Some(BTreeMap::from([("🎉".to_owned(), 2), ("👍".to_owned(), 1)])));
        assert_eq!(on.message, "c1 reacted 👍");
        let off = decided(reaction, true, on.counts.clone().unwrap());
        assert_eq!((off.on, off.counts), (Some(false), Some(BTreeMap::from([("🎉".to_owned(), 2)]))));
    }

    #[test]
    fn state_keys_are_no_receipt_keys() {
        let key = state_key("t", "👍", "iss|u");
        assert!(key.starts_with(RECEIPT_KEY_PREFIX));
        assert!(crate::room::valid_room("~reaction").is_err(), "no room is named so");
    }
}
