//! The DynamoDB Streams → Lambda event source mapping, emulated over the
//! store's message table: batches of real `dynamodb::Event`s, woken on append,
//! a checkpoint that only moves past delivered records, bounded retries.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_lambda_events::dynamodb::{Event, EventRecord, StreamViewType};
use aws_lambda_events::streams::DynamoDbEventResponse;
use chat_core::broadcaster::{Broadcaster, RetryPolicy};
use chat_core::entrypoints::stream::{batch_response, broadcast_records};
use chat_core::{LogEvent, StoreError};
use tokio::sync::{Notify, watch};

use crate::metrics;
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

/// Where the event source mapping reads records: the embedded store's message
/// table, or a real DynamoDB Stream. A source keeps a read position (ahead of
/// what is done while a batch is in flight) and moves it when told.
#[async_trait]
pub trait RecordSource: Send {
    /// Up to `max` records after the read position; empty when there are none yet.
    async fn poll(&mut self, max: usize) -> Result<Vec<EventRecord>, StoreError>;
    /// Returns when a poll may find new records.
    async fn wait(&mut self);
    /// Continue after `record`: it was delivered, or given up.
    async fn resume_after(&mut self, record: &EventRecord) -> Result<(), StoreError>;
    /// Continue at `record`: it is retried.
    async fn resume_at(&mut self, record: &EventRecord) -> Result<(), StoreError>;
    /// Records after the read position, where the source can count them cheaply.
    fn backlog(&self) -> Option<u64> {
        None
    }
}

/// How often a source with no wake-up signal (or written by another process) is polled.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// The embedded store's message table; its row numbers are the sequence numbers.
pub struct SqliteSource {
    store: SqliteStore,
    appended: Arc<Notify>,
    position: i64,
}

const LOCAL_TABLE_ARN: &str = "arn:aws:dynamodb:local:000000000000:table/MessageHistory";

impl SqliteSource {
    /// Resumes from the persisted checkpoint.
    pub fn new(store: SqliteStore) -> Result<Self, StoreError> {
        let position = store.checkpoint()?;
        Ok(Self { appended: store.appended(), store, position })
    }

    fn checkpoint_at(&mut self, seq: i64) -> Result<(), StoreError> {
        self.position = seq;
        self.store.set_checkpoint(seq)
    }
}

/// The record's sequence number, which every source positions itself by.
pub fn record_sequence(record: &EventRecord) -> Result<&str, StoreError> {
    record
        .change
        .sequence_number
        .as_deref()
        .ok_or_else(|| StoreError::Malformed("record without a sequence number".into()))
}

fn seq_of(record: &EventRecord) -> Result<i64, StoreError> {
    let number = record_sequence(record)?;
    number.parse().map_err(|_| StoreError::Malformed(format!("sequence number {number:?}")))
}

#[async_trait]
impl RecordSource for SqliteSource {
    async fn poll(&mut self, max: usize) -> Result<Vec<EventRecord>, StoreError> {
        let rows = self.store.stream_after(self.position, max)?;
        let mut records = Vec::with_capacity(rows.len());
        for (seq, row) in rows {
            self.position = seq;
            match row {
                Ok(event) => records.push(record(seq, &event, LOCAL_TABLE_ARN)),
                Err(error) => tracing::error!(seq, %error, "stream: skipping unreadable row"),
            }
        }
        Ok(records)
    }

    async fn wait(&mut self) {
        // Appends in this process wake us at once; the poll catches other writers (replay).
        tokio::select! {
            () = self.appended.notified() => {}
            () = tokio::time::sleep(POLL_INTERVAL) => {}
        }
    }

    async fn resume_after(&mut self, record: &EventRecord) -> Result<(), StoreError> {
        self.checkpoint_at(seq_of(record)?)
    }

    async fn resume_at(&mut self, record: &EventRecord) -> Result<(), StoreError> {
        self.checkpoint_at(seq_of(record)? - 1)
    }

    fn backlog(&self) -> Option<u64> {
        let newest = self.store.newest_sequence().ok()?;
        Some(newest.saturating_sub(self.position).max(0) as u64)
    }
}

/// What the mapping does after an invocation.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// Everything delivered: continue after the last record.
    Advance,
    /// Retry from the record at this index of the batch.
    Retry(usize),
}

