//! The embedded store: SQLite (one file, WAL) holding the tables — the seed's
//! three, Memberships, ReadCursors and Bans — with the message table's row order
//! doubling as the MessageHistory stream.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chat_core::model::{Ban, Receipt};
#[cfg(test)]
use chat_core::ports::LIST_PAGE;
use chat_core::ports::{
    Bans, ConnectionStore, LogCursor, LogQuery, MessageLog, Page, ReadCursors, SessionLog, StoreError, Subscribed,
};
use chat_core::reaction::{Toggle, decided};
use chat_core::time::{format_iso, parse_iso};
use chat_core::{Connection, EventKind, LogEvent, Session, SessionEnd};
use rusqlite::{OptionalExtension, TransactionBehavior, params};
use tokio::sync::watch;

const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
PRAGMA busy_timeout = 5000;
CREATE TABLE IF NOT EXISTS active_connections (
    connection_id TEXT PRIMARY KEY,
    connected_at  TEXT NOT NULL,
    source_ip     TEXT NOT NULL,
    expires_at    INTEGER NOT NULL,
    room          TEXT NOT NULL DEFAULT 'lobby',
    user          TEXT,
    verified      INTEGER,
    batch         INTEGER NOT NULL DEFAULT 0,
    user_id       TEXT,
    -- Every room the connection is subscribed to, home room included, as a JSON
    -- array; NULL on rows from before channels (their home room alone).
    rooms         TEXT
);
-- One row per subscription: what fan-out and `who` read, a room at a time.
CREATE TABLE IF NOT EXISTS memberships (
    room          TEXT NOT NULL,
    connection_id TEXT NOT NULL,
    connected_at  TEXT NOT NULL,
    expires_at    INTEGER NOT NULL,
    user          TEXT,
    verified      INTEGER,
    user_id       TEXT,
    batch         INTEGER NOT NULL DEFAULT 0,
    -- A subscribe's join (id, ISO time), logged by whoever ends the membership
    -- before its leave; NULL on $connect's memberships.
    join_id       TEXT,
    joined_at     TEXT,
    -- The leave that ends it (a JSON event), set by the first to end it and
    -- logged by whoever finishes; NULL while it lasts.
    leaving       TEXT,
    PRIMARY KEY (room, connection_id)
) WITHOUT ROWID;
-- How far each reader (an account, or `connection#<id>`) has read each room;
-- expires_at only for a connection's own cursor.
CREATE TABLE IF NOT EXISTS read_cursors (
    reader     TEXT NOT NULL,
    room       TEXT NOT NULL,
    message_id TEXT NOT NULL,
    expires_at INTEGER,
    PRIMARY KEY (reader, room)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS session_history (
    connection_id    TEXT PRIMARY KEY,
    source_ip        TEXT NOT NULL,
    connected_at     TEXT NOT NULL,
    disconnected_at  TEXT,
    duration_seconds INTEGER,
    room             TEXT NOT NULL DEFAULT 'lobby',
    user             TEXT,
    verified         INTEGER,
    user_id          TEXT
);
-- seq is the stream's sequence number: the order events were appended.
CREATE TABLE IF NOT EXISTS message_history (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id    TEXT NOT NULL UNIQUE,
    connection_id TEXT NOT NULL,
    message       TEXT NOT NULL,
    timestamp     TEXT NOT NULL,
    kind          TEXT NOT NULL,
    room          TEXT NOT NULL DEFAULT 'lobby',
    user          TEXT,
    verified      INTEGER,
    user_id       TEXT,
    -- Moderation events' fields (a delete's line, a kick's or ban's member, a
    -- ban's end, a ban's or leave's reason); NULL on every other event.
    target        TEXT,
    member        TEXT,
    until         TEXT,
    reason        TEXT,
    -- A reaction's emoji, toggle (1 on, 0 off) and the line's counts after it
    -- (a JSON object); a reply's parent and quote. NULL on every other event.
    emoji         TEXT,
    toggled_on    INTEGER,
    counts        TEXT,
    reply_to      TEXT,
    quote         TEXT,
    -- The IAM principal (ARN) of a line of the publish API; NULL otherwise.
    principal     TEXT
);
-- Who has which emoji on which line: a reaction toggle inserts or deletes its
-- row in the transaction that appends the event, so toggles are decided one
-- at a time and the counts are a GROUP BY.
CREATE TABLE IF NOT EXISTS reactions (
    target  TEXT NOT NULL,
    emoji   TEXT NOT NULL,
    reactor TEXT NOT NULL,
    PRIMARY KEY (target, emoji, reactor)
) WITHOUT ROWID;
-- Who may not hear which room until when (`until`, ISO; `expires_at`, epoch
-- seconds, for the purge of ended bans).
CREATE TABLE IF NOT EXISTS bans (
    room       TEXT NOT NULL,
    user       TEXT NOT NULL,
    until      TEXT NOT NULL,
    by         TEXT NOT NULL,
    reason     TEXT,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (room, user)
) WITHOUT ROWID;
-- How far the stream → broadcaster emulator has got, so a restart resumes there.
CREATE TABLE IF NOT EXISTS stream_checkpoint (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL
);
";

/// Each room's member counter (the Memberships table's `{room, "#members"}`
/// item, [`chat_core::model::ROOM_COUNTER_ID`]) and its change stream: every
/// membership created or removed moves the room's counter by one in the same
/// transaction and appends the change, as the counter item's record on the
/// Memberships stream (NEW_AND_OLD_IMAGES) would. A counter is never deleted,
/// like the item, which stays at 0 once its room empties. Named consumers'
/// checkpoints (the events pipeline's of both streams) live beside them.
/// Created after [`add_rooms_column`]; a database from before gains counters
/// seeded from its memberships, with no change recorded.
const COUNTERS: &str = "
CREATE TABLE IF NOT EXISTS room_members (
    room    TEXT PRIMARY KEY,
    members INTEGER NOT NULL
) WITHOUT ROWID;
-- before is NULL when the counter did not exist yet (the item's INSERT record).
CREATE TABLE IF NOT EXISTS member_changes (
    seq    INTEGER PRIMARY KEY AUTOINCREMENT,
    room   TEXT NOT NULL,
    before INTEGER,
    after  INTEGER NOT NULL,
    at_ms  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS stream_checkpoints (
    consumer TEXT PRIMARY KEY,
    seq      INTEGER NOT NULL
) WITHOUT ROWID;
";

/// How long counter changes are kept: a DynamoDB stream's 24 hours.
const MEMBER_CHANGES_KEPT_MS: i64 = 24 * 60 * 60 * 1000;

/// Creates the counters (seeded on a database from before them) and trims
/// their change stream to its retention, as DynamoDB trims a stream.
fn add_counters(db: &rusqlite::Connection) -> rusqlite::Result<()> {
    let present = db.prepare("SELECT 1 FROM sqlite_master WHERE name = 'room_members'")?.exists([])?;
    db.execute_batch(COUNTERS)?;
    if !present {
        db.execute_batch(
            "INSERT OR IGNORE INTO room_members (room, members) SELECT room, COUNT(*) FROM memberships GROUP BY room",
        )?;
    }
    let oldest_kept = chrono::Utc::now().timestamp_millis() - MEMBER_CHANGES_KEPT_MS;
    db.execute("DELETE FROM member_changes WHERE at_ms < ?1", params![oldest_kept])?;
    Ok(())
}

/// One change of a room's member counter, in the order they were committed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberChange {
    /// The change stream's sequence number.
    pub seq: i64,
    pub room: String,
    /// `None`: the counter did not exist before (its first membership ever).
    pub before: Option<i64>,
    pub after: i64,
    pub at: chrono::DateTime<chrono::Utc>,
}

/// Moves `room`'s member counter by `delta` (±1) and appends the change to the
/// counter stream. Called inside the transaction that created or removed the membership.
fn count_member(tx: &rusqlite::Connection, room: &str, delta: i64) -> rusqlite::Result<()> {
    let before: Option<i64> = tx
        .prepare_cached("SELECT members FROM room_members WHERE room = ?1")?
        .query_row(params![room], |r| r.get(0))
        .optional()?;
    let after = (before.unwrap_or(0) + delta).max(0);
    tx.prepare_cached(
        "INSERT INTO room_members (room, members) VALUES (?1, ?2)
         ON CONFLICT (room) DO UPDATE SET members = excluded.members",
    )?
    .execute(params![room, after])?;
    tx.prepare_cached("INSERT INTO member_changes (room, before, after, at_ms) VALUES (?1, ?2, ?3, ?4)")?
        .execute(params![room, before, after, chrono::Utc::now().timestamp_millis()])?;
    Ok(())
}

/// Deletes `connection_id`'s membership of `room` and counts it out; the
/// membership as listed (with its join) if there was one.
fn delete_membership(
    tx: &rusqlite::Connection,
    connection_id: &str,
    room: &str,
) -> rusqlite::Result<Option<Connection>> {
    let deleted = tx
        .prepare_cached(&format!("DELETE FROM memberships WHERE room = ?1 AND connection_id = ?2 {RETURNING_MEMBER}"))?
        .query_row(params![room, connection_id], member_from_row)
        .optional()?;
    if deleted.is_some() {
        count_member(tx, room, -1)?;
    }
    Ok(deleted)
}

/// Receipts of acknowledged sends, keyed by sender, room and clientMessageId
/// ([`Receipt`]): a resend within the window finds its line here. Created after
/// [`drop_unkeyed_receipts`].
const RECEIPTS: &str = "
CREATE TABLE IF NOT EXISTS client_messages (
    receipt_key TEXT PRIMARY KEY,
    message_id  TEXT NOT NULL,
    expires_at  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS client_messages_expiry ON client_messages (expires_at);
";

/// Receipts from before they had a sender, a room and an expiry were keyed by
/// clientMessageId alone, which any sender could claim: a database with them
/// drops them (at worst a resend across the upgrade is stored twice).
fn drop_unkeyed_receipts(db: &rusqlite::Connection) -> rusqlite::Result<()> {
    let old =
        db.prepare("SELECT 1 FROM pragma_table_info('client_messages') WHERE name = 'client_message_id'")?.exists([])?;
    if old {
        db.execute_batch("DROP TABLE client_messages")?;
    }
    Ok(())
}

/// MessageHistory's `room` GSI: history reads one room, never the whole table.
/// Created after [`add_missing_columns`] so databases from before rooms get it too.
/// Fan-out reads Memberships now (keyed by room already), so ActiveConnections'
/// room index, which every connect and disconnect paid to update, is dropped.
const ROOM_INDEXES: &str = "
CREATE INDEX IF NOT EXISTS message_history_room ON message_history (room, message_id);
DROP INDEX IF EXISTS active_connections_room;
";

/// Columns added since the first schema; a database from before gains them, every
/// old row in the default room, anonymous and served one frame per event.
const ADDED_COLUMNS: &[(&str, &str)] =
    &[("room", "TEXT NOT NULL DEFAULT 'lobby'"), ("user", "TEXT"), ("verified", "INTEGER"), ("user_id", "TEXT")];
/// Columns added to one table only.
const ADDED_TABLE_COLUMNS: &[(&str, &str, &str)] = &[
    ("active_connections", "batch", "INTEGER NOT NULL DEFAULT 0"),
    ("message_history", "target", "TEXT"),
    ("message_history", "member", "TEXT"),
    ("message_history", "until", "TEXT"),
    ("message_history", "emoji", "TEXT"),
    ("message_history", "toggled_on", "INTEGER"),
    ("message_history", "counts", "TEXT"),
    ("message_history", "reply_to", "TEXT"),
    ("message_history", "quote", "TEXT"),
    ("message_history", "reason", "TEXT"),
    ("message_history", "principal", "TEXT"),
    ("memberships", "join_id", "TEXT"),
    ("memberships", "joined_at", "TEXT"),
    ("memberships", "leaving", "TEXT"),
];

fn add_missing_columns(db: &rusqlite::Connection) -> rusqlite::Result<()> {
    let every_table = ["active_connections", "session_history", "message_history"]
        .into_iter()
        .flat_map(|table| ADDED_COLUMNS.iter().map(move |(column, declaration)| (table, *column, *declaration)));
    for (table, column, declaration) in every_table.chain(ADDED_TABLE_COLUMNS.iter().copied()) {
        let present: bool =
            db.prepare(&format!("SELECT 1 FROM pragma_table_info('{table}') WHERE name = '{column}'"))?.exists([])?;
        if !present {
            db.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {declaration}"))?;
        }
    }
    Ok(())
}

/// A database from before channels gains the `rooms` column (its rows keep
/// NULL: their home room alone) and a membership for every row, in its home
/// room, so its connections go on hearing that room until they are ended.
/// Once: the column's presence says it was done. (An empty table has no one
/// to carry over, and is not read: whatever its other columns.)
fn add_rooms_column(db: &rusqlite::Connection) -> rusqlite::Result<()> {
    let present =
        db.prepare("SELECT 1 FROM pragma_table_info('active_connections') WHERE name = 'rooms'")?.exists([])?;
    if present {
        return Ok(());
    }
    in_transaction(db, |tx| {
        tx.execute_batch("ALTER TABLE active_connections ADD COLUMN rooms TEXT")?;
        if tx.prepare("SELECT 1 FROM active_connections")?.exists([])? {
            tx.execute_batch(
                "INSERT OR IGNORE INTO memberships
                     (room, connection_id, connected_at, expires_at, user, verified, user_id, batch)
                 SELECT room, connection_id, connected_at, expires_at, user, verified, user_id, batch
                 FROM active_connections",
            )?;
        }
        Ok(())
    })
}

/// One SQLite database implementing every storage port. Cheap to clone.
#[derive(Clone)]
pub struct SqliteStore {
    db: Arc<Mutex<rusqlite::Connection>>,
    /// Bumped after every append: each stream consumer watches it (a second
    /// consumer must not take the first one's wake-up).
    appended: Arc<watch::Sender<u64>>,
    /// Bumped after every member counter change.
    counted: Arc<watch::Sender<u64>>,
    rooms: Arc<Mutex<RoomCache>>,
}

fn bump(signal: &watch::Sender<u64>) {
    signal.send_modify(|n| *n = n.wrapping_add(1));
}

/// Each room's members as last read, in id order. The broadcaster lists the
/// room once per batch; under load that reread (and re-parse) of every row was
/// most of its SQLite time, while memberships change only on connect,
/// subscribe, unsubscribe and departure. Writes through this store forget the
/// rooms they touch (under the database lock, so no read can cache a stale
/// list); a write by another connection to the file (another process, a test)
/// changes SQLite's `data_version`, which forgets them all.
#[derive(Default)]
struct RoomCache {
    data_version: i64,
    rooms: HashMap<String, Arc<Vec<Connection>>>,
}

/// A message table row with its sequence number; the event fails to decode if the row is corrupt.
pub type StreamRow = (i64, Result<LogEvent, StoreError>);

/// Opens the file and brings its schema up to date.
fn open_schema(path: &Path) -> rusqlite::Result<rusqlite::Connection> {
    let db = rusqlite::Connection::open(path)?;
    db.execute_batch(SCHEMA)?;
    add_missing_columns(&db)?;
    add_rooms_column(&db)?;
    db.execute_batch(ROOM_INDEXES)?;
    drop_unkeyed_receipts(&db)?;
    db.execute_batch(RECEIPTS)?;
    add_counters(&db)?;
    Ok(db)
}

fn unavailable(error: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(error.to_string())
}

/// The columns [`event_from_row`] reads, in its order.
const EVENT_COLUMNS: &str =
    "SELECT seq, message_id, connection_id, message, timestamp, kind, room, user, verified, user_id,
     target, member, until, reason, emoji, toggled_on, counts, reply_to, quote, principal FROM message_history";

fn select_events(
    db: &rusqlite::Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> rusqlite::Result<Vec<StreamRow>> {
    db.prepare_cached(sql)?.query_map(params, event_from_row)?.collect()
}

fn event_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<StreamRow> {
    let seq: i64 = row.get(0)?;
    let (message_id, connection_id, message, timestamp, kind, room): (String, String, String, String, String, String) =
        (row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?, row.get(5)?, row.get(6)?);
    let kind = EventKind::parse(&kind);
    let until: Option<String> = row.get(12)?;
    let until = match until.as_deref().map(parse_iso) {
        None => Ok(None),
        Some(Some(until)) => Ok(Some(until)),
        Some(None) => Err(()),
    };
    let counts: Option<String> = row.get(16)?;
    let counts = match counts.as_deref().map(serde_json::from_str) {
        None => Ok(None),
        Some(Ok(counts)) => Ok(Some(counts)),
        Some(Err(_)) => Err(()),
    };
    let event = match (parse_iso(&timestamp), kind, until, counts) {
        (Some(timestamp), Some(kind), Ok(until), Ok(counts)) => Ok(LogEvent {
            message_id,
            connection_id,
            message,
            timestamp,
            kind,
            room,
            user: row.get(7)?,
            verified: row.get(8)?,
            user_id: row.get(9)?,
            target: row.get(10)?,
            member: row.get(11)?,
            until,
            reason: row.get(13)?,
            emoji: row.get(14)?,
            on: row.get(15)?,
            counts,
            reply_to: row.get(17)?,
            quote: row.get(18)?,
            principal: row.get(19)?,
        }),
        _ => Err(StoreError::Malformed(format!("message_history row {seq}"))),
    };
    Ok((seq, event))
}

/// Inserts `event` unless its id is logged already; `true` if it is new.
fn insert_event(db: &rusqlite::Connection, event: &LogEvent) -> rusqlite::Result<bool> {
    db.prepare_cached(
        "INSERT OR IGNORE INTO message_history
             (message_id, connection_id, message, timestamp, kind, room, user, verified, user_id,
              target, member, until, reason, emoji, toggled_on, counts, reply_to, quote, principal)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)",
    )?
    .execute(params![
        event.message_id,
        event.connection_id,
        event.message,
        format_iso(&event.timestamp),
        event.kind.as_str(),
        event.room,
        event.user,
        event.verified,
        event.user_id,
        event.target,
        event.member,
        event.until.as_ref().map(format_iso),
        event.reason,
        event.emoji,
        event.on,
        event.counts.as_ref().map(|counts| serde_json::to_string(counts).unwrap_or_default()),
        event.reply_to,
        event.quote,
        event.principal
    ])
    .map(|inserted| inserted == 1)
}

/// The columns [`session_from_row`] reads, in its order.
const SESSION_COLUMNS: &str = "SELECT connection_id, source_ip, connected_at, disconnected_at, duration_seconds, room,
     user, verified, user_id FROM session_history";

fn session_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Session> {
    let (connected_at, disconnected_at): (String, Option<String>) = (r.get(2)?, r.get(3)?);
    Ok(Session {
        connection_id: r.get(0)?,
        source_ip: r.get(1)?,
        connected_at: parse_iso(&connected_at).unwrap_or_default(),
        disconnected_at: disconnected_at.as_deref().and_then(parse_iso),
        duration_seconds: r.get(4)?,
        room: r.get(5)?,
        user: r.get(6)?,
        verified: r.get(7)?,
        // Local sessions are kept: the embedded store has no TTL.
        expires_at: None,
        user_id: r.get(8)?,
    })
}

/// The columns [`connection_from_row`] reads, in its order.
const CONNECTION_COLUMNS: &str =
    "SELECT connection_id, connected_at, source_ip, expires_at, room, user, verified, batch,
     user_id, rooms FROM active_connections";

/// What `DELETE … RETURNING` gives back: the row as [`CONNECTION_COLUMNS`] reads it.
const RETURNING_CONNECTION: &str =
    "RETURNING connection_id, connected_at, source_ip, expires_at, room, user, verified, batch, user_id, rooms";

fn connection_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Connection> {
    let connected_at: String = r.get(1)?;
    let rooms: Option<String> = r.get(9)?;
    let rooms = match rooms {
        Some(json) => serde_json::from_str(&json)
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(9, rusqlite::types::Type::Text, Box::new(e)))?,
        None => Vec::new(),
    };
    Ok(Connection {
        connection_id: r.get(0)?,
        connected_at: parse_iso(&connected_at).unwrap_or_default(),
        source_ip: r.get(2)?,
        expires_at: r.get(3)?,
        room: r.get(4)?,
        rooms,
        user: r.get(5)?,
        verified: r.get(6)?,
        batch: r.get(7)?,
        user_id: r.get(8)?,
        join_id: None,
        joined_at: None,
        leaving: None,
    })
}

/// A connection's rooms as the `rooms` column holds them: a JSON array, or NULL
/// for none (a row written without a set: its home room alone).
fn rooms_column(rooms: &[String]) -> Option<String> {
    (!rooms.is_empty()).then(|| serde_json::Value::from(rooms).to_string())
}

/// The columns [`member_from_row`] reads, in its order.
const MEMBER_COLUMNS: &str = "SELECT connection_id, connected_at, expires_at, room, user, verified, batch, user_id,
     join_id, joined_at, leaving FROM memberships";

/// What `DELETE … RETURNING` gives back: the membership as [`MEMBER_COLUMNS`] reads it.
const RETURNING_MEMBER: &str = "RETURNING connection_id, connected_at, expires_at, room, user, verified, batch, user_id, join_id, joined_at, leaving";

/// A membership as a room's listing gives it: [`Connection::as_member_of`] its
/// room, with its join (none if its time does not parse: no join is better
/// than a wrong one) and the leave it is ending with (none if it does not
/// parse: the next to end it marks it again).
fn member_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Connection> {
    let connected_at: String = r.get(1)?;
    let (join_id, joined_at): (Option<String>, Option<String>) = (r.get(8)?, r.get(9)?);
    let joined_at = joined_at.as_deref().and_then(parse_iso);
    let leaving: Option<String> = r.get(10)?;
    Ok(Connection {
        connection_id: r.get(0)?,
        connected_at: parse_iso(&connected_at).unwrap_or_default(),
        source_ip: String::new(),
        expires_at: r.get(2)?,
        room: r.get(3)?,
        rooms: Vec::new(),
        user: r.get(4)?,
        verified: r.get(5)?,
        batch: r.get(6)?,
        user_id: r.get(7)?,
        join_id: join_id.filter(|_| joined_at.is_some()),
        joined_at,
        leaving: leaving.and_then(|json| serde_json::from_str(&json).ok()),
    })
}

/// Writes `connection`'s membership of `room`, announced by `join` if given
/// (replacing one there was); a new one is counted in. `true` if it is new.
fn insert_membership(
    db: &rusqlite::Connection,
    connection: &Connection,
    room: &str,
    join: Option<&LogEvent>,
) -> rusqlite::Result<bool> {
    let existed = db
        .prepare_cached("SELECT 1 FROM memberships WHERE room = ?1 AND connection_id = ?2")?
        .exists(params![room, connection.connection_id])?;
    db.prepare_cached(
        "INSERT OR REPLACE INTO memberships
             (room, connection_id, connected_at, expires_at, user, verified, user_id, batch, join_id, joined_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        room,
        connection.connection_id,
        format_iso(&connection.connected_at),
        connection.expires_at,
        connection.user,
        connection.verified,
        connection.user_id,
        connection.batch,
        join.map(|join| &join.message_id),
        join.map(|join| format_iso(&join.timestamp))
    ])?;
    if !existed {
        count_member(db, room, 1)?;
    }
    Ok(!existed)
}

/// Runs `f` in an IMMEDIATE transaction (it takes the write lock first, so two
/// processes' read-then-write transactions queue instead of failing), committed
/// if `f` succeeds.
fn in_transaction<T>(
    db: &rusqlite::Connection,
    f: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    let tx = rusqlite::Transaction::new_unchecked(db, TransactionBehavior::Immediate)?;
    let value = f(&tx)?;
    tx.commit()?;
    Ok(value)
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`; `:memory:` for a throwaway one.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = open_schema(path).map_err(|error| match error.sqlite_error_code() {
            // Another process holds a write lock past the busy timeout.
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
                StoreError::Unavailable(format!(
                    "the database {} is locked by another process (another chat-local, a replay, an sqlite3 \
                     shell?): stop it, or use another file with --db PATH",
                    path.display()
                ))
            }
            _ => unavailable(error),
        })?;
        Ok(Self {
            db: Arc::new(Mutex::new(db)),
            appended: Arc::new(watch::channel(0).0),
            counted: Arc::new(watch::channel(0).0),
            rooms: Arc::default(),
        })
    }

    /// Every member of `room` in id order, from the cache when no membership
    /// changed since it was read.
    fn room_connections(&self, room: &str) -> Result<Arc<Vec<Connection>>, StoreError> {
        self.with(|db| {
            let mut cache = self.room_cache(db)?;
            if let Some(connections) = cache.rooms.get(room) {
                return Ok(connections.clone());
            }
            let connections: Vec<Connection> = db
                .prepare_cached(&format!("{MEMBER_COLUMNS} WHERE room = ?1 ORDER BY connection_id"))?
                .query_map(params![room], member_from_row)?
                .collect::<rusqlite::Result<_>>()?;
            let connections = Arc::new(connections);
            cache.rooms.insert(room.to_owned(), connections.clone());
            Ok(connections)
        })
    }

    /// The room cache, emptied first if another connection wrote to the file
    /// since it was filled. Called with the database locked.
    fn room_cache(&self, db: &rusqlite::Connection) -> rusqlite::Result<std::sync::MutexGuard<'_, RoomCache>> {
        let version: i64 = db.prepare_cached("PRAGMA data_version")?.query_row([], |r| r.get(0))?;
        let mut cache = self.rooms.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if cache.data_version != version {
            cache.rooms.clear();
            cache.data_version = version;
        }
        Ok(cache)
    }

    /// Called with the database locked, after a write to the memberships of `rooms`.
    fn forget_rooms<'r>(&self, rooms: impl IntoIterator<Item = &'r str>) {
        let mut cache = self.rooms.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for room in rooms {
            cache.rooms.remove(room);
        }
    }

    /// Runs `f` with the database. Statements are short; the lock is never held across an await.
    fn with<T>(&self, f: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T>) -> Result<T, StoreError> {
        let db = self.db.lock().map_err(|_| StoreError::Unavailable("store lock poisoned".into()))?;
        f(&db).map_err(unavailable)
    }

    /// Changes after every append: a stream consumer waits on it instead of polling.
    pub fn appended(&self) -> watch::Receiver<u64> {
        self.appended.subscribe()
    }

    /// Changes after every member counter change: the counter stream's consumer waits on it.
    pub fn counted(&self) -> watch::Receiver<u64> {
        self.counted.subscribe()
    }

    /// Up to `limit` member counter changes after sequence number `after`, in commit order.
    pub fn member_changes_after(&self, after: i64, limit: usize) -> Result<Vec<MemberChange>, StoreError> {
        self.with(|db| {
            db.prepare_cached(
                "SELECT seq, room, before, after, at_ms FROM member_changes WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )?
            .query_map(params![after, limit as i64], |r| {
                let at_ms: i64 = r.get(4)?;
                Ok(MemberChange {
                    seq: r.get(0)?,
                    room: r.get(1)?,
                    before: r.get(2)?,
                    after: r.get(3)?,
                    at: chrono::DateTime::from_timestamp_millis(at_ms).unwrap_or_default(),
                })
            })?
            .collect()
        })
    }

    /// The newest member counter change's sequence number (0 for none).
    pub fn newest_member_change(&self) -> Result<i64, StoreError> {
        self.with(|db| db.query_row("SELECT COALESCE(MAX(seq), 0) FROM member_changes", [], |r| r.get(0)))
    }

    /// `room`'s member counter (0 for a room never joined).
    pub fn members(&self, room: &str) -> Result<i64, StoreError> {
        self.with(|db| {
            db.prepare_cached("SELECT members FROM room_members WHERE room = ?1")?
                .query_row(params![room], |r| r.get(0))
                .optional()
                .map(Option::unwrap_or_default)
        })
    }

    /// A named consumer's checkpoint (`None`: it never ran).
    pub fn consumer_checkpoint(&self, consumer: &str) -> Result<Option<i64>, StoreError> {
        self.with(|db| {
            db.prepare_cached("SELECT seq FROM stream_checkpoints WHERE consumer = ?1")?
                .query_row(params![consumer], |r| r.get(0))
                .optional()
        })
    }

    pub fn set_consumer_checkpoint(&self, consumer: &str, seq: i64) -> Result<(), StoreError> {
        self.with(|db| {
            db.prepare_cached(
                "INSERT INTO stream_checkpoints (consumer, seq) VALUES (?1, ?2)
                 ON CONFLICT (consumer) DO UPDATE SET seq = excluded.seq",
            )?
            .execute(params![consumer, seq])
            .map(drop)
        })
    }

    /// Up to `limit` log entries after sequence number `after`, in append order.
    /// Malformed rows are returned as errors so the caller can log and skip them.
    pub fn stream_after(&self, after: i64, limit: usize) -> Result<Vec<StreamRow>, StoreError> {
        self.with(|db| {
            select_events(
                db,
                &format!("{EVENT_COLUMNS} WHERE seq > ?1 ORDER BY seq LIMIT ?2"),
                params![after, limit as i64],
            )
        })
    }

    /// Every row of active_connections, whatever its room: at start-up they are
    /// all stale (see `serve`). Not a request path, so reading the table is fine.
    pub fn all_connections(&self) -> Result<Vec<Connection>, StoreError> {
        self.with(|db| db.prepare(CONNECTION_COLUMNS)?.query_map([], connection_from_row)?.collect())
    }

    /// Every membership whose connection has no row any more, as its room lists
    /// it: what a departure cut short (a crash between deleting the row and
    /// leaving its rooms) left behind. Read at start-up, after the stale rows
    /// were ended (see `serve`); not a request path.
    pub fn orphan_memberships(&self) -> Result<Vec<Connection>, StoreError> {
        self.with(|db| {
            db.prepare(&format!(
                "{MEMBER_COLUMNS} AS m WHERE NOT EXISTS
                     (SELECT 1 FROM active_connections AS a WHERE a.connection_id = m.connection_id)
                 ORDER BY room, connection_id"
            ))?
            .query_map([], member_from_row)?
            .collect()
        })
    }

    /// Forgets every anonymous connection's read cursors (those with an
    /// expiry): a connection's cursor lives as long as it, and at start-up no
    /// connection of an earlier run is alive. Returns how many were forgotten.
    pub fn forget_connection_cursors(&self) -> Result<usize, StoreError> {
        self.with(|db| db.execute("DELETE FROM read_cursors WHERE expires_at IS NOT NULL", []))
    }

    pub fn checkpoint(&self) -> Result<i64, StoreError> {
        self.with(|db| {
            db.query_row("SELECT seq FROM stream_checkpoint WHERE id = 1", [], |r| r.get(0))
                .optional()
                .map(|seq| seq.unwrap_or(0))
        })
    }

    /// The sequence number of the newest log entry (0 for an empty log): how far
    /// the stream's checkpoint is behind is the stream's lag in records.
    pub fn newest_sequence(&self) -> Result<i64, StoreError> {
        self.with(|db| db.query_row("SELECT COALESCE(MAX(seq), 0) FROM message_history", [], |r| r.get(0)))
    }

    pub fn set_checkpoint(&self, seq: i64) -> Result<(), StoreError> {
        self.with(|db| {
            db.execute(
                "INSERT INTO stream_checkpoint (id, seq) VALUES (1, ?1)
                 ON CONFLICT (id) DO UPDATE SET seq = excluded.seq",
                params![seq],
            )
            .map(drop)
        })
    }

    pub fn session(&self, connection_id: &str) -> Result<Option<Session>, StoreError> {
        self.with(|db| {
            db.query_row(
                &format!("{SESSION_COLUMNS} WHERE connection_id = ?1"),
                params![connection_id],
                session_from_row,
            )
            .optional()
        })
    }
}

#[async_trait]
impl ConnectionStore for SqliteStore {
    /// The row and a membership per room, in one transaction.
    async fn put(&self, connection: &Connection) -> Result<(), StoreError> {
        let rooms = connection.rooms();
        self.with(|db| {
            let created = in_transaction(db, |tx| {
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO active_connections
                         (connection_id, connected_at, source_ip, expires_at, room, user, verified, batch, user_id,
                          rooms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                )?
                .execute(params![
                    connection.connection_id,
                    format_iso(&connection.connected_at),
                    connection.source_ip,
                    connection.expires_at,
                    connection.room,
                    connection.user,
                    connection.verified,
                    connection.batch,
                    connection.user_id,
                    rooms_column(&connection.rooms)
                ])?;
                let mut created = false;
                for room in &rooms {
                    created |= insert_membership(tx, connection, room, None)?;
                }
                Ok(created)
            })?;
            self.forget_rooms(rooms.iter().map(String::as_str));
            if created {
                bump(&self.counted);
            }
            Ok(())
        })
    }

    async fn get(&self, connection_id: &str) -> Result<Option<Connection>, StoreError> {
        self.with(|db| {
            db.prepare_cached(&format!("{CONNECTION_COLUMNS} WHERE connection_id = ?1"))?
                .query_row(params![connection_id], connection_from_row)
                .optional()
        })
    }

    /// One `DELETE … RETURNING`: of racing deletes, one gets the row.
    async fn delete(&self, connection_id: &str) -> Result<Option<Connection>, StoreError> {
        self.with(|db| {
            db.prepare_cached(&format!(
                "DELETE FROM active_connections WHERE connection_id = ?1 {RETURNING_CONNECTION}"
            ))?
            .query_row(params![connection_id], connection_from_row)
            .optional()
        })
    }

    /// Reads the row and writes both it and the membership (with `join`'s id
    /// and time) in one
    /// transaction, so a departure (which deletes the row first) either sees
    /// the room in the row or makes this answer [`Subscribed::NotConnected`].
    async fn subscribe(
        &self,
        connection: &Connection,
        room: &str,
        max_rooms: usize,
        join: &LogEvent,
    ) -> Result<Subscribed, StoreError> {
        let id = connection.connection_id.as_str();
        self.with(|db| {
            let subscribed = in_transaction(db, |tx| {
                let row = tx
                    .prepare_cached(&format!("{CONNECTION_COLUMNS} WHERE connection_id = ?1"))?
                    .query_row(params![id], connection_from_row)
                    .optional()?;
                let rooms = match Subscribed::rooms_after(row.as_ref(), room, max_rooms) {
                    Ok(rooms) => rooms,
                    Err(unchanged) => return Ok((unchanged, false)),
                };
                tx.prepare_cached("UPDATE active_connections SET rooms = ?2 WHERE connection_id = ?1")?
                    .execute(params![id, rooms_column(&rooms)])?;
                // A membership without its room in the row (cut short) is rewritten, not counted twice.
                let counted = insert_membership(tx, connection, room, Some(join))?;
                Ok((Subscribed::New, counted))
            });
            let (subscribed, counted) = subscribed?;
            if subscribed == Subscribed::New {
                self.forget_rooms([room]);
            }
            if counted {
                bump(&self.counted);
            }
            Ok(subscribed)
        })
    }

    /// Sets the membership's leave unless it has one and reads it back, one
    /// statement (`UPDATE … RETURNING`). The room's cached listing keeps the
    /// member as it was: nothing reads a listed member's leave.
    async fn mark_leaving(
        &self,
        connection_id: &str,
        room: &str,
        leave: &LogEvent,
    ) -> Result<Option<Connection>, StoreError> {
        let leave = serde_json::to_string(leave).map_err(|e| StoreError::Malformed(e.to_string()))?;
        self.with(|db| {
            db.prepare_cached(&format!(
                "UPDATE memberships SET leaving = COALESCE(leaving, ?3) WHERE room = ?1 AND connection_id = ?2
                 {RETURNING_MEMBER}"
            ))?
            .query_row(params![room, connection_id, leave], member_from_row)
            .optional()
        })
    }

    /// Takes the room out of the row (if there is one) and deletes the
    /// membership (`DELETE … RETURNING`), in one transaction; the membership if there was one.
    async fn unsubscribe(&self, connection_id: &str, room: &str) -> Result<Option<Connection>, StoreError> {
        self.with(|db| {
            let removed = in_transaction(db, |tx| {
                let row = tx
                    .prepare_cached(&format!("{CONNECTION_COLUMNS} WHERE connection_id = ?1"))?
                    .query_row(params![connection_id], connection_from_row)
                    .optional()?;
                if let Some(row) = row {
                    let rooms: Vec<String> = row.rooms().into_iter().filter(|r| r != room).collect();
                    tx.prepare_cached("UPDATE active_connections SET rooms = ?2 WHERE connection_id = ?1")?
                        .execute(params![connection_id, rooms_column(&rooms)])?;
                }
                delete_membership(tx, connection_id, room)
            })?;
            if removed.is_some() {
                self.forget_rooms([room]);
                bump(&self.counted);
            }
            Ok(removed)
        })
    }

    /// Deletes the membership alone (a departure: the row is gone already).
    async fn end_membership(&self, connection_id: &str, room: &str) -> Result<Option<Connection>, StoreError> {
        self.with(|db| {
            let deleted = in_transaction(db, |tx| delete_membership(tx, connection_id, room))?;
            if deleted.is_some() {
                self.forget_rooms([room]);
                bump(&self.counted);
            }
            Ok(deleted)
        })
    }

    /// A page of the room's members in id order, like a consistent Query of
    /// Memberships (read on its `(room, connection_id)` key, then cached: [`RoomCache`]).
    async fn list(&self, room: &str, after: Option<String>, limit: usize) -> Result<Page<Connection>, StoreError> {
        let limit = limit.max(1);
        let all = self.room_connections(room)?;
        let start = after.map_or(0, |after| all.partition_point(|c| c.connection_id.as_str() <= after.as_str()));
        let items: Vec<Connection> = all[start..].iter().take(limit).cloned().collect();
        let next = (start + items.len() < all.len()).then(|| items[items.len() - 1].connection_id.clone());
        Ok(Page { items, next })
    }

    /// The cached listing's length, or a count on the key (not a listing: a
    /// subscribe counts the room it just changed).
    async fn count(&self, room: &str) -> Result<usize, StoreError> {
        self.with(|db| {
            if let Some(members) = self.room_cache(db)?.rooms.get(room) {
                return Ok(members.len());
            }
            db.prepare_cached("SELECT COUNT(*) FROM memberships WHERE room = ?1")?
                .query_row(params![room], |r| r.get::<_, i64>(0))
                .map(|n| n as usize)
        })
    }
}

#[async_trait]
impl ReadCursors for SqliteStore {
    async fn cursors(&self, reader: &str) -> Result<HashMap<String, String>, StoreError> {
        self.with(|db| {
            db.prepare_cached("SELECT room, message_id FROM read_cursors WHERE reader = ?1")?
                .query_map(params![reader], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect()
        })
    }

    /// One upsert that only ever moves the cursor forward, like the
    /// conditional UpdateItem (`attribute_not_exists(message_id) OR message_id < :id`).
    async fn advance(
        &self,
        reader: &str,
        room: &str,
        message_id: &str,
        expires_at: Option<i64>,
    ) -> Result<bool, StoreError> {
        // Nothing sorts before the empty id: it is never later than a cursor (nor than none).
        if message_id.is_empty() {
            return Ok(false);
        }
        self.with(|db| {
            db.prepare_cached(
                "INSERT INTO read_cursors (reader, room, message_id, expires_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (reader, room) DO UPDATE SET message_id = excluded.message_id,
                     expires_at = excluded.expires_at
                 WHERE excluded.message_id > read_cursors.message_id",
            )?
            .execute(params![reader, room, message_id, expires_at])
            .map(|changed| changed == 1)
        })
    }
}

#[async_trait]
impl SessionLog for SqliteStore {
    async fn open(&self, session: &Session) -> Result<(), StoreError> {
        self.with(|db| {
            db.prepare_cached(
                "INSERT OR REPLACE INTO session_history
                     (connection_id, source_ip, connected_at, room, user, verified, user_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                session.connection_id,
                session.source_ip,
                format_iso(&session.connected_at),
                session.room,
                session.user,
                session.verified,
                session.user_id
            ])
            .map(drop)
        })
    }

    /// One conditional UPDATE … RETURNING: whoever completes the session gets it, once.
    async fn close(&self, end: &SessionEnd) -> Result<Option<Session>, StoreError> {
        self.with(|db| {
            db.prepare_cached(
                "UPDATE session_history SET disconnected_at = ?2, duration_seconds = ?3
                 WHERE connection_id = ?1 AND disconnected_at IS NULL
                 RETURNING connection_id, source_ip, connected_at, disconnected_at, duration_seconds, room, user, verified,
                     user_id",
            )?
            .query_row(
                params![end.connection_id, format_iso(&end.disconnected_at), end.duration_seconds],
                session_from_row,
            )
            .optional()
        })
    }
}

#[async_trait]
impl MessageLog for SqliteStore {
    async fn append(&self, event: &LogEvent) -> Result<bool, StoreError> {
        let new = self.with(|db| insert_event(db, event))?;
        if new {
            bump(&self.appended);
        }
        Ok(new)
    }

    /// The receipt and the line in one transaction: both or neither. Receipts
    /// past their expiry are purged first (on the expiry index), as DynamoDB's
    /// TTL would, so an expired one never answers a send.
    async fn append_once(&self, event: &LogEvent, client_message_id: &str) -> Result<String, StoreError> {
        let receipt = Receipt::for_send(event, client_message_id);
        let (stored, new) = self.with(|db| {
            let tx = db.unchecked_transaction()?;
            tx.prepare_cached("DELETE FROM client_messages WHERE expires_at <= ?1")?
                .execute(params![receipt.sent_at])?;
            let claimed = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO client_messages (receipt_key, message_id, expires_at) VALUES (?1, ?2, ?3)",
                )?
                .execute(params![receipt.key, event.message_id, receipt.expires_at])?
                == 1;
            let stored = if claimed {
                insert_event(&tx, event)?;
                event.message_id.clone()
            } else {
                tx.prepare_cached("SELECT message_id FROM client_messages WHERE receipt_key = ?1")?
                    .query_row(params![receipt.key], |r| r.get(0))?
            };
            tx.commit()?;
            Ok((stored, claimed))
        })?;
        if new {
            bump(&self.appended);
        }
        Ok(stored)
    }

    /// Answered on the `(room, message_id)` index, like a Query on the room GSI:
    /// a history request on every connect must not read the whole log.
    async fn read(&self, query: &LogQuery) -> Result<Vec<LogEvent>, StoreError> {
        let (room, limit) = (&query.room, query.limit as i64);
        let rows = self.with(|db| match &query.after {
            Some(LogCursor::MessageId(id)) => select_events(
                db,
                &format!("{EVENT_COLUMNS} WHERE room = ?1 AND message_id > ?2 ORDER BY message_id LIMIT ?3"),
                params![room, id, limit],
            ),
            // Stored times are whole seconds, so a string comparison is exact.
            Some(LogCursor::Time(at)) => select_events(
                db,
                &format!("{EVENT_COLUMNS} WHERE room = ?1 AND timestamp > ?2 ORDER BY message_id LIMIT ?3"),
                params![room, format_iso(at), limit],
            ),
            None => select_events(
                db,
                &format!("{EVENT_COLUMNS} WHERE room = ?1 ORDER BY message_id DESC LIMIT ?2"),
                params![room, limit],
            )
            .map(|mut newest_first| {
                newest_first.reverse();
                newest_first
            }),
        })?;
        Ok(rows
            .into_iter()
            .filter_map(|(seq, event)| {
                event.map_err(|error| tracing::warn!(seq, %error, "skipping malformed message_history row")).ok()
            })
            .collect())
    }

    async fn get(&self, message_id: &str) -> Result<Option<LogEvent>, StoreError> {
        let rows =
            self.with(|db| select_events(db, &format!("{EVENT_COLUMNS} WHERE message_id = ?1"), params![message_id]))?;
        rows.into_iter().next().map(|(_, event)| event).transpose()
    }

    async fn deleted(&self, room: &str, id: &str) -> Result<bool, StoreError> {
        let key = Receipt::tombstone_key(room, id);
        self.with(|db| db.prepare_cached("SELECT 1 FROM client_messages WHERE receipt_key = ?1")?.exists(params![key]))
    }

    /// One IMMEDIATE transaction: the receipt (with a `clientMessageId`), the
    /// reactor's row in `reactions` read and flipped, the line's counts grouped
    /// from it, and the event, so toggles are decided one at a time.
    async fn toggle_reaction(
        &self,
        reaction: &LogEvent,
        client_message_id: Option<&str>,
    ) -> Result<LogEvent, StoreError> {
        let Toggle { target, emoji, reactor, receipt } = Toggle::of(reaction, client_message_id);
        let (stored, new) = self.with(|db| {
            in_transaction(db, |tx| {
                if let Some(receipt) = &receipt {
                    tx.prepare_cached("DELETE FROM client_messages WHERE expires_at <= ?1")?
                        .execute(params![receipt.sent_at])?;
                    let first: Option<String> = tx
                        .prepare_cached("SELECT message_id FROM client_messages WHERE receipt_key = ?1")?
                        .query_row(params![receipt.key], |r| r.get(0))
                        .optional()?;
                    if let Some(first) = first {
                        let rows =
                            select_events(tx, &format!("{EVENT_COLUMNS} WHERE message_id = ?1"), params![first])?;
                        return Ok((rows.into_iter().next().map(|(_, event)| event), false));
                    }
                    tx.prepare_cached(
                        "INSERT INTO client_messages (receipt_key, message_id, expires_at) VALUES (?1, ?2, ?3)",
                    )?
                    .execute(params![receipt.key, reaction.message_id, receipt.expires_at])?;
                }
                let counts: std::collections::BTreeMap<String, u32> = tx
                    .prepare_cached("SELECT emoji, COUNT(*) FROM reactions WHERE target = ?1 GROUP BY emoji")?
                    .query_map(params![target], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<rusqlite::Result<_>>()?;
                let was_on = tx
                    .prepare_cached("DELETE FROM reactions WHERE target = ?1 AND emoji = ?2 AND reactor = ?3")?
                    .execute(params![target, emoji, reactor])?
                    == 1;
                if !was_on {
                    tx.prepare_cached("INSERT INTO reactions (target, emoji, reactor) VALUES (?1, ?2, ?3)")?
                        .execute(params![target, emoji, reactor])?;
                }
                let event = decided(reaction.clone(), was_on, counts);
                insert_event(tx, &event)?;
                Ok((Some(Ok(event)), true))
            })
        })?;
        if new {
            bump(&self.appended);
        }
        stored.unwrap_or_else(|| Err(StoreError::Malformed("a reaction receipt without its event".into())))
    }
}

/// The columns [`ban_from_row`] reads, in its order.
const BAN_COLUMNS: &str = "SELECT room, user, until, by, reason, expires_at FROM bans";

fn ban_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Ban> {
    let until: String = r.get(2)?;
    Ok(Ban {
        room: r.get(0)?,
        user: r.get(1)?,
        until: parse_iso(&until).unwrap_or_default(),
        by: r.get(3)?,
        reason: r.get(4)?,
        expires_at: r.get(5)?,
    })
}

#[async_trait]
impl Bans for SqliteStore {
    /// Replaces an earlier ban of the member from the room; ended bans are
    /// purged first, as DynamoDB's TTL would.
    async fn ban(&self, ban: &Ban) -> Result<(), StoreError> {
        self.with(|db| {
            db.prepare_cached("DELETE FROM bans WHERE expires_at <= ?1")?.execute(params![chrono::Utc::now().timestamp()])?;
            db.prepare_cached(
                "INSERT OR REPLACE INTO bans (room, user, until, by, reason, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![ban.room, ban.user, format_iso(&ban.until), ban.by, ban.reason, ban.expires_at])
            .map(drop)
        })
    }

    async fn unban(&self, room: &str, user: &str) -> Result<bool, StoreError> {
        self.with(|db| {
            db.prepare_cached("DELETE FROM bans WHERE room = ?1 AND user = ?2")?
                .execute(params![room, user])
                .map(|n| n == 1)
        })
    }

    async fn active(
        &self,
        room: &str,
        user: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Option<Ban>, StoreError> {
        let ban = self.with(|db| {
            db.prepare_cached(&format!("{BAN_COLUMNS} WHERE room = ?1 AND user = ?2"))?
                .query_row(params![room, user], ban_from_row)
                .optional()
        })?;
        Ok(ban.filter(|ban| ban.holds_at(now)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chat_core::model::RECEIPT_TTL;
    use chat_core::time::parse_iso;

    fn at(iso: &str) -> chrono::DateTime<chrono::Utc> {
        parse_iso(iso).unwrap()
    }

    /// The join a subscribe of `connection` to `room` makes (at its connect time).
    fn join_of(connection: &Connection, room: &str) -> LogEvent {
        LogEvent::join(&connection.connection_id, connection.connected_at)
            .in_room(room)
            .by(connection.identity().as_ref())
    }

    /// A folder of this test process's own and a database path in it, with no
    /// database left from an earlier run.
    fn scratch_db(folder: &str, file: &str) -> (std::path::PathBuf, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("{folder}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(file);
        let _ = std::fs::remove_file(&path);
        (dir, path)
    }

    /// A database written by an older schema (`sql`), in a fresh scratch folder,
    /// opened by this store: the folder (to remove) and the store.
    fn opened_after(folder: &str, sql: &str) -> (std::path::PathBuf, std::path::PathBuf, SqliteStore) {
        let (dir, path) = scratch_db(folder, "old.db");
        rusqlite::Connection::open(&path).unwrap().execute_batch(sql).unwrap();
        let store = SqliteStore::open(&path).unwrap();
        (dir, path, store)
    }

    #[tokio::test]
    async fn survives_reopening() {
        let (dir, path) = scratch_db("chat-local-store", "chat.db");
        {
            let store = SqliteStore::open(&path).unwrap();
            store.append(&LogEvent::chat("c", "kept", at("2026-11-24T10:00:00Z"))).await.unwrap();
            store.set_checkpoint(1).unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        let entries = store.stream_after(0, 10).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].1.as_ref().unwrap().message, "kept");
        assert_eq!(store.checkpoint().unwrap(), 1);
        std::fs::remove_dir_all(dir).ok();
    }

    #[tokio::test]
    async fn a_client_message_id_is_appended_once() {
        let store = SqliteStore::open(Path::new(":memory:")).unwrap();
        let first = LogEvent::chat("c", "once", at("2026-11-24T10:00:00Z"));
        let resent = LogEvent::chat("c2", "once", at("2026-11-24T10:00:05Z"));
        assert_eq!(store.append_once(&first, "k").await.unwrap(), first.message_id);
        assert_eq!(store.append_once(&resent, "k").await.unwrap(), first.message_id, "the first line's id");
        let other = LogEvent::chat("c", "other", at("2026-11-24T10:00:06Z"));
        assert_eq!(store.append_once(&other, "k2").await.unwrap(), other.message_id);
        let logged: Vec<String> =
            store.stream_after(0, 10).unwrap().into_iter().map(|(_, e)| e.unwrap().message).collect();
        assert_eq!(logged, ["once", "other"]);
    }

    #[tokio::test]
    async fn a_receipt_belongs_to_its_sender_and_room_and_expires() {
        let store = SqliteStore::open(Path::new(":memory:")).unwrap();
        let t = at("2026-11-24T10:00:00Z");
        let (ada, impostor) = (
            chat_core::Identity::verified("alice", "https://id.example|ada"),
            chat_core::Identity::verified("alice", "https://id.example|eve"),
        );
        let line = |text: &str, who: &chat_core::Identity, room: &str, at| {
            LogEvent::chat("c", text, at).in_room(room).by(Some(who))
        };
        let first = line("ada's", &ada, "ops", t);
        assert_eq!(store.append_once(&first, "k").await.unwrap(), first.message_id);
        let theirs = line("eve's", &impostor, "ops", t);
        assert_eq!(store.append_once(&theirs, "k").await.unwrap(), theirs.message_id, "not ada's receipt");
        let moved = line("ada's", &ada, "dev", t);
        assert_eq!(store.append_once(&moved, "k").await.unwrap(), moved.message_id, "a new line in a new room");
        let resent = line("ada's", &ada, "ops", t + RECEIPT_TTL - chrono::Duration::seconds(1));
        assert_eq!(store.append_once(&resent, "k").await.unwrap(), first.message_id, "within the window");
        let late = line("ada's", &ada, "ops", t + RECEIPT_TTL);
        assert_eq!(store.append_once(&late, "k").await.unwrap(), late.message_id, "past the window");
        let receipts: i64 =
            store.with(|db| db.query_row("SELECT count(*) FROM client_messages", [], |r| r.get(0))).unwrap();
        assert_eq!(receipts, 1, "the expired receipts were purged, the renewed one kept");
        let rooms: Vec<(String, Option<String>)> = store
            .stream_after(0, 10)
            .unwrap()
            .into_iter()
            .map(|(_, e)| e.map(|e| (e.room, e.user_id)).unwrap())
            .collect();
        let (ada_id, eve_id) = (Some("https://id.example|ada".to_owned()), Some("https://id.example|eve".to_owned()));
        assert_eq!(
            rooms,
            [
                ("ops".into(), ada_id.clone()),
                ("ops".into(), eve_id),
                ("dev".into(), ada_id.clone()),
                ("ops".into(), ada_id)
            ]
        );
    }

    #[tokio::test]
    async fn append_is_idempotent_by_id() {
        let store = SqliteStore::open(Path::new(":memory:")).unwrap();
        let event = LogEvent::chat("c", "once", at("2026-11-24T10:00:00Z"));
        assert!(store.append(&event).await.unwrap(), "new");
        assert!(!store.append(&event).await.unwrap(), "already logged");
        assert_eq!(store.stream_after(0, 10).unwrap().len(), 1);
    }

    #[tokio::test]
    async fn reads_answer_each_kind_of_query_like_the_memory_log() {
        let store = SqliteStore::open(Path::new(":memory:")).unwrap();
        let reference = chat_core::memory::MemoryLog::default();
        for (i, time) in ["10:00:00", "10:00:01", "10:00:01", "10:00:02", "10:00:03"].iter().enumerate() {
            let event = LogEvent::chat("c", &format!("m{i}"), at(&format!("2026-11-24T{time}Z")));
            let ada = match i % 2 {
                0 => chat_core::Identity::verified("Ada", "https://id.example|ada"),
                _ => chat_core::Identity::chosen("Ada"),
            };
            let elsewhere =
                LogEvent::chat("o", &format!("o{i}"), at(&format!("2026-11-24T{time}Z"))).in_room("ops").by(Some(&ada));
            for event in [event, elsewhere] {
                store.append(&event).await.unwrap();
                reference.append(&event).await.unwrap();
            }
        }
        let second = reference.events()[2].message_id.clone();
        let query = |room: &str, after, limit| LogQuery { room: room.into(), after, limit };
        let queries = [
            query("lobby", None, 2),
            query("lobby", None, 50),
            query("ops", None, 3),
            query("lobby", Some(LogCursor::MessageId(second.clone())), 2),
            query("ops", Some(LogCursor::MessageId(second)), 50),
            query("lobby", Some(LogCursor::Time(at("2026-11-24T10:00:00Z"))), 50),
            query("ops", Some(LogCursor::Time(at("2026-11-24T10:00:01Z"))), 1),
        ];
        for query in queries {
            let expected = reference.read(&query).await.unwrap();
            assert!(!expected.is_empty());
            assert_eq!(store.read(&query).await.unwrap(), expected, "{query:?}");
        }
    }

    #[tokio::test]
    async fn sessions_close_once() {
        let store = SqliteStore::open(Path::new(":memory:")).unwrap();
        let connection = Connection::new("c", "ip", at("2026-11-24T10:00:00Z"));
        store.open(&Session::opened(&connection)).await.unwrap();
        let end = SessionEnd::new("c", connection.connected_at, at("2026-11-24T10:01:00Z"));
        let closed = store.close(&end).await.unwrap().expect("the first close completes it");
        assert_eq!((closed.duration_seconds, closed.room.as_str()), (Some(60), "lobby"));
        assert_eq!(store.close(&end).await.unwrap(), None);
        assert_eq!(store.session("c").unwrap().unwrap(), closed);
    }

    #[tokio::test]
    async fn moderation_events_and_bans_are_stored_in_a_database_from_before_them() {
        let (dir, _, store) = opened_after(
            "chat-local-moderation",
            "CREATE TABLE message_history (seq INTEGER PRIMARY KEY AUTOINCREMENT, message_id TEXT NOT NULL UNIQUE,
                     connection_id TEXT NOT NULL, message TEXT NOT NULL, timestamp TEXT NOT NULL, kind TEXT NOT NULL,
                     room TEXT NOT NULL DEFAULT 'lobby', user TEXT, verified INTEGER, user_id TEXT);
                 INSERT INTO message_history (message_id, connection_id, message, timestamp, kind)
                     VALUES ('019ab5e1-3c44-7d2a-9f1e-2b7c1d0e4a55', 'c', 'old', '2026-11-24T10:00:00Z', 'chat');",
        );
        let old = MessageLog::get(&store, "019ab5e1-3c44-7d2a-9f1e-2b7c1d0e4a55").await.unwrap().unwrap();
        assert_eq!((old.message.as_str(), old.target.clone()), ("old", None), "old rows read as before");
        let t = at("2026-11-24T10:00:00Z");
        let ban = LogEvent::ban("m", "iss|ann", t + chrono::Duration::hours(1), Some("spam"), t).in_room("ops");
        let leave = LogEvent::leave("c", t).because("banned");
        let tombstone = LogEvent::delete("m", &old.message_id, t);
        for event in [&ban, &leave, &tombstone] {
            store.append(event).await.unwrap();
            assert_eq!(
                MessageLog::get(&store, &event.message_id).await.unwrap().as_ref(),
                Some(event),
                "every field kept"
            );
        }
        assert_eq!(MessageLog::get(&store, "00000000-0000-7000-8000-000000000000").await.unwrap(), None);

        let until = t + chrono::Duration::minutes(5);
        store.ban(&Ban::new("ops", "iss|ann", until, "Mo", Some("spam"))).await.unwrap();
        let held = store.active("ops", "iss|ann", t).await.unwrap().expect("banned");
        assert_eq!((held.until, held.by.as_str(), held.reason.as_deref()), (until, "Mo", Some("spam")));
        assert_eq!(store.active("ops", "iss|ann", until).await.unwrap(), None, "over at its end");
        assert_eq!(store.active("lobby", "iss|ann", t).await.unwrap(), None, "one room only");
        assert!(store.unban("ops", "iss|ann").await.unwrap());
        assert!(!store.unban("ops", "iss|ann").await.unwrap());
        assert_eq!(store.active("ops", "iss|ann", t).await.unwrap(), None);
        std::fs::remove_dir_all(dir).ok();
    }

    #[tokio::test]
    async fn edits_reactions_and_replies_are_stored_in_a_database_from_before_them() {
        let (dir, _, store) = opened_after(
            "chat-local-lifecycle",
            "CREATE TABLE message_history (seq INTEGER PRIMARY KEY AUTOINCREMENT, message_id TEXT NOT NULL UNIQUE,
                     connection_id TEXT NOT NULL, message TEXT NOT NULL, timestamp TEXT NOT NULL, kind TEXT NOT NULL,
                     room TEXT NOT NULL DEFAULT 'lobby', user TEXT, verified INTEGER, user_id TEXT, target TEXT,
                     member TEXT, until TEXT, reason TEXT);
                 INSERT INTO message_history (message_id, connection_id, message, timestamp, kind)
                     VALUES ('019ab5e1-3c44-7d2a-9f1e-2b7c1d0e4a55', 'c', 'old', '2026-11-24T10:00:00Z', 'chat');",
        );
        let old = MessageLog::get(&store, "019ab5e1-3c44-7d2a-9f1e-2b7c1d0e4a55").await.unwrap().unwrap();
        let expected =
            LogEvent { message_id: old.message_id.clone(), ..LogEvent::chat("c", "old", at("2026-11-24T10:00:00Z")) };
        assert_eq!(old, expected, "an old row reads as before, with no new field");
        let t = at("2026-11-24T10:01:00Z");
        let edit = LogEvent::edit("c", &old.message_id, "new", t);
        let reply = LogEvent::chat("d", "re", t).replying_to(&old.message_id, Some("old"));
        let published = LogEvent::chat("api", "deployed", t).published_by("arn:aws:iam::000000000000:user/ci");
        for event in [&edit, &reply, &published] {
            store.append(event).await.unwrap();
            assert_eq!(MessageLog::get(&store, &event.message_id).await.unwrap().as_ref(), Some(event));
        }
        let reaction = LogEvent::reaction("d", &old.message_id, "👍", t);
        let on = store.toggle_reaction(&reaction, Some("0192f3a4-5b6c-7d8e-9f01-23456789abcd")).await.unwrap();
        let again = reaction.clone().renewed();
        let resent = store.toggle_reaction(&again, Some("0192f3a4-5b6c-7d8e-9f01-23456789abcd"));
        assert_eq!(resent.await.unwrap(), on, "a resend is answered with the first toggle");
        assert_eq!(MessageLog::get(&store, &on.message_id).await.unwrap(), Some(on.clone()), "every field kept");
        let off = store.toggle_reaction(&reaction.renewed(), None).await.unwrap();
        assert_eq!((on.on, off.on, off.counts), (Some(true), Some(false), Some(Default::default())));
        assert!(!store.deleted("lobby", &old.message_id).await.unwrap());
        store
            .append_once(&LogEvent::delete("c", &old.message_id, t), &Receipt::tombstone_id(&old.message_id))
            .await
            .unwrap();
        assert!(store.deleted("lobby", &old.message_id).await.unwrap());
        std::fs::remove_dir_all(dir).ok();
    }

    #[tokio::test]
    async fn a_database_from_before_channels_keeps_its_connections_in_their_home_rooms() {
        let (dir, path, store) = opened_after(
            "chat-local-channels",
            "CREATE TABLE active_connections (connection_id TEXT PRIMARY KEY, connected_at TEXT NOT NULL,
                     source_ip TEXT NOT NULL, expires_at INTEGER NOT NULL, room TEXT NOT NULL DEFAULT 'lobby',
                     user TEXT, verified INTEGER, batch INTEGER NOT NULL DEFAULT 0, user_id TEXT);
                 CREATE INDEX active_connections_room ON active_connections (room, connection_id);
                 INSERT INTO active_connections VALUES ('old', '2026-11-24T10:00:00Z', 'ip', 1, 'ops', 'Ada', 1, 1,
                     'local|ada');
                 INSERT INTO active_connections (connection_id, connected_at, source_ip, expires_at)
                     VALUES ('older', '2026-11-24T10:00:00Z', 'ip', 1);",
        );
        let old = ConnectionStore::get(&store, "old").await.unwrap().unwrap();
        assert_eq!((old.rooms.clone(), old.rooms()), (vec![], vec!["ops".to_owned()]), "its home room alone");
        assert_eq!(store.list("ops", None, 10).await.unwrap().items, [old.as_member_of("ops")], "still hears it");
        assert_eq!(store.count("lobby").await.unwrap(), 1, "the older row, in the lobby");
        assert_eq!((store.members("ops").unwrap(), store.members("lobby").unwrap()), (1, 1), "counters seeded");
        assert_eq!(store.newest_member_change().unwrap(), 0, "seeding is no change");
        // It can subscribe like any other, keeping its home room.
        assert_eq!(store.subscribe(&old, "dev", 100, &join_of(&old, "dev")).await.unwrap(), Subscribed::New);
        assert_eq!(store.subscribe(&old, "ops", 100, &join_of(&old, "ops")).await.unwrap(), Subscribed::Already);
        assert_eq!(ConnectionStore::get(&store, "old").await.unwrap().unwrap().rooms, ["ops", "dev"]);
        // Its departure leaves each room once (dev after its join: the
        // subscribe above wrote the membership but did not log the join).
        let end = SessionEnd::new("old", old.connected_at, at("2026-11-24T10:05:00Z"));
        assert_eq!(chat_core::handlers::depart(&end, None, &store, &store, &store).await.unwrap(), 2);
        let end = SessionEnd::new("older", old.connected_at, at("2026-11-24T10:05:00Z"));
        assert_eq!(chat_core::handlers::depart(&end, None, &store, &store, &store).await.unwrap(), 1);
        let said: Vec<(&str, String, String)> = store
            .stream_after(0, 10)
            .unwrap()
            .into_iter()
            .map(|(_, e)| e.map(|e| (e.kind.as_str(), e.connection_id, e.room)).unwrap())
            .collect();
        let expected =
            [("leave", "old", "ops"), ("join", "old", "dev"), ("leave", "old", "dev"), ("leave", "older", "lobby")]
                .map(|(k, c, r)| (k, c.to_owned(), r.to_owned()));
        assert_eq!(said, expected);
        assert_eq!(store.orphan_memberships().unwrap(), []);
        let index: bool = store
            .with(|db| db.prepare("SELECT 1 FROM sqlite_master WHERE name = 'active_connections_room'")?.exists([]))
            .unwrap();
        assert!(!index, "fan-out reads memberships: the connections' room index is gone");
        drop(store);
        // Opening it again migrates nothing twice.
        let again = SqliteStore::open(&path).unwrap();
        assert_eq!(again.count("ops").await.unwrap(), 0);
        std::fs::remove_dir_all(dir).ok();
    }

    #[tokio::test]
    async fn a_database_from_before_rooms_gains_them_with_every_row_in_the_lobby() {
        let (dir, _, store) = opened_after(
            "chat-local-migrate",
                "CREATE TABLE active_connections (connection_id TEXT PRIMARY KEY, connected_at TEXT NOT NULL,
                     source_ip TEXT NOT NULL, expires_at INTEGER NOT NULL);
                 CREATE TABLE message_history (seq INTEGER PRIMARY KEY AUTOINCREMENT, message_id TEXT NOT NULL UNIQUE,
                     connection_id TEXT NOT NULL, message TEXT NOT NULL, timestamp TEXT NOT NULL, kind TEXT NOT NULL);
                 CREATE TABLE client_messages (client_message_id TEXT PRIMARY KEY, message_id TEXT NOT NULL);
                 INSERT INTO client_messages VALUES ('k', '019ab5e1-3c44-7d2a-9f1e-2b7c1d0e4a55');
                 INSERT INTO active_connections VALUES ('old', '2026-11-24T10:00:00Z', 'ip', 1);
                 INSERT INTO message_history (message_id, connection_id, message, timestamp, kind)
                     VALUES ('019ab5e1-3c44-7d2a-9f1e-2b7c1d0e4a55', 'old', 'before rooms', '2026-11-24T10:00:00Z', 'chat');",
        );
        let old = ConnectionStore::get(&store, "old").await.unwrap().unwrap();
        assert_eq!((old.room.as_str(), old.batch), ("lobby", false));
        let history = store.read(&LogQuery { room: "lobby".into(), after: None, limit: 10 }).await.unwrap();
        assert_eq!(history[0].message, "before rooms");
        assert_eq!((history[0].user_id.as_deref(), old.user_id.as_deref()), (None, None), "anonymous, as they were");
        // The old receipts, keyed by clientMessageId alone, answer nobody now.
        let line = LogEvent::chat("new", "after the upgrade", at("2026-11-24T10:00:00Z"));
        assert_eq!(store.append_once(&line, "k").await.unwrap(), line.message_id);
        // And the new columns take a verified identity on every table.
        let grace = chat_core::Identity::verified("grace", "local|grace");
        let connection = Connection::new("g", "ip", at("2026-11-24T10:00:00Z")).of(Some(&grace));
        store.put(&connection).await.unwrap();
        store.open(&Session::opened(&connection)).await.unwrap();
        let joined = LogEvent::join("g", at("2026-11-24T10:00:01Z")).by(Some(&grace));
        store.append(&joined).await.unwrap();
        assert_eq!(ConnectionStore::get(&store, "g").await.unwrap().unwrap().identity(), Some(grace.clone()));
        assert_eq!(store.session("g").unwrap().unwrap().identity(), Some(grace.clone()));
        let last = store.read(&LogQuery { room: "lobby".into(), after: None, limit: 1 }).await.unwrap();
        assert_eq!(last[0].user_id.as_deref(), Some("local|grace"));
        std::fs::remove_dir_all(dir).ok();
    }

    #[tokio::test]
    async fn a_listed_room_sees_every_later_write_from_this_store_and_from_another_connection() {
        let (dir, path) = scratch_db("chat-local-rooms", "rooms.db");
        let store = SqliteStore::open(&path).unwrap();
        let ids = |store: SqliteStore| async move {
            let all = chat_core::ports::list_all_connections(&store, "lobby").await.unwrap();
            all.into_iter().map(|c| c.connection_id).collect::<Vec<_>>()
        };
        let at = at("2026-11-24T10:00:00Z");
        store.put(&Connection::new("b", "ip", at)).await.unwrap();
        assert_eq!(ids(store.clone()).await, ["b"]);
        store.put(&Connection::new("a", "ip", at)).await.unwrap();
        assert_eq!(ids(store.clone()).await, ["a", "b"], "a put through this store");
        assert!(store.unsubscribe("b", "lobby").await.unwrap().is_some());
        assert_eq!(ids(store.clone()).await, ["a"], "an unsubscribe through this store");
        let other = SqliteStore::open(&path).unwrap();
        other.put(&Connection::new("c", "ip", at).coalescing(true)).await.unwrap();
        assert_eq!(ids(store.clone()).await, ["a", "c"], "a put by another connection to the file");
        assert!(ConnectionStore::get(&store, "c").await.unwrap().unwrap().batch);
        assert_eq!(store.list("ops", None, 10).await.unwrap().items, []);
        let a = ConnectionStore::get(&store, "a").await.unwrap().unwrap();
        let join = join_of(&a, "ops");
        assert_eq!(other.subscribe(&a, "ops", 100, &join).await.unwrap(), Subscribed::New);
        let ops = store.list("ops", None, 10).await.unwrap().items;
        assert_eq!(ops, [a.as_member_of("ops").with_join(&join)], "a subscribe by another connection to the file");
        assert_eq!((store.count("ops").await.unwrap(), store.count("lobby").await.unwrap()), (1, 2));
        std::fs::remove_dir_all(dir).ok();
    }

    /// One of the operations [`the_connection_store_answers_like_the_memory_reference`] plays.
    #[derive(Debug)]
    enum Op {
        Put(Connection),
        Delete(&'static str),
        Subscribe(&'static str, &'static str, usize),
        Unsubscribe(&'static str, &'static str),
    }

    /// Everything a [`ConnectionStore`] shows of `ids` and `rooms`: rows, listings, counts.
    async fn view(store: &dyn ConnectionStore, ids: &[&str], rooms: &[&str]) -> String {
        let mut seen = String::new();
        for id in ids {
            seen += &format!("{id}: {:?}\n", store.get(id).await.unwrap());
        }
        for room in rooms {
            let members = chat_core::ports::list_all_connections(store, room).await.unwrap();
            seen += &format!("{room} ({}): {members:?}\n", store.count(room).await.unwrap());
        }
        seen
    }

    #[tokio::test]
    async fn the_connection_store_answers_like_the_memory_reference() {
        let store = SqliteStore::open(Path::new(":memory:")).unwrap();
        let reference = chat_core::memory::MemoryConnections::with_page_size(2);
        let t = at("2026-11-24T10:00:00Z");
        let ada = chat_core::Identity::verified("Ada", "https://id.example|ada");
        let a = Connection::new("a", "10.0.0.1", t).in_room("ops").also_in(["dev", "ops", "qa"]).of(Some(&ada));
        let b = Connection::new("b", "10.0.0.2", t).coalescing(true);
        let ops = [
            Op::Put(a.clone()),
            Op::Put(b.clone()),
            Op::Subscribe("a", "dev", 100),
            Op::Subscribe("a", "lobby", 100),
            Op::Subscribe("a", "more", 4),
            Op::Subscribe("b", "ops", 2),
            Op::Subscribe("b", "qa", 2),
            Op::Subscribe("nobody", "ops", 100),
            Op::Unsubscribe("a", "dev"),
            Op::Unsubscribe("a", "dev"),
            Op::Unsubscribe("b", "lobby"),
            Op::Unsubscribe("nobody", "ops"),
            Op::Subscribe("a", "dev", 100),
            Op::Delete("a"),
            Op::Delete("a"),
            Op::Subscribe("a", "late", 100),
            Op::Unsubscribe("a", "ops"),
        ];
        let (ids, rooms) = (["a", "b", "nobody"], ["lobby", "ops", "dev", "qa", "more", "late"]);
        for op in ops {
            let answers = match &op {
                Op::Put(c) => (format!("{:?}", store.put(c).await), format!("{:?}", reference.put(c).await)),
                Op::Delete(id) => {
                    (format!("{:?}", store.delete(id).await), format!("{:?}", reference.delete(id).await))
                }
                Op::Subscribe(id, room, max) => {
                    // The caller's image of itself, as a handler has it: the row, or what it was.
                    let me = reference.get(id).unwrap_or_else(|| Connection::new(id, "ip", t));
                    let join = join_of(&me, room);
                    (
                        format!("{:?}", store.subscribe(&me, room, *max, &join).await),
                        format!("{:?}", reference.subscribe(&me, room, *max, &join).await),
                    )
                }
                Op::Unsubscribe(id, room) => (
                    format!("{:?}", store.unsubscribe(id, room).await),
                    format!("{:?}", reference.unsubscribe(id, room).await),
                ),
            };
            assert_eq!(answers.0, answers.1, "{op:?}");
            assert_eq!(view(&store, &ids, &rooms).await, view(&reference, &ids, &rooms).await, "after {op:?}");
        }
        let bare = |members: Vec<Connection>| -> Vec<Connection> {
            members.into_iter().map(|m| Connection { join_id: None, joined_at: None, leaving: None, ..m }).collect()
        };
        let members = chat_core::ports::list_all_connections(&store, "ops").await.unwrap();
        assert!(members[0].join().is_some(), "a subscribe's membership keeps its join");
        assert_eq!(bare(members), [b.as_member_of("ops")]);
        let orphans: Vec<Connection> = ["dev", "lobby", "qa"].iter().map(|room| a.as_member_of(room)).collect();
        let left = store.orphan_memberships().unwrap();
        let joined: Vec<bool> = left.iter().map(|m| m.join().is_some()).collect();
        assert_eq!(joined, [true, true, false], "dev and lobby were subscribed; qa came with the put");
        assert_eq!(bare(left), orphans, "the rest of a's memberships outlive its row");
    }

    #[tokio::test]
    async fn read_cursors_only_move_forward_per_reader_and_room() {
        let store = SqliteStore::open(Path::new(":memory:")).unwrap();
        let reference = chat_core::memory::MemoryCursors::default();
        let steps = [
            ("ada", "lobby", "m2", None),
            ("ada", "lobby", "m1", None),
            ("ada", "lobby", "m2", None),
            ("ada", "lobby", "m3", None),
            ("ada", "ops", "m1", None),
            ("connection#c", "lobby", "m5", Some(7)),
        ];
        for (reader, room, id, expires_at) in steps {
            assert_eq!(
                store.advance(reader, room, id, expires_at).await.unwrap(),
                reference.advance(reader, room, id, expires_at).await.unwrap(),
                "{reader} {room} {id}"
            );
        }
        for reader in ["ada", "connection#c", "bob"] {
            assert_eq!(store.cursors(reader).await.unwrap(), reference.cursors(reader).await.unwrap(), "{reader}");
        }
        assert!(!store.advance("bob", "lobby", "", None).await.unwrap(), "no id is before the empty one");
        assert!(store.cursors("bob").await.unwrap().is_empty(), "and it leaves no cursor behind");
        let ada = store.cursors("ada").await.unwrap();
        assert_eq!((ada["lobby"].as_str(), ada["ops"].as_str()), ("m3", "m1"));
        assert_eq!(store.forget_connection_cursors().unwrap(), 1, "the anonymous connection's, not the accounts'");
        assert!(store.cursors("connection#c").await.unwrap().is_empty());
        assert_eq!(store.cursors("ada").await.unwrap(), ada);
    }

    /// A subscribe racing the connection's departure, on two connections to
    /// the file (as two processes would): however they interleave, no
    /// membership is left without a row, and every join has exactly one leave,
    /// logged after it (the subscriber logs its join after its membership
    /// write, as the handler does; a departure in between logs it first).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_subscribe_racing_a_departure_leaves_no_orphan_membership() {
        let (dir, path) = scratch_db("chat-local-race", "race.db");
        let (joiner, leaver) = (SqliteStore::open(&path).unwrap(), SqliteStore::open(&path).unwrap());
        let t = at("2026-11-24T10:00:00Z");
        let (mut joins, mut leaves) = (0, 0);
        for i in 0..200 {
            let connection = Connection::new(&format!("c{i}"), "ip", t);
            joiner.put(&connection).await.unwrap();
            joiner.open(&Session::opened(&connection)).await.unwrap();
            joins += 1;
            let subscribing = {
                let (store, connection) = (joiner.clone(), connection.clone());
                tokio::spawn(async move {
                    let mut new = 0;
                    for room in ["r1", "r2", "r3", "r4", "r5"] {
                        let join = join_of(&connection, room);
                        if store.subscribe(&connection, room, 100, &join).await.unwrap() == Subscribed::New {
                            tokio::task::yield_now().await;
                            store.append(&join).await.unwrap();
                            new += 1;
                        }
                    }
                    new
                })
            };
            let departing = {
                let store = leaver.clone();
                let end = SessionEnd::new(&connection.connection_id, t, t);
                tokio::spawn(async move {
                    // Let some subscribes land first, varying with i.
                    for _ in 0..(i % 7) {
                        tokio::task::yield_now().await;
                    }
                    chat_core::handlers::depart(&end, None, &store, &store, &store).await.unwrap()
                })
            };
            joins += subscribing.await.unwrap();
            leaves += departing.await.unwrap();
        }
        assert_eq!(joiner.orphan_memberships().unwrap(), []);
        // Every room's counter changes form one chain of ±1 steps back to 0,
        // with one step up per join: exact however the two writers interleaved.
        let changes = joiner.member_changes_after(0, 100_000).unwrap();
        let mut counters: HashMap<String, i64> = HashMap::new();
        for change in &changes {
            let counter = counters.entry(change.room.clone()).or_default();
            assert_eq!(change.before.unwrap_or(0), *counter, "{change:?} follows the last change of its room");
            assert_eq!((change.after - *counter).abs(), 1, "{change:?}");
            *counter = change.after;
        }
        assert!(counters.values().all(|&n| n == 0), "{counters:?}");
        for room in ["lobby", "r1", "r2", "r3", "r4", "r5"] {
            assert_eq!(joiner.members(room).unwrap(), 0, "{room}");
        }
        let ups = changes.iter().filter(|c| c.after > c.before.unwrap_or(0)).count();
        assert_eq!(ups, joins, "one step up per membership created");
        let memberships: i64 =
            joiner.with(|db| db.query_row("SELECT count(*) FROM memberships", [], |r| r.get(0))).unwrap();
        assert_eq!(memberships, 0);
        assert_eq!(joins, leaves, "one leave per membership");
        assert!(joins > 200, "some subscribes won the race ({joins} joins)");
        // In the subscribed rooms (the put's lobby joins are not logged here),
        // each (connection, room) is one join then one leave, in append order and in id order.
        let mut events: Vec<LogEvent> =
            joiner.stream_after(0, 100_000).unwrap().into_iter().map(|(_, e)| e.unwrap()).collect();
        events.retain(|e| e.room != "lobby");
        let pairs = |events: &[LogEvent]| {
            let mut said: HashMap<(String, String), Vec<&str>> = HashMap::new();
            for e in events {
                said.entry((e.connection_id.clone(), e.room.clone())).or_default().push(e.kind.as_str());
            }
            said.into_iter().filter(|(_, kinds)| kinds != &["join", "leave"]).collect::<Vec<_>>()
        };
        assert_eq!(pairs(&events), [], "in append order");
        events.sort_by(|a, b| a.message_id.cmp(&b.message_id));
        assert_eq!(pairs(&events), [], "in id order");
        assert_eq!(events.len(), 2 * (joins - 200), "no second join");
        std::fs::remove_dir_all(dir).ok();
    }

    /// A subscribe's membership gives its join back when it ends, however it
    /// ends; one from `$connect`, or from a database from before joins were
    /// kept, gives none (and a time that does not parse is none either).
    #[tokio::test]
    async fn an_ended_membership_gives_back_its_join_if_it_kept_one() {
        let (dir, _, store) = opened_after(
            "chat-local-joins",
            "CREATE TABLE memberships (room TEXT NOT NULL, connection_id TEXT NOT NULL, connected_at TEXT NOT NULL,
                     expires_at INTEGER NOT NULL, user TEXT, verified INTEGER, user_id TEXT,
                     batch INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (room, connection_id)) WITHOUT ROWID;
                 INSERT INTO memberships VALUES ('ops', 'old', '2026-11-24T10:00:00Z', 1, NULL, NULL, NULL, 0);",
        );
        let ended = store.end_membership("old", "ops").await.unwrap().expect("there was one");
        assert_eq!((ended.connection_id.as_str(), ended.room.as_str(), ended.join()), ("old", "ops", None));

        let ada = chat_core::Identity::verified("Ada", "iss|ada");
        let a = Connection::new("a", "ip", at("2026-11-24T10:00:00Z")).of(Some(&ada));
        store.put(&a).await.unwrap();
        let (dev, ops) =
            (join_of(&a, "dev"), LogEvent::join("a", at("2026-11-24T10:01:02Z")).in_room("ops").by(Some(&ada)));
        for join in [&dev, &ops] {
            assert_eq!(store.subscribe(&a, &join.room, 100, join).await.unwrap(), Subscribed::New);
        }
        assert_eq!(store.unsubscribe("a", "ops").await.unwrap().and_then(|m| m.join()), Some(ops));
        assert_eq!(store.end_membership("a", "dev").await.unwrap().and_then(|m| m.join()), Some(dev));
        let home = store.end_membership("a", "lobby").await.unwrap().expect("the put's membership");
        assert_eq!(home.join(), None, "$connect's memberships keep no join");

        assert_eq!(store.subscribe(&a, "qa", 100, &join_of(&a, "qa")).await.unwrap(), Subscribed::New);
        store.with(|db| db.execute("UPDATE memberships SET joined_at = 'yesterday' WHERE room = 'qa'", [])).unwrap();
        assert_eq!(store.end_membership("a", "qa").await.unwrap().and_then(|m| m.join()), None, "no wrong join");
        std::fs::remove_dir_all(dir).ok();
    }

    /// A membership's mark keeps the first leave, across a restart too, and
    /// the departure that finds it marked logs that leave.
    #[tokio::test]
    async fn a_marked_membership_keeps_its_first_leave_until_it_ends() {
        let (dir, path) = scratch_db("chat-local-leaving", "chat.db");
        let store = SqliteStore::open(&path).unwrap();
        let ada = chat_core::Identity::verified("Ada", "iss|ada");
        let a = Connection::new("a", "ip", at("2026-11-24T10:00:00Z")).of(Some(&ada));
        store.put(&a).await.unwrap();
        let leave = |iso| LogEvent::leave("a", at(iso)).in_room("lobby").by(Some(&ada)).because("kicked");
        let first = leave("2026-11-24T10:05:00Z");
        let marked = store.mark_leaving("a", "lobby", &first).await.unwrap().expect("the put's membership");
        assert_eq!(marked.leaving.as_deref(), Some(&first));
        assert!(store.mark_leaving("a", "nowhere", &first).await.unwrap().is_none());
        drop(store);

        let store = SqliteStore::open(&path).unwrap();
        let again = store.mark_leaving("a", "lobby", &leave("2026-11-24T10:06:00Z")).await.unwrap().unwrap();
        assert_eq!(again.leaving.as_deref(), Some(&first), "the first mark stands");
        let end = SessionEnd::new("a", a.connected_at, at("2026-11-24T10:07:00Z"));
        assert_eq!(chat_core::handlers::depart(&end, None, &store, &store, &store).await.unwrap(), 1);
        let logged = store.read(&LogQuery { room: "lobby".into(), after: None, limit: 10 }).await.unwrap();
        assert_eq!(logged, [first]);
        std::fs::remove_dir_all(dir).ok();
    }

    /// `(room, before, after)` of the counter changes after `seq`.
    fn changes_after(store: &SqliteStore, seq: i64) -> Vec<(String, Option<i64>, i64)> {
        let changes = store.member_changes_after(seq, 100).unwrap();
        changes.into_iter().map(|c| (c.room, c.before, c.after)).collect()
    }

    #[tokio::test]
    async fn each_membership_created_or_removed_moves_its_rooms_counter_once_and_nothing_else_does() {
        let store = SqliteStore::open(Path::new(":memory:")).unwrap();
        let t = at("2026-11-24T10:00:00Z");
        let change = |room: &str, before: Option<i64>, after: i64| (room.to_owned(), before, after);
        let a = Connection::new("a", "ip", t).in_room("ops").also_in(["dev"]);
        store.put(&a).await.unwrap();
        assert_eq!(changes_after(&store, 0), [change("ops", None, 1), change("dev", None, 1)], "first ever: INSERTs");
        let mut seen = store.newest_member_change().unwrap();
        let mut expect = |store: &SqliteStore, wanted: &[(String, Option<i64>, i64)], what: &str| {
            assert_eq!(changes_after(store, seen), wanted, "{what}");
            seen = store.newest_member_change().unwrap();
        };
        store.put(&a).await.unwrap();
        expect(&store, &[], "a put of the same memberships");
        store.put(&Connection::new("b", "ip", t).in_room("ops")).await.unwrap();
        expect(&store, &[change("ops", Some(1), 2)], "b joins ops");
        assert_eq!(store.subscribe(&a, "ops", 100, &join_of(&a, "ops")).await.unwrap(), Subscribed::Already);
        assert_eq!(store.subscribe(&a, "qa", 2, &join_of(&a, "qa")).await.unwrap(), Subscribed::Full);
        assert_eq!(
            store
                .subscribe(&Connection::new("x", "ip", t), "qa", 100, &LogEvent::join("x", t).in_room("qa"))
                .await
                .unwrap(),
            Subscribed::NotConnected
        );
        expect(&store, &[], "subscribes that change no membership");
        assert_eq!(store.subscribe(&a, "qa", 100, &join_of(&a, "qa")).await.unwrap(), Subscribed::New);
        expect(&store, &[change("qa", None, 1)], "a subscribes to qa");
        assert!(store.unsubscribe("a", "dev").await.unwrap().is_some());
        assert!(store.unsubscribe("a", "dev").await.unwrap().is_none());
        assert!(store.unsubscribe("x", "ops").await.unwrap().is_none());
        expect(&store, &[change("dev", Some(1), 0)], "one unsubscribe, twice, and a stranger's");
        assert!(store.delete("a").await.unwrap().is_some());
        expect(&store, &[], "deleting the row ends no membership");
        assert!(store.end_membership("a", "ops").await.unwrap().is_some());
        assert!(store.end_membership("a", "ops").await.unwrap().is_none());
        assert!(store.end_membership("a", "qa").await.unwrap().is_some());
        expect(&store, &[change("ops", Some(2), 1), change("qa", Some(1), 0)], "the departure, each room once");
        assert!(store.subscribe(&a, "dev", 100, &join_of(&a, "dev")).await.unwrap() == Subscribed::NotConnected);
        store.put(&Connection::new("c", "ip", t).in_room("dev")).await.unwrap();
        expect(&store, &[change("dev", Some(0), 1)], "a counter at 0 is kept: MODIFY 0 → 1");
        for (room, members) in [("ops", 1), ("dev", 1), ("qa", 0), ("never", 0)] {
            assert_eq!(store.members(room).unwrap(), members, "{room}");
            assert_eq!(store.count(room).await.unwrap(), members as usize, "{room}: the listing agrees");
        }
        let listed = chat_core::ports::list_all_connections(&store, "dev").await.unwrap();
        assert_eq!(listed.iter().map(|c| c.connection_id.as_str()).collect::<Vec<_>>(), ["c"], "no counter listed");
    }

    #[tokio::test]
    async fn counter_changes_older_than_a_streams_24_hours_are_trimmed_on_open() {
        let (dir, path) = scratch_db("chat-local-counter-trim", "trim.db");
        let store = SqliteStore::open(&path).unwrap();
        store.put(&Connection::new("a", "ip", at("2026-11-24T10:00:00Z"))).await.unwrap();
        store.put(&Connection::new("b", "ip", at("2026-11-24T10:00:00Z"))).await.unwrap();
        let day_ago = chrono::Utc::now().timestamp_millis() - MEMBER_CHANGES_KEPT_MS - 1000;
        store.with(|db| db.execute("UPDATE member_changes SET at_ms = ?1 WHERE seq = 1", params![day_ago])).unwrap();
        drop(store);
        let store = SqliteStore::open(&path).unwrap();
        let kept: Vec<i64> = store.member_changes_after(0, 10).unwrap().iter().map(|c| c.seq).collect();
        assert_eq!(kept, [2]);
        assert_eq!(store.members("lobby").unwrap(), 2, "the counter itself is kept");
        std::fs::remove_dir_all(dir).ok();
    }

    #[tokio::test]
    async fn connections_list_in_pages() {
        let store = SqliteStore::open(Path::new(":memory:")).unwrap();
        for i in 0..(LIST_PAGE + 5) {
            store.put(&Connection::new(&format!("c{i:05}"), "ip", at("2026-11-24T10:00:00Z"))).await.unwrap();
            let elsewhere = Connection::new(&format!("c{i:05}x"), "ip", at("2026-11-24T10:00:00Z")).in_room("ops");
            store.put(&elsewhere).await.unwrap();
        }
        let all = chat_core::ports::list_all_connections(&store, "lobby").await.unwrap();
        assert_eq!(all.len(), LIST_PAGE + 5);
        assert!(all.iter().all(|c| c.room == "lobby"));
        assert_eq!(store.count("ops").await.unwrap(), LIST_PAGE + 5);
        assert_eq!(ConnectionStore::get(&store, "c00003x").await.unwrap().unwrap().room, "ops");
    }

    #[tokio::test]
    async fn a_departure_ends_each_membership_once_without_touching_rows() {
        let store = SqliteStore::open(Path::new(":memory:")).unwrap();
        let gone = Connection::new("gone", "ip", at("2026-11-24T10:00:00Z")).in_room("a").also_in(["b"]);
        store.put(&gone).await.unwrap();
        let ids = |store: SqliteStore, room: &'static str| async move {
            chat_core::ports::list_all_connections(&store, room).await.unwrap().len()
        };
        assert_eq!(ids(store.clone(), "b").await, 1, "listed (and cached) before the departure");
        assert!(store.delete("gone").await.unwrap().is_some());
        assert!(store.end_membership("gone", "b").await.unwrap().is_some(), "this call ended it");
        assert!(store.end_membership("gone", "b").await.unwrap().is_none(), "once");
        assert_eq!(ids(store.clone(), "b").await, 0, "the cached listing forgot it");
        assert_eq!(ids(store.clone(), "a").await, 1, "the other room's membership is its own call");
        assert!(ConnectionStore::get(&store, "gone").await.unwrap().is_none(), "no row recreated");
    }
}
