//! The DynamoDB Streams → Lambda event source mapping, emulated over the
//! store's message table: batches of real `dynamodb::Event`s, woken on append,
//! a checkpoint that only moves past delivered records, bounded retries.

use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::dynamodb::{Event, EventRecord, StreamViewType};
use chat_core::LogEvent;
use chat_core::broadcaster::{Broadcaster, RetryPolicy};
use chat_core::entrypoints::stream::on_stream;
use tokio::sync::watch;

use crate::store::SqliteStore;

/// The event source mapping's settings.
#[derive(Clone, Debug)]
pub struct StreamSettings {
    pub batch_size: usize,
    /// How long to gather records before invoking; 0 invokes as soon as one arrives.
    pub batching_window: Duration,
    /// Retries of a failing record before it is given up (sent to the on-failure destination).
    pub max_retries: u32,
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self { batch_size: 100, batching_window: Duration::ZERO, max_retries: 5 }
    }
}

/// Sequence numbers are zero-padded so that they sort as strings, like AWS's.
pub fn sequence_number(seq: i64) -> String {
    format!("{seq:028}")
}

fn record(seq: i64, event: &LogEvent, table_arn: &str) -> EventRecord {
    let new_image: serde_dynamo::Item = serde_dynamo::to_item(event).expect("log events always convert");
    let keys: serde_dynamo::Item =
        serde_dynamo::to_item(serde_json::json!({ "message_id": event.message_id })).expect("a string key converts");
    let mut record = EventRecord::default();
    record.aws_region = "local".into();
    record.event_id = format!("{seq:032x}");
    record.event_name = "INSERT".into();
    record.event_source = Some("aws:dynamodb".into());
    record.event_version = Some("1.1".into());
    record.event_source_arn = Some(format!("{table_arn}/stream/local"));
    record.change.approximate_creation_date_time = event.timestamp;
    record.change.size_bytes = serde_json::to_vec(&new_image).map_or(0, |b| b.len() as i64);
    record.change.keys = keys;
    record.change.new_image = new_image;
    record.change.sequence_number = Some(sequence_number(seq));
    record.change.stream_view_type = Some(StreamViewType::NewImage);
    record
}

