use serde_json::{Value, json};

use super::*;
use crate::handlers::testing::at;
use crate::memory::MemoryLog;
use crate::model::Receipt;

const BOT: &str = "arn:aws:iam::123456789012:user/ci-bot";
const OTHER: &str = "arn:aws:iam::123456789012:user/other";

fn request<'a>(room: &'a str, body: &'a [u8]) -> PublishRequest<'a> {
    PublishRequest { room, body, idempotency_key: None, principal: BOT.into(), received_at: at("2026-11-24T10:15:32Z") }
}

async fn call(request: &PublishRequest<'_>, log: &MemoryLog) -> (u16, Value) {
    let response = publish(request, log).await.unwrap();
    (response.status, serde_json::from_str(&response.body).expect("every answer is JSON"))
}

async fn send(room: &str, body: Value, log: &MemoryLog) -> (u16, Value) {
    call(&request(room, body.to_string().as_bytes()), log).await
}

#[tokio::test]
async fn a_line_is_appended_as_the_principal_s_labelled_server_line() {
    let log = MemoryLog::default();
    let (status, body) = send("ops", json!({"message":"build 42 passed","user":"Build Bot"}), &log).await;
    assert_eq!(status, 201);
    let events = log.events();
    assert_eq!(events.len(), 1);
    let line = &events[0];
    assert_eq!(body, json!({"id": line.message_id}));
    assert_eq!((line.room.as_str(), line.message.as_str()), ("ops", "build 42 passed"));
    assert_eq!((line.connection_id.as_str(), line.user.as_deref()), ("api", Some("Build Bot")));
    assert_eq!(line.principal.as_deref(), Some(BOT));
    assert_eq!((line.verified, line.user_id.as_deref()), (None, None), "a label, not an account");
    assert_eq!(line.timestamp, at("2026-11-24T10:15:32Z"));
}

#[tokio::test]
async fn with_no_user_the_label_is_the_principal_s_last_segment() {
    let log = MemoryLog::default();
    assert_eq!(send("ops", json!({"message":"hi"}), &log).await.0, 201);
    assert_eq!(log.events()[0].user.as_deref(), Some("ci-bot"));
    assert_eq!(default_label("arn:aws:sts::1:assumed-role/Deployer/run-7"), "run-7");
    assert_eq!(default_label(&format!("arn:aws:iam::1:user/{}", "x".repeat(64))).chars().count(), 32);
    assert_eq!(default_label("arn:aws:iam::1:user/\u{202E}"), "server");
}

