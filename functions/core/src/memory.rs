//! In-memory implementations of every port: for tests, benchmarks and a
//! storage-free local run. Each can be switched to fail, to exercise outages.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::auth::{JwksError, JwksSource};
use crate::model::{Ban, Connection, EventKind, LogEvent, Receipt, Session, SessionEnd};
use crate::ports::{
    Archive, Bans, Bytes, Clock, ConnectionStore, LogQuery, MessageLog, Page, PostError, ReadCursors, SessionLog,
    SocketPoster, StoreError, Subscribed,
};
use crate::reaction::{decided, reactor_of};
use crate::split::{FanoutJob, FanoutQueue};

/// A switch that makes a store answer [`StoreError::Unavailable`].
#[derive(Debug, Default)]
pub struct Outage(AtomicBool);

impl Outage {
    pub fn set(&self, down: bool) {
        self.0.store(down, Ordering::SeqCst);
    }

    fn check(&self) -> Result<(), StoreError> {
        if self.0.load(Ordering::SeqCst) { Err(StoreError::Unavailable("simulated outage".into())) } else { Ok(()) }
    }
}

/// ActiveConnections and Memberships in sorted maps, listed in pages of
/// `page_size`; counts how often a room was counted (a full read of the room
/// when deployed).
#[derive(Debug)]
pub struct MemoryConnections {
    rows: Mutex<BTreeMap<String, Connection>>,
    /// (room, connection id) → the member as listed.
    members: Mutex<BTreeMap<(String, String), Connection>>,
    page_size: usize,
    counted: AtomicUsize,
    pub outage: Outage,
}

impl Default for MemoryConnections {
    fn default() -> Self {
        Self::with_page_size(1000)
    }
}

impl MemoryConnections {
    pub fn with_page_size(page_size: usize) -> Self {
        Self {
            rows: Mutex::default(),
            members: Mutex::default(),
            page_size: page_size.max(1),
            counted: AtomicUsize::new(0),
            outage: Outage::default(),
        }
    }

    /// How many [`ConnectionStore::count`] calls were made.
    pub fn counts(&self) -> usize {
        self.counted.load(Ordering::SeqCst)
    }

    pub fn ids(&self) -> Vec<String> {
        self.rows.lock().unwrap().keys().cloned().collect()
    }

    pub fn get(&self, connection_id: &str) -> Option<Connection> {
        self.rows.lock().unwrap().get(connection_id).cloned()
    }

    /// Every membership as (room, connection id), in key order.
    pub fn memberships(&self) -> Vec<(String, String)> {
        self.members.lock().unwrap().keys().cloned().collect()
    }
}

#[async_trait]
impl ConnectionStore for MemoryConnections {
    async fn put(&self, connection: &Connection) -> Result<(), StoreError> {
        self.outage.check()?;
        self.rows.lock().unwrap().insert(connection.connection_id.clone(), connection.clone());
        let mut members = self.members.lock().unwrap();
        for room in connection.rooms() {
            let key = (room.clone(), connection.connection_id.clone());
            members.insert(key, connection.as_member_of(&room));
        }
        Ok(())
    }

    async fn delete(&self, connection_id: &str) -> Result<Option<Connection>, StoreError> {
        self.outage.check()?;
        Ok(self.rows.lock().unwrap().remove(connection_id))
    }

    async fn get(&self, connection_id: &str) -> Result<Option<Connection>, StoreError> {
        self.outage.check()?;
        Ok(MemoryConnections::get(self, connection_id))
    }

    async fn subscribe(
        &self,
        connection: &Connection,
        room: &str,
        max_rooms: usize,
        join: &LogEvent,
    ) -> Result<Subscribed, StoreError> {
        self.outage.check()?;
        let mut rows = self.rows.lock().unwrap();
        let row = rows.get_mut(&connection.connection_id);
        let rooms = match Subscribed::rooms_after(row.as_deref(), room, max_rooms) {
            Ok(rooms) => rooms,
            Err(unchanged) => return Ok(unchanged),
        };
        row.expect("rooms_after answers NotConnected without one").rooms = rooms;
        let key = (room.to_owned(), connection.connection_id.clone());
        self.members.lock().unwrap().insert(key, connection.as_member_of(room).with_join(join));
        Ok(Subscribed::New)
    }

