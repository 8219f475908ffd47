//! The local stack in DynamoDB-endpoint mode against moto: the Lambdas' AWS
//! adapters write the three tables, the broadcaster is driven by the table's
//! real DynamoDB Stream, batches land in the S3 archive, and `replay` reads the
//! archive back equal to the table.

mod common;

use std::collections::HashMap;

use aws_lambda_events::dynamodb::EventRecord;
use aws_sdk_dynamodb::types::AttributeValue;
use chat_aws::TableNames;
use chat_core::LogEvent;
use chat_local::DynamoSettings;
use chat_local::stream::RecordSource;
use common::{Client, Moto, Stack, WAIT, run_binary, scratch};
use serde_json::Value;

const BUCKET: &str = "chat-archive";

async fn scan(client: &aws_sdk_dynamodb::Client, table: &str) -> Vec<HashMap<String, AttributeValue>> {
    client.scan().table_name(table).send().await.unwrap().items.unwrap_or_default()
}

fn s<'a>(item: &'a HashMap<String, AttributeValue>, name: &str) -> &'a str {
    item.get(name).unwrap_or_else(|| panic!("{name} missing from {item:?}")).as_s().unwrap()
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines().map(|line| serde_json::from_str(line).unwrap()).collect()
}

#[tokio::test]
async fn chat_through_moto_tables_stream_and_archive() {
    let moto = Moto::start().await;
    let dir = scratch("dynamodb-mode");
    let args =
        ["--dynamodb-endpoint", &moto.url, "--create-tables", "--archive-bucket", BUCKET, "--s3-endpoint", &moto.url];
    let stack = Stack::start(&dir.join("unused.db"), &args).await;

    let mut alice = Client::connect(&stack.ws_url).await;
    let alice_id = alice.my_id().await;
    let mut bob = Client::connect(&stack.ws_url).await;
    alice.until(|f| f["kind"] == "join").await;
    bob.say("hello through the stream").await;
    let frame = alice.chat("hello through the stream").await;
    assert_eq!(frame["message"].as_str().unwrap().lines().next().unwrap().len(), "[2026-11-24T10:15:30Z - UTC]".len());
    let bob_id = bob.chat("hello through the stream").await["connectionId"].as_str().unwrap().to_owned();
    alice.socket.close(None).await.unwrap();
    let leave = bob.until(|f| f["kind"] == "leave").await;
    assert_eq!(leave["message"], format!("User {alice_id} has left the chat."));

    // Rows in all three tables, with the seed's attribute names.
    let sdk = moto.sdk_config().await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
    let connections = scan(&dynamodb, "ActiveConnections").await;
    assert_eq!(connections.len(), 1, "only bob is still connected: {connections:?}");
    assert_eq!(s(&connections[0], "connection_id"), bob_id);
    assert_eq!(s(&connections[0], "source_ip"), "127.0.0.1");
    assert!(s(&connections[0], "connected_at").ends_with('Z'));
    assert!(connections[0]["expires_at"].as_n().unwrap().parse::<i64>().unwrap() > 1_700_000_000);

    let sessions = scan(&dynamodb, "SessionHistory").await;
    let alice_session = sessions.iter().find(|s| s["connection_id"].as_s().unwrap() == &alice_id).unwrap();
    assert!(s(alice_session, "disconnected_at").ends_with('Z'));
    assert!(alice_session["duration_seconds"].as_n().is_ok());
    assert_eq!(s(alice_session, "source_ip"), "127.0.0.1");

    let messages = scan(&dynamodb, "MessageHistory").await;
    let hello = messages
        .iter()
        .find(|m| m.get("message").and_then(|v| v.as_s().ok()).map(String::as_str) == Some("hello through the stream"))
        .unwrap();
    assert_eq!(s(hello, "connection_id"), bob_id);
    assert_eq!(s(hello, "kind"), "chat");
    assert_eq!(s(hello, "message_id"), frame["id"].as_str().unwrap());
    assert_eq!(s(hello, "timestamp"), frame["timestamp"].as_str().unwrap());

    // Every event reached the archive (it is written before each batch fans out)
    // and replay reads it back equal to the table.
    let endpoints = ["--dynamodb-endpoint", &moto.url, "--s3-endpoint", &moto.url];
    let from_table =
        run_binary("replay", &[&["--from", "dynamodb:MessageHistory", "--format", "json"][..], &endpoints].concat())
            .await;
    let from_table = json_lines(&from_table);
    assert_eq!(from_table.len(), messages.len());
    assert!(from_table.len() >= 5, "joins, chat lines and the leave: {from_table:?}");
    let deadline = tokio::time::Instant::now() + WAIT;
    let from_archive = loop {
        let archived =
            run_binary("replay", &[&["--from", &format!("s3:{BUCKET}"), "--format", "json"][..], &endpoints].concat())
                .await;
        let archived = json_lines(&archived);
        if archived.len() == from_table.len() || tokio::time::Instant::now() > deadline {
            break archived;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(from_archive, from_table);

    let s3 = aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(&sdk).force_path_style(true).build());
    let objects = s3.list_objects_v2().bucket(BUCKET).send().await.unwrap();
    for object in objects.contents() {
        let key = object.key().unwrap();
        assert!(key.starts_with("messages/20") && key.ends_with(".jsonl"), "date-partitioned key: {key}");
    }

    // A range: everything after the hello line, read from the archive.
    let after = frame["id"].as_str().unwrap();
    let tail = run_binary(
        "replay",
        &[&["--from", &format!("s3:{BUCKET}"), "--since", after, "--format", "json"][..], &endpoints].concat(),
    )
    .await;
    let expected: Vec<&Value> = from_table.iter().filter(|e| e["message_id"].as_str().unwrap() > after).collect();
    assert_eq!(json_lines(&tail).iter().collect::<Vec<_>>(), expected);
    assert!(!expected.is_empty());

    // Re-publishing the archive into the table it came from changes nothing.
    let summary = run_binary(
        "replay",
        &[&["--from", &format!("s3:{BUCKET}"), "--publish", "dynamodb:MessageHistory"][..], &endpoints].concat(),
    )
    .await;
    assert!(summary.contains(&format!("0 appended, {} already in the log", from_table.len())), "{summary}");
    assert_eq!(scan(&dynamodb, "MessageHistory").await.len(), messages.len());
    stack.stop().await;
}

/// Polls until `count` records have arrived (a stream hands them over as they come).
async fn poll_records(source: &mut impl RecordSource, count: usize) -> Vec<EventRecord> {
    let mut records = Vec::new();
    tokio::time::timeout(WAIT, async {
        while records.len() < count {
            let batch = source.poll(100).await.unwrap();
            if batch.is_empty() {
                source.wait().await;
            }
            records.extend(batch);
        }
    })
    .await
    .expect("records arrive in time");
    records
}

fn seq(record: &EventRecord) -> &str {
    record.change.sequence_number.as_deref().unwrap()
}

/// The event-source rules the broadcaster relies on, on moto's real stream: a
/// retried record is read again, a given-up one is skipped, a finished batch is not
/// read twice.
#[tokio::test]
async fn the_stream_source_rereads_retried_records_and_skips_given_up_ones() {
    let moto = Moto::start().await;
    let settings =
        DynamoSettings { endpoint: Some(moto.url.clone()), tables: TableNames::default(), create_tables: true };
    let (tables, mut source) = chat_local::dynamo::open_with(&moto.sdk_config().await, &settings).await.unwrap();
    let at = chrono::Utc::now();
    for text in ["one", "two", "three"] {
        tables.log.append(&LogEvent::chat("writer", text, at)).await.unwrap();
    }
    let first = poll_records(&mut source, 3).await;
    assert_eq!(first.len(), 3);

    source.resume_at(&first[1]).await.unwrap();
    let retried = poll_records(&mut source, 2).await;
    assert_eq!(retried.iter().map(seq).collect::<Vec<_>>(), [seq(&first[1]), seq(&first[2])]);

    source.resume_after(&retried[0]).await.unwrap(); // given up mid-batch
    let rest = poll_records(&mut source, 1).await;
    assert_eq!(seq(&rest[0]), seq(&first[2]));

    source.resume_after(&rest[0]).await.unwrap(); // the whole batch is done
    tables.log.append(&LogEvent::chat("writer", "four", at)).await.unwrap();
    let next = poll_records(&mut source, 1).await;
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].change.new_image.get("message"), Some(&serde_dynamo::AttributeValue::S("four".into())));
}
