//! ActiveConnections and Memberships, ReadCursors, SessionHistory, MessageHistory and Bans on DynamoDB.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::types::{AttributeValue, Delete, Put, ReturnValue, Select, TransactWriteItem, Update};
use chat_core::model::{RECEIPT_KEY_PREFIX, ROOM_COUNTER_ATTRIBUTE, ROOM_COUNTER_ID, Receipt};
use chat_core::ports::{
    Bans, ConnectionStore, LogCursor, LogQuery, MessageLog, Page, ReadCursors, SessionLog, StoreError, Subscribed,
};
use chat_core::reaction::{Toggle, decided};
use chat_core::{Ban, Connection, LogEvent, Session, SessionEnd};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::unavailable;

/// The table names, from the environment the SAM template sets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableNames {
    pub connections: String,
    pub sessions: String,
    pub messages: String,
    /// Memberships: one item per (room, connection), what a room's listing reads.
    pub memberships: String,
    /// ReadCursors: how far each reader has read each room.
    pub cursors: String,
    /// Bans: who may not hear which room, until when.
    pub bans: String,
}

impl Default for TableNames {
    /// The seed's table names, and `Memberships`, `ReadCursors` and `Bans`.
    fn default() -> Self {
        Self {
            connections: "ActiveConnections".into(),
            sessions: "SessionHistory".into(),
            messages: "MessageHistory".into(),
            memberships: "Memberships".into(),
            cursors: "ReadCursors".into(),
            bans: "Bans".into(),
        }
    }
}

impl TableNames {
    /// `CONNECTIONS_TABLE`, `SESSIONS_TABLE`, `MESSAGES_TABLE`, `MEMBERSHIPS_TABLE`,
    /// `READ_CURSORS_TABLE`, `BANS_TABLE`, each defaulting to its [`Default`] name.
    pub fn from_env() -> Self {
        let defaults = Self::default();
        let var = |name: &str, default: String| std::env::var(name).unwrap_or(default);
        Self {
            connections: var("CONNECTIONS_TABLE", defaults.connections),
            sessions: var("SESSIONS_TABLE", defaults.sessions),
            messages: var("MESSAGES_TABLE", defaults.messages),
            memberships: var("MEMBERSHIPS_TABLE", defaults.memberships),
            cursors: var("READ_CURSORS_TABLE", defaults.cursors),
            bans: var("BANS_TABLE", defaults.bans),
        }
    }
}

fn to_item<T: Serialize>(value: &T) -> Result<HashMap<String, AttributeValue>, StoreError> {
    serde_dynamo::to_item(value).map_err(|e| StoreError::Malformed(e.to_string()))
}

fn from_item<T: DeserializeOwned>(item: HashMap<String, AttributeValue>) -> Result<T, StoreError> {
    serde_dynamo::from_item(item).map_err(|e| StoreError::Malformed(e.to_string()))
}

/// MessageHistory's global secondary index: partition key `room`, sort key
/// `message_id`. History reads one room through it; nothing scans a table.
/// (ActiveConnections had one too, before Memberships: no longer read or created.)
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

/// How long a membership outlives its connection before DynamoDB's TTL
/// deletes it (`purge_at`). Listings skip it from the connection's own
/// `expires_at` on, so this only bounds how long a leftover (a departure that
/// failed midway) takes space.
pub const MEMBERSHIP_PURGE_DELAY: i64 = 7 * 24 * 3600;

/// Memberships written at once by [`DynamoConnections::put`] (a token may name up to the room limit).
const MEMBERSHIP_WRITES_IN_FLIGHT: usize = 16;

/// How often a subscription's transaction is sent while it conflicts with
/// another write to its items (a page subscribing to several rooms at once).
const TRANSACTION_ATTEMPTS: usize = 5;

/// Tries of one reaction toggle: every toggle on a line contends for the line's
/// counts item, so a popular line needs more than other transactions.
const TOGGLE_ATTEMPTS: usize = 12;

/// ActiveConnections (`connection_id` partition key; `rooms`, a string set,
/// lists the connection's rooms) and Memberships (`room` partition key,
/// `connection_id` sort key; one item per subscription, carrying what fan-out
/// and `who` need, and `purge_at`, the table's TTL attribute).
///
/// A subscription writes both in one transaction (twice the write units of two
/// plain writes), so no listing ever sees a membership whose row refuses it: a
/// membership written before a departure's row delete, and taken back after,
/// would let that departure announce a leave with no join.
///
/// Each room also has its member counter in Memberships (sort key
/// [`ROOM_COUNTER_ID`], the count in [`ROOM_COUNTER_ATTRIBUTE`]): every write
/// that creates a membership adds 1 to it, and every one that removes a
/// membership takes 1 off, in the same transaction, so the counter's stream
/// records (old and new count) say when a room became occupied or vacated. A
/// write that changes no membership (its condition cancels the transaction)
/// changes no counter. Listings never see it: they read sort keys after it.
#[derive(Clone, Debug)]
pub struct DynamoConnections {
    rows: Table,
    members: Table,
}