    async fn mark_leaving(
        &self,
        connection_id: &str,
        room: &str,
        leave: &LogEvent,
    ) -> Result<Option<Connection>, StoreError> {
        self.outage.check()?;
        let mut members = self.members.lock().unwrap();
        let Some(member) = members.get_mut(&(room.to_owned(), connection_id.to_owned())) else { return Ok(None) };
        member.leaving.get_or_insert_with(|| Box::new(leave.clone()));
        Ok(Some(member.clone()))
    }

    async fn unsubscribe(&self, connection_id: &str, room: &str) -> Result<Option<Connection>, StoreError> {
        self.outage.check()?;
        if let Some(row) = self.rows.lock().unwrap().get_mut(connection_id) {
            row.rooms = row.rooms().into_iter().filter(|r| r != room).collect();
        }
        Ok(self.members.lock().unwrap().remove(&(room.to_owned(), connection_id.to_owned())))
    }

    async fn end_membership(&self, connection_id: &str, room: &str) -> Result<Option<Connection>, StoreError> {
        self.outage.check()?;
        Ok(self.members.lock().unwrap().remove(&(room.to_owned(), connection_id.to_owned())))
    }

    async fn list(&self, room: &str, after: Option<String>, limit: usize) -> Result<Page<Connection>, StoreError> {
        self.outage.check()?;
        let page_size = limit.min(self.page_size).max(1);
        let members = self.members.lock().unwrap();
        let lower = match after {
            Some(after) => Bound::Excluded((room.to_owned(), after)),
            None => Bound::Included((room.to_owned(), String::new())),
        };
        // One row past the page tells whether another page follows.
        let mut items: Vec<Connection> = members
            .range((lower, Bound::Unbounded))
            .take_while(|((r, _), _)| r == room)
            .map(|(_, c)| c.clone())
            .take(page_size + 1)
            .collect();
        let next = (items.len() > page_size).then(|| {
            items.truncate(page_size);
            items[page_size - 1].connection_id.clone()
        });
        Ok(Page { items, next })
    }

    async fn count(&self, room: &str) -> Result<usize, StoreError> {
        self.counted.fetch_add(1, Ordering::SeqCst);
        self.outage.check()?;
        Ok(self.members.lock().unwrap().keys().filter(|(r, _)| r == room).count())
    }
}

/// ReadCursors in a map: (reader, room) → message id.
#[derive(Debug, Default)]
pub struct MemoryCursors {
    cursors: Mutex<BTreeMap<(String, String), String>>,
    pub outage: Outage,
}

#[async_trait]
impl ReadCursors for MemoryCursors {
    async fn cursors(&self, reader: &str) -> Result<HashMap<String, String>, StoreError> {
        self.outage.check()?;
        let cursors = self.cursors.lock().unwrap();
        Ok(cursors.iter().filter(|((r, _), _)| r == reader).map(|((_, room), id)| (room.clone(), id.clone())).collect())
    }

    async fn advance(
        &self,
        reader: &str,
        room: &str,
        message_id: &str,
        _expires_at: Option<i64>,
    ) -> Result<bool, StoreError> {
        self.outage.check()?;
        let mut cursors = self.cursors.lock().unwrap();
        let key = (reader.to_owned(), room.to_owned());
        let moved = cursors.get(&key).is_none_or(|cursor| cursor.as_str() < message_id);
        if moved {
            cursors.insert(key, message_id.to_owned());
        }
        Ok(moved)
    }
}

/// SessionHistory in a map.
#[derive(Debug, Default)]
pub struct MemorySessions {
    rows: Mutex<HashMap<String, Session>>,
    pub outage: Outage,
}

impl MemorySessions {
    pub fn get(&self, connection_id: &str) -> Option<Session> {
        self.rows.lock().unwrap().get(connection_id).cloned()
    }
}

#[async_trait]
impl SessionLog for MemorySessions {
    async fn open(&self, session: &Session) -> Result<(), StoreError> {
        self.outage.check()?;
        self.rows.lock().unwrap().insert(session.connection_id.clone(), session.clone());
        Ok(())
    }

