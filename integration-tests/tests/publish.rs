//! The publish API on the real binary: `POST /rooms/{room}/messages`, signed
//! with the AWS SDKs' own SigV4 signer as an IAM caller signs for `execute-api`.
//! A line reaches every member of the room once, marked `server:true` (the
//! caller's ARN stays in the log); a retry of a key stores nothing new; bad
//! signatures, bad input and floods get API Gateway's answers.

use crate::common;

use std::process::Stdio;

use common::{Client, Stack, TEST_KEY, count_rows, host_of, run_binary, scratch};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ROOM: &str = "ops";

/// SigV4 headers for a POST of `body` to `url`, signed for `service` in us-east-1
/// with `key` by the SDKs' own signer, as an IAM caller signs.
fn signed(service: &str, url: &str, body: &[u8], key: (&str, &str)) -> Vec<(String, String)> {
    common::sigv4_headers_as(service, "us-east-1", "POST", url, body, key)
}

/// The publish API of a stack.
struct Api {
    host: String,
}

impl Api {
    fn of(stack: &Stack) -> Api {
        Api { host: host_of(&stack.ws_url) }
    }

    fn url(&self, room: &str) -> String {
        format!("http://{}/rooms/{room}/messages", self.host)
    }

    /// Signs `body` as an `execute-api` caller with the stack's default key and posts it.
    async fn publish(&self, room: &str, body: &[u8], extra: &[(&str, &str)]) -> (u16, Value) {
        let headers = signed("execute-api", &self.url(room), body, TEST_KEY);
        self.post(room, body, &headers, extra).await
    }

    async fn publish_json(&self, body: Value) -> (u16, Value) {
        self.publish(ROOM, body.to_string().as_bytes(), &[]).await
    }

    /// Posts `body` with `headers` (a signature or none) and `extra` ones; the status and JSON answer.
    async fn post(
        &self,
        room: &str,
        body: &[u8],
        headers: &[(String, String)],
        extra: &[(&str, &str)],
    ) -> (u16, Value) {
        let mut head = format!(
            "POST /rooms/{room}/messages HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
            self.host,
            body.len()
        );
        for (name, value) in headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).chain(extra.iter().copied()) {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        let mut tcp = tokio::net::TcpStream::connect(&self.host).await.unwrap();
        tcp.write_all(head.as_bytes()).await.unwrap();
        // The stack may answer (413) before reading all of a large body.
        let _ = tcp.write_all(body).await;
        let mut response = Vec::new();
        let _ = tokio::time::timeout(common::WAIT, tcp.read_to_end(&mut response)).await.expect("an answer in time");
        let response = String::from_utf8_lossy(&response);
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or_else(|| panic!("an HTTP answer: {response:?}"));
        let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status line");
        (status, serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.to_owned())))
    }
}

/// Reads published chat frames until `last`, each exactly as often as it came
/// (members' own lines, e.g. the later members' `my_id` markers, are skipped).
async fn published_until(client: &mut Client, last: &str) -> Vec<Value> {
    let mut lines = Vec::new();
    loop {
        let frame = client.next_json().await;
        if frame["kind"] != "chat" || frame["connectionId"] != "api" {
            continue;
        }
        let done = frame["text"] == last;
        lines.push(frame);
        if done {
            return lines;
        }
    }
}

fn published(db: &std::path::Path) -> i64 {
    count_rows(db, "SELECT count(*) FROM message_history WHERE connection_id = 'api'")
}