impl DynamoConnections {
    /// The store over the ActiveConnections table `connections` and the Memberships table `memberships`.
    pub fn new(client: Client, connections: impl Into<String>, memberships: impl Into<String>) -> Self {
        Self {
            rows: Table { client: client.clone(), name: connections.into() },
            members: Table { client, name: memberships.into() },
        }
    }

    /// The membership item of `connection` in `room`: the member as
    /// [`Connection::as_member_of`] lists it (no source IP), the id and time of
    /// the `join` announcing it if any (`join_id`, `joined_at`), and `purge_at`.
    fn membership(
        connection: &Connection,
        room: &str,
        join: Option<&LogEvent>,
    ) -> Result<HashMap<String, AttributeValue>, StoreError> {
        let member = connection.as_member_of(room);
        let mut item = to_item(&match join {
            Some(join) => member.with_join(join),
            None => member,
        })?;
        item.remove("source_ip");
        let purge_at = connection.expires_at + MEMBERSHIP_PURGE_DELAY;
        item.insert("purge_at".into(), AttributeValue::N(purge_at.to_string()));
        Ok(item)
    }

    /// The Update of `room`'s member counter by `delta` (±1), for a transaction
    /// with the membership write that makes the change. A decrement holds only
    /// while the count is positive: a membership older than its counter (written
    /// before counters existed) must not take it below zero.
    fn counter_update(&self, room: &str, delta: i64) -> Result<Update, StoreError> {
        let update = Update::builder()
            .table_name(&self.members.name)
            .key("room", AttributeValue::S(room.to_owned()))
            .key("connection_id", AttributeValue::S(ROOM_COUNTER_ID.to_owned()))
            .update_expression("ADD #members :delta")
            .expression_attribute_names("#members", ROOM_COUNTER_ATTRIBUTE)
            .expression_attribute_values(":delta", AttributeValue::N(delta.to_string()));
        let update = if delta < 0 {
            update
                .condition_expression("#members > :zero")
                .expression_attribute_values(":zero", AttributeValue::N("0".into()))
        } else {
            update
        };
        update.build().map_err(|e| StoreError::Malformed(e.to_string()))
    }

