//! DynamoDB-endpoint mode: the handlers use the AWS adapters (the very code the
//! Lambdas deploy) against any DynamoDB API — moto, DynamoDB Local or AWS — and
//! the broadcaster is driven by the MessageHistory table's real stream.

use std::sync::Arc;

use async_trait::async_trait;
use aws_lambda_events::dynamodb::EventRecord;
use chat_aws::provision::{create_bucket, create_tables};
use chat_aws::{
    DynamoBans, DynamoConnections, DynamoCursors, DynamoLog, DynamoSessions, S3Archive, StartingPosition, StreamReader,
    TableNames,
};
use chat_core::StoreError;

use crate::functions::Tables;
use crate::stream::{POLL_INTERVAL, RecordSource, record_sequence};

/// Where the tables are.
#[derive(Clone, Debug)]
pub struct DynamoSettings {
    /// `None`: the SDK's own resolution (AWS, or `AWS_ENDPOINT_URL`).
    pub endpoint: Option<String>,
    pub tables: TableNames,
    pub create_tables: bool,
}

/// Where the broadcaster archives each batch.
#[derive(Clone, Debug)]
pub struct ArchiveSettings {
    pub bucket: String,
    pub endpoint: Option<String>,
    pub create_bucket: bool,
}

/// The tables through the AWS adapters, and the message table's stream
/// (read from records written from now on, like a new `LATEST` mapping).
pub async fn open(settings: &DynamoSettings) -> Result<(Tables, DynamoSource), StoreError> {
    open_with(&chat_aws::sdk_config_for(settings.endpoint.as_deref()).await, settings).await
}

/// [`open`] with an SDK config of the caller's (credentials, region, endpoint).
pub async fn open_with(
    sdk: &aws_config::SdkConfig,
    settings: &DynamoSettings,
) -> Result<(Tables, DynamoSource), StoreError> {
    let client = aws_sdk_dynamodb::Client::new(sdk);
    if settings.create_tables {
        create_tables(&client, &settings.tables).await?;
    }
    let names = &settings.tables;
    let tables = Tables {
        connections: Arc::new(DynamoConnections::new(client.clone(), &names.connections, &names.memberships)),
        sessions: Arc::new(DynamoSessions::new(client.clone(), &names.sessions)),
        log: Arc::new(DynamoLog::new(client.clone(), &names.messages)),
        cursors: Arc::new(DynamoCursors::new(client.clone(), &names.cursors)),
        bans: Arc::new(DynamoBans::new(client.clone(), &names.bans)),
    };
    let streams = aws_sdk_dynamodbstreams::Client::new(sdk);
    let reader = StreamReader::open(&client, streams, &names.messages, StartingPosition::Latest).await?;
    tracing::info!(stream = reader.stream_arn(), "reading the MessageHistory stream");
    Ok((tables, DynamoSource { reader, in_flight: None }))
}

/// The events function's record sources (`--webhook`): a second reader of
/// MessageHistory's stream, and the Memberships stream for the room counters,
/// both from records written from now on (LATEST). A Memberships table without
/// a stream (one created before the counters) gives no occupied/vacated
/// events, said once in the log, and the rest still flows.
pub async fn event_sources(settings: &DynamoSettings) -> Result<Vec<DynamoSource>, StoreError> {
    let sdk = chat_aws::sdk_config_for(settings.endpoint.as_deref()).await;
    let (client, streams) = (aws_sdk_dynamodb::Client::new(&sdk), aws_sdk_dynamodbstreams::Client::new(&sdk));
    let names = &settings.tables;
    let mut sources = Vec::new();
    for table in [&names.messages, &names.memberships] {
        match StreamReader::open(&client, streams.clone(), table, StartingPosition::Latest).await {
            Ok(reader) => {
                tracing::info!(stream = reader.stream_arn(), "events: reading the {table} stream");
                sources.push(DynamoSource { reader, in_flight: None });
            }
            Err(StoreError::Malformed(reason)) if table == &names.memberships => {
                tracing::warn!(%reason, "events: no chat.room.occupied/vacated (the {table} table has no stream)");
            }
            Err(error) => return Err(error),
        }
    }
    Ok(sources)
}

/// The S3 archive, its bucket created first if asked.
pub async fn archive(settings: &ArchiveSettings) -> Result<S3Archive, StoreError> {
    let archive = S3Archive::new(&chat_aws::sdk_config_for(settings.endpoint.as_deref()).await, &settings.bucket);
    if settings.create_bucket {
        create_bucket(archive.client(), &settings.bucket).await?;
    }
    Ok(archive)
}

/// A DynamoDB Stream as the mapping's record source.
pub struct DynamoSource {
    reader: StreamReader,
    /// The shard of the batch being gathered or invoked, and its last record.
    in_flight: Option<(String, String)>,
}

#[async_trait]
impl RecordSource for DynamoSource {
    async fn poll(&mut self, max: usize) -> Result<Vec<EventRecord>, StoreError> {
        // A batch grows only from its own shard.
        let shard = self.in_flight.as_ref().map(|(shard, _)| shard.as_str());
        let batch = self.reader.next_batch(max, shard).await?;
        if let Some(last) = batch.records.last() {
            self.in_flight = Some((batch.shard_id, record_sequence(last)?.to_owned()));
        }
        Ok(batch.records)
    }

    async fn wait(&mut self) {
        // GetRecords allows five calls a second per shard; Lambda polls four times.
        tokio::time::sleep(POLL_INTERVAL).await;
    }

    async fn resume_after(&mut self, record: &EventRecord) -> Result<(), StoreError> {
        let Some((shard, last_read)) = self.in_flight.take() else { return Ok(()) };
        let seq = record_sequence(record)?;
        // After a whole batch the shard iterator already points past it.
        if seq == last_read { Ok(()) } else { self.reader.seek(&shard, seq, false).await }
    }

    async fn resume_at(&mut self, record: &EventRecord) -> Result<(), StoreError> {
        let Some((shard, _)) = self.in_flight.take() else { return Ok(()) };
        self.reader.seek(&shard, record_sequence(record)?, true).await
    }
}
