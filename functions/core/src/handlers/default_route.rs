use super::{HandlerError, not_registered_frame, sender};
use crate::model::Connection;
use crate::ports::{Bytes, ConnectionStore, LogCursor, LogQuery, MessageLog, PostError, SocketPoster};
use crate::protocol::{
    Command, PRESENCE_PAGE, event_frame, history_end_frame, invalid_request_frame, parse_command, presence_frame,
    protocol_error_frame,
};

/// `$default`: everything API Gateway could not route. `history` and `who` are
/// served here (this function already may post to the sender); anything else
/// gets the seed's "Invalid request" error. Both read only the sender's room.
pub async fn default_route(
    connection_id: &str,
    body: &str,
    connections: &dyn ConnectionStore,
    log: &dyn MessageLog,
    poster: &dyn SocketPoster,
) -> Result<(), HandlerError> {
    match parse_command(body) {
        Ok(Command::History { limit, since }) => {
            let Some(room) = sender_room(connection_id, connections, poster).await? else { return Ok(()) };
            history(connection_id, &room, limit, since, log, poster).await
        }
        Ok(Command::Who { after }) => {
            let Some(asker) = sender_row(connection_id, connections, poster).await? else { return Ok(()) };
            who(&asker, after, connections, poster).await
        }
        Ok(_) => {
            tracing::info!(connection_id, "unrecognized request");
            reply_to(connection_id, &Bytes::from(invalid_request_frame()), poster).await
        }
        Err(refusal) => {
            tracing::info!(connection_id, %refusal, "malformed request");
            reply_to(connection_id, &Bytes::from(protocol_error_frame(&refusal)), poster).await
        }
    }
}

/// The sender's room; when its row is gone, tells the sender so and gives `None`.
async fn sender_room(
    connection_id: &str,
    connections: &dyn ConnectionStore,
    poster: &dyn SocketPoster,
) -> Result<Option<String>, HandlerError> {
    Ok(sender_row(connection_id, connections, poster).await?.map(|c| c.room))
}

/// The sender's connection row; when it is gone, tells the sender so and gives `None`.
async fn sender_row(
    connection_id: &str,
    connections: &dyn ConnectionStore,
    poster: &dyn SocketPoster,
) -> Result<Option<Connection>, HandlerError> {
    let row = sender(connection_id, connections).await?;
    if row.is_none() {
        reply_to(connection_id, &Bytes::from(not_registered_frame()), poster).await?;
    }
    Ok(row)
}

/// Sends the sender past events of `room` in log order, each as the frame the
/// broadcaster sent originally (clients dedupe replays by `id`), then a
/// `history` frame saying how many came and whether there are more.
pub async fn history(
    connection_id: &str,
    room: &str,
    limit: usize,
    since: Option<LogCursor>,
    log: &dyn MessageLog,
    poster: &dyn SocketPoster,
) -> Result<(), HandlerError> {
    // One event past the limit tells whether the answer was cut.
    let forward = since.is_some();
    let query = LogQuery { room: room.to_owned(), after: since, limit: limit + 1 };
    let mut events = log.read(&query).await?;
    let more = events.len() > limit;
    if more {
        // Forward pages keep the oldest; the newest-N answer keeps the newest.
        if forward {
            events.truncate(limit)
        } else {
            events.remove(0);
        }
    }
    tracing::info!(connection_id, room, count = events.len(), more, "history served");
    for event in &events {
        reply_to(connection_id, &Bytes::from(event_frame(event)), poster).await?;
    }
    reply_to(connection_id, &Bytes::from(history_end_frame(room, events.len(), more)), poster).await
}

/// Sends the asker one page of who is in its room.
async fn who(
    asker: &Connection,
    after: Option<String>,
    connections: &dyn ConnectionStore,
    poster: &dyn SocketPoster,
) -> Result<(), HandlerError> {
    let (connection_id, room) = (asker.connection_id.as_str(), asker.room.as_str());
    let count = connections.count(room).await?;
    let page = connections.list(room, after, PRESENCE_PAGE).await?;
    tracing::info!(connection_id, room, count, "presence served");
    let frame = presence_frame(room, count, &page.items, connection_id, asker.user_id.as_deref(), page.next.as_deref());
    reply_to(connection_id, &Bytes::from(frame), poster).await
}