    /// Sends the transaction of `items` until it is not cancelled by a conflict
    /// with another write in flight (every membership write of a room contends
    /// for the room's counter), [`TRANSACTION_ATTEMPTS`] times in all, after a
    /// growing, jittered pause. `Ok(None)`: written; `Ok(Some(codes))`: cancelled
    /// by a condition, the codes of its items in order (nothing was written).
    async fn transact(&self, items: &[TransactWriteItem], what: &str) -> Result<Option<Vec<String>>, StoreError> {
        // Jitter from the request's own text, so racing writers retry apart.
        let jitter = u64::from(what.bytes().fold(0u8, |a, b| a.wrapping_mul(31).wrapping_add(b)) % 16);
        for attempt in 0..TRANSACTION_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(attempt as u64 * (5 + jitter))).await;
            }
            let result =
                self.members.client.transact_write_items().set_transact_items(Some(items.to_vec())).send().await;
            match result {
                Ok(_) => return Ok(None),
                Err(error) => match cancellation_reasons(&error) {
                    Some(codes) if codes.iter().any(|c| c == "ConditionalCheckFailed") => return Ok(Some(codes)),
                    Some(_) => continue, // TransactionConflict: try again
                    None => return Err(unavailable(error)),
                },
            }
        }
        Err(StoreError::Unavailable(format!("{what}: transaction kept conflicting")))
    }

    /// Deletes the membership and takes 1 off the room's counter, in one
    /// transaction; returns the membership if this call removed it.
    ///
    /// A transaction cannot return the item it deletes, and the caller needs
    /// the membership's join (to log it before the leave), so the membership
    /// is read first (a consistent GetItem, 1 read unit) and the delete is
    /// conditional on it still holding that join: a membership ended and
    /// made again (a new join) in between is read again. (A plain DeleteItem
    /// returns the old item but would split the counter from its membership.)
    /// Since departures mark the membership first ([`ConnectionStore::mark_leaving`],
    /// which returns it), this read repeats what the caller already has: a
    /// delete conditional on the mark would save it, with a port that does not
    /// return the membership. The
    /// transaction is 4 write units (2 per item), a cancelled one too. A
    /// counter already at 0 (the membership predates it) refuses the
    /// decrement: the membership is then deleted alone (1 more write unit).
    async fn remove_membership(&self, connection_id: &str, room: &str) -> Result<Option<Connection>, StoreError> {
        let key = || HashMap::from([string_key("room", room), string_key("connection_id", connection_id)]);
        let what = format!("leave {room} by {connection_id}");
        for _ in 0..TRANSACTION_ATTEMPTS {
            let read = self
                .members
                .client
                .get_item()
                .table_name(&self.members.name)
                .set_key(Some(key()))
                .consistent_read(true)
                .send()
                .await
                .map_err(unavailable)?;
            let Some(old) = read.item.filter(|old| !old.is_empty()) else { return Ok(None) };
            let join_id = old.get("join_id").cloned();
            let membership = Delete::builder().table_name(&self.members.name).set_key(Some(key()));
            let membership = match join_id {
                Some(join_id) => membership
                    .condition_expression("attribute_exists(connection_id) AND join_id = :join_id")
                    .expression_attribute_values(":join_id", join_id),
                None => {
                    membership.condition_expression("attribute_exists(connection_id) AND attribute_not_exists(join_id)")
                }
            };
            let membership = membership.build().map_err(|e| StoreError::Malformed(e.to_string()))?;
            let items = [
                TransactWriteItem::builder().delete(membership).build(),
                TransactWriteItem::builder().update(self.counter_update(room, -1)?).build(),
            ];
            let codes = match self.transact(&items, &what).await? {
                None => return Ok(Some(member_of(old, connection_id, room))),
                Some(codes) => codes,
            };
            if codes.first().map(String::as_str) == Some("ConditionalCheckFailed") {
                continue; // ended by someone else, or ended and made again: read it again
            }
            tracing::warn!(room, connection_id, "room counter already 0: deleting the membership alone");
            let output = self
                .members
                .client
                .delete_item()
                .table_name(&self.members.name)
                .set_key(Some(key()))
                .return_values(ReturnValue::AllOld)
                .send()
                .await
                .map_err(unavailable)?;
            return Ok(output.attributes.filter(|old| !old.is_empty()).map(|old| member_of(old, connection_id, room)));
        }
        Err(StoreError::Unavailable(format!("{what}: the membership kept changing")))
    }

    /// Writes the membership of `connection` in `room` and adds 1 to the room's
    /// counter, in one transaction conditional on there being no membership (4
    /// write units). An existing membership is rewritten alone (a PutItem on
    /// condition it still exists, 1 write unit), its counter unchanged.
    async fn add_membership(&self, connection: &Connection, room: &str) -> Result<(), StoreError> {
        let item = Self::membership(connection, room, None)?;
        let membership = Put::builder()
            .table_name(&self.members.name)
            .set_item(Some(item.clone()))
            .condition_expression("attribute_not_exists(connection_id)")
            .build()
            .map_err(|e| StoreError::Malformed(e.to_string()))?;
        let items = [
            TransactWriteItem::builder().put(membership).build(),
            TransactWriteItem::builder().update(self.counter_update(room, 1)?).build(),
        ];
        let what = format!("join {room} by {}", connection.connection_id);
        for _ in 0..TRANSACTION_ATTEMPTS {
            if self.transact(&items, &what).await?.is_none() {
                return Ok(());
            }
            let rewrite = self
                .members
                .client
                .put_item()
                .table_name(&self.members.name)
                .set_item(Some(item.clone()))
                .condition_expression("attribute_exists(connection_id)")
                .send()
                .await;
            if conditional(rewrite)?.is_some() {
                return Ok(());
            }
            // Ended in between: create it again, with its count.
        }
        Err(StoreError::Unavailable(format!("{what}: the membership kept changing")))
    }

    /// An UpdateItem of the connection's row, its `rooms` set named `#rooms`.
    fn rooms_update(&self, connection_id: &str) -> UpdateItemFluentBuilder {
        let (name, value) = string_key("connection_id", connection_id);
        self.rows
            .client
            .update_item()
            .table_name(&self.rows.name)
            .key(name, value)
            .expression_attribute_names("#rooms", "rooms")
    }

    /// A consistent Query of `room`'s memberships, leaving out those past
    /// their connection's `expires_at`: a connection whose `$disconnect` was
    /// lost keeps its memberships until the reaper hears the TTL delete its
    /// row (within days, AWS says), and must not linger in `who` or be posted
    /// to meanwhile. No live socket outlasts it (API Gateway closes it at 2 h,
    /// the TTL is 2 h 15 min). Consistent, so a member subscribed a moment ago
    /// hears the next line (a GSI would lag). Only sort keys after
    /// [`ROOM_COUNTER_ID`] are read: the room's counter is no member (connection
    /// ids are base64, whose every character sorts after its `#`).
    fn live_in_room(&self, room: &str) -> QueryFluentBuilder {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
        self.members
            .client
            .query()
            .table_name(&self.members.name)
            .consistent_read(true)
            .key_condition_expression("#room = :room AND connection_id > :counter")
            .filter_expression("attribute_not_exists(expires_at) OR expires_at > :now")
            .expression_attribute_names("#room", "room")
            .expression_attribute_values(":room", AttributeValue::S(room.to_owned()))
            .expression_attribute_values(":counter", AttributeValue::S(ROOM_COUNTER_ID.to_owned()))
            .expression_attribute_values(":now", AttributeValue::N(now.to_string()))
    }
}

/// A removed membership item as listed. One that does not decode was still
/// removed (its leave is due): it is given back bare, without its join.
fn member_of(item: HashMap<String, AttributeValue>, connection_id: &str, room: &str) -> Connection {
    from_item(item).unwrap_or_else(|error| {
        tracing::warn!(%error, connection_id, room, "removed a malformed membership");
        Connection::new(connection_id, "", DateTime::UNIX_EPOCH).as_member_of(room)
    })
}