#[tokio::test]
async fn a_signed_line_reaches_every_member_once_and_a_retry_stores_nothing() {
    let dir = scratch("publish_members");
    let db = dir.join("chat.db");
    let stack = Stack::start(&db, &[]).await;
    let mut members = Vec::new();
    for _ in 0..3 {
        let mut member = Client::connect(&format!("{}?room={ROOM}", stack.ws_url)).await;
        member.my_id().await; // joined and hearing the room
        members.push(member);
    }
    let api = Api::of(&stack);

    let (status, first) = api.publish_json(json!({"message": "deploy 42 started", "user": "CI"})).await;
    assert_eq!(status, 201, "{first}");
    let id = first["id"].as_str().expect("the new line's id").to_owned();

    // A retry with the body's key: the first id, 200, nothing stored.
    let keyed = json!({"message": "keyed", "clientMessageId": "job-7"});
    let (created, keyed_first) = api.publish_json(keyed.clone()).await;
    let (retried, keyed_again) = api.publish_json(keyed).await;
    assert_eq!((created, retried), (201, 200));
    assert_eq!(keyed_first, keyed_again, "the same id");
    // … and with the Idempotency-Key header.
    let body = br#"{"message":"by header"}"#;
    let (created, header_first) = api.publish(ROOM, body, &[("Idempotency-Key", "job-8")]).await;
    let (retried, header_again) = api.publish(ROOM, body, &[("Idempotency-Key", "job-8")]).await;
    assert_eq!((created, retried), (201, 200));
    assert_eq!(header_first, header_again);
    assert_eq!(api.publish_json(json!({"message": "the end"})).await.0, 201);
    assert_eq!(published(&db), 4, "each retry stored nothing new");

    for member in &mut members {
        let lines = published_until(member, "the end").await;
        let texts: Vec<&str> = lines.iter().map(|l| l["text"].as_str().unwrap()).collect();
        assert_eq!(texts, ["deploy 42 started", "keyed", "by header", "the end"], "each line once, in order");
        let line = &lines[0];
        assert_eq!(line["id"], id.as_str());
        assert_eq!(
            (&line["server"], &line["user"], &line["connectionId"]),
            (&json!(true), &json!("CI"), &json!("api"))
        );
        assert!(!line.to_string().contains("arn:aws"), "the caller's ARN never reaches a client: {line}");
        assert_eq!(lines[1]["user"], "test", "no label: the last part of the caller's ARN (its access key's user)");
    }
    let principal: String = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("SELECT principal FROM message_history WHERE message_id = ?1", [&id], |r| r.get(0))
        .unwrap();
    assert_eq!(principal, "arn:aws:iam::000000000000:user/test", "the log keeps who published");
    // A member's own line carries no server mark.
    members[0].say("from a person").await;
    assert!(members[1].chat("from a person").await.get("server").is_none());
    stack.stop().await;
}

#[tokio::test]
async fn bad_signatures_and_bad_input_are_refused_as_api_gateway_refuses_them() {
    let dir = scratch("publish_refusals");
    let db = dir.join("chat.db");
    let stack = Stack::start(&db, &[]).await;
    let api = Api::of(&stack);
    let body = br#"{"message":"must not be stored"}"#;
    let url = api.url(ROOM);

    let wrong_secret = signed("execute-api", &url, body, ("test", "not-the-secret"));
    let (status, answer) = api.post(ROOM, body, &wrong_secret, &[]).await;
    assert_eq!(status, 403, "{answer}");
    assert!(answer["message"].as_str().unwrap().starts_with("The request signature we calculated does not match"));
    let wrong_service = signed("execute-apx", &url, body, TEST_KEY);
    let (status, answer) = api.post(ROOM, body, &wrong_service, &[]).await;
    assert_eq!(
        (status, answer),
        (403, json!({"message": "Credential should be scoped to correct service: 'execute-api'. "}))
    );
    let (status, answer) = api.post(ROOM, body, &[], &[]).await;
    assert_eq!((status, answer), (403, json!({"message": "Missing Authentication Token"})));
    // Signed for one body, sent with another.
    let (status, _) =
        api.post(ROOM, br#"{"message":"tampered"}"#, &signed("execute-api", &url, body, TEST_KEY), &[]).await;
    assert_eq!(status, 403);

    let reason = |answer: &Value| answer["message"].as_str().unwrap_or_default().to_owned();
    let (status, answer) = api.publish("a.b", body, &[]).await;
    assert_eq!((status, reason(&answer).starts_with("Room must be")), (400, true), "{answer}");
    let (status, answer) = api.publish(ROOM, b"{not json", &[]).await;
    assert_eq!((status, reason(&answer).starts_with("Body must be a JSON object")), (400, true), "{answer}");
    let (status, answer) = api.publish_json(json!({"message": "  "})).await;
    assert_eq!((status, reason(&answer)), (400, "Message must not be empty.".to_owned()));
    let (status, answer) = api.publish_json(json!({"user": "CI"})).await;
    assert_eq!((status, reason(&answer)), (400, "Field \"message\" (text) is required.".to_owned()));

    // One byte past 128 KiB.
    let mut huge = br#"{"message":"x","pad":""#.to_vec();
    huge.resize(131_073 - 2, b'p');
    huge.extend_from_slice(b"\"}");
    assert_eq!(huge.len(), 131_073);
    assert_eq!(api.publish(ROOM, &huge, &[]).await.0, 413);
    assert_eq!(published(&db), 0, "nothing refused was stored");

    // A batch of 25, valid and not: each acknowledged or refused on its own.
    let items: Vec<Value> = (0..25)
        .map(|i| match i % 5 {
            0 => json!({"message": ""}),
            1 => json!({"message": 7}),
            2 => json!({"message": format!("line {i}"), "clientMessageId": "batch-key"}),
            _ => json!({"message": format!("line {i}")}),
        })
        .collect();
    let (status, answer) = api.publish_json(json!({"messages": items})).await;
    assert_eq!(status, 200, "{answer}");
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results.len(), 25);
    let statuses: Vec<u64> = results.iter().map(|r| r["status"].as_u64().unwrap()).collect();
    let expected: Vec<u64> = (0..25)
        .map(|i| match i % 5 {
            0 | 1 => 400,
            2 if i > 2 => 200,
            _ => 201,
        })
        .collect();
    assert_eq!(statuses, expected, "{answer}");
    assert_eq!(results[0]["error"], "Message must not be empty.");
    assert_eq!(results[1]["error"], "Field \"message\" has the wrong type.");
    assert_eq!(results[7]["id"], results[2]["id"], "the batch's repeated key: the first line's id");
    assert_eq!(published(&db), 11, "10 plain lines and the keyed one once");
    let too_many: Vec<Value> = (0..26).map(|i| json!({"message": format!("over {i}")})).collect();
    let (status, answer) = api.publish_json(json!({"messages": too_many})).await;
    assert_eq!(
        (status, reason(&answer)),
        (400, "Field \"messages\" must hold 1 to 25 messages; it holds 26.".to_owned())
    );
    assert_eq!(published(&db), 11);
    stack.stop().await;
}

