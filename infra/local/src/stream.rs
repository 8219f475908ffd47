//! The DynamoDB Streams → Lambda event source mapping, emulated over the
//! store's change streams: batches of real `dynamodb::Event`s, woken on write,
//! a checkpoint that only moves past delivered records, bounded retries. The
//! message table feeds the broadcaster and, with `--webhook`, a second mapping
//! of the events function (its own checkpoint), which also reads the room
//! member counters' changes as the Memberships stream's counter records.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_lambda_events::dynamodb::{Event, EventRecord, StreamViewType};
use aws_lambda_events::streams::DynamoDbEventResponse;
use chat_core::broadcaster::{Broadcaster, RetryPolicy};
use chat_core::entrypoints::stream::{batch_response, broadcast_records};
use chat_core::{LogEvent, StoreError};
use tokio::sync::watch;

use crate::metrics;
use crate::store::{MemberChange, SqliteStore};

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

/// The Memberships stream's record of a room's member counter item
/// (`{room, connection_id: "#members", members}`), as DynamoDB writes it with
/// NEW_AND_OLD_IMAGES: INSERT for the item's first write, MODIFY after.
fn counter_record(change: &MemberChange, table_arn: &str) -> EventRecord {
    use chat_core::model::{ROOM_COUNTER_ATTRIBUTE, ROOM_COUNTER_ID};
    let image = |members: i64| -> serde_dynamo::Item {
        let item = serde_json::json!({
            "room": change.room, "connection_id": ROOM_COUNTER_ID, ROOM_COUNTER_ATTRIBUTE: members,
        });
        serde_dynamo::to_item(item).expect("a counter item converts")
    };
    let keys: serde_dynamo::Item =
        serde_dynamo::to_item(serde_json::json!({ "room": change.room, "connection_id": ROOM_COUNTER_ID }))
            .expect("string keys convert");
    let mut record = EventRecord::default();
    record.aws_region = "local".into();
    record.event_id = format!("{:032x}", change.seq);
    record.event_name = if change.before.is_some() { "MODIFY" } else { "INSERT" }.into();
    record.event_source = Some("aws:dynamodb".into());
    record.event_version = Some("1.1".into());
    record.event_source_arn = Some(format!("{table_arn}/stream/local"));
    record.change.approximate_creation_date_time = change.at;
    record.change.keys = keys;
    record.change.new_image = image(change.after);
    if let Some(before) = change.before {
        record.change.old_image = image(before);
    }
    record.change.size_bytes = serde_json::to_vec(&record.change.new_image).map_or(0, |b| b.len() as i64);
    record.change.sequence_number = Some(sequence_number(change.seq));
    record.change.stream_view_type = Some(StreamViewType::NewAndOldImages);
    record
}

/// How often a source with no wake-up signal (or written by another process) is polled.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// Which of the embedded store's change streams a [`SqliteSource`] reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Table {
    /// The message table (MessageHistory's stream); its row numbers are the sequence numbers.
    Messages,
    /// The member counter changes (the counter items' records on Memberships' stream).
    Counters,
}

/// One of the embedded store's change streams, read by one consumer (an event
/// source mapping) with its own checkpoint.
pub struct SqliteSource {
    store: SqliteStore,
    table: Table,
    /// `None`: the broadcaster, whose checkpoint predates named ones.
    consumer: Option<String>,
    signal: watch::Receiver<u64>,
    position: i64,
}

const LOCAL_TABLE_ARN: &str = "arn:aws:dynamodb:local:000000000000:table/MessageHistory";
const LOCAL_MEMBERSHIPS_ARN: &str = "arn:aws:dynamodb:local:000000000000:table/Memberships";

impl SqliteSource {
    /// The broadcaster's: the message table, resumed from its persisted checkpoint.
    pub fn new(store: SqliteStore) -> Result<Self, StoreError> {
        let position = store.checkpoint()?;
        Ok(Self { signal: store.appended(), store, table: Table::Messages, consumer: None, position })
    }

    /// Another mapping on the message table, named `consumer`: its own
    /// checkpoint, independent of the broadcaster's. Its first run starts at
    /// the newest record (a new mapping's LATEST), not at the whole history.
    pub fn messages_for(store: SqliteStore, consumer: &str) -> Result<Self, StoreError> {
        Self::named(store, Table::Messages, consumer)
    }

    /// The member counter stream, read by `consumer` (from its newest change the first time).
    pub fn counters_for(store: SqliteStore, consumer: &str) -> Result<Self, StoreError> {
        Self::named(store, Table::Counters, consumer)
    }

    fn named(store: SqliteStore, table: Table, consumer: &str) -> Result<Self, StoreError> {
        let consumer = format!("{consumer}:{}", if table == Table::Messages { "messages" } else { "members" });
        let position = match store.consumer_checkpoint(&consumer)? {
            Some(seq) => seq,
            None => {
                let latest =
                    if table == Table::Messages { store.newest_sequence()? } else { store.newest_member_change()? };
                store.set_consumer_checkpoint(&consumer, latest)?;
                latest
            }
        };
        let signal = if table == Table::Messages { store.appended() } else { store.counted() };
        Ok(Self { store, table, consumer: Some(consumer), signal, position })
    }

    fn checkpoint_at(&mut self, seq: i64) -> Result<(), StoreError> {
        self.position = seq;
        match &self.consumer {
            None => self.store.set_checkpoint(seq),
            Some(consumer) => self.store.set_consumer_checkpoint(consumer, seq),
        }
    }

