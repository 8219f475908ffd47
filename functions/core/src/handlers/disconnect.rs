use chrono::{DateTime, Utc};

use super::HandlerError;
use crate::bounded::for_each_bounded;
use crate::model::{Connection, LogEvent, SessionEnd};
use crate::ports::{ConnectionStore, MessageLog, SessionLog, StoreError};

/// What `$disconnect` knows: API Gateway repeats the connect time in every event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DisconnectRequest {
    pub connection_id: String,
    pub connected_at: DateTime<Utc>,
    pub disconnected_at: DateTime<Utc>,
}

/// Removes the connection, leaves each of its rooms (a `leave` in each) and
/// completes its session.
///
/// Idempotent: a repeated disconnect, or one for a connection already pruned by
/// the broadcaster, finds no row and no membership, and logs nothing (the pruner did).
///
/// Cost per call: see [`depart`].
pub async fn disconnect(
    request: &DisconnectRequest,
    connections: &dyn ConnectionStore,
    sessions: &dyn SessionLog,
    log: &dyn MessageLog,
) -> Result<(), HandlerError> {
    let end = SessionEnd::new(&request.connection_id, request.connected_at, request.disconnected_at);
    let left = depart(&end, None, connections, sessions, log).await?;
    tracing::info!(
        connection_id = %request.connection_id,
        duration_seconds = end.duration_seconds,
        rooms_left = left,
        "disconnected"
    );
    Ok(())
}

/// Ends a connection and announces its departure from each room exactly once,
/// whoever notices it first (`$disconnect`, the broadcaster's 410 prune, the
/// reaper of expired rows, the local stack's start-up sweep), and however they
/// race: each membership's removal has one winner, and only the winner logs
/// that room's `leave`. The rooms are those of the connection's row (deleted
/// here; the caller that deletes it learns them) and of `known` — what the
/// caller already knows of the connection: a listed member (its room), or an
/// expired row's last image (its rooms). A row from before channels has no
/// memberships: whoever deletes it announces its home room's leave.
/// Completes the session too (SessionHistory). Returns how many leaves this
/// call announced.
///
/// Cost per call: the row's delete, per room a membership delete (DynamoDB:
/// with a consistent GetItem of the membership first, for its join) and what
/// [`log_leave`] costs, the session's conditional update.
pub async fn depart(
    end: &SessionEnd,
    known: Option<&Connection>,
    connections: &dyn ConnectionStore,
    sessions: &dyn SessionLog,
    log: &dyn MessageLog,
) -> Result<usize, StoreError> {
    let id = end.connection_id.as_str();
    let row = connections.delete(id).await?;
    let mut rooms: Vec<String> = Vec::new();
    for connection in row.iter().chain(known) {
        for room in connection.rooms() {
            if !rooms.contains(&room) {
                rooms.push(room);
            }
        }
    }
    let identity = row.as_ref().or(known).and_then(Connection::identity);
    let legacy_home = row.as_ref().filter(|row| row.rooms.is_empty()).map(|row| row.room.clone());
    let leave_one = |room: String| {
        let (identity, legacy_home) = (identity.as_ref(), legacy_home.as_deref());
        async move {
            let leave = LogEvent::leave(id, end.disconnected_at).in_room(&room).by(identity);
            match connections.end_membership(id, &room).await? {
                Some(ended) => log_leave(log, &ended, leave).await?,
                None if legacy_home == Some(room.as_str()) => drop(log.append(&leave).await?),
                None => return Ok(false),
            }
            Ok(true)
        }
    };
    // Rooms concurrently: a hundred of them one after another would be ~300
    // requests in a row, a good part of a Lambda's timeout.
    let (mut left, mut failed) = (0, None);
    for_each_bounded(rooms.into_iter().map(leave_one), ROOMS_LEFT_AT_ONCE, |answer: Result<bool, StoreError>| {
        match answer {
            Ok(announced) => left += usize::from(announced),
            Err(error) => failed = Some(error),
        }
    })
    .await;
    if let Some(error) = failed {
        return Err(error);
    }
    sessions.close(end).await?;
    Ok(left)
}

/// Rooms a departure leaves at once.
const ROOMS_LEFT_AT_ONCE: usize = 16;

/// Logs `leave` of a membership this call ended (`ended`, as the store gave it
/// back), after the membership's join if it kept one. A subscribe writes its
/// membership before it logs its join, so a departure in between would
/// otherwise log the leave first and the join after it: a member who never
/// left. The join is the subscribe's own event (same id, [`Connection::join`]),
/// appended here only if absent, so it is logged once whoever comes first;
/// the leave's id sorts after it ([`LogEvent::after`]).
///
/// Cost per call: with a join, one consistent read of it by id (a GetItem:
/// cheaper than the conditional put a logged join would refuse, which
/// DynamoDB bills as a write) and its append when missing; the leave's append.
pub async fn log_leave(log: &dyn MessageLog, ended: &Connection, leave: LogEvent) -> Result<(), StoreError> {
    let leave = match ended.join() {
        Some(join) => {
            if log.get(&join.message_id).await?.is_none() {
                log.append(&join).await?;
            }
            leave.after(&join)
        }
        None => leave,
    };
    log.append(&leave).await?;
    Ok(())
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
            rooms: vec!["dev".into()],
            max_rooms: 100,
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
        let said: Vec<_> = log.events().iter().map(|e| (e.kind, e.room.clone())).collect();
        assert_eq!(
            said,
            [
                (EventKind::Join, "ops".into()),
                (EventKind::Join, "dev".into()),
                (EventKind::Leave, "ops".into()),
                (EventKind::Leave, "dev".into())
            ],
            "one leave in each room joined, once however often it disconnects"
        );
        assert!(connections.memberships().is_empty());
        assert_eq!(log.events()[2].message, "User c1 has left the chat.");
        assert_eq!(log.events()[2].user.as_deref(), Some("Ada"), "and by whom");
        assert_eq!(
            log.events()[2].user_id.as_deref(),
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