#[tokio::test]
async fn a_retry_with_the_same_key_returns_the_first_id_and_stores_nothing() {
    let log = MemoryLog::default();
    let body = json!({"message":"deploy started","clientMessageId":"deploy-1234"});
    let (first, created) = send("ops", body.clone(), &log).await;
    let (again, retried) = send("ops", body, &log).await;
    assert_eq!((first, again), (201, 200));
    assert_eq!(created, retried, "the same id");
    assert_eq!(log.events().len(), 1);

    // The header is the same key.
    let body = br#"{"message":"deploy finished"}"#;
    let with_header = PublishRequest { idempotency_key: Some("deploy-1235".into()), ..request("ops", body) };
    let (a, first_id) = call(&with_header, &log).await;
    let (b, second_id) = call(&with_header, &log).await;
    assert_eq!((a, b), (201, 200));
    assert_eq!(first_id, second_id);
    assert_eq!(log.events().len(), 2);
    // … and the body's key with it, when they agree.
    let both = PublishRequest {
        idempotency_key: Some("deploy-1235".into()),
        ..request("ops", br#"{"message":"deploy finished","clientMessageId":"deploy-1235"}"#)
    };
    assert_eq!(call(&both, &log).await, (200, first_id));
    let differ = PublishRequest {
        idempotency_key: Some("deploy-1236".into()),
        ..request("ops", br#"{"message":"x","clientMessageId":"deploy-1235"}"#)
    };
    assert_eq!(call(&differ, &log).await.0, 400);
}

#[tokio::test]
async fn two_principals_keys_never_collide() {
    let log = MemoryLog::default();
    let body = br#"{"message":"hi","clientMessageId":"k-1"}"#;
    let (_, mine) = call(&request("ops", body), &log).await;
    let theirs = PublishRequest { principal: OTHER.into(), ..request("ops", body) };
    let (status, their_id) = call(&theirs, &log).await;
    assert_eq!(status, 201, "another caller's key is its own");
    assert_ne!(mine, their_id);
    assert_eq!(log.events().len(), 2);
    let line = &log.events()[0];
    assert_eq!(Receipt::for_send(line, "k-1").key, format!("client#ops#k-1#{BOT}"));
}

#[tokio::test]
async fn bad_rooms_bodies_and_lines_are_400_with_a_reason_and_store_nothing() {
    let log = MemoryLog::default();
    let reason = |body: Value| body["message"].as_str().unwrap_or_default().to_owned();
    for room in ["", "a b", "a/b", &"x".repeat(65)] {
        let (status, body) = send(room, json!({"message":"hi"}), &log).await;
        assert_eq!(status, 400, "{room:?}");
        assert!(reason(body).starts_with("Room must be"), "{room:?}");
    }
    for raw in [&b"not json"[..], b"[1,2]", b"\"text\"", b"", b"{", &[0xff, 0xfe]] {
        let (status, body) = call(&request("ops", raw), &log).await;
        assert_eq!(status, 400, "{raw:?}");
        assert!(reason(body).starts_with("Body must be a JSON object"));
    }
    let cases = [
        (json!({}), "Field \"message\" (text) is required."),
        (json!({"message": null}), "Field \"message\" (text) is required."),
        (json!({"message": ""}), "Message must not be empty."),
        (json!({"message": "   "}), "Message must not be empty."),
        (json!({"message": 7}), "Field \"message\" has the wrong type."),
        (json!({"message": "x".repeat(32 * 1024 + 1)}), "Message is 32769 bytes as JSON; the limit is 32768."),
        (json!({"message": "hi", "user": ""}), "Field \"user\" must be 1-32 printable characters."),
        (json!({"message": "hi", "user": "a\u{202E}b"}), "Field \"user\" must be 1-32 printable characters."),
        (json!({"message": "hi", "user": 5}), "Field \"user\" must be 1-32 printable characters."),
        (
            json!({"message": "hi", "clientMessageId": "a#b"}),
            "Field \"clientMessageId\" must be 1-128 printable ASCII characters without '#'.",
        ),
        (
            json!({"message": "hi", "clientMessageId": ""}),
            "Field \"clientMessageId\" must be 1-128 printable ASCII characters without '#'.",
        ),
        (
            json!({"message": "hi", "clientMessageId": "x".repeat(129)}),
            "Field \"clientMessageId\" must be 1-128 printable ASCII characters without '#'.",
        ),
        (json!({"messages": []}), "Field \"messages\" must hold 1 to 25 messages; it holds 0."),
        (json!({"messages": "hi"}), "Field \"messages\" must be an array of messages."),
    ];
    for (body, expected) in cases {
        let (status, answer) = send("ops", body.clone(), &log).await;
        assert_eq!((status, reason(answer).as_str()), (400, expected), "{body}");
    }
    let bad_header = PublishRequest { idempotency_key: Some("a b".into()), ..request("ops", br#"{"message":"x"}"#) };
    assert_eq!(call(&bad_header, &log).await.0, 400);
    assert!(log.events().is_empty());
}

#[tokio::test]
async fn a_body_past_128_kib_is_413_and_no_principal_is_403() {
    let log = MemoryLog::default();
    let text = "x".repeat(MAX_PUBLISH_BODY_BYTES);
    let body = format!(r#"{{"message":"{text}"}}"#);
    let (status, answer) = call(&request("ops", body.as_bytes()), &log).await;
    assert_eq!((status, answer), (413, json!({"message": "Request Entity Too Large"})));
    let exactly = vec![b' '; MAX_PUBLISH_BODY_BYTES];
    assert_eq!(call(&request("ops", &exactly), &log).await.0, 400, "at the limit: read (and refused as not JSON)");
    let anonymous = PublishRequest { principal: " ".into(), ..request("ops", br#"{"message":"x"}"#) };
    assert_eq!(call(&anonymous, &log).await.0, 403);
    assert!(log.events().is_empty());
}

#[tokio::test]
async fn a_batch_acknowledges_or_refuses_each_line_on_its_own() {
    let log = MemoryLog::default();
    send("ops", json!({"message":"earlier","clientMessageId":"seen"}), &log).await;
    let batch = json!({"messages": [
        {"message": "one"},
        {"message": ""},
        {"message": "two", "clientMessageId": "k2"},
        "not an object",
        {"message": "again", "clientMessageId": "seen"},
    ]});
    let (status, body) = send("ops", batch, &log).await;
    assert_eq!(status, 200);
    let results = body["results"].as_array().unwrap();
    let statuses: Vec<_> = results.iter().map(|r| r["status"].as_u64().unwrap()).collect();
    assert_eq!(statuses, [201, 400, 201, 400, 200]);
    assert_eq!(results[1]["error"], "Message must not be empty.");
    assert_eq!(results[3]["error"], "A message must be a JSON object with a \"message\" field.");
    let texts: Vec<_> = log.events().iter().map(|e| e.message.clone()).collect();
    assert_eq!(texts, ["earlier", "one", "two"]);
    assert_eq!(results[4]["id"], log.events()[0].message_id.as_str(), "the retry's first id");

    let full: Vec<Value> = (0..MAX_BATCH).map(|i| json!({"message": format!("line {i}")})).collect();
    assert_eq!(send("ops", json!({"messages": full}), &log).await.0, 200);
    let over: Vec<Value> = (0..=MAX_BATCH).map(|i| json!({"message": format!("line {i}")})).collect();
    let (status, body) = send("ops", json!({"messages": over}), &log).await;
    assert_eq!(
        (status, body["message"].as_str()),
        (400, Some("Field \"messages\" must hold 1 to 25 messages; it holds 26."))
    );
    let keyed =
        PublishRequest { idempotency_key: Some("k".into()), ..request("ops", br#"{"messages":[{"message":"x"}]}"#) };
    assert_eq!(call(&keyed, &log).await.0, 400, "a header key names no line of a batch");
    assert_eq!(log.events().len(), 3 + MAX_BATCH);
}

#[tokio::test]
async fn a_store_outage_is_an_error_alone_or_that_item_s_500_in_a_batch() {
    let log = MemoryLog::default();
    log.outage.set(true);
    assert!(publish(&request("ops", br#"{"message":"x"}"#), &log).await.is_err());
    let (status, body) = send("ops", json!({"messages":[{"message":"x"},{"message":""}]}), &log).await;
    assert_eq!(status, 200);
    assert_eq!(body["results"][0], json!({"status": 500, "error": "Internal Server Error"}));
    assert_eq!(body["results"][1]["status"], 400);
}

#[test]
fn garbage_never_panics() {
    let log = MemoryLog::default();
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let pieces: [&[u8]; 12] = [
        b"{",
        b"}",
        b"[",
        b"]",
        b"\"message\":",
        b"\"messages\":",
        b"\"x\"",
        b",",
        b"null",
        b"\xff",
        b"\"user\":",
        b"1",
    ];
    for _ in 0..2000 {
        let body: Vec<u8> = (0..next() % 12).flat_map(|_| pieces[(next() % 12) as usize].to_vec()).collect();
        let response = runtime.block_on(publish(&request("ops", &body), &log)).unwrap();
        assert!(serde_json::from_str::<Value>(&response.body).is_ok());
    }
}