#[tokio::test]
async fn past_the_publish_rate_calls_are_throttled_with_429() {
    let dir = scratch("publish_throttled");
    let stack = Stack::start(&dir.join("chat.db"), &["--publish-rate", "0.01", "--publish-burst", "2"]).await;
    let api = Api::of(&stack);
    for _ in 0..2 {
        assert_eq!(api.publish_json(json!({"message": "within the burst"})).await.0, 201);
    }
    let (status, answer) = api.publish_json(json!({"message": "one too many"})).await;
    assert_eq!((status, answer), (429, json!({"message": "Too Many Requests"})));
    assert_eq!(published(&dir.join("chat.db")), 2);
    stack.stop().await;
}

#[tokio::test]
async fn chat_local_publish_signs_with_the_credential_chain_and_prints_status_and_id() {
    let dir = scratch("publish_cli");
    let db = dir.join("chat.db");
    let stack = Stack::start(&db, &[]).await;
    let mut member = Client::connect(&format!("{}?room={ROOM}", stack.ws_url)).await;
    member.my_id().await;
    let endpoint = format!("http://{}", host_of(&stack.ws_url));
    let args = [
        "publish",
        "--endpoint",
        &endpoint,
        "--room",
        ROOM,
        "--user",
        "nightly",
        "--client-message-id",
        "n-1",
        "build green",
    ];
    let first = run_binary("chat-local", &args).await;
    let (status, id) = first.trim().split_once(' ').expect("<status> <id>");
    assert_eq!(status, "201", "{first}");
    let again = run_binary("chat-local", &args).await;
    assert_eq!(again.trim(), format!("200 {id}"), "a retry: the first id");
    let line = member.chat("build green").await;
    assert_eq!((line["id"].as_str(), &line["user"], &line["server"]), (Some(id), &json!("nightly"), &json!(true)));
    assert_eq!(published(&db), 1);

    // A refusal is one line on stderr and exit status 1.
    let refused = tokio::process::Command::new(common::binary())
        .args(["publish", "--endpoint", &endpoint, "--room", "no spaces", "x"])
        .envs([("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test"), ("AWS_REGION", "us-east-1")])
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stderr(Stdio::piped())
        .output()
        .await
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.trim_end().ends_with(
            "chat-local publish: refused with 400: Room must be 1-64 characters of A-Z, a-z, 0-9, '_' and '-'."
        ),
        "{stderr}"
    );
    stack.stop().await;
}
