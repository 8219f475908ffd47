//! Choosing and rendering log events for replay: the same selection whichever
//! source (local store, DynamoDB table, S3 archive) the events came from.

use crate::model::{EventKind, LogEvent};
use crate::ports::LogCursor;
use crate::protocol::{join_notice, leave_notice};
use crate::text::is_control_or_bidi;
use crate::time::format_iso;

/// Which events to replay. The default selects everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplayFilter {
    /// Only events strictly after this id or time.
    pub after: Option<LogCursor>,
    /// Only events up to and including this id or time.
    pub until: Option<LogCursor>,
    /// Only events of this connection.
    pub connection: Option<String>,
    /// Only events said in this room.
    pub room: Option<String>,
}

impl ReplayFilter {
    pub fn matches(&self, event: &LogEvent) -> bool {
        self.after.as_ref().is_none_or(|after| after.is_before(event))
            && self.until.as_ref().is_none_or(|until| !until.is_before(event))
            && self.connection.as_ref().is_none_or(|id| *id == event.connection_id)
            && self.room.as_ref().is_none_or(|room| *room == event.room)
    }

    /// The matching events in log order (UUIDv7 ids sort by time), each id once:
    /// sources may repeat an event (a retried batch archived twice).
    pub fn apply(&self, mut events: Vec<LogEvent>) -> Vec<LogEvent> {
        events.retain(|event| self.matches(event));
        events.sort_by(|a, b| a.message_id.cmp(&b.message_id));
        events.dedup_by(|a, b| a.message_id == b.message_id);
        events
    }
}

/// One line per event for a terminal: `<time>  <id>  <room>  <sender>  <text>`, the
/// sender being the connection id, after its user's name when known (`name?` when
/// unverified). Everything taken from the log is passed through
/// [`escape_for_terminal`]: the text's newlines show as `\n`, so every event
/// stays on one line, and no stored byte can drive the operator's terminal.
pub fn text_line(event: &LogEvent) -> String {
    let connection = escape_for_terminal(&event.connection_id);
    let text = match event.kind {
        EventKind::Chat => escape_for_terminal(&event.message),
        EventKind::Join => join_notice(&connection),
        EventKind::Leave => leave_notice(&connection),
        EventKind::Edit => format!(
            "(edit of {}) {}",
            escape_for_terminal(event.target.as_deref().unwrap_or("?")),
            escape_for_terminal(&event.message)
        ),
        EventKind::Delete | EventKind::Kick | EventKind::Ban | EventKind::Unban | EventKind::Reaction => {
            escape_for_terminal(&event.message)
        }
    };
    sender_line(event, &text)
}

/// `<time>  <id>  <room>  <sender>  <text>`, everything from the log escaped but `text` (escaped by the caller).
fn sender_line(event: &LogEvent, text: &str) -> String {
    let connection = escape_for_terminal(&event.connection_id);
    let at = format_iso(&event.timestamp);
    let (id, room) = (escape_for_terminal(&event.message_id), escape_for_terminal(&event.room));
    let sender = match (&event.user, event.verified) {
        (Some(user), Some(true)) => format!("{} ({connection})", escape_for_terminal(user)),
        (Some(user), _) => format!("{}? ({connection})", escape_for_terminal(user)),
        (None, _) => connection,
    };
    format!("{at}  {id}  {room}  {sender}  {text}")
}

/// One folded line ([`crate::fold`], `replay --fold`): as [`text_line`] prints
/// the line as sent, with its current text (`(deleted)` for a tombstone), then
/// `(edited <time>)`, `(reply to <id>: "<quote>")` and `[👍 2, 🎉 1]` when they apply.
pub fn folded_text_line(line: &crate::fold::Line) -> String {
    let mut text = match &line.text {
        Some(text) => escape_for_terminal(text),
        None => "(deleted)".to_owned(),
    };
    if let Some(at) = &line.edited_at {
        text.push_str(&format!(" (edited {})", format_iso(at)));
    }
    if let Some(parent) = &line.sent.reply_to {
        let quote = line.quote.as_deref().map(escape_for_terminal).unwrap_or_default();
        text.push_str(&format!(" (reply to {}: \"{quote}\")", escape_for_terminal(parent)));
    }
    if !line.reactions.is_empty() {
        let counts: Vec<String> = line
            .reactions
            .iter()
            .map(|(emoji, users)| format!("{} {}", escape_for_terminal(emoji), users.len()))
            .collect();
        text.push_str(&format!(" [{}]", counts.join(", ")));
    }
    sender_line(&line.sent, &text)
}

/// One event as a JSON line (the archive's format), with no character a
/// terminal acts on: JSON already escapes C0 controls, and DEL, C1 controls and
/// bidirectional controls are written as `\uXXXX` too — the same JSON value.
pub fn json_line(event: &LogEvent) -> Result<String, serde_json::Error> {
    let json = serde_json::to_string(event)?;
    let mut line = String::with_capacity(json.len());
    for c in json.chars() {
        // Only possible inside strings (JSON's own syntax is ASCII), where `\uXXXX` means the same.
        if is_control_or_bidi(c) {
            line.push_str(&format!("\\u{:04x}", u32::from(c)));
        } else {
            line.push(c);
        }
    }
    Ok(line)
}