    fn poll_messages(&mut self, max: usize) -> Result<Vec<EventRecord>, StoreError> {
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

    fn poll_counters(&mut self, max: usize) -> Result<Vec<EventRecord>, StoreError> {
        let changes = self.store.member_changes_after(self.position, max)?;
        if let Some(last) = changes.last() {
            self.position = last.seq;
        }
        Ok(changes.iter().map(|change| counter_record(change, LOCAL_MEMBERSHIPS_ARN)).collect())
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
        match self.table {
            Table::Messages => self.poll_messages(max),
            Table::Counters => self.poll_counters(max),
        }
    }

    async fn wait(&mut self) {
        // Writes in this process wake us at once; the poll catches other writers (replay).
        tokio::select! {
            _ = self.signal.changed() => {}
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
        let newest = match self.table {
            Table::Messages => self.store.newest_sequence().ok()?,
            Table::Counters => self.store.newest_member_change().ok()?,
        };
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

/// A function a stream invokes: the broadcaster, or the events function.
#[async_trait]
pub trait StreamFunction: Send + Sync {
    /// One invocation with `event`; `backlog` is what the source still holds
    /// (for the function's metrics).
    async fn invoke(&self, event: &Event, backlog: Option<u64>) -> DynamoDbEventResponse;
    /// Counts a batch retried from a failed record.
    fn retried(&self);
    /// Counts a batch whose failing record was given up.
    fn given_up(&self);
}

#[async_trait]
impl StreamFunction for Arc<Broadcaster> {
    async fn invoke(&self, event: &Event, backlog: Option<u64>) -> DynamoDbEventResponse {
        let started = std::time::Instant::now();
        let report = broadcast_records(event, self).await;
        metrics::record_broadcast(&metrics::Invocation {
            records: event.records.len(),
            report: &report,
            took: started.elapsed(),
            lag: newest_age(&event.records),
            backlog,
        });
        batch_response(report)
    }

    fn retried(&self) {
        metrics::record_retry();
    }

    fn given_up(&self) {
        metrics::record_given_up();
    }
}

/// The events function (`chat_core::entrypoints::events`, the deployed
/// EventBridge function's handler) with its sink: a mapping's second reader of
/// the message table, and the reader of the counter stream.
pub struct EventsFunction(pub Arc<dyn chat_core::outbound::EventSink>);

#[async_trait]
impl StreamFunction for EventsFunction {
    async fn invoke(&self, event: &Event, _backlog: Option<u64>) -> DynamoDbEventResponse {
        chat_core::entrypoints::events::on_stream(event, self.0.as_ref()).await
    }

    fn retried(&self) {
        metrics::record_events_retry();
    }

    fn given_up(&self) {
        metrics::record_events_given_up();
    }
}

/// The event source mapping: batches from `source` into `function` until
/// `stop` turns true.
pub async fn run(
    mut source: impl RecordSource,
    function: impl StreamFunction,
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
        let response = function.invoke(&event, source.backlog()).await;
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
                function.given_up();
                retries = 0;
                source.resume_after(record).await
            }
            Next::Retry(index) => {
                retries += 1;
                let seq = batch[index].change.sequence_number.as_deref().unwrap_or_default();
                tracing::warn!(seq, retries, "stream: retrying from a failed record");
                function.retried();
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

    #[tokio::test]
    async fn counter_changes_read_as_the_counter_items_stream_records_from_a_consumers_own_checkpoint() {
        let store = SqliteStore::open(std::path::Path::new(":memory:")).unwrap();
        let at = parse_iso("2026-11-24T10:15:32Z").unwrap();
        store.put(&chat_core::Connection::new("before", "ip", at).in_room("old")).await.unwrap();
        // A new consumer starts at the newest change (LATEST), not at the history.
        let mut source = SqliteSource::counters_for(store.clone(), "events").unwrap();
        assert!(source.poll(10).await.unwrap().is_empty());
        store.put(&chat_core::Connection::new("a", "ip", at).in_room("ops")).await.unwrap();
        store.put(&chat_core::Connection::new("b", "ip", at).in_room("ops")).await.unwrap();
        assert!(store.unsubscribe("a", "ops").await.unwrap().is_some());
        let records = source.poll(10).await.unwrap();
        let json: Vec<serde_json::Value> = records.iter().map(|r| serde_json::to_value(r).unwrap()).collect();
        let names: Vec<&str> = json.iter().map(|r| r["eventName"].as_str().unwrap()).collect();
        assert_eq!(names, ["INSERT", "MODIFY", "MODIFY"]);
        let members = |image: &serde_json::Value| image["members"]["N"].as_str().map(str::to_owned);
        let steps: Vec<_> =
            json.iter().map(|r| (members(&r["dynamodb"]["OldImage"]), members(&r["dynamodb"]["NewImage"]))).collect();
        let n = |v: &str| Some(v.to_owned());
        assert_eq!(steps, [(None, n("1")), (n("1"), n("2")), (n("2"), n("1"))]);
        let first = &json[0]["dynamodb"];
        assert_eq!(first["Keys"], serde_json::json!({"room": {"S": "ops"}, "connection_id": {"S": "#members"}}));
        assert_eq!(first["NewImage"]["connection_id"]["S"], "#members");
        assert_eq!(first["StreamViewType"], "NEW_AND_OLD_IMAGES");
        assert!(json[0]["eventSourceARN"].as_str().unwrap().contains("table/Memberships/stream"));
        // Its checkpoint is its own: the broadcaster's and the message consumer's do not move.
        source.resume_after(&records[1]).await.unwrap();
        assert_eq!(store.consumer_checkpoint("events:members").unwrap(), Some(3));
        assert_eq!(store.checkpoint().unwrap(), 0);
        let again = SqliteSource::counters_for(store.clone(), "events").unwrap();
        assert_eq!(again.position, 3, "a restart resumes there");
        let messages = SqliteSource::messages_for(store.clone(), "events").unwrap();
        assert_eq!(store.consumer_checkpoint("events:messages").unwrap(), Some(messages.position));
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
