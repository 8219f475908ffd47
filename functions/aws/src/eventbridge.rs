//! The events out (#26) on an EventBridge bus: [`EventSink`] over PutEvents.
//!
//! PutEvents takes at most [`MAX_ENTRIES`] entries and [`MAX_REQUEST_BYTES`] in
//! one call, and answers per entry: a call can succeed while some of its
//! entries failed (`FailedEntryCount`, an `ErrorCode` on each failed one). Those
//! are put again after a capped, jittered pause ([`RetryPolicy`]); what still
//! fails is reported as not delivered, so the stream redelivers it. An entry
//! too large for EventBridge ever to take is logged and skipped: retrying it
//! would block its shard until the records expire.
//!
//! Cost: one PutEvents call per chunk of up to 10 events; EventBridge bills
//! each entry per 64 KB ($1.00 per million on custom and default buses, us-east-1,
//! late 2026), a retried entry again.

use std::ops::Range;

use async_trait::async_trait;
use aws_sdk_eventbridge::Client;
use aws_sdk_eventbridge::error::DisplayErrorContext;
use aws_sdk_eventbridge::primitives::DateTime;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use chat_core::broadcaster::RetryPolicy;
use chat_core::outbound::{EventSink, OutboundEvent, SinkError};

/// Entries per PutEvents call (EventBridge's limit).
pub const MAX_ENTRIES: usize = 10;

/// The largest entry, and the largest call, EventBridge takes: 256 KB, counted
/// as [`entry_size`] does.
pub const MAX_REQUEST_BYTES: usize = 256 * 1024;

/// An entry's size as EventBridge counts it against [`MAX_REQUEST_BYTES`]: the
/// UTF-8 bytes of its source, detail-type and detail, and 14 for its time.
pub fn entry_size(event: &OutboundEvent) -> usize {
    14 + event.source.len() + event.detail_type.as_str().len() + event.detail_json().len()
}

/// The calls that put `sizes` (entry sizes, in order): consecutive ranges of
/// at most [`MAX_ENTRIES`] entries and [`MAX_REQUEST_BYTES`] in all. Entries
/// over the limit by themselves are in no range (they are skipped).
pub fn chunks(sizes: &[usize]) -> Vec<Range<usize>> {
    let mut chunks = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (index, &size) in sizes.iter().enumerate() {
        let fits = index - start < MAX_ENTRIES && bytes + size <= MAX_REQUEST_BYTES;
        if !fits || size > MAX_REQUEST_BYTES {
            if start < index {
                chunks.push(start..index);
            }
            (start, bytes) = (index, 0);
        }
        if size > MAX_REQUEST_BYTES {
            start = index + 1;
            continue;
        }
        bytes += size;
    }
    if start < sizes.len() {
        chunks.push(start..sizes.len());
    }
    chunks
}

/// PutEvents on one bus.
#[derive(Clone, Debug)]
pub struct EventBridgeSink {
    client: Client,
    bus: String,
    retry: RetryPolicy,
}

impl EventBridgeSink {
    /// Puts on `bus` (a name or ARN; `default` is the account's default bus),
    /// retrying failed entries as [`RetryPolicy::default`] says.
    pub fn new(sdk: &aws_config::SdkConfig, bus: impl Into<String>) -> Self {
        Self { client: Client::new(sdk), bus: bus.into(), retry: RetryPolicy::default() }
    }

