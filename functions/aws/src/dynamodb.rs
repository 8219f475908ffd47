//! ActiveConnections, SessionHistory and MessageHistory on DynamoDB.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, Put, ReturnValue, Select, TransactWriteItem};
use chat_core::model::{RECEIPT_KEY_PREFIX, Receipt};
use chat_core::ports::{ConnectionStore, LogCursor, LogQuery, MessageLog, Page, SessionLog, StoreError};
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

/// The global secondary index ActiveConnections and MessageHistory both have:
/// partition key `room`, sort key the table's own key. Every request and
/// broadcast path reads one room through it; none scans a table.
pub const ROOM_INDEX: &str = "room-index";

/// Items of a page, skipping (and logging) rows that do not decode: one bad
/// row must not stop every broadcast or history answer.
fn decode_items<T: DeserializeOwned>(items: Option<Vec<HashMap<String, AttributeValue>>>, table: &str) -> Vec<T> {
    items
        .unwrap_or_default()
        .into_iter()
        .filter_map(|item| {
            from_item(item).map_err(|error| tracing::warn!(%error, table, "skipping malformed row")).ok()
        })
        .collect()
}

/// A receipt of an acknowledged send, not an event (see [`RECEIPT_KEY_PREFIX`]).
fn is_receipt(item: &HashMap<String, AttributeValue>) -> bool {
    item.get("message_id").and_then(|v| v.as_s().ok()).is_some_and(|key| key.starts_with(RECEIPT_KEY_PREFIX))
}

/// A table and the client that reaches it.
#[derive(Clone, Debug)]
struct Table {
    client: Client,
    name: String,
}

impl Table {
    /// The item with this string key, read consistently.
    async fn get_consistent(
        &self,
        key: &str,
        value: &str,
    ) -> Result<Option<HashMap<String, AttributeValue>>, StoreError> {
        let (name, value) = string_key(key, value);
        let output = self
            .client
            .get_item()
            .table_name(&self.name)
            .key(name, value)
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        Ok(output.item)
    }

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