    async fn close(&self, end: &SessionEnd) -> Result<Option<Session>, StoreError> {
        self.outage.check()?;
        let mut rows = self.rows.lock().unwrap();
        match rows.get_mut(&end.connection_id) {
            Some(session) if session.disconnected_at.is_none() => {
                session.disconnected_at = Some(end.disconnected_at);
                session.duration_seconds = Some(end.duration_seconds);
                Ok(Some(session.clone()))
            }
            _ => Ok(None),
        }
    }
}

/// MessageHistory as a vector in append order, with the receipts of
/// acknowledged sends ([`Receipt`] key → message id and expiry).
#[derive(Debug, Default)]
pub struct MemoryLog {
    events: Mutex<Vec<LogEvent>>,
    receipts: Mutex<HashMap<String, (String, i64)>>,
    pub outage: Outage,
}

impl MemoryLog {
    pub fn events(&self) -> Vec<LogEvent> {
        self.events.lock().unwrap().clone()
    }
}

#[async_trait]
impl MessageLog for MemoryLog {
    async fn append(&self, event: &LogEvent) -> Result<bool, StoreError> {
        self.outage.check()?;
        let mut events = self.events.lock().unwrap();
        if events.iter().any(|e| e.message_id == event.message_id) {
            return Ok(false);
        }
        events.push(event.clone());
        Ok(true)
    }

    async fn append_once(&self, event: &LogEvent, client_message_id: &str) -> Result<String, StoreError> {
        self.outage.check()?;
        let receipt = Receipt::for_send(event, client_message_id);
        let mut receipts = self.receipts.lock().unwrap();
        // Expired receipts are dropped as the store is used, as a TTL would.
        receipts.retain(|_, (_, expires_at)| receipt.is_held_by(*expires_at));
        if let Some((stored, _)) = receipts.get(&receipt.key) {
            return Ok(stored.clone());
        }
        self.events.lock().unwrap().push(event.clone());
        receipts.insert(receipt.key, (event.message_id.clone(), receipt.expires_at));
        Ok(event.message_id.clone())
    }

    async fn read(&self, query: &LogQuery) -> Result<Vec<LogEvent>, StoreError> {
        self.outage.check()?;
        let mut sorted = self.events();
        sorted.sort_by(|a, b| a.message_id.cmp(&b.message_id));
        Ok(query.select(&sorted))
    }

    async fn get(&self, message_id: &str) -> Result<Option<LogEvent>, StoreError> {
        self.outage.check()?;
        Ok(self.events.lock().unwrap().iter().find(|e| e.message_id == message_id).cloned())
    }

    async fn deleted(&self, room: &str, id: &str) -> Result<bool, StoreError> {
        self.outage.check()?;
        Ok(self.receipts.lock().unwrap().contains_key(&Receipt::tombstone_key(room, id)))
    }

    /// Decided from the log itself under the receipts' lock (one toggle at a
    /// time): the reactor's state is the parity of its toggles, the counts the
    /// line's last reaction's.
    async fn toggle_reaction(
        &self,
        reaction: &LogEvent,
        client_message_id: Option<&str>,
    ) -> Result<LogEvent, StoreError> {
        self.outage.check()?;
        let mut receipts = self.receipts.lock().unwrap();
        let receipt = client_message_id.map(|id| Receipt::for_send(reaction, id));
        let mut events = self.events.lock().unwrap();
        if let Some(receipt) = &receipt {
            receipts.retain(|_, (_, expires_at)| receipt.is_held_by(*expires_at));
            if let Some((stored, _)) = receipts.get(&receipt.key) {
                return events
                    .iter()
                    .find(|e| &e.message_id == stored)
                    .cloned()
                    .ok_or_else(|| StoreError::Malformed(format!("receipt {} without its event", receipt.key)));
            }
        }
        let on_line: Vec<&LogEvent> =
            events.iter().filter(|e| e.kind == EventKind::Reaction && e.target == reaction.target).collect();
        let toggles = on_line.iter().filter(|e| e.emoji == reaction.emoji && reactor_of(e) == reactor_of(reaction));
        let counts = on_line.last().and_then(|e| e.counts.clone()).unwrap_or_default();
        let event = decided(reaction.clone(), toggles.count() % 2 == 1, counts);
        events.push(event.clone());
        if let Some(receipt) = receipt {
            receipts.insert(receipt.key, (event.message_id.clone(), receipt.expires_at));
        }
        Ok(event)
    }
}

