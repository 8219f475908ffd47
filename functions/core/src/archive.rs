//! The S3 archive format: one JSON Lines object per broadcast batch, each line a
//! MessageHistory row. Keys are derived from the batch itself, so a retried batch
//! overwrites its object instead of duplicating it.

use crate::model::LogEvent;

/// Every archive object lives under this prefix.
pub const PREFIX: &str = "messages/";

/// `messages/YYYY/MM/DD/<first id>_<last id>.jsonl`, dated by the first event;
/// `None` for an empty batch.
pub fn batch_key(events: &[LogEvent]) -> Option<String> {
    let (first, last) = (events.first()?, events.last()?);
    Some(format!("{PREFIX}{}/{}_{}.jsonl", first.timestamp.format("%Y/%m/%d"), first.message_id, last.message_id))
}

/// One JSON object per line, newline-terminated.
pub fn to_jsonl(events: &[LogEvent]) -> Vec<u8> {
    let mut out = Vec::with_capacity(events.len() * 160);
    for event in events {
        serde_json::to_writer(&mut out, event).expect("log events always serialize");
        out.push(b'\n');
    }
    out
}

/// A line of an archive object that is not a log event.
#[derive(Debug, thiserror::Error)]
#[error("line {line}: {source}")]
pub struct BadLine {
    pub line: usize,
    pub source: serde_json::Error,
}

/// Parses an archive object; blank lines are ignored.
pub fn from_jsonl(body: &[u8]) -> Result<Vec<LogEvent>, BadLine> {
    body.split(|b| *b == b'\n')
        .enumerate()
        .filter(|(_, line)| !line.iter().all(u8::is_ascii_whitespace))
        .map(|(i, line)| serde_json::from_slice(line).map_err(|source| BadLine { line: i + 1, source }))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::parse_iso;

    fn events() -> Vec<LogEvent> {
        let at = parse_iso("2026-11-24T23:59:59Z").unwrap();
        vec![LogEvent::chat("a", "one", at), LogEvent::join("b", at), LogEvent::chat("b", "two\nlines", at)]
    }

    #[test]
    fn key_is_deterministic_and_date_partitioned() {
        let batch = events();
        let key = batch_key(&batch).unwrap();
        assert_eq!(key, batch_key(&batch.clone()).unwrap());
        assert_eq!(key, format!("messages/2026/11/24/{}_{}.jsonl", batch[0].message_id, batch[2].message_id));
        assert_eq!(batch_key(&[]), None);
    }

    #[test]
    fn jsonl_round_trips() {
        let batch = events();
        let body = to_jsonl(&batch);
        assert_eq!(body.iter().filter(|b| **b == b'\n').count(), 3);
        assert_eq!(from_jsonl(&body).unwrap(), batch);
    }

    #[test]
    fn a_bad_line_is_reported_by_number() {
        let mut body = to_jsonl(&events());
        body.extend_from_slice(b"{oops}\n");
        assert_eq!(from_jsonl(&body).unwrap_err().line, 4);
    }
}
