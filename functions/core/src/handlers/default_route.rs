use super::HandlerError;
use crate::ports::{Bytes, LogCursor, LogQuery, MessageLog, PostError, SocketPoster};
use crate::protocol::{Command, event_frame, invalid_request_frame, parse_command, protocol_error_frame};

/// `$default`: everything API Gateway could not route. `history` is served here
/// (this function already may post to the sender and read the log); anything
/// else gets the seed's "Invalid request" error.
pub async fn default_route(
    connection_id: &str,
    body: &str,
    log: &dyn MessageLog,
    poster: &dyn SocketPoster,
) -> Result<(), HandlerError> {
    let reply = match parse_command(body) {
        Ok(Command::History { limit, since }) => return history(connection_id, limit, since, log, poster).await,
        Ok(_) => invalid_request_frame(),
        Err(refusal) => protocol_error_frame(&refusal),
    };
    tracing::info!(connection_id, "unrecognized request");
    reply_to(connection_id, &Bytes::from(reply), poster).await
}

/// Sends the sender past events in log order, each as the frame the broadcaster
/// sent originally, so clients dedupe replays by `id`.
pub async fn history(
    connection_id: &str,
    limit: usize,
    since: Option<LogCursor>,
    log: &dyn MessageLog,
    poster: &dyn SocketPoster,
) -> Result<(), HandlerError> {
    let events = log.read(&LogQuery { after: since, limit }).await?;
    tracing::info!(connection_id, count = events.len(), "history served");
    for event in &events {
        reply_to(connection_id, &Bytes::from(event_frame(event)), poster).await?;
    }
    Ok(())
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
    use crate::memory::{MemoryLog, RecordingPoster};
    use crate::model::LogEvent;
    use crate::protocol::MAX_HISTORY_LIMIT;

    #[tokio::test]
    async fn unknown_actions_get_the_seed_error() {
        let (log, poster) = (MemoryLog::default(), RecordingPoster::default());
        for body in ["not json", r#"{"action":"dance"}"#, "{}"] {
            default_route("c1", body, &log, &poster).await.unwrap();
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

    async fn log_of(n: usize) -> MemoryLog {
        let log = MemoryLog::default();
        for i in 0..n {
            log.append(&LogEvent::chat("c0", &format!("m{i}"), at("2026-11-24T10:00:00Z"))).await.unwrap();
        }
        log
    }

    fn texts(poster: &RecordingPoster) -> Vec<String> {
        poster.frames_to("c1").iter().map(|f| f["text"].as_str().unwrap().to_owned()).collect()
    }

    #[tokio::test]
    async fn history_sends_the_newest_events_in_order() {
        let (log, poster) = (log_of(5).await, RecordingPoster::default());
        default_route("c1", r#"{"action":"history","limit":3}"#, &log, &poster).await.unwrap();
        assert_eq!(texts(&poster), ["m2", "m3", "m4"]);
    }

    #[tokio::test]
    async fn history_pages_forward_from_a_message_id() {
        let (log, poster) = (log_of(5).await, RecordingPoster::default());
        let since = log.events()[1].message_id.clone();
        let body = format!(r#"{{"action":"history","limit":2,"since":"{since}"}}"#);
        default_route("c1", &body, &log, &poster).await.unwrap();
        assert_eq!(texts(&poster), ["m2", "m3"]);
    }

    #[tokio::test]
    async fn bad_history_arguments_get_a_clear_error() {
        let (log, poster) = (log_of(1).await, RecordingPoster::default());
        let body = format!(r#"{{"action":"history","limit":{}}}"#, MAX_HISTORY_LIMIT + 1);
        default_route("c1", &body, &log, &poster).await.unwrap();
        let frames = poster.frames_to("c1");
        assert_eq!(frames[0]["error"], "Invalid message");
        assert!(frames[0]["message"].as_str().unwrap().contains("limit"));
    }

    #[tokio::test]
    async fn a_departed_sender_is_not_an_error() {
        let (log, poster) = (MemoryLog::default(), RecordingPoster::default());
        poster.mark_gone("c1");
        default_route("c1", "nonsense", &log, &poster).await.unwrap();
    }
}