async fn reply_to(connection_id: &str, frame: &Bytes, poster: &dyn SocketPoster) -> Result<(), HandlerError> {
    match poster.post(connection_id, frame).await {
        // The sender left meanwhile: nobody to tell.
        Ok(()) | Err(PostError::Gone) => Ok(()),
        Err(error) => Err(error.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handlers::testing::at;
    use crate::memory::{MemoryConnections, MemoryLog, RecordingPoster};
    use crate::model::{Connection, LogEvent};
    use crate::protocol::MAX_HISTORY_LIMIT;

    /// `c1` asks, from the lobby; `o1` and `o2` are in room `ops`.
    async fn connections() -> MemoryConnections {
        let store = MemoryConnections::default();
        let at = at("2026-11-24T09:00:00Z");
        store.put(&Connection::new("c1", "ip", at)).await.unwrap();
        for id in ["o1", "o2"] {
            store.put(&Connection::new(id, "ip", at).in_room("ops")).await.unwrap();
        }
        store
    }

    async fn ask(body: &str, log: &MemoryLog) -> RecordingPoster {
        let poster = RecordingPoster::default();
        default_route("c1", body, &connections().await, log, &poster).await.unwrap();
        poster
    }

    #[tokio::test]
    async fn unknown_actions_get_the_seed_error() {
        let (connections, log, poster) = (connections().await, MemoryLog::default(), RecordingPoster::default());
        for body in ["not json", r#"{"action":"dance"}"#, "{}"] {
            default_route("c1", body, &connections, &log, &poster).await.unwrap();
        }
        let frames = poster.frames_to("c1");
        assert_eq!(frames.len(), 3);
        for frame in frames {
            assert_eq!(
                frame,
                serde_json::json!({"error":"Invalid request","message":"The requested action is not recognized. Please check your WebSocket commands."})
            );
        }
    }

    /// `n` lobby lines `m0..`, each followed by a line in `ops` the lobby must never see.
    async fn log_of(n: usize) -> MemoryLog {
        let log = MemoryLog::default();
        for i in 0..n {
            log.append(&LogEvent::chat("c0", &format!("m{i}"), at("2026-11-24T10:00:00Z"))).await.unwrap();
            log.append(&LogEvent::chat("o1", &format!("secret{i}"), at("2026-11-24T10:00:00Z")).in_room("ops"))
                .await
                .unwrap();
        }
        log
    }

    fn texts(poster: &RecordingPoster) -> Vec<String> {
        poster.frames_to("c1").iter().filter_map(|f| f["text"].as_str().map(str::to_owned)).collect()
    }

    fn end_of(poster: &RecordingPoster) -> serde_json::Value {
        let frames = poster.frames_to("c1");
        let last = frames.last().expect("an answer").clone();
        assert_eq!(last["kind"], "history", "history ends with its summary frame");
        last
    }

    #[tokio::test]
    async fn history_sends_the_newest_events_of_the_room_in_order() {
        let poster = ask(r#"{"action":"history","limit":3}"#, &log_of(5).await).await;
        assert_eq!(texts(&poster), ["m2", "m3", "m4"]);
        assert_eq!(end_of(&poster), serde_json::json!({"kind":"history","room":"lobby","count":3,"more":true}));
        let all = ask(r#"{"action":"history","limit":5}"#, &log_of(5).await).await;
        assert_eq!(end_of(&all)["more"], false);
    }

    #[tokio::test]
    async fn history_pages_forward_from_a_message_id() {
        let log = log_of(5).await;
        let since = log.events()[2].message_id.clone(); // m1
        let poster = ask(&format!(r#"{{"action":"history","limit":2,"since":"{since}"}}"#), &log).await;
        assert_eq!(texts(&poster), ["m2", "m3"]);
        assert_eq!(end_of(&poster)["more"], true);
        let last = log.events()[6].message_id.clone(); // m3
        let rest = ask(&format!(r#"{{"action":"history","limit":2,"since":"{last}"}}"#), &log).await;
        assert_eq!(texts(&rest), ["m4"]);
        assert_eq!(end_of(&rest)["more"], false);
    }

    #[tokio::test]
    async fn another_rooms_id_as_since_reads_only_this_room() {
        let log = log_of(3).await;
        let theirs = log.events()[1].message_id.clone(); // secret0, in ops
        let poster = ask(&format!(r#"{{"action":"history","since":"{theirs}"}}"#), &log).await;
        assert_eq!(texts(&poster), ["m1", "m2"]);
    }

    #[tokio::test]
    async fn bad_history_arguments_get_a_clear_error() {
        let body = format!(r#"{{"action":"history","limit":{}}}"#, MAX_HISTORY_LIMIT + 1);
        let frames = ask(&body, &log_of(1).await).await.frames_to("c1");
        assert_eq!(frames[0]["error"], "Invalid message");
        assert!(frames[0]["message"].as_str().unwrap().contains("limit"));
    }

    #[tokio::test]
    async fn who_lists_the_senders_room_in_pages() {
        let poster = ask(r#"{"action":"who"}"#, &MemoryLog::default()).await;
        let frame = &poster.frames_to("c1")[0];
        assert_eq!(frame["kind"], "presence");
        assert_eq!(frame["room"], "lobby");
        assert_eq!(frame["count"], 1);
        assert_eq!(frame["members"], serde_json::json!([{"connectionId":"c1","connectedAt":"2026-11-24T09:00:00Z"}]));
        assert_eq!(frame["you"], "c1", "the asker learns its own connection id");

        let crowd = MemoryConnections::default();
        for i in 0..(PRESENCE_PAGE + 1) {
            crowd.put(&Connection::new(&format!("m{i:03}"), "ip", at("2026-11-24T09:00:00Z"))).await.unwrap();
        }
        let poster = RecordingPoster::default();
        default_route("m000", r#"{"action":"who"}"#, &crowd, &MemoryLog::default(), &poster).await.unwrap();
        let first = &poster.frames_to("m000")[0];
        assert_eq!(first["count"], PRESENCE_PAGE + 1);
        assert_eq!(first["members"].as_array().unwrap().len(), PRESENCE_PAGE);
        let next = first["next"].as_str().unwrap();
        let body = format!(r#"{{"action":"who","next":"{next}"}}"#);
        default_route("m000", &body, &crowd, &MemoryLog::default(), &poster).await.unwrap();
        let second = &poster.frames_to("m000")[1];
        assert_eq!(
            second["members"],
            serde_json::json!([{"connectionId":"m100","connectedAt":"2026-11-24T09:00:00Z"}])
        );
        assert!(second.get("next").is_none());
    }

    #[tokio::test]
    async fn who_tells_accounts_apart_and_the_asker_its_own() {
        let store = MemoryConnections::default();
        let at = at("2026-11-24T09:00:00Z");
        let (alice_a, alice_b) = (
            crate::model::Identity::verified("alice", "https://a.example|1"),
            crate::model::Identity::verified("alice", "https://b.example|1"),
        );
        store.put(&Connection::new("c1", "ip", at).of(Some(&alice_a))).await.unwrap();
        store.put(&Connection::new("c2", "ip", at).of(Some(&alice_b))).await.unwrap();
        let poster = RecordingPoster::default();
        default_route("c2", r#"{"action":"who"}"#, &store, &MemoryLog::default(), &poster).await.unwrap();
        let frame = &poster.frames_to("c2")[0];
        let ids: Vec<_> = frame["members"].as_array().unwrap().iter().map(|m| m["userId"].clone()).collect();
        assert_eq!(ids, [serde_json::json!("https://a.example|1"), serde_json::json!("https://b.example|1")]);
        assert_eq!((frame["you"].as_str(), frame["youUserId"].as_str()), (Some("c2"), Some("https://b.example|1")));
    }

    #[tokio::test]
    async fn garbage_who_fields_get_a_clear_error() {
        let frames = ask(r#"{"action":"who","next":{"$ne":null}}"#, &MemoryLog::default()).await.frames_to("c1");
        assert_eq!(frames[0]["error"], "Invalid message");
        assert!(frames[0]["message"].as_str().unwrap().contains("next"));
    }

    #[tokio::test]
    async fn an_unregistered_sender_is_told_so() {
        let poster = RecordingPoster::default();
        let none = MemoryConnections::default();
        default_route("c1", r#"{"action":"who"}"#, &none, &MemoryLog::default(), &poster).await.unwrap();
        assert_eq!(poster.frames_to("c1")[0]["error"], "Not connected");
    }

    #[tokio::test]
    async fn a_departed_sender_is_not_an_error() {
        let (log, poster) = (MemoryLog::default(), RecordingPoster::default());
        poster.mark_gone("c1");
        default_route("c1", "nonsense", &connections().await, &log, &poster).await.unwrap();
    }
}
