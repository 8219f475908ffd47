//! Acknowledged, idempotent sends on the real binary: a `clientMessageId` gets an
//! ack once the line is stored, and resending it (on the same connection or a new
//! one) stores nothing more. Clients that send none see the seed's behaviour.
//! A receipt is its sender's and its room's: another account reusing the id, or
//! a resend to another room, is a new line.

use crate::common;

use common::{Client, JWT_SECRET, Stack, hs256_token, scratch, with_token};
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

fn is_ack(frame: &Value) -> bool {
    frame.get("ack").is_some()
}

/// Two verified accounts: B reusing A's `clientMessageId` in the same room has
/// its own line stored and delivered (it used to get A's ack, and its line was
/// dropped); A resending after switching rooms (the page reconnects with another
/// `?room=`) has its line stored and delivered in the new room (it used to be
/// acked and never delivered). A's resend in the first room is still A's line.
#[tokio::test]
async fn a_receipt_is_its_sender_s_and_its_room_s() {
    let dir = scratch("acks_accounts");
    let stack = Stack::start(&dir.join("chat.db"), &["--jwt-secret", JWT_SECRET]).await;
    let (token_a, token_b) = (hs256_token(JWT_SECRET, "user-a", "alice"), hs256_token(JWT_SECRET, "user-b", "bob"));
    let watcher_token = hs256_token(JWT_SECRET, "watcher", "watcher");
    let in_room = |room: &str, token: &str| with_token(&format!("{}?room={room}", stack.ws_url), token);
    let mut red_watcher = Client::connect(&in_room("red", &watcher_token)).await;
    let mut a = Client::connect(&in_room("red", &token_a)).await;
    let mut b = Client::connect(&in_room("red", &token_b)).await;

    a.send_json(acked_send("from a")).await;
    let a_ack = a.until(is_ack).await;
    b.send_json(acked_send("from b")).await;
    let b_ack = b.until(is_ack).await;
    assert_ne!(b_ack["ack"], a_ack["ack"], "B is not answered with A's receipt");
    assert_eq!(red_watcher.chat("from a").await["id"], a_ack["ack"]);
    let line_b = red_watcher.chat("from b").await;
    assert_eq!((&line_b["id"], line_b["userId"].as_str()), (&b_ack["ack"], Some("local|user-b")), "B's own line");

    a.socket.close(None).await.unwrap();
    let mut blue_watcher = Client::connect(&in_room("blue", &watcher_token)).await;
    let mut a_blue = Client::connect(&in_room("blue", &token_a)).await;
    a_blue.send_json(acked_send("from a")).await;
    let moved = a_blue.until(is_ack).await;
    assert_ne!(moved["ack"], a_ack["ack"], "a new line in the new room");
    let delivered = blue_watcher.chat("from a").await;
    assert_eq!((&delivered["id"], delivered["room"].as_str()), (&moved["ack"], Some("blue")));

    let mut a_red = Client::connect(&in_room("red", &token_a)).await;
    a_red.send_json(acked_send("from a")).await;
    assert_eq!(a_red.until(is_ack).await, a_ack, "A's resend to red, from a new connection: A's first line");
    stack.stop().await;

    let db = rusqlite::Connection::open(dir.join("chat.db")).unwrap();
    let stored: Vec<(String, String)> = db
        .prepare("SELECT message, room FROM message_history WHERE kind = 'chat' ORDER BY seq")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let expected =
        [("from a", "red"), ("from b", "red"), ("from a", "blue")].map(|(m, r)| (m.to_owned(), r.to_owned()));
    assert_eq!(stored, expected);
}