/// Bans in a map: (room, user) → ban.
#[derive(Debug, Default)]
pub struct MemoryBans {
    bans: Mutex<BTreeMap<(String, String), Ban>>,
    pub outage: Outage,
}

#[async_trait]
impl Bans for MemoryBans {
    async fn ban(&self, ban: &Ban) -> Result<(), StoreError> {
        self.outage.check()?;
        self.bans.lock().unwrap().insert((ban.room.clone(), ban.user.clone()), ban.clone());
        Ok(())
    }

    async fn unban(&self, room: &str, user: &str) -> Result<bool, StoreError> {
        self.outage.check()?;
        Ok(self.bans.lock().unwrap().remove(&(room.to_owned(), user.to_owned())).is_some())
    }

    async fn active(&self, room: &str, user: &str, now: DateTime<Utc>) -> Result<Option<Ban>, StoreError> {
        self.outage.check()?;
        let bans = self.bans.lock().unwrap();
        Ok(bans.get(&(room.to_owned(), user.to_owned())).filter(|ban| ban.holds_at(now)).cloned())
    }
}

/// A poster that records every delivered frame and answers from a script:
/// per-connection queues of failures to return before succeeding, ids that are
/// gone for good, an optional latency, and a count of the most posts in flight.
#[derive(Debug, Default)]
pub struct RecordingPoster {
    delivered: Mutex<Vec<(String, Vec<u8>)>>,
    closed: Mutex<Vec<String>>,
    scripted: Mutex<HashMap<String, VecDeque<PostError>>>,
    gone: Mutex<Vec<String>>,
    refused: Mutex<Vec<(String, PostError)>>,
    latency: Option<Duration>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    attempts: AtomicUsize,
}

impl RecordingPoster {
    pub fn with_latency(latency: Duration) -> Self {
        Self { latency: Some(latency), ..Self::default() }
    }

    /// Posts to `connection_id` answer 410 from now on.
    pub fn mark_gone(&self, connection_id: &str) {
        self.gone.lock().unwrap().push(connection_id.to_owned());
    }

    /// The next posts to `connection_id` fail with `errors`, in order.
    pub fn fail_next(&self, connection_id: &str, errors: impl IntoIterator<Item = PostError>) {
        self.scripted.lock().unwrap().entry(connection_id.to_owned()).or_default().extend(errors);
    }

    /// Every post of a frame containing `needle` fails with `error`, to anyone.
    pub fn refuse_frames_containing(&self, needle: &str, error: PostError) {
        self.refused.lock().unwrap().push((needle.to_owned(), error));
    }

    pub fn delivered(&self) -> Vec<(String, Vec<u8>)> {
        self.delivered.lock().unwrap().clone()
    }

    /// The frames `connection_id` received, parsed as JSON.
    pub fn frames_to(&self, connection_id: &str) -> Vec<serde_json::Value> {
        self.delivered()
            .into_iter()
            .filter(|(to, _)| to == connection_id)
            .map(|(_, frame)| serde_json::from_slice(&frame).expect("frames are JSON"))
            .collect()
    }

    /// The connections closed ([`SocketPoster::close`]), in order.
    pub fn closed(&self) -> Vec<String> {
        self.closed.lock().unwrap().clone()
    }

    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight.load(Ordering::SeqCst)
    }

    pub fn attempts(&self) -> usize {
        self.attempts.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl SocketPoster for RecordingPoster {
    async fn post(&self, connection_id: &str, frame: &Bytes) -> Result<(), PostError> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        if let Some(latency) = self.latency {
            tokio::time::sleep(latency).await;
        }
        self.in_flight.fetch_sub(1, Ordering::SeqCst);

        if self.gone.lock().unwrap().iter().any(|id| id == connection_id) {
            return Err(PostError::Gone);
        }
        let refused = self.refused.lock().unwrap().iter().find_map(|(needle, error)| {
            frame.windows(needle.len()).any(|w| w == needle.as_bytes()).then(|| error.clone())
        });
        if let Some(error) = refused {
            return Err(error);
        }
        let scripted = self.scripted.lock().unwrap().get_mut(connection_id).and_then(VecDeque::pop_front);
        if let Some(error) = scripted {
            return Err(error);
        }
        self.delivered.lock().unwrap().push((connection_id.to_owned(), frame.to_vec()));
        Ok(())
    }

    /// Recorded; a connection closed (or gone) before answers 410, and is gone from then on.
    async fn close(&self, connection_id: &str) -> Result<(), PostError> {
        let mut gone = self.gone.lock().unwrap();
        if gone.iter().any(|id| id == connection_id) {
            return Err(PostError::Gone);
        }
        gone.push(connection_id.to_owned());
        self.closed.lock().unwrap().push(connection_id.to_owned());
        Ok(())
    }
}

