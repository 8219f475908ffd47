//! ActiveConnections, SessionHistory and MessageHistory on DynamoDB.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use chat_core::ports::{ConnectionStore, LogQuery, MessageLog, Page, SessionLog, StoreError};
use chat_core::{Connection, LogEvent, Session, SessionEnd};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::unavailable;

/// The three table names, from the environment the SAM template sets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableNames {
    pub connections: String,
    pub sessions: String,
    pub messages: String,
}

impl Default for TableNames {
    /// The seed's table names.
    fn default() -> Self {
        Self {
            connections: "ActiveConnections".into(),
            sessions: "SessionHistory".into(),
            messages: "MessageHistory".into(),
        }
    }
}

impl TableNames {
    /// `CONNECTIONS_TABLE`, `SESSIONS_TABLE`, `MESSAGES_TABLE`, each defaulting to the seed's name.
    pub fn from_env() -> Self {
        let defaults = Self::default();
        let var = |name: &str, default: String| std::env::var(name).unwrap_or(default);
        Self {
            connections: var("CONNECTIONS_TABLE", defaults.connections),
            sessions: var("SESSIONS_TABLE", defaults.sessions),
            messages: var("MESSAGES_TABLE", defaults.messages),
        }
    }
}

fn to_item<T: Serialize>(value: &T) -> Result<HashMap<String, AttributeValue>, StoreError> {
    serde_dynamo::to_item(value).map_err(|e| StoreError::Malformed(e.to_string()))
}

fn from_item<T: DeserializeOwned>(item: HashMap<String, AttributeValue>) -> Result<T, StoreError> {
    serde_dynamo::from_item(item).map_err(|e| StoreError::Malformed(e.to_string()))
}

/// A table and the client that reaches it.
#[derive(Clone, Debug)]
struct Table {
    client: Client,
    name: String,
}

impl Table {
    /// Writes `value` as one item, replacing any with the same key.
    async fn put<T: Serialize>(&self, value: &T) -> Result<(), StoreError> {
        let item = to_item(value)?;
        self.client.put_item().table_name(&self.name).set_item(Some(item)).send().await.map_err(unavailable)?;
        Ok(())
    }
}

fn string_key(name: &str, value: &str) -> (String, AttributeValue) {
    (name.to_owned(), AttributeValue::S(value.to_owned()))
}

/// ActiveConnections (`connection_id` partition key).
#[derive(Clone, Debug)]
pub struct DynamoConnections(Table);

impl DynamoConnections {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self(Table { client, name: table.into() })
    }
}

#[async_trait]
impl ConnectionStore for DynamoConnections {
    async fn put(&self, connection: &Connection) -> Result<(), StoreError> {
        self.0.put(connection).await
    }

    async fn delete(&self, connection_id: &str) -> Result<(), StoreError> {
        let (name, value) = string_key("connection_id", connection_id);
        self.0.client.delete_item().table_name(&self.0.name).key(name, value).send().await.map_err(unavailable)?;
        Ok(())
    }

    async fn list(&self, after: Option<String>) -> Result<Page<Connection>, StoreError> {
        let start = after.map(|id| HashMap::from([string_key("connection_id", &id)]));
        let output = self
            .0
            .client
            .scan()
            .table_name(&self.0.name)
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(unavailable)?;
        let mut items = Vec::with_capacity(output.items().len());
        for item in output.items.unwrap_or_default() {
            // One bad row must not stop every broadcast.
            match from_item::<Connection>(item) {
                Ok(connection) => items.push(connection),
                Err(error) => tracing::warn!(%error, "skipping malformed ActiveConnections row"),
            }
        }
        let next =
            output.last_evaluated_key.and_then(|key| key.get("connection_id").and_then(|v| v.as_s().ok()).cloned());
        Ok(Page { items, next })
    }
}

/// SessionHistory (`connection_id` partition key).
#[derive(Clone, Debug)]
pub struct DynamoSessions(Table);

impl DynamoSessions {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self(Table { client, name: table.into() })
    }
}

#[async_trait]
impl SessionLog for DynamoSessions {
    async fn open(&self, session: &Session) -> Result<(), StoreError> {
        self.0.put(session).await
    }

    async fn close(&self, end: &SessionEnd) -> Result<bool, StoreError> {
        let (name, value) = string_key("connection_id", &end.connection_id);
        let result = self
            .0
            .client
            .update_item()
            .table_name(&self.0.name)
            .key(name, value)
            .update_expression("SET disconnected_at = :at, duration_seconds = :secs")
            .condition_expression("attribute_exists(connection_id) AND attribute_not_exists(disconnected_at)")
            .expression_attribute_values(":at", AttributeValue::S(chat_core::time::format_iso(&end.disconnected_at)))
            .expression_attribute_values(":secs", AttributeValue::N(end.duration_seconds.to_string()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(error) if error.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => {
                Ok(false)
            }
            Err(error) => Err(unavailable(error)),
        }
    }
}

/// MessageHistory (`message_id` partition key, a UUIDv7).
#[derive(Clone, Debug)]
pub struct DynamoLog(Table);

impl DynamoLog {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self(Table { client, name: table.into() })
    }

    /// Every event in the table, oldest first.
    pub async fn scan_all(&self) -> Result<Vec<LogEvent>, StoreError> {
        let mut events = Vec::new();
        let mut start = None;
        loop {
            let output = self
                .0
                .client
                .scan()
                .table_name(&self.0.name)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(unavailable)?;
            for item in output.items.unwrap_or_default() {
                match from_item::<LogEvent>(item) {
                    Ok(event) => events.push(event),
                    Err(error) => tracing::warn!(%error, "skipping malformed MessageHistory row"),
                }
            }
            match output.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => break,
            }
        }
        events.sort_by(|a, b| a.message_id.cmp(&b.message_id));
        Ok(events)
    }
}

#[async_trait]
impl MessageLog for DynamoLog {
    /// Conditional on the id being new, so re-publishing a replayed event is a no-op.
    async fn append(&self, event: &LogEvent) -> Result<bool, StoreError> {
        let item = to_item(event)?;
        let result = self
            .0
            .client
            .put_item()
            .table_name(&self.0.name)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(message_id)")
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(error) if error.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => {
                Ok(false)
            }
            Err(error) => Err(unavailable(error)),
        }
    }

    /// The table has only a hash key, so reading a range is a full scan; fine for
    /// a chat room's history, and the S3 archive serves bulk replay.
    async fn read(&self, query: &LogQuery) -> Result<Vec<LogEvent>, StoreError> {
        Ok(query.select(&self.scan_all().await?))
    }
}