    /// A Query of `room`'s connections on the room GSI, leaving out rows past
    /// their TTL: DynamoDB deletes those only eventually (within days, AWS says),
    /// so a connection whose `$disconnect` was lost would otherwise linger in
    /// `who` and be posted to. No live socket outlasts its TTL (API Gateway closes
    /// it at 2 h, the TTL is 2 h 15 min).
    fn live_in_room(&self, room: &str) -> QueryFluentBuilder {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
        self.0
            .client
            .query()
            .table_name(&self.0.name)
            .index_name(ROOM_INDEX)
            .key_condition_expression("#room = :room")
            .filter_expression("attribute_not_exists(expires_at) OR expires_at > :now")
            .expression_attribute_names("#room", "room")
            .expression_attribute_values(":room", AttributeValue::S(room.to_owned()))
            .expression_attribute_values(":now", AttributeValue::N(now.to_string()))
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

    /// Strongly consistent: the row was written by `$connect` moments ago.
    async fn get(&self, connection_id: &str) -> Result<Option<Connection>, StoreError> {
        self.0.get_consistent("connection_id", connection_id).await?.map(from_item).transpose()
    }

    /// A Query on the room GSI (eventually consistent: a socket connected a few
    /// milliseconds ago may miss an event; clients recover it from history).
    async fn list(&self, room: &str, after: Option<String>, limit: usize) -> Result<Page<Connection>, StoreError> {
        let start = after.map(|id| HashMap::from([string_key("room", room), string_key("connection_id", &id)]));
        let output = self
            .live_in_room(room)
            .limit(limit.clamp(1, i32::MAX as usize) as i32)
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(unavailable)?;
        let items = decode_items(output.items, &self.0.name);
        let next =
            output.last_evaluated_key.and_then(|key| key.get("connection_id").and_then(|v| v.as_s().ok()).cloned());
        Ok(Page { items, next })
    }

    /// Counts on the room GSI, page by page (a Query reads at most 1 MB at a time).
    async fn count(&self, room: &str) -> Result<usize, StoreError> {
        let mut count = 0;
        let mut start = None;
        loop {
            let output = self
                .live_in_room(room)
                .select(Select::Count)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(unavailable)?;
            count += output.count.max(0) as usize;
            match output.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(count),
            }
        }
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

    /// Conditional, so exactly one caller completes the session and learns its room.
    async fn close(&self, end: &SessionEnd) -> Result<Option<Session>, StoreError> {
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
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(output) => Ok(Some(from_item(output.attributes.unwrap_or_default())?)),
            Err(error) if error.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => {
                Ok(None)
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

    /// The line id the stored receipt of `receipt` points at, read consistently;
    /// `None` when there is none or it expired (the TTL deletes items only
    /// eventually, so an expired one may still be there).
    async fn receipt(&self, receipt: &Receipt) -> Result<Option<String>, StoreError> {
        let Some(item) = self.0.get_consistent("message_id", &receipt.key).await? else { return Ok(None) };
        // A receipt without expires_at (written before receipts expired) never does.
        let expires_at = item.get("expires_at").and_then(|v| v.as_n().ok()).and_then(|n| n.parse::<i64>().ok());
        if expires_at.is_some_and(|expires_at| !receipt.is_held_by(expires_at)) {
            return Ok(None);
        }
        Ok(item.get("event_id").and_then(|v| v.as_s().ok()).cloned())
    }

    /// Every event in the table, oldest first. For replay and export only: no
    /// request or broadcast path scans.
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
            let items = output.items.map(|items| items.into_iter().filter(|item| !is_receipt(item)).collect());
            events.extend(decode_items::<LogEvent>(items, &self.0.name));
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

    /// The line and its receipt (`message_id` = the [`Receipt`] key, `event_id` =
    /// the line's id, `expires_at` = the table's TTL attribute) in one
    /// transaction: the line conditional on being new, the receipt on being new
    /// or expired. A resend is answered from the receipt, read first: cheaper
    /// than a cancelled transaction (which still consumes write units), and the
    /// transaction's condition still decides two racing sends. Receipts have no
    /// `room`, so the room index never holds them, and the stream decoder skips
    /// them (their INSERTs and MODIFYs, and the TTL's REMOVEs).
    async fn append_once(&self, event: &LogEvent, client_message_id: &str) -> Result<String, StoreError> {
        let receipt = Receipt::for_send(event, client_message_id);
        if let Some(stored) = self.receipt(&receipt).await? {
            return Ok(stored);
        }
        let malformed = |e: aws_sdk_dynamodb::error::BuildError| StoreError::Malformed(e.to_string());
        let line = Put::builder()
            .table_name(&self.0.name)
            .set_item(Some(to_item(event)?))
            .condition_expression("attribute_not_exists(message_id)")
            .build()
            .map_err(malformed)?;
        let receipt_item = Put::builder()
            .table_name(&self.0.name)
            .item("message_id", AttributeValue::S(receipt.key.clone()))
            .item("event_id", AttributeValue::S(event.message_id.clone()))
            .item("expires_at", AttributeValue::N(receipt.expires_at.to_string()))
            .condition_expression("attribute_not_exists(message_id) OR expires_at <= :sent_at")
            .expression_attribute_values(":sent_at", AttributeValue::N(receipt.sent_at.to_string()))
            .build()
            .map_err(malformed)?;
        let result = self
            .0
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(line).build())
            .transact_items(TransactWriteItem::builder().put(receipt_item).build())
            .send()
            .await;
        let lost_the_race = |error: &aws_sdk_dynamodb::error::SdkError<TransactWriteItemsError, _>| {
            matches!(
                error.as_service_error(),
                Some(TransactWriteItemsError::TransactionCanceledException(e))
                    if e.cancellation_reasons().iter().any(|r| r.code() == Some("ConditionalCheckFailed"))
            )
        };
        match result {
            Ok(_) => Ok(event.message_id.clone()),
            Err(error) if lost_the_race(&error) => self
                .receipt(&receipt)
                .await?
                .ok_or_else(|| StoreError::Unavailable(format!("receipt {} not readable yet", receipt.key))),
            Err(error) => Err(unavailable(error)),
        }
    }

    /// One Query on the room GSI: the newest `limit` (read backwards), or
    /// forward from a cursor. A time cursor ranges over ids from a little before
    /// that time and filters on `timestamp`, so its pages are walked until full.
    async fn read(&self, query: &LogQuery) -> Result<Vec<LogEvent>, StoreError> {
        let limit = query.limit.clamp(1, i32::MAX as usize);
        let mut names = HashMap::from([("#room".to_owned(), "room".to_owned())]);
        let mut values = HashMap::from([(":room".to_owned(), AttributeValue::S(query.room.clone()))]);
        let mut condition = "#room = :room";
        if let Some(cursor) = &query.after {
            condition = "#room = :room AND message_id > :after";
            values.insert(":after".into(), AttributeValue::S(cursor.id_floor()));
        }
        let mut filter = None;
        if let Some(LogCursor::Time(at)) = &query.after {
            filter = Some("#timestamp > :at");
            names.insert("#timestamp".into(), "timestamp".into());
            values.insert(":at".into(), AttributeValue::S(chat_core::time::format_iso(at)));
        }
        let mut events: Vec<LogEvent> = Vec::new();
        let mut start = None;
        loop {
            let output = self
                .0
                .client
                .query()
                .table_name(&self.0.name)
                .index_name(ROOM_INDEX)
                .key_condition_expression(condition)
                .set_filter_expression(filter.map(str::to_owned))
                .set_expression_attribute_names(Some(names.clone()))
                .set_expression_attribute_values(Some(values.clone()))
                .scan_index_forward(query.after.is_some())
                .limit(limit as i32)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(unavailable)?;
            events.extend(decode_items::<LogEvent>(output.items, &self.0.name));
            match output.last_evaluated_key {
                Some(key) if !key.is_empty() && events.len() < limit => start = Some(key),
                _ => break,
            }
        }
        events.truncate(limit);
        if query.after.is_none() {
            events.reverse();
        }
        Ok(events)
    }
}
