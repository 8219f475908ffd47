//! A table's DynamoDB Stream, read the way Lambda's event source mapping reads
//! it: every shard through shard iterators, a child shard only after its parent
//! is drained, and records handed over as the `aws_lambda_events` records a
//! stream-triggered Lambda receives.

use std::collections::HashMap;

use aws_lambda_events::dynamodb::EventRecord;
use aws_sdk_dynamodbstreams::Client;
use aws_sdk_dynamodbstreams::types::{AttributeValue, Record, ShardIteratorType};
use chat_core::StoreError;

use crate::unavailable;

/// Where reading starts in the shards that exist when the reader opens
/// (shards that appear later are always read from their start).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartingPosition {
    /// Only records written from now on, like a new mapping with `LATEST`.
    Latest,
    /// Everything the stream still holds (24 hours on AWS).
    TrimHorizon,
}

/// Records from one shard, in order.
#[derive(Debug, Default)]
pub struct StreamBatch {
    pub shard_id: String,
    pub records: Vec<EventRecord>,
}

#[derive(Debug)]
struct Shard {
    id: String,
    parent: Option<String>,
    /// `None` once a closed shard is drained.
    iterator: Option<String>,
}

/// One table's stream.
#[derive(Debug)]
pub struct StreamReader {
    client: Client,
    stream_arn: String,
    region: String,
    shards: Vec<Shard>,
    next: usize,
}

impl StreamReader {
    /// Opens the table's latest stream.
    pub async fn open(
        dynamodb: &aws_sdk_dynamodb::Client,
        client: Client,
        table: &str,
        start: StartingPosition,
    ) -> Result<Self, StoreError> {
        let described = dynamodb.describe_table().table_name(table).send().await.map_err(unavailable)?;
        let stream_arn = described
            .table
            .and_then(|t| t.latest_stream_arn)
            .ok_or_else(|| StoreError::Malformed(format!("table {table} has no stream")))?;
        let region = client.config().region().map(ToString::to_string).unwrap_or_default();
        let mut reader = Self { client, stream_arn, region, shards: Vec::new(), next: 0 };
        reader.discover(Some(start)).await?;
        Ok(reader)
    }

    pub fn stream_arn(&self) -> &str {
        &self.stream_arn
    }

    /// Adds shards not seen before; `initial` positions the ones present at open.
    async fn discover(&mut self, initial: Option<StartingPosition>) -> Result<(), StoreError> {
        let mut after: Option<String> = None;
        loop {
            let output = self
                .client
                .describe_stream()
                .stream_arn(&self.stream_arn)
                .set_exclusive_start_shard_id(after.take())
                .send()
                .await
                .map_err(unavailable)?;
            let Some(description) = output.stream_description else { break };
            for shard in description.shards() {
                let Some(id) = shard.shard_id() else { continue };
                if self.shards.iter().any(|s| s.id == id) {
                    continue;
                }
                let closed = shard.sequence_number_range().and_then(|r| r.ending_sequence_number()).is_some();
                let kind = match initial {
                    Some(StartingPosition::Latest) if closed => None, // nothing new will come
                    Some(StartingPosition::Latest) => Some(ShardIteratorType::Latest),
                    _ => Some(ShardIteratorType::TrimHorizon),
                };
                let iterator = match kind {
                    Some(kind) => Some(self.iterator(id, kind, None).await?),
                    None => None,
                };
                let parent = shard.parent_shard_id().map(str::to_owned);
                self.shards.push(Shard { id: id.to_owned(), parent, iterator });
            }
            match description.last_evaluated_shard_id {
                Some(id) => after = Some(id),
                None => break,
            }
        }
        Ok(())
    }

    async fn iterator(
        &self,
        shard_id: &str,
        kind: ShardIteratorType,
        sequence_number: Option<&str>,
    ) -> Result<String, StoreError> {
        let output = self
            .client
            .get_shard_iterator()
            .stream_arn(&self.stream_arn)
            .shard_id(shard_id)
            .shard_iterator_type(kind)
            .set_sequence_number(sequence_number.map(str::to_owned))
            .send()
            .await
            .map_err(unavailable)?;
        output.shard_iterator.ok_or_else(|| StoreError::Malformed(format!("no iterator for shard {shard_id}")))
    }

    /// Whether `shard`'s parent still has records to give (children wait for it).
    fn waits_for_parent(&self, shard: &Shard) -> bool {
        let parent = shard.parent.as_deref();
        self.shards.iter().any(|s| Some(s.id.as_str()) == parent && s.iterator.is_some())
    }

