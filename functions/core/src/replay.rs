//! Choosing and rendering log events for replay: the same selection whichever
//! source (local store, DynamoDB table, S3 archive) the events came from.

use crate::model::{EventKind, LogEvent};
use crate::ports::LogCursor;
use crate::protocol::{join_notice, leave_notice};
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
/// unverified), with the
/// text's newlines escaped so that every event stays on one line.
pub fn text_line(event: &LogEvent) -> String {
    let text = match event.kind {
        EventKind::Chat => event.message.replace('\\', "\\\\").replace('\n', "\\n"),
        EventKind::Join => join_notice(&event.connection_id),
        EventKind::Leave => leave_notice(&event.connection_id),
    };
    let (at, id, room) = (format_iso(&event.timestamp), &event.message_id, &event.room);
    let sender = match (&event.user, event.verified) {
        (Some(user), Some(true)) => format!("{user} ({})", event.connection_id),
        (Some(user), _) => format!("{user}? ({})", event.connection_id),
        (None, _) => event.connection_id.clone(),
    };
    format!("{at}  {id}  {room}  {sender}  {text}")
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
}
