use chrono::{DateTime, Duration, Utc};

use super::HandlerError;
use crate::model::{Connection, Identity, LogEvent, Session};
use crate::ports::{ConnectionStore, MessageLog, SessionLog};

/// What `$connect` needs to know about the new socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectRequest {
    pub connection_id: String,
    pub source_ip: String,
    pub connected_at: DateTime<Utc>,
    /// The home room; already checked ([`crate::room::room_or_default`]).
    pub room: String,
    /// More rooms to subscribe to from the start (the token's `chat.rooms`),
    /// already checked; past the room limit they are left out.
    pub rooms: Vec<String>,
    /// The most rooms a connection may hold ([`crate::room::RoomLimits`]).
    pub max_rooms: usize,
    pub identity: Option<Identity>,
    /// Coalesced delivery asked for (`?batch=1`, [`crate::coalesce`]).
    pub batch: bool,
    /// How long SessionHistory keeps the session (the deployment's setting); none = forever.
    pub session_retention: Option<Duration>,
}

/// Registers the connection for its rooms' broadcasts (the home room, then the
/// token's rooms up to the limit), opens its session and logs a `join` in each
/// room (which the broadcaster announces to everyone else there).
///
/// Cost per call: the row and one membership per room (PutItems), the session
/// (a PutItem), one join append per room.
pub async fn connect(
    request: &ConnectRequest,
    connections: &dyn ConnectionStore,
    sessions: &dyn SessionLog,
    log: &dyn MessageLog,
) -> Result<(), HandlerError> {
    let identity = request.identity.as_ref();
    let mut connection = Connection::new(&request.connection_id, &request.source_ip, request.connected_at)
        .in_room(&request.room)
        .also_in(request.rooms.iter().map(String::as_str))
        .of(identity)
        .coalescing(request.batch);
    if connection.rooms.len() > request.max_rooms {
        tracing::warn!(connection_id = %request.connection_id, asked = connection.rooms.len(), max_rooms = request.max_rooms, "rooms past the limit left out");
        connection.rooms.truncate(request.max_rooms.max(1));
    }
    connections.put(&connection).await?;
    sessions.open(&Session::opened(&connection).kept_for(request.session_retention)).await?;
    for room in &connection.rooms {
        let join = LogEvent::join(&request.connection_id, request.connected_at).in_room(room).by(identity);
        log.append(&join).await?;
    }
    tracing::info!(connection_id = %request.connection_id, source_ip = %request.source_ip, room = %request.room, rooms = connection.rooms.len(), "connected");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handlers::testing::at;
    use crate::memory::{MemoryConnections, MemoryLog, MemorySessions};
    use crate::model::EventKind;

    #[tokio::test]
    async fn records_connection_session_and_join() {
        let (connections, sessions, log) =
            (MemoryConnections::default(), MemorySessions::default(), MemoryLog::default());
        let request = ConnectRequest {
            connection_id: "CXzQ2cJjoAMCJ6g=".into(),
            source_ip: "203.0.113.7".into(),
            connected_at: at("2026-11-24T10:15:30Z"),
            room: "ops".into(),
            rooms: Vec::new(),
            max_rooms: 100,
            identity: Some(Identity::chosen("Ada")),
            batch: true,
            session_retention: Some(Duration::days(7)),
        };
        connect(&request, &connections, &sessions, &log).await.unwrap();

        let row = connections.get("CXzQ2cJjoAMCJ6g=").unwrap();
        assert_eq!(row.source_ip, "203.0.113.7");
        assert_eq!(row.room, "ops");
        assert!(row.batch, "remembered on the row, for the broadcaster");
        assert_eq!(row.expires_at, at("2026-11-24T12:30:30Z").timestamp());
        let session = sessions.get("CXzQ2cJjoAMCJ6g=").unwrap();
        assert_eq!(session.connected_at, request.connected_at);
        assert_eq!(session.disconnected_at, None);
        assert_eq!(session.room, "ops");
        assert_eq!(session.expires_at, Some(at("2026-12-01T10:15:30Z").timestamp()), "a week after it opened");
        let events = log.events();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].kind, EventKind::Join);
        assert_eq!(events[0].room, "ops");
        assert_eq!((events[0].user.as_deref(), events[0].verified), (Some("Ada"), Some(false)));
        assert_eq!(row.identity(), Some(Identity::chosen("Ada")));
        assert_eq!(events[0].message, "A new user has joined the chat - CXzQ2cJjoAMCJ6g=");
    }

    #[tokio::test]
    async fn a_store_outage_fails_the_connect() {
        let (connections, sessions, log) =
            (MemoryConnections::default(), MemorySessions::default(), MemoryLog::default());
        log.outage.set(true);
        let request = ConnectRequest {
            connection_id: "c".into(),
            source_ip: "ip".into(),
            connected_at: at("2026-11-24T10:15:30Z"),
            room: "lobby".into(),
            rooms: Vec::new(),
            max_rooms: 100,
            identity: None,
            batch: false,
            session_retention: None,
        };
        assert!(connect(&request, &connections, &sessions, &log).await.is_err());
    }

    #[tokio::test]
    async fn the_tokens_rooms_are_joined_up_to_the_limit() {
        let (connections, sessions, log) =
            (MemoryConnections::default(), MemorySessions::default(), MemoryLog::default());
        let request = ConnectRequest {
            connection_id: "c".into(),
            source_ip: "ip".into(),
            connected_at: at("2026-11-24T10:15:30Z"),
            room: "lobby".into(),
            rooms: ["team", "lobby", "ops", "dev"].map(String::from).to_vec(),
            max_rooms: 3,
            identity: None,
            batch: false,
            session_retention: None,
        };
        connect(&request, &connections, &sessions, &log).await.unwrap();
        assert_eq!(connections.get("c").unwrap().rooms, ["lobby", "team", "ops"], "home first, each once, 3 at most");
        let joined: Vec<_> = log.events().iter().map(|e| e.room.clone()).collect();
        assert_eq!(joined, ["lobby", "team", "ops"], "one join per room");
        let members = connections.memberships();
        assert_eq!(members.len(), 3);
        assert!(members.contains(&("ops".to_owned(), "c".to_owned())));
    }
}