    /// The same sink with another retry policy for failed entries.
    pub fn with_retry(self, retry: RetryPolicy) -> Self {
        Self { retry, ..self }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    fn entry(&self, event: &OutboundEvent) -> PutEventsRequestEntry {
        let time = chrono::DateTime::parse_from_rfc3339(&event.time).ok().map(|at| DateTime::from_secs(at.timestamp()));
        PutEventsRequestEntry::builder()
            .source(event.source)
            .detail_type(event.detail_type.as_str())
            .detail(event.detail_json())
            .event_bus_name(&self.bus)
            .set_time(time)
            .build()
    }

    /// Puts `events` in one call, again for its failed entries while the policy
    /// allows: the indexes (into `events`) still not put, and why.
    async fn put_chunk(&self, events: &[OutboundEvent], chunk: Range<usize>) -> (Vec<usize>, String) {
        let mut pending: Vec<usize> = chunk.collect();
        let mut reason = String::new();
        for attempt in 0..self.retry.max_attempts.max(1) {
            if attempt > 0 {
                tokio::time::sleep(self.retry.delay(attempt - 1)).await;
            }
            let entries = pending.iter().map(|&i| self.entry(&events[i])).collect();
            match self.client.put_events().set_entries(Some(entries)).send().await {
                Ok(output) => {
                    let answers = output.entries();
                    let mut failed = Vec::new();
                    for (position, &index) in pending.iter().enumerate() {
                        // An answer missing for an entry counts as its failure.
                        match answers.get(position) {
                            Some(answer) if answer.error_code().is_none() && answer.event_id().is_some() => {}
                            answer => {
                                let code = answer.and_then(|a| a.error_code()).unwrap_or("NoAnswer");
                                let message = answer.and_then(|a| a.error_message()).unwrap_or_default();
                                reason = format!("{code}: {message}");
                                failed.push(index);
                            }
                        }
                    }
                    pending = failed;
                }
                Err(error) => reason = DisplayErrorContext(&error).to_string(),
            }
            if pending.is_empty() {
                break;
            }
            tracing::warn!(attempt, entries = pending.len(), %reason, bus = %self.bus, "PutEvents entries failed");
        }
        (pending, reason)
    }
}

#[async_trait]
impl EventSink for EventBridgeSink {
    /// One PutEvents call per chunk of up to [`MAX_ENTRIES`] events (and
    /// [`MAX_REQUEST_BYTES`]), chunk after chunk in order; failed entries are
    /// put again ([`RetryPolicy::max_attempts`] tries in all). On error, the
    /// events before the first one not put were all put (some after it may have
    /// been too: delivery is at least once).
    async fn put(&self, events: &[OutboundEvent]) -> Result<(), SinkError> {
        let sizes: Vec<usize> = events.iter().map(entry_size).collect();
        for (event, size) in events.iter().zip(&sizes).filter(|(_, size)| **size > MAX_REQUEST_BYTES) {
            tracing::error!(
                id = %event.id,
                detail_type = event.detail_type.as_str(),
                room = %event.detail.room,
                size,
                "event too large for EventBridge: skipped"
            );
        }
        for chunk in chunks(&sizes) {
            let (pending, reason) = self.put_chunk(events, chunk).await;
            if let Some(&first) = pending.first() {
                return Err(SinkError { delivered: first, reason });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use chat_core::LogEvent;
    use chat_core::outbound::DetailType;
    use serde_json::{Value, json};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    #[test]
    fn chunks_hold_ten_entries_and_256_kb_at_most_and_skip_what_is_larger() {
        assert_eq!(chunks(&[]), Vec::<Range<usize>>::new());
        assert_eq!(chunks(&[100; 25]), [0..10, 10..20, 20..25]);
        let half = MAX_REQUEST_BYTES / 2;
        // Two chat lines of 128 KB each are one call each: together they pass 256 KB.
        assert_eq!(chunks(&[100, half, half, 100]), [0..2, 2..4]);
        assert_eq!(chunks(&[half, half - 100, 100]), vec![0..3]);
        // An entry over the limit is in no call; the others keep their order.
        assert_eq!(chunks(&[100, MAX_REQUEST_BYTES + 1, 100, 100]), [0..1, 2..4]);
        assert_eq!(chunks(&[MAX_REQUEST_BYTES + 1]), Vec::<Range<usize>>::new());
        assert_eq!(chunks(&[MAX_REQUEST_BYTES]), vec![0..1]);
    }

    #[test]
    fn an_entry_is_sized_as_eventbridge_counts_it() {
        let at = chat_core::time::parse_iso("2026-11-24T10:15:30Z").unwrap();
        let event = OutboundEvent::of_log_event(&LogEvent::chat("c1", "hé", at)).unwrap();
        let expected = 14 + "websocket-chat".len() + "chat.message.created".len() + event.detail_json().len();
        assert_eq!(entry_size(&event), expected);
    }

    /// A PutEvents endpoint answering each call with the next scripted entry
    /// codes (`None` = put); records the entries of every call.
    struct FakeEventBridge {
        url: String,
        calls: Arc<Mutex<Vec<Vec<Value>>>>,
    }

    impl FakeEventBridge {
        async fn start(script: Vec<Vec<Option<&'static str>>>) -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            let calls = Arc::new(Mutex::new(Vec::new()));
            let recorded = calls.clone();
            tokio::spawn(async move {
                let mut script = script.into_iter();
                loop {
                    let Ok((mut socket, _)) = listener.accept().await else { return };
                    let Some(request) = read_request(&mut socket).await else { continue };
                    let entries = request["Entries"].as_array().cloned().unwrap_or_default();
                    let codes = script.next().unwrap_or_default();
                    let answers: Vec<Value> = (0..entries.len())
                        .map(|i| match codes.get(i).copied().flatten() {
                            Some(code) => json!({"ErrorCode": code, "ErrorMessage": "scripted"}),
                            None => json!({"EventId": format!("id-{i}")}),
                        })
                        .collect();
                    let failed = answers.iter().filter(|a| a.get("ErrorCode").is_some()).count();
                    recorded.lock().unwrap().push(entries);
                    let body = json!({"FailedEntryCount": failed, "Entries": answers}).to_string();
                    let response = format!(
                        "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-type: application/x-amz-json-1.1\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = socket.write_all(response.as_bytes()).await;
                }
            });
            Self { url, calls }
        }

        fn sink(&self) -> EventBridgeSink {
            let sdk = aws_config::SdkConfig::builder()
                .behavior_version(aws_config::BehaviorVersion::latest())
                .region(aws_config::Region::new("us-east-1"))
                .credentials_provider(aws_sdk_eventbridge::config::SharedCredentialsProvider::new(
                    aws_sdk_eventbridge::config::Credentials::new("test", "test", None, None, "tests"),
                ))
                .endpoint_url(&self.url)
                .build();
            let retry = RetryPolicy {
                max_attempts: 3,
                base_delay: Duration::from_millis(1),
                max_delay: Duration::from_millis(5),
            };
            EventBridgeSink::new(&sdk, "chat-bus").with_retry(retry)
        }

        /// The `detail` messages of each call's entries.
        fn messages(&self) -> Vec<Vec<String>> {
            let calls = self.calls.lock().unwrap();
            calls
                .iter()
                .map(|entries| {
                    entries
                        .iter()
                        .map(|e| {
                            let detail: Value = serde_json::from_str(e["Detail"].as_str().unwrap()).unwrap();
                            detail["message"].as_str().unwrap_or_default().to_owned()
                        })
                        .collect()
                })
                .collect()
        }
    }

    /// One HTTP/1.1 request's JSON body (the SDK sends a content-length).
    async fn read_request(socket: &mut tokio::net::TcpStream) -> Option<Value> {
        let mut buffer = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            let n = socket.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buffer.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buffer);
            let Some(end) = text.find("\r\n\r\n") else { continue };
            let length = text[..end]
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length").then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if buffer.len() >= end + 4 + length {
                return serde_json::from_slice(&buffer[end + 4..end + 4 + length]).ok();
            }
        }
    }

    fn lines(count: usize) -> Vec<OutboundEvent> {
        let at = chat_core::time::parse_iso("2026-11-24T10:15:30Z").unwrap();
        (0..count)
            .map(|i| OutboundEvent::of_log_event(&LogEvent::chat("c1", &format!("m{i}"), at).in_room("ops")).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn twelve_events_are_two_calls_with_the_envelope_eventbridge_expects() {
        let fake = FakeEventBridge::start(vec![]).await;
        fake.sink().put(&lines(12)).await.unwrap();
        let calls = fake.calls.lock().unwrap().clone();
        assert_eq!(calls.iter().map(Vec::len).collect::<Vec<_>>(), [10, 2]);
        let entry = &calls[0][0];
        assert_eq!(entry["Source"], "websocket-chat");
        assert_eq!(entry["DetailType"], DetailType::MessageCreated.as_str());
        assert_eq!(entry["EventBusName"], "chat-bus");
        let at = chat_core::time::parse_iso("2026-11-24T10:15:30Z").unwrap();
        assert_eq!(entry["Time"].as_f64(), Some(at.timestamp() as f64), "when it happened, not when it was put");
        let detail: Value = serde_json::from_str(entry["Detail"].as_str().unwrap()).unwrap();
        assert_eq!(detail["room"], "ops");
        assert_eq!(detail["message"], "m0");
    }

    #[tokio::test]
    async fn failed_entries_are_put_again_and_only_they() {
        let script = vec![vec![None, Some("ThrottlingException"), None, Some("InternalFailure")], vec![None, None]];
        let fake = FakeEventBridge::start(script).await;
        fake.sink().put(&lines(4)).await.unwrap();
        assert_eq!(fake.messages(), [vec!["m0", "m1", "m2", "m3"], vec!["m1", "m3"]]);
    }

    #[tokio::test]
    async fn entries_failing_every_try_are_reported_from_the_first_not_put() {
        // 12 events: the first call (m0..m9) loses m7 three times; m10, m11 are never tried.
        let mut failing = vec![None; 10];
        failing[7] = Some("ThrottlingException");
        let script = vec![failing, vec![Some("ThrottlingException")], vec![Some("ThrottlingException")]];
        let fake = FakeEventBridge::start(script).await;
        let error = fake.sink().put(&lines(12)).await.unwrap_err();
        assert_eq!(error.delivered, 7, "{error}");
        assert!(error.reason.contains("ThrottlingException"), "{error}");
        assert_eq!(fake.messages().iter().map(Vec::len).collect::<Vec<_>>(), [10, 1, 1], "3 tries, then given up");
    }

    #[tokio::test]
    async fn an_event_too_large_for_eventbridge_is_skipped_not_retried() {
        let fake = FakeEventBridge::start(vec![]).await;
        let mut events = lines(3);
        events[1].detail.message = Some("x".repeat(MAX_REQUEST_BYTES));
        fake.sink().put(&events).await.unwrap();
        assert_eq!(fake.messages(), [vec!["m0"], vec!["m2"]]);
    }
}
