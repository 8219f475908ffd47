//! The narrow interfaces the handlers need from the outside world. Each has an
//! in-memory implementation in [`crate::memory`], a DynamoDB / API Gateway / S3 one
//! in `chat-aws`, and an embedded one in the local stack.

use async_trait::async_trait;
pub use bytes::Bytes;
use chrono::{DateTime, Utc};

use crate::model::{Connection, LogEvent, Session, SessionEnd};

/// A storage call failed; the caller decides whether to retry or report.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("stored record is malformed: {0}")]
    Malformed(String),
}

/// One page of a paginated listing; `next` is the opaque token for the following page.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

/// ActiveConnections: who receives broadcasts.
#[async_trait]
pub trait ConnectionStore: Send + Sync {
    async fn put(&self, connection: &Connection) -> Result<(), StoreError>;
    /// Deleting an unknown id is not an error (disconnects repeat and race with pruning).
    async fn delete(&self, connection_id: &str) -> Result<(), StoreError>;
    /// One page of connections; pass the previous page's `next` to continue.
    async fn list(&self, after: Option<String>) -> Result<Page<Connection>, StoreError>;
}

/// Collects every page of [`ConnectionStore::list`].
pub async fn list_all_connections(store: &dyn ConnectionStore) -> Result<Vec<Connection>, StoreError> {
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let page = store.list(after).await?;
        all.extend(page.items);
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(all),
        }
    }
}

/// SessionHistory: one row per connection, completed when it ends.
#[async_trait]
pub trait SessionLog: Send + Sync {
    async fn open(&self, session: &Session) -> Result<(), StoreError>;
    /// Completes an open session. Returns `false` (not an error) when there is no
    /// open session for the id, so repeated disconnects stay harmless.
    async fn close(&self, end: &SessionEnd) -> Result<bool, StoreError>;
}

/// Which slice of the log to read, oldest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogQuery {
    /// Only events after this point; `None` means the newest `limit` events.
    pub after: Option<LogCursor>,
    pub limit: usize,
}

impl LogQuery {
    /// Applies the query to events sorted by id; for logs that read everything anyway.
    pub fn select(&self, sorted: &[LogEvent]) -> Vec<LogEvent> {
        match &self.after {
            Some(cursor) => sorted.iter().filter(|e| cursor.is_before(e)).take(self.limit).cloned().collect(),
            None => sorted[sorted.len().saturating_sub(self.limit)..].to_vec(),
        }
    }
}

/// A position in the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogCursor {
    /// Strictly after the event with this id (UUIDv7 ids sort by time).
    MessageId(String),
    /// Strictly after this time.
    Time(DateTime<Utc>),
}

impl LogCursor {
    /// Whether `event` lies after this position.
    pub fn is_before(&self, event: &LogEvent) -> bool {
        match self {
            LogCursor::MessageId(id) => event.message_id.as_str() > id.as_str(),
            LogCursor::Time(at) => event.timestamp > *at,
        }
    }
}

/// MessageHistory: the append-only event log.
#[async_trait]
pub trait MessageLog: Send + Sync {
    /// Appends `event` unless its id is already logged, so re-publishing is a
    /// no-op. `true` if the event is new.
    async fn append(&self, event: &LogEvent) -> Result<bool, StoreError>;
    async fn read(&self, query: &LogQuery) -> Result<Vec<LogEvent>, StoreError>;
}

/// Why a post to a socket failed, as the @connections API reports it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PostError {
    /// 410: the socket is closed; the connection row is stale.
    #[error("connection is gone")]
    Gone,
    /// 429: retry later.
    #[error("throttled")]
    Throttled,
    /// 413: the frame is over 128 KiB; retrying cannot help.
    #[error("payload too large")]
    PayloadTooLarge,
    /// 403 and anything else, possibly transient (5xx, network).
    #[error("post failed: {0}")]
    Other(String),
}

/// The @connections management API, reduced to what the product does with it.
#[async_trait]
pub trait SocketPoster: Send + Sync {
    /// `frame` is shared by every recipient of a broadcast: cloning it is cheap.
    async fn post(&self, connection_id: &str, frame: &Bytes) -> Result<(), PostError>;
}

/// Where batches of the log are archived (S3 when deployed).
#[async_trait]
pub trait Archive: Send + Sync {
    /// Writes `body` under `key`, replacing what was there (retries overwrite).
    async fn put(&self, key: &str, body: Vec<u8>) -> Result<(), StoreError>;
}

/// The current time, injectable so tests are deterministic.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

/// The real clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}
