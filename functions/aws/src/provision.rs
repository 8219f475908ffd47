//! Creating the tables and the archive bucket where they are missing, with the
//! keys, stream and TTL the SAM template declares: for moto, DynamoDB Local, or
//! a quick test account. Production tables come from `infra/template.yaml`.

use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType, StreamSpecification,
    StreamViewType, TableStatus, TimeToLiveSpecification,
};
use chat_core::StoreError;

use crate::TableNames;
use crate::unavailable;

/// Creates each missing table and waits until all three are active.
pub async fn create_tables(client: &Client, names: &TableNames) -> Result<(), StoreError> {
    create_table(client, &names.connections, "connection_id", false).await?;
    create_table(client, &names.sessions, "connection_id", false).await?;
    create_table(client, &names.messages, "message_id", true).await?;
    for name in [&names.connections, &names.sessions, &names.messages] {
        wait_until_active(client, name).await?;
    }
    let ttl = TimeToLiveSpecification::builder()
        .enabled(true)
        .attribute_name("expires_at")
        .build()
        .map_err(|e| StoreError::Malformed(e.to_string()))?;
    let result =
        client.update_time_to_live().table_name(&names.connections).time_to_live_specification(ttl).send().await;
    if let Err(error) = result {
        // Already enabled answers ValidationException; not worth failing over.
        tracing::info!(error = %aws_sdk_dynamodb::error::DisplayErrorContext(&error), "TTL on ActiveConnections not changed");
    }
    Ok(())
}

async fn create_table(client: &Client, name: &str, key: &str, stream: bool) -> Result<(), StoreError> {
    let described = client.describe_table().table_name(name).send().await;
    match described {
        Ok(_) => return Ok(()),
        Err(error) if error.as_service_error().is_some_and(|e| e.is_resource_not_found_exception()) => {}
        Err(error) => return Err(unavailable(error)),
    }
    let malformed = |e: aws_sdk_dynamodb::error::BuildError| StoreError::Malformed(e.to_string());
    let mut request = client
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(key)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(malformed)?,
        )
        .key_schema(
            KeySchemaElement::builder().attribute_name(key).key_type(KeyType::Hash).build().map_err(malformed)?,
        );
    if stream {
        request = request.stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::NewImage)
                .build()
                .map_err(malformed)?,
        );
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

async fn wait_until_active(client: &Client, name: &str) -> Result<(), StoreError> {
    for _ in 0..120 {
        let described = client.describe_table().table_name(name).send().await.map_err(unavailable)?;
        if described.table.and_then(|t| t.table_status) == Some(TableStatus::Active) {
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