/// The output of a conditional write, or `None` when its condition refused it
/// (an answer, not a failure).
/// The per-item codes of a cancelled transaction (`ConditionalCheckFailed`,
/// `TransactionConflict`, `None`…), in the order of its items.
fn cancellation_reasons<R>(error: &SdkError<TransactWriteItemsError, R>) -> Option<Vec<String>> {
    match error.as_service_error() {
        Some(TransactWriteItemsError::TransactionCanceledException(e)) => {
            Some(e.cancellation_reasons().iter().map(|r| r.code().unwrap_or("None").to_owned()).collect())
        }
        _ => None,
    }
}

fn conditional<T, E, R>(result: Result<T, SdkError<E, R>>) -> Result<Option<T>, StoreError>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match result {
        Ok(output) => Ok(Some(output)),
        Err(error) if error.as_service_error().and_then(|e| e.code()) == Some("ConditionalCheckFailedException") => {
            Ok(None)
        }
        Err(error) => Err(unavailable(error)),
    }
}

#[async_trait]
impl ConnectionStore for DynamoConnections {
    /// One PutItem for the row (1 write unit per KB), then per room a
    /// transaction of its membership's Put and its counter's Update (4 write
    /// units; see `add_membership`), [`MEMBERSHIP_WRITES_IN_FLIGHT`] at a time.
    async fn put(&self, connection: &Connection) -> Result<(), StoreError> {
        self.rows.put(connection).await?;
        let writes =
            connection.rooms().into_iter().map(|room| async move { self.add_membership(connection, &room).await });
        let results: Vec<_> =
            futures::stream::iter(writes).buffer_unordered(MEMBERSHIP_WRITES_IN_FLIGHT).collect().await;
        results.into_iter().collect::<Result<Vec<_>, _>>()?;
        Ok(())
    }

    /// One DeleteItem returning the row as it was.
    async fn delete(&self, connection_id: &str) -> Result<Option<Connection>, StoreError> {
        let (name, value) = string_key("connection_id", connection_id);
        let output = self
            .rows
            .client
            .delete_item()
            .table_name(&self.rows.name)
            .key(name, value)
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(unavailable)?;
        output.attributes.filter(|old| !old.is_empty()).map(from_item).transpose()
    }

    /// Strongly consistent: the row was written by `$connect` (or its set
    /// changed by a subscribe) moments ago.
    async fn get(&self, connection_id: &str) -> Result<Option<Connection>, StoreError> {
        self.rows.get_consistent("connection_id", connection_id).await?.map(from_item).transpose()
    }

    /// One transaction: the membership's Put (if there is none; with `join`'s
    /// id and time), the row's
    /// Update (`ADD rooms`, if the row exists and lists the room already or has
    /// fewer than `max_rooms`) and the room counter's Update (+1), 6 write
    /// units (2 per item of up to 1 KB; a cancelled transaction is billed
    /// too). A refused row reads it
    /// (consistent GetItem) to tell a departed connection from a full one;
    /// nothing is ever taken back, so a listing never sees a membership that
    /// then vanishes without its leave. Conflicts with another write in flight
    /// are tried again, [`TRANSACTION_ATTEMPTS`] times in all.
    async fn subscribe(
        &self,
        connection: &Connection,
        room: &str,
        max_rooms: usize,
        join: &LogEvent,
    ) -> Result<Subscribed, StoreError> {
        let id = connection.connection_id.as_str();
        let malformed = |e: aws_sdk_dynamodb::error::BuildError| StoreError::Malformed(e.to_string());
        let membership = Put::builder()
            .table_name(&self.members.name)
            .set_item(Some(Self::membership(connection, room, Some(join))?))
            .condition_expression("attribute_not_exists(connection_id)")
            .build()
            .map_err(malformed)?;
        // A row from before channels has no set: its home room goes in with the new one.
        let mut rooms = vec![room.to_owned()];
        if connection.rooms.is_empty() && connection.room != room {
            rooms.push(connection.room.clone());
        }
        let (name, value) = string_key("connection_id", id);
        let row = Update::builder()
            .table_name(&self.rows.name)
            .key(name, value)
            .update_expression("ADD #rooms :rooms")
            .condition_expression(
                "attribute_exists(connection_id) AND \
                 (contains(#rooms, :room) OR attribute_not_exists(#rooms) OR size(#rooms) < :max)",
            )
            .expression_attribute_names("#rooms", "rooms")
            .expression_attribute_values(":rooms", AttributeValue::Ss(rooms))
            .expression_attribute_values(":room", AttributeValue::S(room.to_owned()))
            .expression_attribute_values(":max", AttributeValue::N(max_rooms.to_string()))
            .build()
            .map_err(malformed)?;
        let items = [
            TransactWriteItem::builder().put(membership).build(),
            TransactWriteItem::builder().update(row).build(),
            TransactWriteItem::builder().update(self.counter_update(room, 1)?).build(),
        ];
        let what = format!("subscribe {id} to {room}");
        for _ in 0..TRANSACTION_ATTEMPTS {
            let Some(reasons) = self.transact(&items, &what).await? else { return Ok(Subscribed::New) };
            let failed = |at: usize| reasons.get(at).map(String::as_str) == Some("ConditionalCheckFailed");
            if failed(1) {
                // Gone, or full: the row says which (the rule every store shares).
                let row = self.rows.get_consistent("connection_id", id).await?.map(from_item).transpose()?;
                match Subscribed::rooms_after(row.as_ref(), room, max_rooms) {
                    Err(why) => return Ok(why),
                    Ok(_) => continue, // the row changed in between: try again
                }
            }
            if failed(0) {
                return Ok(Subscribed::Already);
            }
        }
        Err(StoreError::Unavailable(format!("{what}: the row kept changing")))
    }