/// An archive that keeps objects in a map.
#[derive(Debug, Default)]
pub struct MemoryArchive {
    objects: Mutex<BTreeMap<String, Vec<u8>>>,
    pub outage: Outage,
}

impl MemoryArchive {
    pub fn objects(&self) -> BTreeMap<String, Vec<u8>> {
        self.objects.lock().unwrap().clone()
    }
}

#[async_trait]
impl Archive for MemoryArchive {
    async fn put(&self, key: &str, body: Vec<u8>) -> Result<(), StoreError> {
        self.outage.check()?;
        self.objects.lock().unwrap().insert(key.to_owned(), body);
        Ok(())
    }
}

/// A clock that stands still until moved.
#[derive(Debug)]
pub struct FixedClock(Mutex<DateTime<Utc>>);

impl FixedClock {
    pub fn at(now: DateTime<Utc>) -> Self {
        Self(Mutex::new(now))
    }

    pub fn advance(&self, by: chrono::Duration) {
        *self.0.lock().unwrap() += by;
    }
}

impl Clock for FixedClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::list_all_connections;
    use crate::time::from_epoch_millis;

    #[tokio::test]
    async fn listing_walks_every_page() {
        let store = MemoryConnections::with_page_size(2);
        let at = from_epoch_millis(0).unwrap();
        for i in 0..5 {
            store.put(&Connection::new(&format!("c{i}"), "ip", at)).await.unwrap();
            store.put(&Connection::new(&format!("c{i}x"), "ip", at).in_room("other")).await.unwrap();
        }
        let first = store.list("lobby", None, 100).await.unwrap();
        assert_eq!(first.items.len(), 2);
        assert!(first.next.is_some());
        let all = list_all_connections(&store, "lobby").await.unwrap();
        let ids: Vec<_> = all.iter().map(|c| c.connection_id.as_str()).collect();
        assert_eq!(ids, ["c0", "c1", "c2", "c3", "c4"]);
        assert_eq!(store.count("other").await.unwrap(), 5);
    }
}

/// JWK Set documents by URL, counting fetches; a URL it does not hold, or an
/// [`Outage`], answers [`JwksError`] the way an unreachable endpoint would.
#[derive(Debug, Default)]
pub struct MemoryJwks {
    documents: Mutex<HashMap<String, Vec<u8>>>,
    fetches: AtomicUsize,
    pub outage: Outage,
}

impl MemoryJwks {
    /// Serves `document` (a JWK Set as JSON) at `url`, replacing what was there.
    pub fn publish(&self, url: &str, document: &serde_json::Value) {
        self.documents.lock().unwrap().insert(url.to_owned(), document.to_string().into_bytes());
    }

    /// How many fetches were made, of any URL.
    pub fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl JwksSource for MemoryJwks {
    async fn fetch(&self, url: &str) -> Result<Vec<u8>, JwksError> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        self.outage.check().map_err(|e| JwksError(e.to_string()))?;
        self.documents.lock().unwrap().get(url).cloned().ok_or_else(|| JwksError(format!("{url}: 404")))
    }
}

/// A fan-out queue that keeps the jobs for a test to look at or run
/// ([`crate::split`]); `outage` makes it refuse them.
#[derive(Debug, Default)]
pub struct MemoryFanoutQueue {
    jobs: Mutex<Vec<FanoutJob>>,
    pub outage: Outage,
}

impl MemoryFanoutQueue {
    /// Every job enqueued so far, emptying the queue.
    pub fn take(&self) -> Vec<FanoutJob> {
        std::mem::take(&mut self.jobs.lock().unwrap())
    }
}

#[async_trait]
impl FanoutQueue for MemoryFanoutQueue {
    async fn enqueue(&self, jobs: &[FanoutJob]) -> Result<(), StoreError> {
        self.outage.check()?;
        self.jobs.lock().unwrap().extend_from_slice(jobs);
        Ok(())
    }
}
