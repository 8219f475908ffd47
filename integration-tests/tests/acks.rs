//! Acknowledged, idempotent sends on the real binary: a `clientMessageId` gets an
//! ack once the line is stored, and resending it (on the same connection or a new
//! one) stores nothing more. Clients that send none see the seed's behaviour.

mod common;

use common::{Client, Stack, scratch};
use serde_json::{Value, json};

const CLIENT_MESSAGE_ID: &str = "0192f3a4-5b6c-7d8e-9f01-23456789abcd";

fn acked_send(text: &str) -> Value {
    json!({"action": "sendmessage", "message": text, "clientMessageId": CLIENT_MESSAGE_ID})
}

#[tokio::test]
async fn a_resent_client_message_id_is_stored_once_and_acked_each_time() {
    let dir = scratch("acks");
    let stack = Stack::start(&dir.join("chat.db"), &[]).await;
    let mut watcher = Client::connect(&stack.ws_url).await;
    let mut sender = Client::connect(&stack.ws_url).await;

    sender.send_json(acked_send("exactly once")).await;
    let first = sender.until(|f| f.get("ack").is_some()).await;
    let id = first["ack"].as_str().unwrap().to_owned();
    assert_eq!(first, json!({"ack": id, "clientMessageId": CLIENT_MESSAGE_ID}));
    sender.send_json(acked_send("exactly once")).await;
    assert_eq!(sender.until(|f| f.get("ack").is_some()).await, first, "a resend is acked with the same id");

    // After a reconnect, on a new connection, the same send is still the same line.
    sender.socket.close(None).await.unwrap();
    let mut again = Client::connect(&stack.ws_url).await;
    again.send_json(acked_send("exactly once")).await;
    assert_eq!(again.until(|f| f.get("ack").is_some()).await, first);

    // The watcher sees the line once, without the client's id; then a later line.
    again.say("the next line").await;
    let line = watcher.chat("exactly once").await;
    assert_eq!(line["id"], id.as_str());
    assert!(line.get("clientMessageId").is_none(), "other clients never see it: {line}");
    let next = watcher.until(|f| f["kind"] == "chat").await;
    assert_eq!(next["text"], "the next line", "no second copy was broadcast");
    stack.stop().await;

    let db = rusqlite::Connection::open(dir.join("chat.db")).unwrap();
    let stored: i64 =
        db.query_row("SELECT count(*) FROM message_history WHERE message = 'exactly once'", [], |r| r.get(0)).unwrap();
    assert_eq!(stored, 1);
}

#[tokio::test]
async fn a_bad_client_message_id_is_refused_and_nothing_is_stored() {
    let dir = scratch("acks_refused");
    let stack = Stack::start(&dir.join("chat.db"), &[]).await;
    let mut client = Client::connect(&stack.ws_url).await;
    client.send_json(json!({"action": "sendmessage", "message": "x", "clientMessageId": "not-a-uuid"})).await;
    let refusal = client.next_json().await;
    assert_eq!(refusal["error"], "Invalid message");
    assert!(refusal["message"].as_str().unwrap().contains("clientMessageId"));
    client.say("plain").await;
    let frame = client.next_json().await;
    assert_eq!(frame["text"], "plain", "the refused line was never broadcast, and a plain send gets no ack");
    stack.stop().await;
}