    /// One UpdateItem returning the membership as it is then (1 write unit
    /// per KB): `SET leaving = if_not_exists(leaving, :leave)` on condition
    /// it exists (refused, still billed, when it does not). Repeated after a
    /// timeout, it gives back the same leave: the first write's.
    async fn mark_leaving(
        &self,
        connection_id: &str,
        room: &str,
        leave: &LogEvent,
    ) -> Result<Option<Connection>, StoreError> {
        let leave: AttributeValue =
            serde_dynamo::to_attribute_value(leave).map_err(|e| StoreError::Malformed(e.to_string()))?;
        let result = self
            .members
            .client
            .update_item()
            .table_name(&self.members.name)
            .set_key(Some(HashMap::from([string_key("room", room), string_key("connection_id", connection_id)])))
            .update_expression("SET #leaving = if_not_exists(#leaving, :leave)")
            .condition_expression("attribute_exists(connection_id)")
            .expression_attribute_names("#leaving", "leaving")
            .expression_attribute_values(":leave", leave)
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        let marked = conditional(result)?.and_then(|output| output.attributes);
        Ok(marked.map(|item| member_of(item, connection_id, room)))
    }

    /// The membership's consistent GetItem (1 read unit, for its join) and
    /// its conditional Delete with the counter's Update (−1) in one
    /// transaction (4 write units; see `remove_membership`), then the row's
    /// UpdateItem (`DELETE rooms`, 1 write unit) on condition the row exists, so
    /// a departed connection's row is never recreated (refused, still billed,
    /// once the row is gone).
    async fn unsubscribe(&self, connection_id: &str, room: &str) -> Result<Option<Connection>, StoreError> {
        let removed = self.remove_membership(connection_id, room).await?;
        let result = self
            .rooms_update(connection_id)
            .update_expression("DELETE #rooms :rooms")
            .condition_expression("attribute_exists(connection_id)")
            .expression_attribute_values(":rooms", AttributeValue::Ss(vec![room.to_owned()]))
            .send()
            .await;
        conditional(result)?;
        Ok(removed)
    }

    /// The membership's consistent GetItem (1 read unit, for its join) and
    /// its conditional Delete with the counter's Update (−1), one transaction
    /// of 4 write units (a departure: the row is gone already).
    async fn end_membership(&self, connection_id: &str, room: &str) -> Result<Option<Connection>, StoreError> {
        self.remove_membership(connection_id, room).await
    }

    /// One consistent Query of the room's memberships (up to `limit` items, or 1 MB).
    async fn list(&self, room: &str, after: Option<String>, limit: usize) -> Result<Page<Connection>, StoreError> {
        let start = after.map(|id| HashMap::from([string_key("room", room), string_key("connection_id", &id)]));
        let output = self
            .live_in_room(room)
            .limit(limit.clamp(1, i32::MAX as usize) as i32)
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(unavailable)?;
        let items = decode_items(output.items, &self.members.name);
        let next =
            output.last_evaluated_key.and_then(|key| key.get("connection_id").and_then(|v| v.as_s().ok()).cloned());
        Ok(Page { items, next })
    }

    /// Consistent `Select=COUNT` Queries of the room's memberships, one per 1 MB
    /// read (about 4 000 memberships of ~250 bytes).
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

/// ReadCursors (`reader` partition key, `room` sort key, `message_id`; the
/// TTL attribute `expires_at` only on anonymous readers' cursors, which end
/// with their connection).
#[derive(Clone, Debug)]
pub struct DynamoCursors(Table);

impl DynamoCursors {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self(Table { client, name: table.into() })
    }

    /// A consistent Query of `reader`'s cursors: a `read` from another device
    /// a moment ago counts in the next `rooms` answer.
    fn of_reader(&self, reader: &str) -> QueryFluentBuilder {
        self.0
            .client
            .query()
            .table_name(&self.0.name)
            .consistent_read(true)
            .key_condition_expression("reader = :reader")
            .expression_attribute_values(":reader", AttributeValue::S(reader.to_owned()))
    }
}