    /// Up to `limit` records from the next shard that has any (or only from
    /// `shard`, to grow a batch); an empty batch when none has. Looks for new
    /// shards once one is drained.
    pub async fn next_batch(&mut self, limit: usize, shard: Option<&str>) -> Result<StreamBatch, StoreError> {
        let mut drained = false;
        for _ in 0..self.shards.len() {
            let index = self.next % self.shards.len();
            self.next = index + 1;
            let candidate = &self.shards[index];
            if shard.is_some_and(|wanted| wanted != candidate.id) || self.waits_for_parent(candidate) {
                continue;
            }
            let Some(iterator) = candidate.iterator.clone() else { continue };
            let limit = i32::try_from(limit.clamp(1, 1000)).unwrap_or(1000);
            let output =
                self.client.get_records().shard_iterator(iterator).limit(limit).send().await.map_err(unavailable)?;
            let shard = &mut self.shards[index];
            shard.iterator = output.next_shard_iterator;
            drained |= shard.iterator.is_none();
            let records: Vec<EventRecord> = output
                .records
                .unwrap_or_default()
                .into_iter()
                .map(|r| event_record(r, &self.stream_arn, &self.region))
                .collect();
            if !records.is_empty() {
                return Ok(StreamBatch { shard_id: shard.id.clone(), records });
            }
        }
        if drained {
            self.discover(None).await?;
        }
        Ok(StreamBatch::default())
    }

    /// Repositions a shard at (`at == true`, to read it again) or after a record.
    pub async fn seek(&mut self, shard_id: &str, sequence_number: &str, at: bool) -> Result<(), StoreError> {
        let kind = if at { ShardIteratorType::AtSequenceNumber } else { ShardIteratorType::AfterSequenceNumber };
        let iterator = self.iterator(shard_id, kind, Some(sequence_number)).await?;
        match self.shards.iter_mut().find(|s| s.id == shard_id) {
            Some(shard) => shard.iterator = Some(iterator),
            None => return Err(StoreError::Malformed(format!("unknown shard {shard_id}"))),
        }
        Ok(())
    }
}

fn item(map: Option<HashMap<String, AttributeValue>>) -> serde_dynamo::Item {
    serde_dynamo::Item::from(map.unwrap_or_default())
}

/// An SDK stream record as Lambda delivers it.
pub fn event_record(record: Record, stream_arn: &str, region: &str) -> EventRecord {
    let mut event = EventRecord::default();
    event.aws_region = record.aws_region.unwrap_or_else(|| region.to_owned());
    event.event_id = record.event_id.unwrap_or_default();
    event.event_name = record.event_name.map(|name| name.as_str().to_owned()).unwrap_or_default();
    event.event_source = record.event_source.or_else(|| Some("aws:dynamodb".into()));
    event.event_version = record.event_version;
    event.event_source_arn = Some(stream_arn.to_owned());
    if let Some(change) = record.dynamodb {
        if let Some(at) = change.approximate_creation_date_time {
            let at = chrono::DateTime::from_timestamp(at.secs(), at.subsec_nanos());
            event.change.approximate_creation_date_time = at.unwrap_or_default();
        }
        event.change.keys = item(change.keys);
        event.change.new_image = item(change.new_image);
        event.change.old_image = item(change.old_image);
        event.change.sequence_number = change.sequence_number;
        event.change.size_bytes = change.size_bytes.unwrap_or_default();
        event.change.stream_view_type =
            change.stream_view_type.and_then(|view| serde_json::from_value(view.as_str().into()).ok());
    }
    event
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodbstreams::types::{OperationType, StreamRecord, StreamViewType};
    use chat_core::LogEvent;
    use chat_core::entrypoints::stream::decode;
    use chat_core::time::parse_iso;

    #[test]
    fn sdk_records_become_the_records_lambda_delivers() {
        // A published line: its principal rides the item and the stream image too.
        let event = LogEvent::chat("CXzQ2cJjoAMCJ6g=", "hello", parse_iso("2026-11-24T10:15:32Z").unwrap())
            .published_by("arn:aws:iam::123456789012:user/ci");
        let image: HashMap<String, AttributeValue> = serde_dynamo::to_item(&event).unwrap();
        let record = Record::builder()
            .event_id("e1")
            .event_name(OperationType::Insert)
            .event_source("aws:dynamodb")
            .event_version("1.1")
            .dynamodb(
                StreamRecord::builder()
                    .set_new_image(Some(image))
                    .keys("message_id", AttributeValue::S(event.message_id.clone()))
                    .sequence_number("4200000000000000000001")
                    .size_bytes(120)
                    .stream_view_type(StreamViewType::NewImage)
                    .approximate_creation_date_time(aws_smithy_types_date(1_763_979_332))
                    .build(),
            )
            .build();
        let converted = event_record(record, "arn:aws:dynamodb:us-east-1:1:table/MessageHistory/stream/x", "us-east-1");
        assert_eq!(converted.event_name, "INSERT");
        assert_eq!(converted.change.sequence_number.as_deref(), Some("4200000000000000000001"));
        assert_eq!(converted.change.approximate_creation_date_time.timestamp(), 1_763_979_332);
        let json = serde_json::to_value(&converted).unwrap();
        assert_eq!(json["dynamodb"]["StreamViewType"], "NEW_IMAGE");
        assert_eq!(json["dynamodb"]["NewImage"]["message"]["S"], "hello");
        assert_eq!(json["dynamodb"]["NewImage"]["principal"]["S"], "arn:aws:iam::123456789012:user/ci");
        let decoded = decode(&converted).unwrap().unwrap();
        assert_eq!(decoded.event, event);
    }

    fn aws_smithy_types_date(secs: i64) -> aws_sdk_dynamodbstreams::primitives::DateTime {
        aws_sdk_dynamodbstreams::primitives::DateTime::from_secs(secs)
    }
}
