//! DynamoDB Stream events in, partial batch failures out.

use aws_lambda_events::dynamodb::{Event, EventRecord};
use aws_lambda_events::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};

use crate::broadcaster::{BatchReport, Broadcaster, SequencedEvent};
use crate::model::{LogEvent, RECEIPT_KEY_PREFIX};

/// Why a stream record was skipped rather than delivered.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("record has no SequenceNumber")]
    NoSequenceNumber,
    #[error("NewImage is not a log event: {0}")]
    BadImage(#[from] serde_dynamo::Error),
}

/// Decodes a MessageHistory stream record. `Ok(None)` for records that are not
/// new events (MODIFY, REMOVE, e.g. TTL deletes; receipts of acknowledged
/// sends): nothing to broadcast.
pub fn decode(record: &EventRecord) -> Result<Option<SequencedEvent>, RecordError> {
    if record.event_name != "INSERT" || is_receipt(record) {
        return Ok(None);
    }
    let sequence_number = record.change.sequence_number.clone().ok_or(RecordError::NoSequenceNumber)?;
    let event: LogEvent = serde_dynamo::from_item(record.change.new_image.clone())?;
    Ok(Some(SequencedEvent { sequence_number, event }))
}

fn is_receipt(record: &EventRecord) -> bool {
    matches!(
        record.change.new_image.get("message_id"),
        Some(serde_dynamo::AttributeValue::S(key)) if key.starts_with(RECEIPT_KEY_PREFIX)
    )
}

/// Broadcasts a stream batch. Malformed records are logged and skipped: retrying
/// them could never succeed and would block the shard for 24 hours.
pub async fn on_stream(event: &Event, broadcaster: &Broadcaster) -> DynamoDbEventResponse {
    batch_response(broadcast_records(event, broadcaster).await)
}

/// [`on_stream`]'s work, returning the broadcaster's report: edges that count
/// what a batch did (metrics, EMF) read it before it becomes the response.
pub async fn broadcast_records(event: &Event, broadcaster: &Broadcaster) -> BatchReport {
    let batch: Vec<SequencedEvent> = event
        .records
        .iter()
        .filter_map(|record| match decode(record) {
            Ok(decoded) => decoded,
            Err(error) => {
                tracing::error!(
                    event_id = %record.event_id,
                    sequence_number = record.change.sequence_number.as_deref().unwrap_or("-"),
                    %error,
                    "skipping malformed stream record"
                );
                None
            }
        })
        .collect();
    let report = broadcaster.broadcast(&batch).await;
    tracing::info!(
        records = event.records.len(),
        delivered = report.delivered,
        pruned = report.pruned,
        undeliverable = report.undeliverable,
        handed_off = report.handed_off,
        retry = report.failed.len(),
        "batch done"
    );
    report
}

/// The partial batch response for a report: its failed records, by sequence number.
pub fn batch_response(report: BatchReport) -> DynamoDbEventResponse {
    let mut response = DynamoDbEventResponse::default();
    response.batch_item_failures = report
        .failed
        .into_iter()
        .map(|sequence_number| {
            let mut failure = DynamoDbBatchItemFailure::default();
            failure.item_identifier = Some(sequence_number);
            failure
        })
        .collect();
    response
}
