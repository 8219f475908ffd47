//! Both streams in, events out: MessageHistory's new lines, joins and leaves,
//! and the Memberships table's room counters (occupied, vacated), put on an
//! [`EventSink`] in stream order, with partial batch failures for what it did not take.

use aws_lambda_events::dynamodb::{Event, EventRecord};
use aws_lambda_events::streams::DynamoDbEventResponse;
use serde_dynamo::AttributeValue;

use crate::broadcaster::BatchReport;
use crate::entrypoints::stream::{self, RecordError};
use crate::model::{ROOM_COUNTER_ATTRIBUTE, ROOM_COUNTER_ID};
use crate::outbound::{EventSink, OutboundEvent};

/// Why a stream record could not be read as an event; it is logged and skipped.
#[derive(Debug, thiserror::Error)]
pub enum EventRecordError {
    #[error(transparent)]
    Log(#[from] RecordError),
    #[error("room counter record: {0}")]
    Counter(&'static str),
}

/// The event a record of either stream stands for. `Ok(None)` for records the
/// world outside does not hear of: receipts, other kinds, memberships
/// themselves (their counter says what matters), counters that moved between
/// two non-zero counts.
pub fn outbound_of(record: &EventRecord) -> Result<Option<OutboundEvent>, EventRecordError> {
    let keys = &record.change.keys;
    if keys.contains_key("message_id") {
        return Ok(stream::decode(record)?.and_then(|sequenced| OutboundEvent::of_log_event(&sequenced.event)));
    }
    if !matches!(keys.get("connection_id"), Some(AttributeValue::S(id)) if id == ROOM_COUNTER_ID) {
        return Ok(None);
    }
    let Some(AttributeValue::S(room)) = keys.get("room") else {
        return Err(EventRecordError::Counter("no room key"));
    };
    let sequence_number =
        record.change.sequence_number.as_deref().ok_or(EventRecordError::Log(RecordError::NoSequenceNumber))?;
    let before = members(&record.change.old_image)?;
    let after = members(&record.change.new_image)?;
    let at = record.change.approximate_creation_date_time;
    Ok(OutboundEvent::of_room_count(room, before, after, at, sequence_number))
}

/// The count in a counter image; an absent image or attribute is 0 (an INSERT
/// has no old image, a REMOVE no new one). A count below 0 would be a bug
/// elsewhere; it reads as 0, i.e. nobody there.
fn members(image: &serde_dynamo::Item) -> Result<u64, EventRecordError> {
    match image.get(ROOM_COUNTER_ATTRIBUTE) {
        None => Ok(0),
        Some(AttributeValue::N(number)) => number
            .parse::<i64>()
            .map(|count| count.max(0) as u64)
            .map_err(|_| EventRecordError::Counter("members is not an integer")),
        Some(_) => Err(EventRecordError::Counter("members is not a number")),
    }
}

/// Puts a batch's events on `sink`, in record order. Malformed records are
/// logged and skipped (retrying them could never succeed). When the sink takes
/// only part, the record of the first event it did not take and every record
/// after it are reported for retry: the stream redelivers them (receivers
/// dedupe on the event id).
pub async fn on_stream(event: &Event, sink: &dyn EventSink) -> DynamoDbEventResponse {
    let mut outbound = Vec::new();
    // For each outbound event, the index of its record.
    let mut origin = Vec::new();
    for (index, record) in event.records.iter().enumerate() {
        match outbound_of(record) {
            Ok(Some(out)) => {
                outbound.push(out);
                origin.push(index);
            }
            Ok(None) => {}
            Err(error) => tracing::error!(
                event_id = %record.event_id,
                sequence_number = record.change.sequence_number.as_deref().unwrap_or("-"),
                %error,
                "skipping malformed stream record"
            ),
        }
    }
    let report = match sink.put(&outbound).await {
        Ok(()) => BatchReport::default(),
        Err(error) => {
            let first = origin.get(error.delivered).copied().unwrap_or(event.records.len());
            tracing::error!(%error, retry = event.records.len() - first, "the sink did not take every event");
            let failed = event.records[first..].iter().filter_map(|r| r.change.sequence_number.clone()).collect();
            BatchReport { failed, ..Default::default() }
        }
    };
    tracing::info!(records = event.records.len(), events = outbound.len(), retry = report.failed.len(), "batch done");
    stream::batch_response(report)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;
    use serde_json::json;

    use super::*;
    use crate::model::LogEvent;
    use crate::outbound::{DetailType, SinkError};
    use crate::time::from_epoch_millis;

    /// Takes the first `accept` events of each put, then refuses.
    struct Sink {
        accept: usize,
        taken: Mutex<Vec<OutboundEvent>>,
    }

    #[async_trait]
    impl EventSink for Sink {
        async fn put(&self, events: &[OutboundEvent]) -> Result<(), SinkError> {
            let taken = events.len().min(self.accept);
            self.taken.lock().unwrap().extend_from_slice(&events[..taken]);
            if taken < events.len() {
                return Err(SinkError { delivered: taken, reason: "throttled".into() });
            }
            Ok(())
        }
    }

    fn item(value: serde_json::Value) -> serde_dynamo::Item {
        serde_dynamo::to_item(value).unwrap()
    }

    fn log_record(seq: u32, event: &LogEvent) -> EventRecord {
        let mut record = EventRecord::default();
        record.event_name = "INSERT".into();
        record.change.keys = item(json!({"message_id": event.message_id}));
        record.change.new_image = serde_dynamo::to_item(event).unwrap();
        record.change.sequence_number = Some(format!("{seq:04}"));
        record
    }

    fn counter_record(seq: u32, name: &str, before: Option<i64>, after: Option<i64>) -> EventRecord {
        let mut record = EventRecord::default();
        record.event_name = name.into();
        record.change.keys = item(json!({"room": "lobby", "connection_id": ROOM_COUNTER_ID}));
        let image = |count: Option<i64>| match count {
            Some(n) => item(json!({"room": "lobby", "connection_id": ROOM_COUNTER_ID, "members": n})),
            None => serde_dynamo::Item::default(),
        };
        record.change.old_image = image(before);
        record.change.new_image = image(after);
        record.change.sequence_number = Some(format!("{seq:04}"));
        record.change.approximate_creation_date_time = from_epoch_millis(1_795_515_330_000).unwrap();
        record
    }

    fn batch(records: Vec<EventRecord>) -> Event {
        let mut event = Event::default();
        event.records = records;
        event
    }

    fn kinds(sink: &Sink) -> Vec<DetailType> {
        sink.taken.lock().unwrap().iter().map(|e| e.detail_type).collect()
    }

    #[tokio::test]
    async fn both_streams_become_events_in_record_order() {
        let at = from_epoch_millis(1_795_515_330_000).unwrap();
        let membership = {
            let mut record = counter_record(3, "INSERT", None, None);
            record.change.keys = item(json!({"room": "lobby", "connection_id": "abc="}));
            record
        };
        let records = vec![
            counter_record(1, "INSERT", None, Some(1)),
            log_record(2, &LogEvent::join("c1", at)),
            membership,
            counter_record(4, "MODIFY", Some(1), Some(2)),
            log_record(5, &LogEvent::chat("c1", "hi", at)),
            log_record(6, &LogEvent::delete("c1", "x", at)),
            counter_record(7, "MODIFY", Some(1), Some(0)),
        ];
        let sink = Sink { accept: usize::MAX, taken: Mutex::default() };
        let response = on_stream(&batch(records), &sink).await;
        assert!(response.batch_item_failures.is_empty());
        use DetailType::*;
        assert_eq!(kinds(&sink), [RoomOccupied, MemberJoined, MessageCreated, RoomVacated]);
        assert_eq!(sink.taken.lock().unwrap()[0].id, "lobby#0001");
    }

    #[tokio::test]
    async fn what_the_sink_did_not_take_is_retried_from_its_record_on() {
        let at = from_epoch_millis(1_795_515_330_000).unwrap();
        let records = vec![
            log_record(1, &LogEvent::chat("c1", "one", at)),
            log_record(2, &LogEvent::delete("c1", "x", at)),
            log_record(3, &LogEvent::chat("c1", "two", at)),
            log_record(4, &LogEvent::delete("c1", "y", at)),
        ];
        let sink = Sink { accept: 1, taken: Mutex::default() };
        let response = on_stream(&batch(records), &sink).await;
        let failed: Vec<_> = response.batch_item_failures.iter().map(|f| f.item_identifier.clone().unwrap()).collect();
        assert_eq!(failed, ["0003", "0004"], "the second line's record and everything after it");
    }

    #[tokio::test]
    async fn malformed_counters_are_skipped_not_retried() {
        let mut bad = counter_record(1, "MODIFY", Some(0), Some(1));
        bad.change.new_image = item(json!({"members": "many"}));
        assert!(outbound_of(&bad).is_err());
        let mut negative = counter_record(2, "MODIFY", Some(1), Some(-1));
        negative.change.keys = item(json!({"room": "lobby", "connection_id": ROOM_COUNTER_ID}));
        let vacated = outbound_of(&negative).unwrap().unwrap();
        assert_eq!(vacated.detail.members, Some(0));
        let sink = Sink { accept: usize::MAX, taken: Mutex::default() };
        let response = on_stream(&batch(vec![bad, negative]), &sink).await;
        assert!(response.batch_item_failures.is_empty());
        assert_eq!(kinds(&sink), [DetailType::RoomVacated]);
    }
}
