use chrono::{DateTime, Utc};

use super::HandlerError;
use crate::model::{LogEvent, Session, SessionEnd};
use crate::ports::{ConnectionStore, MessageLog, SessionLog, StoreError};

/// What `$disconnect` knows: API Gateway repeats the connect time in every event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DisconnectRequest {
    pub connection_id: String,
    pub connected_at: DateTime<Utc>,
    pub disconnected_at: DateTime<Utc>,
}

/// Removes the connection, completes its session and logs a `leave` in its room.
///
/// Idempotent: a repeated disconnect, or one for a connection already pruned by
/// the broadcaster, finds no open session and logs nothing (the pruner did).
pub async fn disconnect(
    request: &DisconnectRequest,
    connections: &dyn ConnectionStore,
    sessions: &dyn SessionLog,
    log: &dyn MessageLog,
) -> Result<(), HandlerError> {
    connections.delete(&request.connection_id).await?;
    let end = SessionEnd::new(&request.connection_id, request.connected_at, request.disconnected_at);
    let closed = depart(&end, sessions, log).await?;
    tracing::info!(
        connection_id = %request.connection_id,
        duration_seconds = end.duration_seconds,
        was_open = closed.is_some(),
        "disconnected"
    );
    Ok(())
}

/// Ends a session and announces the departure, exactly once whoever notices it
/// first (`$disconnect`, the broadcaster's 410 prune, the local stack's start-up
/// sweep): the session's conditional close picks one winner, and only the winner
/// logs the `leave`, in the room the session was in. `None` if another caller
/// had already ended it.
pub async fn depart(
    end: &SessionEnd,
    sessions: &dyn SessionLog,
    log: &dyn MessageLog,
) -> Result<Option<Session>, StoreError> {
    let Some(session) = sessions.close(end).await? else { return Ok(None) };
    let leave = LogEvent::leave(&end.connection_id, end.disconnected_at).in_room(&session.room);
    log.append(&leave.by(session.identity().as_ref())).await?;
    Ok(Some(session))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handlers::testing::at;
    use crate::handlers::{ConnectRequest, connect};
    use crate::memory::{MemoryConnections, MemoryLog, MemorySessions};
    use crate::model::EventKind;

    #[tokio::test]
    async fn completes_session_and_logs_leave_once() {
        let (connections, sessions, log) =
            (MemoryConnections::default(), MemorySessions::default(), MemoryLog::default());
        let connected_at = at("2026-11-24T10:15:30Z");
        let hello = ConnectRequest {
            connection_id: "c1".into(),
            source_ip: "ip".into(),
            connected_at,
            room: "ops".into(),
            identity: Some(crate::model::Identity::verified("Ada", "https://id.example|ada")),
            batch: false,
            session_retention: None,
        };
        connect(&hello, &connections, &sessions, &log).await.unwrap();

        let bye =
            DisconnectRequest { connection_id: "c1".into(), connected_at, disconnected_at: at("2026-11-24T10:16:40Z") };
        disconnect(&bye, &connections, &sessions, &log).await.unwrap();
        disconnect(&bye, &connections, &sessions, &log).await.unwrap();

        assert!(connections.get("c1").is_none());
        let session = sessions.get("c1").unwrap();
        assert_eq!(session.disconnected_at, Some(at("2026-11-24T10:16:40Z")));
        assert_eq!(session.duration_seconds, Some(70));
        let kinds: Vec<_> = log.events().iter().map(|e| e.kind).collect();
        assert_eq!(kinds, [EventKind::Join, EventKind::Leave]);
        assert_eq!(log.events()[1].message, "User c1 has left the chat.");
        assert_eq!(log.events()[1].room, "ops", "the leave is said where the join was");
        assert_eq!(log.events()[1].user.as_deref(), Some("Ada"), "and by whom");
        assert_eq!(
            log.events()[1].user_id.as_deref(),
            Some("https://id.example|ada"),
            "which account, not just the name"
        );
        assert_eq!(session.user_id.as_deref(), Some("https://id.example|ada"));
    }

    #[tokio::test]
    async fn unknown_connection_is_not_an_error() {
        let (connections, sessions, log) =
            (MemoryConnections::default(), MemorySessions::default(), MemoryLog::default());
        let t = at("2026-11-24T10:15:30Z");
        let bye = DisconnectRequest { connection_id: "nobody".into(), connected_at: t, disconnected_at: t };
        disconnect(&bye, &connections, &sessions, &log).await.unwrap();
        assert!(log.events().is_empty());
    }
}
