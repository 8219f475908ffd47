use chrono::{DateTime, Utc};

use super::lifecycle::{Refused, reply_line};
use super::{HandlerError, heard_room, not_registered_frame, sender, within_rate};
use crate::model::LogEvent;
use crate::ports::{ConnectionStore, MessageLog};
use crate::protocol::{Command, ack_frame, invalid_request_frame, parse_command, pong_frame, protocol_error_frame};
use crate::rate::{Budget, RateLimiter, UserKey};
use crate::rights::{Right, Rights};

/// An inbound frame: on the `sendmessage` route, or on `$default`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageRequest {
    pub connection_id: String,
    pub body: String,
    pub received_at: DateTime<Utc>,
    /// What the connection may do where: from the authorizer's context, never the frame.
    pub rights: Rights,
    /// The verified account behind the connection (the authorizer's `userId`,
    /// as [`Connection::account`](crate::Connection::account) of its row), known
    /// without a read; `None` for anonymous and `?name=` connections.
    pub account: Option<String>,
}

impl MessageRequest {
    /// Whose rate limit the request counts against: the account, else the connection.
    pub fn user_key(&self) -> UserKey {
        UserKey::of(self.account.as_deref(), &self.connection_id)
    }
}

/// Appends a chat line to the log and nothing else: the broadcaster delivers it,
/// to the room (sender included), once the log's stream carries it. The room is
/// the one the frame names or the sender's home room; the connection must have
/// the write right there (its [`Rights`]) and its row must list the room (one
/// consistent read): otherwise the refusal names the room (and the missing
/// right), and nothing is stored.
///
/// Returns the frame to send back to the sender alone (pong, an ack when the send
/// carried a `clientMessageId`, or why the message was refused). API Gateway
/// delivers it as the route response, which is why this function needs no
/// permission to post to sockets. A resend with the same `clientMessageId` by
/// the same sender to the same room within [`RECEIPT_TTL`] is stored once (a
/// conditional write) and acked with the first line's id ([`Receipt`] says who
/// "the same sender" is).
///
/// With `replyTo`, the line is a reply: the parent must be a chat line of the
/// same room (else `Not found`), and the line quotes its current text
/// ([`LogEvent::replying_to`]); that costs one consistent GetItem of the
/// parent, one of its tombstone receipt and one Query of up to 200 events.
///
/// A chat line takes a token from its user's send bucket (`limiter`, right
/// after the parse, before any read): past it the sender gets `Rate limited`
/// with `retryAfterMs` and nothing is read or stored. `ping` never counts.
///
/// [`RECEIPT_TTL`]: crate::model::RECEIPT_TTL
/// [`Receipt`]: crate::model::Receipt
pub async fn send_message(
    request: &MessageRequest,
    limiter: &RateLimiter,
    connections: &dyn ConnectionStore,
    log: &dyn MessageLog,
) -> Result<Option<Vec<u8>>, HandlerError> {
    let (text, client_message_id, room, reply_to) = match parse_command(&request.body) {
        Ok(Command::SendMessage { text, client_message_id, room, reply_to }) => {
            (text, client_message_id, room, reply_to)
        }
        // The heartbeat is never limited: a client that is told to wait must not look dead.
        Ok(Command::Ping) => return Ok(Some(pong_frame())),
        // Other actions never reach this route: API Gateway selects it by action.
        Ok(_) => return Ok(Some(invalid_request_frame())),
        Err(refusal) => {
            tracing::info!(connection_id = %request.connection_id, %refusal, "message refused");
            return Ok(Some(protocol_error_frame(&refusal)));
        }
    };
    // Checked before any read: a flood past the bucket costs no DynamoDB call.
    if let Err(refusal) = within_rate(request, limiter, Budget::Sends, "sendmessage", client_message_id.as_deref()) {
        return Ok(Some(refusal));
    }
    let Some(sender) = sender(&request.connection_id, connections).await? else {
        tracing::warn!(connection_id = %request.connection_id, "message from an unregistered connection refused");
        return Ok(Some(not_registered_frame()));
    };
    let room = match heard_room(&sender, room.as_deref(), &request.rights, Right::Write) {
        Ok(room) => room,
        Err(refusal) => {
            tracing::info!(connection_id = %request.connection_id, "message to a room the sender may not write in refused");
            return Ok(Some(refusal));
        }
    };
    let event = match reply_to {
        None => LogEvent::chat(&request.connection_id, &text, request.received_at)
            .in_room(room)
            .by(sender.identity().as_ref()),
        Some(to) => {
            match reply_line(log, &sender, &to, Some(room), &text, &request.rights, request.received_at).await {
                Ok(line) => line,
                Err(Refused::Frame(refusal)) => return Ok(Some(refusal)),
                Err(Refused::Store(error)) => return Err(error.into()),
            }
        }
    };
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
    use crate::memory::{FixedClock, MemoryConnections, MemoryLog};
    use crate::model::{Connection, Identity, RECEIPT_TTL};
    use crate::ports::{Clock, ConnectionStore};

    fn request(body: &str) -> MessageRequest {
        MessageRequest {
            connection_id: "c1".into(),
            body: body.into(),
            received_at: at("2026-11-24T10:15:32Z"),
            rights: Rights::default(),
            account: None,
        }
    }

    /// The store with the sender, `c1`, connected to room `ops`.
    async fn connections() -> MemoryConnections {
        let store = MemoryConnections::default();
        let ada = Identity::verified("Ada", "https://id.example|ada");
        store
            .put(&Connection::new("c1", "ip", at("2026-11-24T10:15:00Z")).in_room("ops").of(Some(&ada)))
            .await
            .unwrap();
        store
    }

    /// The handler with a fresh limiter, for the tests that are not about rates.
    async fn send_message(
        request: &MessageRequest,
        connections: &dyn ConnectionStore,
        log: &dyn MessageLog,
    ) -> Result<Option<Vec<u8>>, HandlerError> {
        super::send_message(request, &RateLimiter::default(), connections, log).await
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

    const CLIENT_MESSAGE_ID: &str = "0192f3a4-5b6c-7d8e-9f01-23456789abcd";

    /// Sends `text` with [`CLIENT_MESSAGE_ID`] from `connection_id` at `at`; the ack's message id.
    async fn acked(
        connection_id: &str,
        text: &str,
        at: chrono::DateTime<chrono::Utc>,
        connections: &MemoryConnections,
        log: &MemoryLog,
    ) -> String {
        let body = serde_json::json!({"action":"sendmessage","message":text,"clientMessageId":CLIENT_MESSAGE_ID});
        let request = MessageRequest {
            connection_id: connection_id.into(),
            body: body.to_string(),
            received_at: at,
            rights: Rights::default(),
            account: None,
        };
        let ack = reply_json(send_message(&request, connections, log).await.unwrap());
        assert_eq!(ack["clientMessageId"], CLIENT_MESSAGE_ID);
        ack["ack"].as_str().unwrap().to_owned()
    }

    /// `a1` and `a2` are one account (Ada), `b1` another with the same name, and
    /// `x1`, `x2` anonymous, all in `ops`.
    async fn room_of_accounts() -> MemoryConnections {
        let store = MemoryConnections::default();
        let at = at("2026-11-24T10:15:00Z");
        let ada = Identity::verified("Ada", "https://id.example|ada");
        let other_ada = Identity::verified("Ada", "https://id.example|impostor");
        for (id, identity) in
            [("a1", Some(&ada)), ("a2", Some(&ada)), ("b1", Some(&other_ada)), ("x1", None), ("x2", None)]
        {
            store.put(&Connection::new(id, "ip", at).in_room("ops").of(identity)).await.unwrap();
        }
        store
    }

    #[tokio::test]
    async fn another_account_reusing_a_client_message_id_gets_its_own_line() {
        let (connections, log) = (room_of_accounts().await, MemoryLog::default());
        let t = at("2026-11-24T10:15:32Z");
        let ada = acked("a1", "from ada", t, &connections, &log).await;
        let impostor = acked("b1", "from the other ada", t, &connections, &log).await;
        assert_ne!(impostor, ada, "not answered with Ada's receipt");
        let texts: Vec<_> = log.events().iter().map(|e| e.message.clone()).collect();
        assert_eq!(texts, ["from ada", "from the other ada"], "both lines stored");
        assert_eq!(acked("a2", "from ada", t, &connections, &log).await, ada, "Ada's other tab: the same send");
        let anonymous = acked("x1", "from x", t, &connections, &log).await;
        assert_ne!(anonymous, ada, "an anonymous sender cannot reach an account's receipt either");
        assert_eq!(
            acked("x2", "from x", t, &connections, &log).await,
            anonymous,
            "an anonymous resend from a new connection is still the same send (the outbox after a reconnect)"
        );
        assert_eq!(log.events().len(), 3);
    }

    #[tokio::test]
    async fn a_resend_after_a_room_switch_is_stored_in_the_new_room() {
        let (connections, log) = (room_of_accounts().await, MemoryLog::default());
        let t = at("2026-11-24T10:15:32Z");
        let first = acked("a1", "hello", t, &connections, &log).await;
        let moved = connections.get("a1").unwrap().in_room("dev");
        ConnectionStore::put(&connections, &moved).await.unwrap();
        let resent = acked("a1", "hello", t, &connections, &log).await;
        assert_ne!(resent, first);
        let rooms: Vec<_> = log.events().iter().map(|e| e.room.clone()).collect();
        assert_eq!(rooms, ["ops", "dev"], "delivered where the sender now is");
    }

    #[tokio::test]
    async fn a_receipt_dedupes_for_the_resend_window_and_no_longer() {
        let (connections, log) = (room_of_accounts().await, MemoryLog::default());
        let clock = FixedClock::at(at("2026-11-24T10:15:32Z"));
        let first = acked("a1", "hello", clock.now(), &connections, &log).await;
        clock.advance(RECEIPT_TTL - chrono::Duration::seconds(1));
        assert_eq!(acked("a1", "hello", clock.now(), &connections, &log).await, first, "within the window");
        clock.advance(chrono::Duration::seconds(1));
        let late = acked("a1", "hello", clock.now(), &connections, &log).await;
        assert_ne!(late, first, "past the window the id is free again");
        assert_eq!(acked("a1", "hello", clock.now(), &connections, &log).await, late, "and dedupes anew");
        assert_eq!(log.events().len(), 2);
    }

    /// `from` sends `body` at `at` through `limiter` (as its account when verified); the reply.
    async fn limited_send(
        limiter: &RateLimiter,
        from: &str,
        body: serde_json::Value,
        at: chrono::DateTime<chrono::Utc>,
        connections: &MemoryConnections,
        log: &MemoryLog,
    ) -> Option<serde_json::Value> {
        let request = MessageRequest {
            connection_id: from.into(),
            body: body.to_string(),
            received_at: at,
            rights: Rights::default(),
            account: connections.get(from).and_then(|row| row.account().map(str::to_owned)),
        };
        let reply = super::send_message(&request, limiter, connections, log).await.unwrap();
        reply.map(|frame| serde_json::from_slice(&frame).unwrap())
    }

    #[tokio::test]
    async fn the_21st_line_within_a_second_is_refused_with_the_wait_and_not_stored() {
        let (connections, log, limiter) = (room_of_accounts().await, MemoryLog::default(), RateLimiter::default());
        let t = at("2026-11-24T10:15:32Z");
        for n in 0..20 {
            let line = serde_json::json!({"action":"sendmessage","message":format!("line {n}")});
            assert_eq!(limited_send(&limiter, "a1", line, t, &connections, &log).await, None, "line {n}");
        }
        let body =
            serde_json::json!({"action":"sendmessage","message":"one too many","clientMessageId":CLIENT_MESSAGE_ID});
        // 50 ms later: half a token back (one per 100 ms), so 50 ms to wait.
        let at_50 = t + chrono::Duration::milliseconds(50);
        let refused = limited_send(&limiter, "a1", body.clone(), at_50, &connections, &log).await.unwrap();
        let expected = serde_json::json!({
            "error": "Rate limited",
            "retryAfterMs": 50,
            "action": "sendmessage",
            "clientMessageId": CLIENT_MESSAGE_ID,
            "message": "Too many requests from this user; try again in 50 ms."
        });
        assert_eq!(refused, expected);
        assert_eq!(log.events().len(), 20, "nothing stored for the refused line");
        // Ada's other tab is the same user; the other Ada and anonymous x1 are not.
        let again = limited_send(&limiter, "a2", body.clone(), at_50, &connections, &log).await.unwrap();
        assert_eq!(again["error"], "Rate limited");
        for other in ["b1", "x1"] {
            let reply = limited_send(&limiter, other, body.clone(), at_50, &connections, &log).await.unwrap();
            assert!(reply.get("ack").is_some(), "{other}: {reply}");
        }
        // retryAfterMs later the resend is stored and acked.
        let at_100 = t + chrono::Duration::milliseconds(100);
        let reply = limited_send(&limiter, "a1", body, at_100, &connections, &log).await;
        assert!(reply.unwrap().get("ack").is_some());
        assert_eq!(log.events().len(), 23);
    }

    #[tokio::test]
    async fn pings_are_never_limited_and_refusals_read_nothing() {
        let (connections, log, limiter) = (room_of_accounts().await, MemoryLog::default(), RateLimiter::default());
        let t = at("2026-11-24T10:15:32Z");
        let line = serde_json::json!({"action":"sendmessage","message":"hi"});
        for _ in 0..20 {
            limited_send(&limiter, "x1", line.clone(), t, &connections, &log).await;
        }
        let refused = limited_send(&limiter, "x1", line.clone(), t, &connections, &log).await.unwrap();
        assert_eq!((&refused["error"], &refused["retryAfterMs"]), (&"Rate limited".into(), &100.into()));
        assert!(refused.get("clientMessageId").is_none(), "none sent, none echoed");
        let ping = serde_json::json!({"action":"sendmessage","message":"ping"});
        for _ in 0..100 {
            let pong = limited_send(&limiter, "x1", ping.clone(), t, &connections, &log).await;
            assert_eq!(pong, Some(serde_json::json!({"message":"pong"})));
        }
        // Checked before the sender's row is read: with no row (x1 is anonymous, its
        // key is the connection), still "Rate limited", not "Not connected".
        connections.delete("x1").await.unwrap();
        let refused = limited_send(&limiter, "x1", line, t, &connections, &log).await.unwrap();
        assert_eq!(refused["error"], "Rate limited");
        assert_eq!(log.events().len(), 20);
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
