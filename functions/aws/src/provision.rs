//! Creating the tables and the archive bucket where they are missing, with the
//! keys, stream, index and TTL the SAM template declares: for moto, DynamoDB Local, or
//! a quick test account. Production tables come from `infra/template.yaml`.

use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, CreateGlobalSecondaryIndexAction, GlobalSecondaryIndex,
    GlobalSecondaryIndexUpdate, IndexStatus, KeySchemaElement, KeyType, Projection, ProjectionType,
    ScalarAttributeType, StreamSpecification, StreamViewType, TableStatus, TimeToLiveSpecification,
};
use chat_core::StoreError;

use crate::TableNames;
use crate::dynamodb::ROOM_INDEX;
use crate::unavailable;

/// How one table is keyed and what it has besides.
struct Layout<'a> {
    name: &'a str,
    partition_key: &'static str,
    sort_key: Option<&'static str>,
    /// The table's stream: MessageHistory's NEW_IMAGE (the broadcaster and the
    /// events function read it), Memberships' NEW_AND_OLD_IMAGES (the events
    /// function reads each room counter's old and new count).
    stream: Option<StreamViewType>,
    /// The room GSI (MessageHistory's, which history reads).
    room_index: bool,
    /// The TTL attribute, if the table has one.
    ttl: Option<&'static str>,
}

/// Creates each missing table (and MessageHistory's room GSI if missing) and
/// waits until every table and index is active. ActiveConnections gets no
/// room GSI any more: rooms are listed from Memberships.
pub async fn create_tables(client: &Client, names: &TableNames) -> Result<(), StoreError> {
    let layouts = [
        Layout {
            name: &names.connections,
            partition_key: "connection_id",
            sort_key: None,
            stream: None,
            room_index: false,
            ttl: Some("expires_at"),
        },
        Layout {
            name: &names.sessions,
            partition_key: "connection_id",
            sort_key: None,
            stream: None,
            room_index: false,
            ttl: None,
        },
        Layout {
            name: &names.messages,
            partition_key: "message_id",
            sort_key: None,
            stream: Some(StreamViewType::NewImage),
            room_index: true,
            ttl: None,
        },
        Layout {
            name: &names.memberships,
            partition_key: "room",
            sort_key: Some("connection_id"),
            stream: Some(StreamViewType::NewAndOldImages),
            room_index: false,
            ttl: Some("purge_at"),
        },
        Layout {
            name: &names.cursors,
            partition_key: "reader",
            sort_key: Some("room"),
            stream: None,
            room_index: false,
            ttl: Some("expires_at"),
        },
        Layout {
            name: &names.bans,
            partition_key: "room",
            sort_key: Some("user"),
            stream: None,
            room_index: false,
            ttl: Some("expires_at"),
        },
    ];
    for layout in &layouts {
        create_table(client, layout).await?;
    }
    for layout in &layouts {
        wait_until_active(client, layout.name).await?;
        if let Some(attribute) = layout.ttl {
            enable_ttl(client, layout.name, attribute).await?;
        }
    }
    Ok(())
}

async fn enable_ttl(client: &Client, table: &str, attribute: &str) -> Result<(), StoreError> {
    let ttl = TimeToLiveSpecification::builder()
        .enabled(true)
        .attribute_name(attribute)
        .build()
        .map_err(|e| StoreError::Malformed(e.to_string()))?;
    let result = client.update_time_to_live().table_name(table).time_to_live_specification(ttl).send().await;
    if let Err(error) = result {
        // Already enabled answers ValidationException; not worth failing over.
        tracing::info!(table, error = %aws_sdk_dynamodb::error::DisplayErrorContext(&error), "TTL not changed");
    }
    Ok(())
}

fn malformed(e: aws_sdk_dynamodb::error::BuildError) -> StoreError {
    StoreError::Malformed(e.to_string())
}

fn string_attribute(name: &str) -> Result<AttributeDefinition, StoreError> {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(ScalarAttributeType::S)
        .build()
        .map_err(malformed)
}

fn key(name: &str, key_type: KeyType) -> Result<KeySchemaElement, StoreError> {
    KeySchemaElement::builder().attribute_name(name).key_type(key_type).build().map_err(malformed)
}

/// The room GSI as the template declares it: `room` then the table's key, all attributes projected.
fn room_index(table_key: &str) -> Result<GlobalSecondaryIndex, StoreError> {
    GlobalSecondaryIndex::builder()
        .index_name(ROOM_INDEX)
        .key_schema(key("room", KeyType::Hash)?)
        .key_schema(key(table_key, KeyType::Range)?)
        .projection(Projection::builder().projection_type(ProjectionType::All).build())
        .build()
        .map_err(malformed)
}