/// `text` safe to print on one terminal line: `\` as `\\`, newline, carriage
/// return and tab as `\n`, `\r`, `\t`, every other
/// [control or bidi character](is_control_or_bidi) as `\u{…}` (Rust's notation), the rest as it is.
///
/// ```
/// use chat_core::replay::escape_for_terminal;
/// assert_eq!(escape_for_terminal("hi\x1b[2J\u{202E}"), "hi\\u{1b}[2J\\u{202e}");
/// ```
pub fn escape_for_terminal(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '\n' => escaped.push_str("\\n"),
            '\r' => escaped.push_str("\\r"),
            '\t' => escaped.push_str("\\t"),
            c if is_control_or_bidi(c) => escaped.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::parse_cursor;
    use crate::time::parse_iso;

    fn log() -> Vec<LogEvent> {
        let at = |t: &str| parse_iso(t).unwrap();
        vec![
            LogEvent::join("a", at("2026-11-24T10:00:00Z")),
            LogEvent::chat("a", "one", at("2026-11-24T10:00:01Z")),
            LogEvent::chat("b", "two", at("2026-11-24T10:00:02Z")),
            LogEvent::chat("a", "three", at("2026-11-24T10:00:03Z")),
            LogEvent::chat("c", "elsewhere", at("2026-11-24T10:00:04Z")).in_room("ops"),
        ]
    }

    fn texts(events: &[LogEvent]) -> Vec<&str> {
        events.iter().map(|e| e.message.as_str()).collect()
    }

    #[test]
    fn everything_in_log_order_each_id_once() {
        let base = log();
        let mut shuffled: Vec<LogEvent> = base.iter().rev().cloned().collect();
        shuffled.push(base[1].clone()); // the same event twice
        shuffled.extend(log()); // the same texts with new ids: distinct events
        let all = ReplayFilter::default().apply(shuffled);
        assert_eq!(all.len(), 10);
        assert!(all.windows(2).all(|w| w[0].message_id < w[1].message_id));
    }

    #[test]
    fn ranges_by_id_and_time_and_by_connection() {
        let log = log();
        let range = ReplayFilter {
            after: Some(LogCursor::MessageId(log[0].message_id.clone())),
            until: parse_cursor("2026-11-24T10:00:02Z"),
            connection: None,
            room: None,
        };
        assert_eq!(texts(&range.apply(log.clone())), ["one", "two"]);
        let by_a = ReplayFilter { connection: Some("a".into()), ..Default::default() };
        assert_eq!(texts(&by_a.apply(log.clone()))[1..], ["one", "three"]);
        let until_id =
            ReplayFilter { until: Some(LogCursor::MessageId(log[2].message_id.clone())), ..Default::default() };
        assert_eq!(until_id.apply(log.clone()).len(), 3);
        let ops = ReplayFilter { room: Some("ops".into()), ..Default::default() };
        assert_eq!(texts(&ops.apply(log.clone())), ["elsewhere"]);
        let lobby = ReplayFilter { room: Some("lobby".into()), ..Default::default() };
        assert_eq!(lobby.apply(log).len(), 4);
    }

    #[test]
    fn text_lines_stay_on_one_line() {
        let event = LogEvent::chat("a", "two\nlines", parse_iso("2026-11-24T10:00:00Z").unwrap());
        let line = text_line(&event);
        assert_eq!(line, format!("2026-11-24T10:00:00Z  {}  lobby  a  two\\nlines", event.message_id));
        assert!(text_line(&log()[0]).ends_with("A new user has joined the chat - a"));
        let named = event.clone().by(Some(&crate::model::Identity::chosen("Ada")));
        assert!(text_line(&named).contains("  lobby  Ada? (a)  two\\nlines"), "{}", text_line(&named));
    }

    /// Every field a log row (or a tampered archive) can fill with terminal controls.
    fn hostile() -> LogEvent {
        let mut event = LogEvent::chat("c\u{1b}]0;pwned\u{7}", "a\u{1b}[2J\rb\u{9b}31m\u{202e}gnp.exe\u{7f}", at0());
        event.room = "r\u{2066}oom\u{1c}".into();
        event.message_id = format!("{}\u{1b}[1A", event.message_id);
        event.by(Some(&crate::model::Identity::verified("E\u{200f}ve\u{61c}\u{85}", "https://id.example|eve")))
    }

    fn at0() -> chrono::DateTime<chrono::Utc> {
        parse_iso("2026-11-24T10:00:00Z").unwrap()
    }

    #[test]
    fn text_lines_escape_every_control_and_bidi_character() {
        let line = text_line(&hostile());
        assert!(!line.chars().any(is_control_or_bidi), "{line:?}");
        assert!(line.ends_with("  a\\u{1b}[2J\\rb\\u{9b}31m\\u{202e}gnp.exe\\u{7f}"), "{line}");
        assert!(
            line.contains("  r\\u{2066}oom\\u{1c}  E\\u{200f}ve\\u{61c}\\u{85} (c\\u{1b}]0;pwned\\u{7})  "),
            "{line}"
        );
        let leave = LogEvent { kind: EventKind::Leave, ..hostile() };
        assert!(text_line(&leave).ends_with("User c\\u{1b}]0;pwned\\u{7} has left the chat."), "{}", text_line(&leave));
        // Printable text, tabs and backslashes: readable, and unambiguous.
        let plain = LogEvent::chat("a", "tab\there C:\\dir héllo", at0());
        assert!(text_line(&plain).ends_with("  a  tab\\there C:\\\\dir héllo"), "{}", text_line(&plain));
    }

    #[test]
    fn json_lines_carry_no_terminal_control_and_read_back_the_same() {
        let event = hostile();
        let line = json_line(&event).unwrap();
        assert!(!line.chars().any(is_control_or_bidi), "{line:?}");
        assert!(line.contains("\\u009b") && line.contains("\\u202e"), "{line}");
        assert_eq!(serde_json::from_str::<LogEvent>(&line).unwrap(), event);
    }
}
