use chrono::{DateTime, Utc};

use super::HandlerError;
use crate::model::LogEvent;
use crate::ports::MessageLog;
use crate::protocol::{Command, invalid_request_frame, parse_command, pong_frame, protocol_error_frame};

/// An inbound frame on the `sendmessage` route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageRequest {
    pub connection_id: String,
    pub body: String,
    pub received_at: DateTime<Utc>,
}

/// Appends a chat line to the log and nothing else: the broadcaster delivers it,
/// to the sender too, once the log's stream carries it.
///
/// Returns the frame to send back to the sender alone (pong, or why the message
/// was refused). API Gateway delivers it as the route response, which is why this
/// function needs no permission to post to sockets.
pub async fn send_message(request: &MessageRequest, log: &dyn MessageLog) -> Result<Option<Vec<u8>>, HandlerError> {
    let text = match parse_command(&request.body) {
        Ok(Command::SendMessage { text }) => text,
        Ok(Command::Ping) => return Ok(Some(pong_frame())),
        Ok(Command::History { .. } | Command::Unknown) => return Ok(Some(invalid_request_frame())),
        Err(refusal) => {
            tracing::info!(connection_id = %request.connection_id, %refusal, "message refused");
            return Ok(Some(protocol_error_frame(&refusal)));
        }
    };
    let event = LogEvent::chat(&request.connection_id, &text, request.received_at);
    log.append(&event).await?;
    tracing::info!(connection_id = %request.connection_id, message_id = %event.message_id, "message logged");
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handlers::testing::at;
    use crate::memory::MemoryLog;

    fn request(body: &str) -> MessageRequest {
        MessageRequest { connection_id: "c1".into(), body: body.into(), received_at: at("2026-11-24T10:15:32Z") }
    }

    fn reply_json(reply: Option<Vec<u8>>) -> serde_json::Value {
        serde_json::from_slice(&reply.expect("a reply")).unwrap()
    }

    #[tokio::test]
    async fn chat_is_appended_with_no_reply() {
        let log = MemoryLog::default();
        let reply = send_message(&request(r#"{"action":"sendmessage","message":"hello"}"#), &log).await.unwrap();
        assert_eq!(reply, None);
        let events = log.events();
        assert_eq!(events.len(), 1);
        assert_eq!((events[0].connection_id.as_str(), events[0].message.as_str()), ("c1", "hello"));
        assert_eq!(events[0].timestamp, at("2026-11-24T10:15:32Z"));
    }

    #[tokio::test]
    async fn ping_gets_pong_and_is_not_stored() {
        let log = MemoryLog::default();
        let reply = send_message(&request(r#"{"action":"sendmessage","message":"ping"}"#), &log).await.unwrap();
        assert_eq!(reply_json(reply), serde_json::json!({"message":"pong"}));
        assert!(log.events().is_empty());
    }

    #[tokio::test]
    async fn bad_text_is_refused_and_not_stored() {
        let log = MemoryLog::default();
        for body in [
            r#"{"action":"sendmessage","message":"   "}"#.to_owned(),
            r#"{"action":"sendmessage"}"#.to_owned(),
            serde_json::json!({"action":"sendmessage","message":"x".repeat(40_000)}).to_string(),
        ] {
            let reply = reply_json(send_message(&request(&body), &log).await.unwrap());
            assert_eq!(reply["error"], "Invalid message", "{reply}");
        }
        assert!(log.events().is_empty());
    }

    #[tokio::test]
    async fn a_log_outage_is_an_error_not_a_lost_message() {
        let log = MemoryLog::default();
        log.outage.set(true);
        assert!(send_message(&request(r#"{"action":"sendmessage","message":"hi"}"#), &log).await.is_err());
    }
}
