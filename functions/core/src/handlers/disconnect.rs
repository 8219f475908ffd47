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
/// race or are cut short: each membership ends with one leave
/// ([`leave_room`]). The rooms are those of the connection's row (deleted
/// here; the caller that deletes it learns them) and of `known` — what the
/// caller already knows of the connection: a listed member (its room), or an
/// expired row's last image (its rooms). A row from before channels has no
/// memberships: whoever deletes it announces its home room's leave.
/// Completes the session too (SessionHistory). Returns how many leaves this
/// call announced.
///
/// Cost per call: the row's delete, per room what [`leave_room`] costs, the
/// session's conditional update.
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
            match leave_room(connections, log, id, &room, leave.clone(), Ending::Departure).await? {
                Some(announced) => Ok(announced),
                None if legacy_home == Some(room.as_str()) => log.append(&leave).await,
                None => Ok(false),
            }
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

/// How a membership ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// The connection stays: its row loses the room too (an unsubscribe, a kick
    /// from one of several rooms).
    Unsubscribe,
    /// The connection is gone, and its row with it.
    Departure,
}

/// Ends `connection_id`'s membership of `room` with `leave`, in steps that can
/// each be repeated: marks the membership with `leave` (or finds the leave
/// whoever came first marked it with, and finishes theirs), logs the
/// membership's join if it is not logged yet (a subscribe writes its
/// membership before its join), logs the leave, then removes the membership.
/// A departure cut short anywhere (a store timeout, a crash) so never loses a
/// leave: the membership stays, still listed, until whoever ends it next — a
/// retry, the broadcaster's 410 prune, the reaper, the local stack's start-up
/// sweep — finishes it with the same leave, appended once (by id). The leave's
/// id sorts after the join's ([`LogEvent::after`], the same for every caller).
///
/// `None` when there was no membership; else whether this call logged the leave.
///
/// Cost per call: the mark (DynamoDB: an UpdateItem returning the item, 1
/// write unit); with a join, one consistent read of it by id (a GetItem:
/// cheaper than the conditional put a logged join would refuse, which
/// DynamoDB bills as a write) and its append when missing; the leave's
/// append; the removal ([`ConnectionStore::unsubscribe`] or
/// [`ConnectionStore::end_membership`]).
pub async fn leave_room(
    connections: &dyn ConnectionStore,
    log: &dyn MessageLog,
    connection_id: &str,
    room: &str,
    leave: LogEvent,
    ending: Ending,
) -> Result<Option<bool>, StoreError> {
    let Some(member) = connections.mark_leaving(connection_id, room, &leave).await? else { return Ok(None) };
    let leave = member.leaving.clone().map_or(leave, |marked| *marked);
    let leave = match member.join() {
        Some(join) => {
            if log.get(&join.message_id).await?.is_none() {
                log.append(&join).await?;
            }
            leave.after(&join)
        }
        None => leave,
    };
    let announced = log.append(&leave).await?;
    match ending {
        Ending::Unsubscribe => connections.unsubscribe(connection_id, room).await?,
        Ending::Departure => connections.end_membership(connection_id, room).await?,
    };
    Ok(Some(announced))
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
    async fn a_departure_cut_short_is_finished_by_the_next_with_its_own_leave_once() {
        let (connections, sessions, log) =
            (MemoryConnections::default(), MemorySessions::default(), MemoryLog::default());
        let connected_at = at("2026-11-24T10:15:30Z");
        let row = Connection::new("c1", "ip", connected_at).in_room("ops");
        connections.put(&row).await.unwrap();
        let end = |seconds| SessionEnd::new("c1", connected_at, connected_at + chrono::Duration::seconds(seconds));

        // `$disconnect` deletes the row and marks the membership, then the log times out.
        log.outage.set(true);
        assert!(depart(&end(10), None, &connections, &sessions, &log).await.is_err());
        log.outage.set(false);
        assert!(log.events().is_empty());
        assert_eq!(connections.memberships(), [("ops".to_owned(), "c1".to_owned())], "kept, so still listed");

        // The broadcaster's 410 prune finds it listed and finishes with the first leave.
        let listed = row.as_member_of("ops");
        assert_eq!(depart(&end(20), Some(&listed), &connections, &sessions, &log).await.unwrap(), 1);
        assert_eq!(depart(&end(30), Some(&listed), &connections, &sessions, &log).await.unwrap(), 0, "once");
        let leaves: Vec<_> = log.events().into_iter().filter(|e| e.kind == EventKind::Leave).collect();
        assert_eq!(leaves.len(), 1);
        assert_eq!(leaves[0].timestamp, end(10).disconnected_at, "the leave the first departure marked");
        assert!(connections.memberships().is_empty());
    }

    #[tokio::test]
    async fn a_membership_marked_by_another_ends_with_its_join_then_that_leave() {
        let (connections, log) = (MemoryConnections::default(), MemoryLog::default());
        let connected_at = at("2026-11-24T10:15:30Z");
        let row = Connection::new("c1", "ip", connected_at).in_room("ops");
        connections.put(&row).await.unwrap();
        let join = LogEvent::join("c1", connected_at).in_room("dev");
        connections.subscribe(&row, "dev", 10, &join).await.unwrap();
        let leave = |seconds| LogEvent::leave("c1", connected_at + chrono::Duration::seconds(seconds)).in_room("dev");
        // One caller marks it and is cut short; the subscribe has not logged its join yet.
        let first = leave(5);
        connections.mark_leaving("c1", "dev", &first).await.unwrap();

        let ended = leave_room(&connections, &log, "c1", "dev", leave(6), Ending::Unsubscribe).await.unwrap();
        assert_eq!(ended, Some(true));
        let said: Vec<_> = log.events().iter().map(|e| (e.kind, e.message_id.clone(), e.timestamp)).collect();
        assert_eq!(said.len(), 2, "{said:?}");
        assert_eq!(said[0], (EventKind::Join, join.message_id.clone(), join.timestamp));
        assert_eq!((said[1].0, said[1].2), (EventKind::Leave, first.timestamp), "the first caller's leave");
        assert!(said[1].1 > join.message_id, "after its join");
        assert_eq!(connections.get("c1").unwrap().rooms(), ["ops"], "out of the row too");
        assert_eq!(leave_room(&connections, &log, "c1", "dev", first, Ending::Departure).await.unwrap(), None);
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
