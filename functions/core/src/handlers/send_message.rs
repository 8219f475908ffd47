use chrono::{DateTime, Utc};

use super::{HandlerError, not_registered_frame, sender};
use crate::model::LogEvent;
use crate::ports::{ConnectionStore, MessageLog};
use crate::protocol::{Command, ack_frame, invalid_request_frame, parse_command, pong_frame, protocol_error_frame};

/// An inbound frame on the `sendmessage` route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageRequest {
    pub connection_id: String,
    pub body: String,
    pub received_at: DateTime<Utc>,
}

/// Appends a chat line to the log and nothing else: the broadcaster delivers it,
/// to the sender's room (sender included), once the log's stream carries it.
/// The room comes from the sender's connection row (one consistent read).
///
/// Returns the frame to send back to the sender alone (pong, an ack when the send
/// carried a `clientMessageId`, or why the message was refused). API Gateway
/// delivers it as the route response, which is why this function needs no
/// permission to post to sockets. A resend with the same `clientMessageId` is
/// stored once (a conditional write) and acked with the first line's id.
pub async fn send_message(
    request: &MessageRequest,
    connections: &dyn ConnectionStore,
    log: &dyn MessageLog,
) -> Result<Option<Vec<u8>>, HandlerError> {
    let (text, client_message_id) = match parse_command(&request.body) {
        Ok(Command::SendMessage { text, client_message_id }) => (text, client_message_id),
        Ok(Command::Ping) => return Ok(Some(pong_frame())),
        Ok(Command::History { .. } | Command::Who { .. } | Command::Unknown) => {
            return Ok(Some(invalid_request_frame()));
        }
        Err(refusal) => {
            tracing::info!(connection_id = %request.connection_id, %refusal, "message refused");
            return Ok(Some(protocol_error_frame(&refusal)));
        }
    };
    let Some(sender) = sender(&request.connection_id, connections).await? else {
        tracing::warn!(connection_id = %request.connection_id, "message from an unregistered connection refused");
        return Ok(Some(not_registered_frame()));
    };
    let room = &sender.room;
    let event =
        LogEvent::chat(&request.connection_id, &text, request.received_at).in_room(room).by(sender.identity().as_ref());
    let Some(client_message_id) = client_message_id else {
        log.append(&event).await?;
        tracing::info!(connection_id = %request.connection_id, message_id = %event.message_id, %room, "message logged");
        return Ok(None);
    };
    let stored = log.append_once(&event, &client_message_id).await?;
    tracing::info!(
        connection_id = %request.connection_id,
        message_id = %stored,
        %client_message_id,
        resent = stored != event.message_id,
        "message logged and acked"
    );
    Ok(Some(ack_frame(&stored, &client_message_id)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handlers::testing::at;
    use crate::memory::{MemoryConnections, MemoryLog};
    use crate::model::Connection;
    use crate::ports::ConnectionStore;

    fn request(body: &str) -> MessageRequest {
        MessageRequest { connection_id: "c1".into(), body: body.into(), received_at: at("2026-11-24T10:15:32Z") }
    }

    /// The store with the sender, `c1`, connected to room `ops`.
    async fn connections() -> MemoryConnections {
        let store = MemoryConnections::default();
        let ada = crate::model::Identity { user: "Ada".into(), verified: true };
        store
            .put(&Connection::new("c1", "ip", at("2026-11-24T10:15:00Z")).in_room("ops").of(Some(&ada)))
            .await
            .unwrap();
        store
    }

    fn reply_json(reply: Option<Vec<u8>>) -> serde_json::Value {
        serde_json::from_slice(&reply.expect("a reply")).unwrap()
    }

    #[tokio::test]
    async fn chat_is_appended_with_no_reply() {
        let log = MemoryLog::default();
        let reply = send_message(&request(r#"{"action":"sendmessage","message":"hello"}"#), &connections().await, &log)
            .await
            .unwrap();
        assert_eq!(reply, None);
        let events = log.events();
        assert_eq!(events.len(), 1);
        assert_eq!((events[0].connection_id.as_str(), events[0].message.as_str()), ("c1", "hello"));
        assert_eq!(events[0].timestamp, at("2026-11-24T10:15:32Z"));
        assert_eq!(events[0].room, "ops", "said in the sender's room");
        assert_eq!((events[0].user.as_deref(), events[0].verified), (Some("Ada"), Some(true)), "by its user");
    }

    #[tokio::test]
    async fn a_resent_client_message_id_is_stored_once_and_acked_each_time() {
        let (connections, log) = (connections().await, MemoryLog::default());
        let body =
            r#"{"action":"sendmessage","message":"once","clientMessageId":"0192f3a4-5b6c-7d8e-9f01-23456789abcd"}"#;
        let mut acks = Vec::new();
        for _ in 0..3 {
            acks.push(reply_json(send_message(&request(body), &connections, &log).await.unwrap()));
        }
        let events = log.events();
        assert_eq!(events.len(), 1, "stored once");
        for ack in &acks {
            assert_eq!(ack["ack"], events[0].message_id.as_str());
            assert_eq!(ack["clientMessageId"], "0192f3a4-5b6c-7d8e-9f01-23456789abcd");
        }
        let plain = send_message(&request(r#"{"action":"sendmessage","message":"x"}"#), &connections, &log).await;
        assert_eq!(plain.unwrap(), None, "no clientMessageId: no ack, as the seed expects");
    }

    #[tokio::test]
    async fn a_sender_without_a_row_is_told_to_reconnect_and_nothing_is_logged() {
        let log = MemoryLog::default();
        let body = r#"{"action":"sendmessage","message":"hello"}"#;
        let reply = reply_json(send_message(&request(body), &MemoryConnections::default(), &log).await.unwrap());
        assert_eq!(reply["error"], "Not connected");
        assert!(log.events().is_empty());
    }

    #[tokio::test]
    async fn ping_gets_pong_and_is_not_stored() {
        let log = MemoryLog::default();
        let reply =
            send_message(&request(r#"{"action":"sendmessage","message":"ping"}"#), &MemoryConnections::default(), &log)
                .await
                .unwrap();
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
            let reply = reply_json(send_message(&request(&body), &connections().await, &log).await.unwrap());
            assert_eq!(reply["error"], "Invalid message", "{reply}");
        }
        assert!(log.events().is_empty());
    }

    #[tokio::test]
    async fn a_log_outage_is_an_error_not_a_lost_message() {
        let log = MemoryLog::default();
        log.outage.set(true);
        let body = r#"{"action":"sendmessage","message":"hi"}"#;
        assert!(send_message(&request(body), &connections().await, &log).await.is_err());
    }
}