#[async_trait]
impl ReadCursors for DynamoCursors {
    /// One consistent Query of the reader's cursors (a reader has at most a
    /// few hundred, far under a 1 MB page; further pages are read if not).
    async fn cursors(&self, reader: &str) -> Result<HashMap<String, String>, StoreError> {
        let mut cursors = HashMap::new();
        let mut start = None;
        loop {
            let output = self.of_reader(reader).set_exclusive_start_key(start).send().await.map_err(unavailable)?;
            for item in output.items.unwrap_or_default() {
                let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned();
                match (text("room"), text("message_id")) {
                    (Some(room), Some(id)) => {
                        cursors.insert(room, id);
                    }
                    _ => tracing::warn!(table = %self.0.name, reader, "skipping malformed cursor"),
                }
            }
            match output.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(cursors),
            }
        }
    }

    /// One conditional UpdateItem: the cursor moves only forward, so two
    /// devices reading out of step keep the furthest (a refused update is
    /// still one write unit).
    async fn advance(
        &self,
        reader: &str,
        room: &str,
        message_id: &str,
        expires_at: Option<i64>,
    ) -> Result<bool, StoreError> {
        let expression = match expires_at {
            Some(_) => "SET message_id = :id, expires_at = :expires_at",
            None => "SET message_id = :id",
        };
        let update = self
            .0
            .client
            .update_item()
            .table_name(&self.0.name)
            .key("reader", AttributeValue::S(reader.to_owned()))
            .key("room", AttributeValue::S(room.to_owned()))
            .update_expression(expression)
            .condition_expression("attribute_not_exists(message_id) OR message_id < :id")
            .expression_attribute_values(":id", AttributeValue::S(message_id.to_owned()));
        let update = match expires_at {
            Some(at) => update.expression_attribute_values(":expires_at", AttributeValue::N(at.to_string())),
            None => update,
        };
        Ok(conditional(update.send().await)?.is_some())
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
        conditional(result)?.map(|output| from_item(output.attributes.unwrap_or_default())).transpose()
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
    /// The Put claiming `receipt` for event `event_id`, for a transaction with
    /// the event: it fails while another unexpired receipt holds the key.
    fn receipt_put(&self, receipt: &Receipt, event_id: &str) -> Result<Put, StoreError> {
        Put::builder()
            .table_name(&self.0.name)
            .item("message_id", AttributeValue::S(receipt.key.clone()))
            .item("event_id", AttributeValue::S(event_id.to_owned()))
            .item("expires_at", AttributeValue::N(receipt.expires_at.to_string()))
            .condition_expression("attribute_not_exists(message_id) OR expires_at <= :sent_at")
            .expression_attribute_values(":sent_at", AttributeValue::N(receipt.sent_at.to_string()))
            .build()
            .map_err(|e| StoreError::Malformed(e.to_string()))
    }

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
        Ok(conditional(result)?.is_some())
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
        let receipt_item = self.receipt_put(&receipt, &event.message_id)?;
        let result = self
            .0
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(line).build())
            .transact_items(TransactWriteItem::builder().put(receipt_item).build())
            .send()
            .await;
        let lost_the_race = |error: &SdkError<TransactWriteItemsError, _>| {
            cancellation_reasons(error).is_some_and(|codes| codes.iter().any(|c| c == "ConditionalCheckFailed"))
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

    /// One consistent GetItem (a line sent a moment ago can be deleted at
    /// once); a receipt is no event.
    async fn get(&self, message_id: &str) -> Result<Option<LogEvent>, StoreError> {
        match self.0.get_consistent("message_id", message_id).await? {
            Some(item) if !is_receipt(&item) => Ok(Some(from_item(item)?)),
            _ => Ok(None),
        }
    }

    /// One consistent GetItem of the line's tombstone receipt.
    async fn deleted(&self, room: &str, id: &str) -> Result<bool, StoreError> {
        Ok(self.0.get_consistent("message_id", &Receipt::tombstone_key(room, id)).await?.is_some())
    }

    /// The line's counts item (`client#~counts#<line>`: `counts`, a map, and
    /// `version`) and the reactor's state item (`client#~reaction#…`: `on`) are
    /// read consistently, the toggle decided, then one transaction writes the
    /// event, the state item and the counts item (on the version read: a
    /// toggle by anyone on the line in between cancels it, and it is decided
    /// again), with a `clientMessageId` also its receipt (as a send's). Neither
    /// item has a `room`, so the room index never holds them, and their key's
    /// prefix keeps them out of the stream's events. Per toggle: 2–3 consistent
    /// GetItems (1 RCU each) and a TransactWriteItems of 3–4 Puts (2 WCU per
    /// item up to 1 KB). A toggle that lost the race to another toggle on the
    /// same line reads and tries again, [`TOGGLE_ATTEMPTS`] times in all, after
    /// a growing, jittered pause: a line taking that many simultaneous toggles
    /// answers an error for the last ones (measured on moto: 6 at once all land).
    async fn toggle_reaction(
        &self,
        reaction: &LogEvent,
        client_message_id: Option<&str>,
    ) -> Result<LogEvent, StoreError> {
        let Toggle { target, emoji, reactor, receipt } = Toggle::of(reaction, client_message_id);
        let state_key = chat_core::reaction::state_key(&target, &emoji, &reactor);
        let counts_key = chat_core::reaction::counts_key(&target);
        let malformed = |e: aws_sdk_dynamodb::error::BuildError| StoreError::Malformed(e.to_string());
        // Jitter from the event's random id bits, so racing writers retry apart.
        let jitter = u64::from(reaction.message_id.bytes().fold(0u8, |a, b| a.wrapping_mul(31).wrapping_add(b)) % 16);
        for attempt in 0..TOGGLE_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(attempt as u64 * (10 + jitter))).await;
            }
            if let Some(receipt) = &receipt
                && let Some(first) = self.receipt(receipt).await?
            {
                return self
                    .get(&first)
                    .await?
                    .ok_or_else(|| StoreError::Unavailable(format!("{first} not readable yet")));
            }
            // The counts item first: a toggle committed after this read bumps its
            // version (and fails ours), so the state read next is never older
            // than the version the transaction is conditioned on.
            let counts_item = self.0.get_consistent("message_id", &counts_key).await?.unwrap_or_default();
            let state = self.0.get_consistent("message_id", &state_key).await?;
            let was_on = state.as_ref().and_then(|item| item.get("on")).and_then(|v| v.as_bool().ok()).copied();
            let version = counts_item.get("version").and_then(|v| v.as_n().ok()).and_then(|n| n.parse::<i64>().ok());
            let counts: BTreeMap<String, u32> = match counts_item.get("counts") {
                Some(value) => serde_dynamo::from_attribute_value(value.clone())
                    .map_err(|e| StoreError::Malformed(e.to_string()))?,
                None => BTreeMap::new(),
            };
            let tried = if attempt == 0 { reaction.clone() } else { reaction.clone().renewed() };
            let event = decided(tried, was_on == Some(true), counts);
            let line = Put::builder()
                .table_name(&self.0.name)
                .set_item(Some(to_item(&event)?))
                .condition_expression("attribute_not_exists(message_id)")
                .build()
                .map_err(malformed)?;
            let state_item = Put::builder()
                .table_name(&self.0.name)
                .item("message_id", AttributeValue::S(state_key.clone()))
                .item("on", AttributeValue::Bool(event.on == Some(true)))
                .build()
                .map_err(malformed)?;
            let new_counts = serde_dynamo::to_attribute_value(event.counts.clone().unwrap_or_default())
                .map_err(|e| StoreError::Malformed(e.to_string()))?;
            let counts_put = Put::builder()
                .table_name(&self.0.name)
                .item("message_id", AttributeValue::S(counts_key.clone()))
                .item("counts", new_counts)
                .item("version", AttributeValue::N((version.unwrap_or(0) + 1).to_string()));
            let counts_put = match version {
                Some(version) => counts_put
                    .condition_expression("version = :version")
                    .expression_attribute_values(":version", AttributeValue::N(version.to_string())),
                None => counts_put.condition_expression("attribute_not_exists(message_id)"),
            }
            .build()
            .map_err(malformed)?;
            let mut transaction = self
                .0
                .client
                .transact_write_items()
                .transact_items(TransactWriteItem::builder().put(line).build())
                .transact_items(TransactWriteItem::builder().put(state_item).build())
                .transact_items(TransactWriteItem::builder().put(counts_put).build());
            if let Some(receipt) = &receipt {
                let receipt_item = self.receipt_put(receipt, &event.message_id)?;
                transaction = transaction.transact_items(TransactWriteItem::builder().put(receipt_item).build());
            }
            match transaction.send().await {
                Ok(_) => return Ok(event),
                // Another toggle on the line (or the same resend) got there first: decide again.
                Err(error) if cancellation_reasons(&error).is_some() => continue,
                Err(error) => return Err(unavailable(error)),
            }
        }
        Err(StoreError::Unavailable(format!("toggles on {target} kept conflicting")))
    }
}