/// Lambda's rules for a partial batch response: retry from the lowest failed
/// record; an identifier that is not in the batch fails the whole batch.
fn next_step(batch: &[EventRecord], response: &DynamoDbEventResponse) -> Next {
    let mut lowest = None;
    for failure in &response.batch_item_failures {
        let id = failure.item_identifier.as_deref();
        match batch.iter().position(|r| r.change.sequence_number.as_deref() == id) {
            Some(index) => lowest = Some(lowest.map_or(index, |l: usize| l.min(index))),
            None => {
                tracing::error!(?id, "stream: an unknown batchItemFailures identifier fails the whole batch");
                return Next::Retry(0);
            }
        }
    }
    lowest.map_or(Next::Advance, Next::Retry)
}

/// How long ago the newest of `records` was logged (its approximate creation time).
fn newest_age(records: &[EventRecord]) -> Option<Duration> {
    let newest = records.iter().map(|r| r.change.approximate_creation_date_time).max()?;
    // A record stamped ahead of this clock is no lag at all.
    Some((chrono::Utc::now() - newest).to_std().unwrap_or_default())
}

/// The event source mapping: batches from `source` into the broadcaster until
/// `stop` turns true.
pub async fn run(
    mut source: impl RecordSource,
    broadcaster: Arc<Broadcaster>,
    settings: StreamSettings,
    mut stop: watch::Receiver<bool>,
) {
    let backoff =
        RetryPolicy { max_attempts: 0, base_delay: Duration::from_millis(100), max_delay: Duration::from_secs(5) };
    let mut retries = 0u32;
    while !*stop.borrow() {
        let mut batch = match source.poll(settings.batch_size).await {
            Ok(batch) => batch,
            Err(error) => {
                tracing::error!(%error, "stream: cannot read records");
                tokio::time::sleep(backoff.max_delay).await;
                continue;
            }
        };
        if batch.is_empty() {
            tokio::select! {
                () = source.wait() => {}
                _ = stop.changed() => {}
            }
            continue;
        }
        if !settings.batching_window.is_zero() && batch.len() < settings.batch_size {
            tokio::time::sleep(settings.batching_window).await;
            match source.poll(settings.batch_size - batch.len()).await {
                Ok(more) => batch.extend(more),
                Err(error) => tracing::warn!(%error, "stream: invoking with the records read so far"),
            }
        }
        let mut event = Event::default();
        event.records = batch;
        let started = std::time::Instant::now();
        let report = broadcast_records(&event, &broadcaster).await;
        metrics::record_broadcast(&metrics::Invocation {
            records: event.records.len(),
            report: &report,
            took: started.elapsed(),
            lag: newest_age(&event.records),
            backlog: source.backlog(),
        });
        let response = batch_response(report);
        let batch = event.records;
        let moved = match next_step(&batch, &response) {
            Next::Advance => {
                retries = 0;
                source.resume_after(batch.last().expect("batch is not empty")).await
            }
            Next::Retry(index) if retries >= settings.max_retries => {
                let record = &batch[index];
                let seq = record.change.sequence_number.as_deref().unwrap_or_default();
                tracing::error!(seq, retries, "stream: record given up after retries (on-failure destination)");
                metrics::record_given_up();
                retries = 0;
                source.resume_after(record).await
            }
            Next::Retry(index) => {
                retries += 1;
                let seq = batch[index].change.sequence_number.as_deref().unwrap_or_default();
                tracing::warn!(seq, retries, "stream: retrying from a failed record");
                metrics::record_retry();
                tokio::time::sleep(backoff.delay(retries)).await;
                source.resume_at(&batch[index]).await
            }
        };
        if let Err(error) = moved {
            tracing::error!(%error, "stream: cannot move the read position; the batch will be read again");
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
            log: Arc::new(store.clone()),
            poster: poster.clone(),
            archive: None,
            clock: Arc::new(FixedClock::at(at)),
            config: fanout,
            occupancy: Default::default(),
        });
        for text in ["before", "poison", "after"] {
            store.append(&LogEvent::chat("writer", text, at)).await.unwrap();
        }
        let settings = StreamSettings { batch_size: 10, batching_window: Duration::ZERO, max_retries: 2 };
        let (stop, stopped) = watch::channel(false);
        let source = SqliteSource::new(store.clone()).unwrap();
        let emulator = tokio::spawn(run(source, broadcaster, settings, stopped));

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
