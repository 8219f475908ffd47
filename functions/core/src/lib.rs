//! The chat domain: what a connection, a session and a log event are, how frames
//! look on the wire, the ports the handlers need, and the handlers themselves.
//!
//! Nothing here talks to AWS. The Lambda binaries and the local stack both call
//! the same [`entrypoints`], so behaviour cannot drift between the two.

pub mod archive;
pub mod auth;
mod bounded;
pub mod broadcaster;
pub mod coalesce;
pub mod entrypoints;
pub mod fold;
pub mod handlers;
pub mod identity;
pub mod memory;
pub mod model;
pub mod occupancy;
pub mod origin;
pub mod outbound;
pub mod ports;
pub mod protocol;
pub mod rate;
pub mod reaction;
pub mod replay;
pub mod rights;
pub mod room;
pub mod split;
pub mod text;
pub mod time;

pub use model::{Ban, Connection, EventKind, Identity, LogEvent, Session, SessionEnd};
pub use ports::{
    Archive, Bans, Clock, ConnectionStore, MessageLog, PostError, ReadCursors, SessionLog, SocketPoster, StoreError,
    Subscribed,
};