/// Bans (`room` partition key, `user` sort key; `until`, `by`, `reason`, and
/// `expires_at`, the table's TTL attribute: DynamoDB deletes a ban within a
/// day or two after it ends, so [`Bans::active`] also compares `until`).
#[derive(Clone, Debug)]
pub struct DynamoBans(Table);

impl DynamoBans {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self(Table { client, name: table.into() })
    }
}

#[async_trait]
impl Bans for DynamoBans {
    /// One PutItem (replacing an earlier ban of the same member from the room).
    async fn ban(&self, ban: &Ban) -> Result<(), StoreError> {
        self.0.put(ban).await
    }

    /// One DeleteItem returning the old item: whether there was a ban.
    async fn unban(&self, room: &str, user: &str) -> Result<bool, StoreError> {
        let output = self
            .0
            .client
            .delete_item()
            .table_name(&self.0.name)
            .key("room", AttributeValue::S(room.to_owned()))
            .key("user", AttributeValue::S(user.to_owned()))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(unavailable)?;
        Ok(output.attributes.is_some_and(|old| !old.is_empty()))
    }

    /// One consistent GetItem: a ban holds from the moment it is written.
    async fn active(&self, room: &str, user: &str, now: DateTime<Utc>) -> Result<Option<Ban>, StoreError> {
        let output = self
            .0
            .client
            .get_item()
            .table_name(&self.0.name)
            .key("room", AttributeValue::S(room.to_owned()))
            .key("user", AttributeValue::S(user.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        let Some(item) = output.item else { return Ok(None) };
        let ban: Ban = from_item(item)?;
        Ok(ban.holds_at(now).then_some(ban))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offline_client() -> Client {
        let config = aws_sdk_dynamodb::Config::builder()
            .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
            .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
            .build();
        Client::from_conf(config)
    }

    /// moto and DynamoDB Local read consistently whatever is asked: only the
    /// requests themselves show that fan-out, `who` and `rooms` ask for it.
    #[test]
    fn room_listings_and_cursors_are_read_consistently() {
        let connections = DynamoConnections::new(offline_client(), "ActiveConnections", "Memberships");
        let query = connections.live_in_room("ops");
        assert_eq!(query.get_consistent_read(), &Some(true));
        assert_eq!(query.get_table_name().as_deref(), Some("Memberships"));
        assert_eq!(query.get_index_name(), &None, "the table itself: a GSI cannot be read consistently");
        let cursors = DynamoCursors::new(offline_client(), "ReadCursors").of_reader("ada");
        assert_eq!(cursors.get_consistent_read(), &Some(true));
    }

    /// The room's counter item sorts before every member and is never listed:
    /// the listing Query reads sort keys after it, and every character of a
    /// connection id (base64, as API Gateway's and the local stack's) sorts after
    /// its `#`.
    #[test]
    fn room_listings_start_after_the_room_counter() {
        let connections = DynamoConnections::new(offline_client(), "ActiveConnections", "Memberships");
        let query = connections.live_in_room("ops");
        assert_eq!(query.get_key_condition_expression().as_deref(), Some("#room = :room AND connection_id > :counter"));
        let values = query.get_expression_attribute_values().as_ref().unwrap();
        assert_eq!(values[":counter"], AttributeValue::S(ROOM_COUNTER_ID.into()));
        let base64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=";
        assert!(base64.chars().all(|c| c.to_string().as_str() > ROOM_COUNTER_ID), "{base64}");
        // A decrement never takes the count below zero; an increment is unconditional.
        let down = connections.counter_update("ops", -1).unwrap();
        assert_eq!(down.condition_expression(), Some("#members > :zero"));
        assert_eq!(down.update_expression(), "ADD #members :delta");
        assert_eq!(down.key()["connection_id"], AttributeValue::S(ROOM_COUNTER_ID.into()));
        assert_eq!(connections.counter_update("ops", 1).unwrap().condition_expression(), None);
    }

    #[test]
    fn a_membership_is_the_listed_member_with_a_purge_time() {
        let at = chat_core::time::parse_iso("2026-11-24T10:00:00Z").unwrap();
        let connection = Connection::new("c1", "203.0.113.7", at).also_in(["ops"]);
        let item = DynamoConnections::membership(&connection, "ops", None).unwrap();
        assert!(!item.contains_key("source_ip") && !item.contains_key("rooms"), "{item:?}");
        assert_eq!(item["room"], AttributeValue::S("ops".into()));
        let purge_at = connection.expires_at + MEMBERSHIP_PURGE_DELAY;
        assert_eq!(item["purge_at"], AttributeValue::N(purge_at.to_string()));
        let mut listed: HashMap<String, AttributeValue> = item;
        listed.remove("purge_at");
        assert_eq!(from_item::<Connection>(listed).unwrap(), connection.as_member_of("ops"));
    }

    #[test]
    fn a_subscribes_membership_keeps_its_join_and_gives_it_back() {
        let at = chat_core::time::parse_iso("2026-11-24T10:00:00Z").unwrap();
        let ada = chat_core::model::Identity::verified("Ada", "iss|ada");
        let connection = Connection::new("c1", "203.0.113.7", at).of(Some(&ada));
        let join = LogEvent::join("c1", at + chrono::Duration::minutes(3)).in_room("ops").by(Some(&ada));
        let item = DynamoConnections::membership(&connection, "ops", Some(&join)).unwrap();
        assert_eq!(item["join_id"], AttributeValue::S(join.message_id.clone()));
        assert_eq!(item["joined_at"], AttributeValue::S("2026-11-24T10:03:00Z".into()));
        assert_eq!(member_of(item, "c1", "ops").join(), Some(join), "the same join, rebuilt from the item");
        let bare = member_of(HashMap::from([string_key("room", "ops")]), "c1", "ops");
        assert_eq!((bare.connection_id.as_str(), bare.room.as_str(), bare.join()), ("c1", "ops", None));
    }
}
