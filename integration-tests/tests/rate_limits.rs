//! Per-user rate limits on the real local stack (the same handler code as the
//! Lambdas): a flooding client gets `Rate limited` frames past its bucket and
//! exactly the bucket's worth of its lines is stored, while another user's
//! lines all go through; one account's tabs share a bucket; bad settings stop
//! the stack before it listens.

use crate::common;

use common::{Client, JWT_SECRET, Stack, binary, hs256_token, scratch, with_token};
use serde_json::{Value, json};

/// Frames `client` receives until `done` says it has seen enough; (chat texts from `from`, refusals).
async fn replies_until(
    client: &mut Client,
    from: &str,
    done: impl Fn(usize, usize) -> bool,
) -> (Vec<String>, Vec<Value>) {
    let (mut accepted, mut refused) = (Vec::new(), Vec::new());
    while !done(accepted.len(), refused.len()) {
        let frame = client.next_json().await;
        if frame["error"] == "Rate limited" {
            refused.push(frame);
        } else if frame["kind"] == "chat" && frame["text"].as_str().is_some_and(|t| t.starts_with(from)) {
            accepted.push(frame["text"].as_str().unwrap().to_owned());
        }
    }
    (accepted, refused)
}

fn stored_chat_lines(db: &std::path::Path, like: &str) -> i64 {
    let db = rusqlite::Connection::open(db).unwrap();
    let sql = "SELECT count(*) FROM message_history WHERE kind = 'chat' AND message LIKE ?1";
    db.query_row(sql, [like], |r| r.get(0)).unwrap()
}

#[tokio::test]
async fn a_flooder_gets_refusals_past_its_bucket_and_the_others_are_unaffected() {
    let dir = scratch("rate_limits_flood");
    // A bucket of 20 refilled at one line per 2 s: the flood (well under 2 s) gets exactly 20 lines in.
    // Reads: 3 at once, then one per 2 s.
    let flags = ["--send-rate", "0.5", "--send-burst", "20", "--read-rate", "0.5", "--read-burst", "3"];
    let stack = Stack::start(&dir.join("chat.db"), &flags).await;
    let mut flooder = Client::connect(&stack.ws_url).await;
    let mut neighbour = Client::connect(&stack.ws_url).await;

    let id = |n: usize| format!("0192f3a4-5b6c-7d8e-9f01-{n:012}");
    for n in 0..50 {
        flooder.send_json(json!({"action":"sendmessage","message":format!("flood {n}"),"clientMessageId":id(n)})).await;
    }
    for n in 0..5 {
        neighbour.say(&format!("calm {n}")).await;
    }
    // The flooder hears every one of its lines that got in, and a refusal for each of the rest.
    let (accepted, refused) = replies_until(&mut flooder, "flood", |a, r| a + r == 50).await;
    let first_twenty: Vec<String> = (0..20).map(|n| format!("flood {n}")).collect();
    assert_eq!(accepted, first_twenty, "exactly the bucket's worth, in order");
    assert_eq!(refused.len(), 30);
    for (n, refusal) in (20..).zip(&refused) {
        assert_eq!(refusal["action"], "sendmessage", "{refusal}");
        assert_eq!(refusal["clientMessageId"], id(n).as_str(), "each refusal names its line: {refusal}");
        let wait = refusal["retryAfterMs"].as_u64().expect("retryAfterMs");
        assert!((1..=2000).contains(&wait), "at most one refill interval: {refusal}");
    }
    // The neighbour's lines all went through, and it heard the flooder's 20.
    let (calm, none) = replies_until(&mut neighbour, "calm", |a, _| a == 5).await;
    assert_eq!((calm.len(), none.len()), (5, 0));
    assert_eq!(stored_chat_lines(&stack.db, "flood %"), 20, "refused lines were never stored");
    assert_eq!(stored_chat_lines(&stack.db, "calm %"), 5);

    // Pings are never limited, even with an empty bucket.
    flooder.send_json(json!({"action":"sendmessage","message":"ping"})).await;
    assert_eq!(
        flooder.until(|f| f.get("message").is_some() && f.get("kind").is_none()).await,
        json!({"message":"pong"})
    );

    // Reads: history and who share a bucket of 3.
    for action in ["who", "history", "who"] {
        flooder.send_json(json!({"action": action})).await;
        let answer = flooder.until(|f| f["kind"] == "presence" || f["kind"] == "history").await;
        assert!(answer.get("error").is_none(), "{answer}");
    }
    flooder.send_json(json!({"action":"history"})).await;
    let refused = flooder.until(|f| f.get("error").is_some()).await;
    assert_eq!((&refused["error"], &refused["action"]), (&json!("Rate limited"), &json!("history")), "{refused}");
    // The neighbour's reads are its own.
    neighbour.send_json(json!({"action":"who"})).await;
    assert_eq!(neighbour.until(|f| f["kind"] == "presence" || f.get("error").is_some()).await["count"], 2);
    stack.stop().await;
}

#[tokio::test]
async fn one_accounts_tabs_share_a_bucket_and_another_account_has_its_own() {
    let dir = scratch("rate_limits_accounts");
    let flags = ["--jwt-secret", JWT_SECRET, "--send-rate", "0.1", "--send-burst", "3"];
    let stack = Stack::start(&dir.join("chat.db"), &flags).await;
    let ada = hs256_token(JWT_SECRET, "ada", "Ada");
    let (mut tab1, mut tab2) = (
        Client::connect(&with_token(&stack.ws_url, &ada)).await,
        Client::connect(&with_token(&stack.ws_url, &ada)).await,
    );
    let mut bob = Client::connect(&with_token(&stack.ws_url, &hs256_token(JWT_SECRET, "bob", "Bob"))).await;
    for n in 0..3 {
        tab1.say(&format!("ada {n}")).await;
        tab1.chat(&format!("ada {n}")).await;
    }
    tab2.say("ada from the other tab").await;
    let refused = tab2.until(|f| f.get("error").is_some()).await;
    assert_eq!(refused["error"], "Rate limited", "the account's bucket is empty: {refused}");
    bob.say("bob").await;
    bob.chat("bob").await;
    assert_eq!(stored_chat_lines(&stack.db, "ada%"), 3);
    stack.stop().await;
}

#[tokio::test]
async fn a_rate_setting_that_cannot_work_stops_the_stack_with_its_name() {
    let dir = scratch("rate_limits_settings");
    for (flag, value, name) in [("--send-rate", "fast", "SEND_RATE"), ("--read-burst", "0", "READ_BURST")] {
        let output = tokio::process::Command::new(binary())
            .args(["--port", "0", "--db"])
            .arg(dir.join("chat.db"))
            .args([flag, value])
            .kill_on_drop(true)
            .output();
        let output = tokio::time::timeout(common::WAIT, output).await.expect("exits in time").unwrap();
        assert!(!output.status.success(), "{flag} {value} was accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(name) && stderr.contains(value), "{flag} {value}: {stderr}");
    }
}