async fn create_table(client: &Client, layout: &Layout<'_>) -> Result<(), StoreError> {
    let (name, table_key) = (layout.name, layout.partition_key);
    let described = client.describe_table().table_name(name).send().await;
    match described {
        Ok(output) => {
            let indexes = output
                .table
                .as_ref()
                .map(|t| t.global_secondary_indexes.clone().unwrap_or_default())
                .unwrap_or_default();
            let has_index = indexes.iter().any(|i| i.index_name() == Some(ROOM_INDEX));
            if layout.room_index && !has_index {
                add_room_index(client, name, table_key).await?;
            }
            let streaming =
                output.table.as_ref().and_then(|t| t.stream_specification.as_ref()).is_some_and(|s| s.stream_enabled);
            if let (Some(view), false) = (&layout.stream, streaming) {
                add_stream(client, name, view.clone()).await?;
            }
            return Ok(());
        }
        Err(error) if error.as_service_error().is_some_and(|e| e.is_resource_not_found_exception()) => {}
        Err(error) => return Err(unavailable(error)),
    }
    let mut request = client
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(string_attribute(table_key)?)
        .key_schema(key(table_key, KeyType::Hash)?);
    if let Some(sort_key) = layout.sort_key {
        request = request.attribute_definitions(string_attribute(sort_key)?).key_schema(key(sort_key, KeyType::Range)?);
    }
    if layout.room_index {
        request =
            request.attribute_definitions(string_attribute("room")?).global_secondary_indexes(room_index(table_key)?);
    }
    if let Some(view) = &layout.stream {
        request = request.stream_specification(stream(view.clone())?);
    }
    match request.send().await {
        Ok(_) => {
            tracing::info!(table = name, "created table");
            Ok(())
        }
        // Another process created it first.
        Err(error) if error.as_service_error().is_some_and(|e| e.is_resource_in_use_exception()) => Ok(()),
        Err(error) => Err(unavailable(error)),
    }
}

fn stream(view: StreamViewType) -> Result<StreamSpecification, StoreError> {
    StreamSpecification::builder().stream_enabled(true).stream_view_type(view).build().map_err(malformed)
}

/// A table made before its stream was declared (Memberships before the room
/// counters' events) gains it; records start from then on.
async fn add_stream(client: &Client, name: &str, view: StreamViewType) -> Result<(), StoreError> {
    client.update_table().table_name(name).stream_specification(stream(view)?).send().await.map_err(unavailable)?;
    tracing::info!(table = name, "enabled the table's stream");
    Ok(())
}

/// A table made before rooms gains the room GSI (DynamoDB backfills it).
async fn add_room_index(client: &Client, name: &str, table_key: &str) -> Result<(), StoreError> {
    let index = room_index(table_key)?;
    let create = CreateGlobalSecondaryIndexAction::builder()
        .index_name(ROOM_INDEX)
        .set_key_schema(Some(index.key_schema().to_vec()))
        .set_projection(index.projection().cloned())
        .build()
        .map_err(malformed)?;
    client
        .update_table()
        .table_name(name)
        .attribute_definitions(string_attribute(table_key)?)
        .attribute_definitions(string_attribute("room")?)
        .global_secondary_index_updates(GlobalSecondaryIndexUpdate::builder().create(create).build())
        .send()
        .await
        .map_err(unavailable)?;
    tracing::info!(table = name, index = ROOM_INDEX, "added the room index");
    Ok(())
}

/// Waits until the table and every index on it are active (an index is
/// backfilled after the table itself is active).
async fn wait_until_active(client: &Client, name: &str) -> Result<(), StoreError> {
    for _ in 0..120 {
        let described = client.describe_table().table_name(name).send().await.map_err(unavailable)?;
        let table = described.table.unwrap_or_else(|| aws_sdk_dynamodb::types::TableDescription::builder().build());
        let indexes_active =
            table.global_secondary_indexes().iter().all(|i| i.index_status() == Some(&IndexStatus::Active));
        if table.table_status() == Some(&TableStatus::Active) && indexes_active {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(StoreError::Unavailable(format!("table {name} did not become active in 60 s")))
}

/// Creates the bucket if it is missing.
pub async fn create_bucket(client: &aws_sdk_s3::Client, bucket: &str) -> Result<(), StoreError> {
    if client.head_bucket().bucket(bucket).send().await.is_ok() {
        return Ok(());
    }
    // us-east-1 is the one region that takes no location constraint.
    let region = client.config().region().map(ToString::to_string).filter(|r| r != "us-east-1");
    let location = region.map(|r| {
        aws_sdk_s3::types::CreateBucketConfiguration::builder()
            .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::from(r.as_str()))
            .build()
    });
    match client.create_bucket().bucket(bucket).set_create_bucket_configuration(location).send().await {
        Ok(_) => Ok(()),
        Err(error)
            if error
                .as_service_error()
                .is_some_and(|e| e.is_bucket_already_owned_by_you() || e.is_bucket_already_exists()) =>
        {
            Ok(())
        }
        Err(error) => Err(unavailable(error)),
    }
}