/// Runs until `stop` turns true.
pub async fn run(
    store: SqliteStore,
    broadcaster: Arc<Broadcaster>,
    settings: StreamSettings,
    mut stop: watch::Receiver<bool>,
) {
    let appended = store.appended();
    let table_arn = "arn:aws:dynamodb:local:000000000000:table/MessageHistory";
    let backoff =
        RetryPolicy { max_attempts: 0, base_delay: Duration::from_millis(100), max_delay: Duration::from_secs(5) };
    let mut retries = 0u32;
    while !*stop.borrow() {
        let checkpoint = match store.checkpoint() {
            Ok(seq) => seq,
            Err(error) => {
                tracing::error!(%error, "stream: cannot read the checkpoint");
                tokio::time::sleep(backoff.max_delay).await;
                continue;
            }
        };
        let mut rows = store.stream_after(checkpoint, settings.batch_size).unwrap_or_default();
        if rows.is_empty() {
            tokio::select! {
                () = appended.notified() => {}
                _ = stop.changed() => {}
            }
            continue;
        }
        if !settings.batching_window.is_zero() && rows.len() < settings.batch_size {
            tokio::time::sleep(settings.batching_window).await;
            rows = store.stream_after(checkpoint, settings.batch_size).unwrap_or_default();
        }
        let last = rows.last().map_or(checkpoint, |(seq, _)| *seq);
        let mut event = Event::default();
        for (seq, row) in &rows {
            match row {
                Ok(log_event) => event.records.push(record(*seq, log_event, table_arn)),
                Err(error) => tracing::error!(seq, %error, "stream: skipping unreadable row"),
            }
        }
        let in_batch: Vec<String> = event.records.iter().filter_map(|r| r.change.sequence_number.clone()).collect();
        let response = on_stream(event, &broadcaster).await;

        let failed: Vec<&String> =
            response.batch_item_failures.iter().filter_map(|f| f.item_identifier.as_ref()).collect();
        let lowest_failed = if failed.iter().any(|id| !in_batch.contains(id)) {
            tracing::error!("stream: an unknown batchItemFailures identifier fails the whole batch");
            Some(checkpoint + 1)
        } else {
            failed.iter().filter_map(|id| id.parse::<i64>().ok()).min()
        };
        let next_checkpoint = match lowest_failed {
            None => {
                retries = 0;
                last
            }
            Some(seq) if retries >= settings.max_retries => {
                tracing::error!(seq, retries, "stream: record given up after retries (on-failure destination)");
                retries = 0;
                seq
            }
            Some(seq) => {
                retries += 1;
                tracing::warn!(seq, retries, "stream: retrying from a failed record");
                tokio::time::sleep(backoff.delay(retries)).await;
                seq - 1
            }
        };
        if let Err(error) = store.set_checkpoint(next_checkpoint) {
            tracing::error!(%error, "stream: cannot save the checkpoint");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chat_core::broadcaster::FanoutConfig;
    use chat_core::memory::{FixedClock, RecordingPoster};
    use chat_core::ports::{ConnectionStore, MessageLog, PostError};
    use chat_core::time::parse_iso;

    #[tokio::test]
    async fn a_failing_record_is_retried_then_given_up_and_the_stream_moves_on() {
        let store = SqliteStore::open(std::path::Path::new(":memory:")).unwrap();
        let at = parse_iso("2026-11-24T10:15:32Z").unwrap();
        store.put(&chat_core::Connection::new("reader", "ip", at)).await.unwrap();
        let poster = Arc::new(RecordingPoster::default());
        poster.refuse_frames_containing("poison", PostError::Other("500".into()));
        let mut fanout = FanoutConfig::default();
        fanout.retry.max_attempts = 1;
        let broadcaster = Arc::new(Broadcaster {
            connections: Arc::new(store.clone()),
            sessions: Arc::new(store.clone()),
            poster: poster.clone(),
            archive: None,
            clock: Arc::new(FixedClock::at(at)),
            config: fanout,
        });
        for text in ["before", "poison", "after"] {
            store.append(&LogEvent::chat("writer", text, at)).await.unwrap();
        }
        let settings = StreamSettings { batch_size: 10, batching_window: Duration::ZERO, max_retries: 2 };
        let (stop, stopped) = watch::channel(false);
        let emulator = tokio::spawn(run(store.clone(), broadcaster, settings, stopped));

        let texts = || -> Vec<String> {
            poster.frames_to("reader").iter().map(|f| f["text"].as_str().unwrap().to_owned()).collect()
        };
        tokio::time::timeout(Duration::from_secs(10), async {
            while !texts().contains(&"after".to_owned()) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the stream moves past the poison record");
        stop.send(true).unwrap();
        emulator.await.unwrap();

        // Delivered once before the failure; the poison record tried 1 + 2 retries times.
        assert_eq!(texts(), ["before", "after"]);
        let poison_tries = poster.attempts() - 2;
        assert_eq!(poison_tries, 3);
        assert_eq!(store.checkpoint().unwrap(), 3);
    }

    #[test]
    fn records_have_the_lambda_shape() {
        let event = LogEvent::chat("CXzQ2cJjoAMCJ6g=", "hello", parse_iso("2026-11-24T10:15:32Z").unwrap());
        let json = serde_json::to_value(record(17, &event, "arn:t")).unwrap();
        assert_eq!(json["eventName"], "INSERT");
        assert_eq!(json["dynamodb"]["SequenceNumber"], "0000000000000000000000000017");
        assert_eq!(json["dynamodb"]["NewImage"]["message"]["S"], "hello");
        assert_eq!(json["dynamodb"]["NewImage"]["kind"]["S"], "chat");
        assert_eq!(json["dynamodb"]["Keys"]["message_id"]["S"], event.message_id.as_str());
        assert_eq!(json["dynamodb"]["StreamViewType"], "NEW_IMAGE");
        assert!(json["dynamodb"]["SizeBytes"].as_i64().unwrap() > 0);
        let decoded = chat_core::entrypoints::stream::decode(&serde_json::from_value(json).unwrap()).unwrap().unwrap();
        assert_eq!(decoded.event, event);
    }
}
