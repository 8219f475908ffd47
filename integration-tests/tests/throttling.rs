//! API Gateway's throttling, emulated when configured: the stage's token bucket
//! answers excess messages "Too Many Requests" without running any function, and
//! the new-connections limit refuses excess upgrades with 429.

use crate::common;

use common::{Client, Stack, host_of, http_get, refused_status, scratch};
use serde_json::{Value, json};

#[tokio::test]
async fn excess_messages_are_answered_too_many_requests_and_not_stored() {
    let dir = scratch("throttling_messages");
    // A burst of 5, refilled at 1 per 10 s: the 6th quick message is throttled.
    let stack = Stack::start(&dir.join("chat.db"), &["--throttle-rate", "0.1", "--throttle-burst", "5"]).await;
    let mut client = Client::connect(&stack.ws_url).await;
    for i in 0..8 {
        client.say(&format!("quick {i}")).await;
    }
    let mut delivered = Vec::new();
    let mut throttled: Vec<Value> = Vec::new();
    while delivered.len() + throttled.len() < 8 {
        let frame = client.next_json().await;
        if frame["message"] == "Too Many Requests" {
            throttled.push(frame);
        } else if let Some(text) = frame["text"].as_str() {
            delivered.push(text.to_owned());
        }
    }
    assert_eq!(delivered, ["quick 0", "quick 1", "quick 2", "quick 3", "quick 4"]);
    assert_eq!(throttled.len(), 3);
    assert!(throttled.iter().all(|f| f["connectionId"].is_string() && f["requestId"].is_string()), "{throttled:?}");
    stack.stop().await;

    let db = rusqlite::Connection::open(dir.join("chat.db")).unwrap();
    let stored: i64 =
        db.query_row("SELECT count(*) FROM message_history WHERE kind = 'chat'", [], |r| r.get(0)).unwrap();
    assert_eq!(stored, 5, "throttled messages never reached the send function");
}

#[tokio::test]
async fn excess_connections_are_refused_with_429() {
    let dir = scratch("throttling_connects");
    let stack = Stack::start(&dir.join("chat.db"), &["--connect-rate", "0.1", "--connect-burst", "2"]).await;
    let mut open = Vec::new();
    for _ in 0..2 {
        open.push(Client::connect(&stack.ws_url).await);
    }
    assert_eq!(refused_status(&stack.ws_url).await, 429, "the third connection in a second");
    // Counted, though no function ran (`chat_connects_total` counts $connect's answers).
    let metrics = http_get(&host_of(&stack.http_url), "/metrics").await;
    assert!(metrics.lines().any(|l| l == r#"chat_upgrades_refused_total{status="429"} 1"#), "{metrics}");
    assert!(metrics.lines().any(|l| l == r#"chat_connects_total{status="200"} 2"#), "{metrics}");
    // The ones let in work as ever.
    open[0].send_json(json!({"action": "sendmessage", "message": "still here"})).await;
    open[1].chat("still here").await;
    stack.stop().await;
}

#[tokio::test]
async fn without_limits_nothing_is_throttled() {
    let dir = scratch("throttling_off");
    // The stage's throttle is off by default; the per-user limits (rate_limits.rs) are not, so off here.
    let stack = Stack::start(&dir.join("chat.db"), &["--send-rate", "off"]).await;
    let mut client = Client::connect(&stack.ws_url).await;
    for i in 0..200 {
        client.say(&format!("line {i}")).await;
    }
    client.chat("line 199").await;
    stack.stop().await;
}
