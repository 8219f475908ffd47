//! The local stack in DynamoDB-endpoint mode against moto: the Lambdas' AWS
//! adapters write the tables, the broadcaster is driven by the table's
//! real DynamoDB Stream, batches land in the S3 archive, and `replay` reads the
//! archive back equal to the table. The channel stores (Memberships,
//! ReadCursors) answer as the in-memory reference does, and each room's member
//! counter equals its memberships however subscribes, unsubscribes and
//! departures race.

use crate::common;

use std::collections::HashMap;

use aws_lambda_events::dynamodb::EventRecord;
use aws_sdk_dynamodb::types::AttributeValue;
use chat_aws::TableNames;
use chat_core::LogEvent;
use chat_local::DynamoSettings;
use chat_local::stream::RecordSource;
use common::{Client, JWT_SECRET, Moto, Stack, WAIT, hs256_token, run_binary, scratch, with_token};
use serde_json::Value;

const BUCKET: &str = "chat-archive";

async fn scan(client: &aws_sdk_dynamodb::Client, table: &str) -> Vec<HashMap<String, AttributeValue>> {
    client.scan().table_name(table).send().await.unwrap().items.unwrap_or_default()
}

fn s<'a>(item: &'a HashMap<String, AttributeValue>, name: &str) -> &'a str {
    item.get(name).unwrap_or_else(|| panic!("{name} missing from {item:?}")).as_s().unwrap()
}

/// The join a subscribe of `connection` to `room` makes (at its connect time, in whole seconds).
fn join_of(connection: &chat_core::Connection, room: &str) -> LogEvent {
    LogEvent::join(&connection.connection_id, connection.connected_at).in_room(room).by(connection.identity().as_ref())
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

/// The room GSI of `table`, as `--create-tables` made it: `(partition, sort)` key names.
async fn room_index_keys(client: &aws_sdk_dynamodb::Client, table: &str) -> (String, String) {
    let described = client.describe_table().table_name(table).send().await.unwrap();
    let indexes = described.table.unwrap().global_secondary_indexes.unwrap_or_default();
    let index = indexes.iter().find(|i| i.index_name() == Some("room-index")).expect("a room-index GSI");
    let keys = index.key_schema();
    (keys[0].attribute_name().to_owned(), keys[1].attribute_name().to_owned())
}

/// The DynamoDB adapters answer history from the room GSI and presence from
/// Memberships exactly as the in-memory reference does, for every kind of
/// query; `--create-tables` gives MessageHistory its GSI and ActiveConnections none.
#[tokio::test]
async fn history_and_presence_are_room_queries_on_moto() {
    use chat_core::memory::{MemoryConnections, MemoryLog};
    use chat_core::ports::{ConnectionStore, LogCursor, LogQuery, MessageLog, list_all_connections};

    let moto = Moto::start().await;
    let settings =
        DynamoSettings { endpoint: Some(moto.url.clone()), tables: TableNames::default(), create_tables: true };
    let sdk = moto.sdk_config().await;
    let (tables, _source) = chat_local::dynamo::open_with(&sdk, &settings).await.unwrap();
    let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
    assert_eq!(room_index_keys(&dynamodb, "MessageHistory").await, ("room".into(), "message_id".into()));
    let connections = dynamodb.describe_table().table_name("ActiveConnections").send().await.unwrap();
    let indexes = connections.table.unwrap().global_secondary_indexes.unwrap_or_default();
    assert!(indexes.is_empty(), "rooms are listed from Memberships, not an index: {indexes:?}");

    let reference = MemoryLog::default();
    let base = chat_core::time::parse_iso("2026-11-24T10:00:00Z").unwrap();
    for i in 0..12 {
        let at = base + chrono::Duration::seconds(i / 2);
        let event = LogEvent::chat("c", &format!("m{i}"), at).in_room(if i % 3 == 0 { "ops" } else { "lobby" });
        tables.log.append(&event).await.unwrap();
        reference.append(&event).await.unwrap();
    }
    let third = reference.events()[3].message_id.clone();
    let query = |room: &str, after: Option<LogCursor>, limit| LogQuery { room: room.into(), after, limit };
    let queries = [
        query("lobby", None, 3),
        query("lobby", None, 50),
        query("ops", None, 2),
        query("lobby", Some(LogCursor::MessageId(third.clone())), 3),
        query("ops", Some(LogCursor::MessageId(third)), 50),
        query("lobby", Some(LogCursor::Time(base + chrono::Duration::seconds(2))), 2),
        query("ops", Some(LogCursor::Time(base)), 50),
        query("nobody-here", None, 5),
    ];
    for query in queries {
        let expected = reference.read(&query).await.unwrap();
        assert_eq!(tables.log.read(&query).await.unwrap(), expected, "{query:?}");
    }

    let members = MemoryConnections::default();
    // Stored to the second, so compared to the second.
    let now = chrono::SubsecRound::trunc_subsecs(chrono::Utc::now(), 0);
    for i in 0..7 {
        let connection =
            chat_core::Connection::new(&format!("conn{i}"), "ip", now).in_room(if i < 5 { "a" } else { "b" });
        tables.connections.put(&connection).await.unwrap();
        members.put(&connection).await.unwrap();
    }
    // A row whose $disconnect was lost, past its TTL but not yet deleted by DynamoDB
    // (which takes up to days): neither counted, listed, nor posted to.
    let ghost = chat_core::Connection::new("conn-ghost", "ip", now - chrono::Duration::hours(3)).in_room("a");
    assert!(ghost.expires_at < now.timestamp());
    tables.connections.put(&ghost).await.unwrap();
    assert_eq!(tables.connections.count("a").await.unwrap(), 5);
    // The ghost sorts first: DynamoDB reads it toward the limit, then filters it out.
    let first = tables.connections.list("a", None, 2).await.unwrap();
    assert!((1..=2).contains(&first.items.len()), "{first:?}");
    assert!(first.next.is_some(), "a page of 2 of 6 rows says there is more");
    let all = list_all_connections(tables.connections.as_ref(), "a").await.unwrap();
    assert_eq!(all, list_all_connections(&members, "a").await.unwrap());
    let got = tables.connections.get("conn6").await.unwrap().unwrap();
    assert_eq!(got.room, "b");
}

/// Two rooms through the real stream: each line reaches exactly its room.
#[tokio::test]
async fn rooms_fan_out_through_moto_s_stream() {
    let moto = Moto::start().await;
    let dir = scratch("dynamodb-mode-rooms");
    let stack = Stack::start(&dir.join("unused.db"), &["--dynamodb-endpoint", &moto.url, "--create-tables"]).await;
    let mut red = Client::connect(&format!("{}?room=red", stack.ws_url)).await;
    let mut blue = Client::connect(&format!("{}?room=blue", stack.ws_url)).await;
    blue.say("blue line").await;
    red.say("red line").await;
    assert_eq!(red.chat("red line").await["room"], "red");
    blue.say("blue again").await;
    let blue_frames: Vec<Value> = vec![blue.chat("blue line").await, blue.chat("blue again").await];
    assert!(blue_frames.iter().all(|f| f["room"] == "blue"));
    // Red heard nothing of blue: its next chat frame is its own next line.
    red.say("red again").await;
    assert_eq!(red.until(|f| f["kind"] == "chat").await["text"], "red again");

    let texts = red.history_texts(serde_json::json!({"action": "history", "limit": 10})).await;
    assert_eq!(texts, ["red line", "red again"]);
    stack.stop().await;
}

/// On DynamoDB the receipt is a second item of MessageHistory written in one
/// transaction with the line: resends are acked with the first id, and neither
/// the stream, history nor replay ever treats the receipt as an event. The
/// receipt is keyed by sender and room, so another account reusing the id has
/// its own line, and it carries `expires_at` for the table's TTL.
#[tokio::test]
async fn acknowledged_sends_are_stored_once_on_moto() {
    let moto = Moto::start().await;
    let dir = scratch("dynamodb-mode-acks");
    let secret = JWT_SECRET;
    let args = ["--dynamodb-endpoint", &moto.url, "--create-tables", "--jwt-secret", secret];
    let stack = Stack::start(&dir.join("unused.db"), &args).await;
    let mut sender = Client::connect(&with_token(&stack.ws_url, &hs256_token(secret, "user-a", "alice"))).await;
    let client_message_id = "0192f3a4-5b6c-7d8e-9f01-23456789abcd";
    let send =
        |text: &str| serde_json::json!({"action":"sendmessage","message":text,"clientMessageId":client_message_id});
    let mut acks = Vec::new();
    for _ in 0..3 {
        sender.send_json(send("once")).await;
        acks.push(sender.until(|f| f.get("ack").is_some()).await);
    }
    assert!(acks.windows(2).all(|w| w[0] == w[1]), "{acks:?}");
    let line = sender.chat("once").await;
    assert_eq!(line["id"], acks[0]["ack"]);
    let mut other = Client::connect(&with_token(&stack.ws_url, &hs256_token(secret, "user-b", "alice"))).await;
    other.send_json(send("theirs")).await;
    let their_ack = other.until(|f| f.get("ack").is_some()).await;
    assert_ne!(their_ack["ack"], acks[0]["ack"], "another account's reuse is its own line");
    assert_eq!(sender.chat("theirs").await["id"], their_ack["ack"]);
    sender.say("after").await;
    let next = sender.until(|f| f["kind"] == "chat").await;
    assert_eq!(next["text"], "after", "broadcast once: {line} then {next}");

    let texts = sender.history_texts(serde_json::json!({"action": "history"})).await;
    assert_eq!(texts, ["once", "theirs", "after"]);
    let dynamodb = aws_sdk_dynamodb::Client::new(&moto.sdk_config().await);
    let mut receipts: Vec<_> = scan(&dynamodb, "MessageHistory")
        .await
        .into_iter()
        .filter(|item| s(item, "message_id").starts_with("client#"))
        .collect();
    receipts.sort_by_key(|item| s(item, "message_id").to_owned());
    let keys: Vec<_> = receipts.iter().map(|item| (s(item, "message_id"), s(item, "event_id"))).collect();
    let key = |user: &str| format!("client#lobby#{client_message_id}#local|{user}");
    assert_eq!(
        keys,
        [
            (key("user-a").as_str(), acks[0]["ack"].as_str().unwrap()),
            (key("user-b").as_str(), their_ack["ack"].as_str().unwrap())
        ]
    );
    let day_from_now = chrono::Utc::now().timestamp() + 24 * 3600;
    for receipt in &receipts {
        let expires_at: i64 = receipt["expires_at"].as_n().unwrap().parse().unwrap();
        assert!((day_from_now - 120..=day_from_now).contains(&expires_at), "24 h after the send: {expires_at}");
    }
    // A receipt past its expiry that the TTL has not deleted yet answers nobody.
    let stale_id = "0192f3a4-5b6c-7d8e-9f01-000000000000";
    let stale_line = "0192f3a4-0000-7000-8000-000000000000";
    dynamodb
        .put_item()
        .table_name("MessageHistory")
        .item("message_id", AttributeValue::S(format!("client#lobby#{stale_id}#local|user-a")))
        .item("event_id", AttributeValue::S(stale_line.into()))
        .item("expires_at", AttributeValue::N((chrono::Utc::now().timestamp() - 1).to_string()))
        .send()
        .await
        .unwrap();
    sender
        .send_json(serde_json::json!({"action":"sendmessage","message":"past the window","clientMessageId":stale_id}))
        .await;
    let renewed = sender.until(|f| f.get("ack").is_some()).await;
    assert_ne!(renewed["ack"], stale_line, "an expired receipt does not dedupe");
    assert_eq!(sender.chat("past the window").await["id"], renewed["ack"], "the line is stored and delivered");
    let endpoints = ["--dynamodb-endpoint", moto.url.as_str()];
    let replayed =
        run_binary("replay", &[&["--from", "dynamodb:MessageHistory", "--format", "json"][..], &endpoints].concat())
            .await;
    let once = json_lines(&replayed).iter().filter(|e| e["message"] == "once").count();
    assert_eq!(once, 1);
    assert!(!replayed.contains("client#"), "receipts are not events: {replayed}");
    stack.stop().await;
}

/// The publish API on the Lambdas' DynamoDB adapter: the line carries its
/// principal in the table (never to clients: they get `server:true`), a keyed
/// retry is answered from the receipt, keyed by the caller's ARN, and stores nothing.
#[tokio::test]
async fn published_lines_keep_their_principal_on_moto() {
    let moto = Moto::start().await;
    let dir = scratch("dynamodb-mode-publish");
    let stack = Stack::start(&dir.join("unused.db"), &["--dynamodb-endpoint", &moto.url, "--create-tables"]).await;
    let mut member = Client::connect(&format!("{}?room=ops", stack.ws_url)).await;
    member.my_id().await;
    let url = format!("http://{}/rooms/ops/messages", common::host_of(&stack.ws_url));
    let body = br#"{"message":"released","user":"CI","clientMessageId":"rel-1"}"#;
    let mut answers = Vec::new();
    for _ in 0..2 {
        let headers = common::sigv4_headers("POST", &url, body, common::TEST_KEY);
        let lines: String = headers.iter().map(|(name, value)| format!("{name}: {value}\r\n")).collect();
        let host = common::host_of(&url);
        let request = format!(
            "POST /rooms/ops/messages HTTP/1.1\r\nhost: {host}\r\n{lines}content-length: {}\r\nconnection: close\r\n\r\n{}",
            body.len(),
            std::str::from_utf8(body).unwrap()
        );
        answers.push(common::http_exchange(&host, request).await);
    }
    assert!(answers[0].starts_with("HTTP/1.1 201"), "{}", answers[0]);
    assert!(answers[1].starts_with("HTTP/1.1 200"), "{}", answers[1]);
    let id =
        |answer: &str| serde_json::from_str::<Value>(answer.split_once("\r\n\r\n").unwrap().1).unwrap()["id"].clone();
    assert_eq!(id(&answers[0]), id(&answers[1]));
    let line = member.chat("released").await;
    assert_eq!(
        (&line["id"], &line["server"], &line["user"]),
        (&id(&answers[0]), &Value::Bool(true), &Value::from("CI"))
    );
    assert!(!line.to_string().contains("arn:aws"));
    let dynamodb = aws_sdk_dynamodb::Client::new(&moto.sdk_config().await);
    let items = scan(&dynamodb, "MessageHistory").await;
    let arn = "arn:aws:iam::000000000000:user/test";
    let stored: Vec<_> = items.iter().filter(|item| item.get("principal").is_some()).collect();
    assert_eq!(stored.len(), 1, "stored once");
    assert_eq!((s(stored[0], "principal"), s(stored[0], "connection_id")), (arn, "api"));
    let receipts: Vec<_> =
        items.iter().map(|item| s(item, "message_id")).filter(|key| key.starts_with("client#")).collect();
    assert_eq!(receipts, [format!("client#ops#rel-1#{arn}")], "keyed by the caller");
    stack.stop().await;
}

/// A stalled DynamoDB (moto paused with SIGSTOP for 5 s): a send gets API
/// Gateway's `Internal server error` within the SDK's timeout instead of hanging,
/// and once DynamoDB is back the chat and the stream reader carry on, with every
/// stored line delivered and in history.
#[tokio::test]
async fn a_paused_dynamodb_fails_sends_in_time_and_nothing_stored_is_lost() {
    let moto = Moto::start().await;
    let dir = scratch("dynamodb-mode-paused");
    let stack = Stack::start(&dir.join("unused.db"), &["--dynamodb-endpoint", &moto.url, "--create-tables"]).await;
    let mut alice = Client::connect(&stack.ws_url).await;
    alice.say("before the pause").await;
    alice.chat("before the pause").await;

    moto.signal("STOP");
    let paused = tokio::time::Instant::now();
    alice.say("during the pause").await;
    let answer = alice.next_json().await;
    let waited = paused.elapsed();
    // Resume before asserting, so that a failure does not leave moto stopped.
    tokio::time::sleep(std::time::Duration::from_secs(5).saturating_sub(paused.elapsed())).await;
    moto.signal("CONT");
    assert_eq!(answer["message"], "Internal server error", "{answer}");
    assert!(answer["requestId"].is_string() && answer["connectionId"].is_string(), "{answer}");
    let bound = chat_aws::SDK_OPERATION_TIMEOUT + std::time::Duration::from_secs(2);
    assert!(waited < bound, "answered after {waited:?}, the SDK's bound is {bound:?}");

    alice.say("after the pause").await;
    alice.chat("after the pause").await;
    let mut bob = Client::connect(&stack.ws_url).await;
    let texts = bob.history_texts(serde_json::json!({"action": "history"})).await;
    assert_eq!(texts, ["before the pause", "after the pause"], "the refused line was never stored");
    stack.stop().await;
    eprintln!("a send during the pause was refused after {waited:?}");
}

#[tokio::test]
async fn the_authorizer_reads_its_shared_secret_from_secrets_manager() {
    let moto = Moto::start().await;
    let sdk = moto.sdk_config().await;
    let secrets = aws_sdk_secretsmanager::Client::new(&sdk);
    let created = secrets
        .create_secret()
        .name("chat/jwt")
        .secret_string("a-secret-from-secrets-manager-32-bytes")
        .send()
        .await
        .unwrap();
    let arn = created.arn.unwrap();
    assert_eq!(chat_aws::secret_string(&sdk, &arn).await.unwrap(), "a-secret-from-secrets-manager-32-bytes");
    let missing = chat_aws::secret_string(&sdk, "chat/none").await.unwrap_err();
    assert!(missing.to_string().contains("ResourceNotFoundException"), "{missing}");
}

/// moto with the tables `--create-tables` makes, and a client of it.
async fn moto_tables() -> (Moto, aws_sdk_dynamodb::Client) {
    let moto = Moto::start().await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&moto.sdk_config().await);
    chat_aws::provision::create_tables(&dynamodb, &TableNames::default()).await.unwrap();
    (moto, dynamodb)
}

/// The keys of every item of `table`, sorted: `(partition, sort)`; Memberships'
/// room counters (sort key `#members`) are no memberships and are left out.
async fn keys_of(client: &aws_sdk_dynamodb::Client, table: &str, keys: (&str, &str)) -> Vec<(String, String)> {
    let mut all: Vec<_> = scan(client, table)
        .await
        .iter()
        .map(|item| (s(item, keys.0).to_owned(), s(item, keys.1).to_owned()))
        .filter(|(_, sort)| sort != chat_core::model::ROOM_COUNTER_ID)
        .collect();
    all.sort();
    all
}

/// Rooms as a sorted list: a DynamoDB string set has no order.
fn sorted(mut rooms: Vec<String>) -> Vec<String> {
    rooms.sort();
    rooms
}

/// DynamoConnections on moto answers every subscription call as the in-memory
/// reference does — New, Already, Full, NotConnected; an unsubscribe removes
/// once; a room's listing right after a subscribe holds the new member; a
/// delete returns the row with its rooms — and leaves the same memberships.
#[tokio::test]
async fn subscriptions_on_moto_answer_as_the_reference() {
    use chat_core::memory::MemoryConnections;
    use chat_core::ports::{ConnectionStore, Subscribed, list_all_connections};

    let (_moto, dynamodb) = moto_tables().await;
    let store = chat_aws::DynamoConnections::new(dynamodb.clone(), "ActiveConnections", "Memberships");
    let reference = MemoryConnections::default();
    let now = chrono::SubsecRound::trunc_subsecs(chrono::Utc::now(), 0);
    let ada = chat_core::model::Identity::verified("Ada", "https://id.example|ada");
    let c1 = chat_core::Connection::new("c1", "203.0.113.7", now).of(Some(&ada)).coalescing(true);
    let c2 = chat_core::Connection::new("c2", "203.0.113.8", now).in_room("ops").also_in(["dev"]);
    let never = chat_core::Connection::new("never", "ip", now);
    for connection in [&c1, &c2] {
        store.put(connection).await.unwrap();
        reference.put(connection).await.unwrap();
    }
    let max = 3;
    let steps: [(&chat_core::Connection, &str, Subscribed); 7] = [
        (&c1, "ops", Subscribed::New),
        (&c1, "ops", Subscribed::Already),
        (&c1, "lobby", Subscribed::Already),
        (&c1, "dev", Subscribed::New),
        (&c1, "team", Subscribed::Full),
        // At the limit, a room already held is still just that.
        (&c1, "dev", Subscribed::Already),
        (&never, "ops", Subscribed::NotConnected),
    ];
    for (connection, room, expected) in steps {
        let join = join_of(connection, room);
        let answer = store.subscribe(connection, room, max, &join).await.unwrap();
        assert_eq!(answer, reference.subscribe(connection, room, max, &join).await.unwrap(), "{room}");
        assert_eq!(answer, expected, "{} to {room}", connection.connection_id);
        // Listed at once (consistent reads), as the reference lists it.
        let listed = list_all_connections(&store, room).await.unwrap();
        assert_eq!(listed, list_all_connections(&reference, room).await.unwrap(), "{room}");
        assert_eq!(store.count(room).await.unwrap(), reference.count(room).await.unwrap(), "{room}");
    }
    let row = store.get("c1").await.unwrap().unwrap();
    assert_eq!(sorted(row.rooms.clone()), ["dev", "lobby", "ops"]);
    assert_eq!(row.identity(), Some(ada.clone()));
    assert_eq!(keys_of(&dynamodb, "Memberships", ("room", "connection_id")).await, reference.memberships());

    // A membership carries what fan-out and who need, its join, the connection's expiry and a purge a week later.
    let item = dynamodb
        .get_item()
        .table_name("Memberships")
        .key("room", AttributeValue::S("ops".into()))
        .key("connection_id", AttributeValue::S("c1".into()))
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    let mut attributes: Vec<&str> = item.keys().map(String::as_str).collect();
    attributes.sort();
    assert_eq!(
        attributes,
        [
            "batch",
            "connected_at",
            "connection_id",
            "expires_at",
            "join_id",
            "joined_at",
            "purge_at",
            "room",
            "user",
            "user_id",
            "verified"
        ]
    );
    let number = |name: &str| item[name].as_n().unwrap().parse::<i64>().unwrap();
    assert_eq!(number("expires_at"), c1.expires_at);
    assert_eq!(number("purge_at"), c1.expires_at + 7 * 24 * 3600);

    // Unsubscribing removes once, and the room leaves the row.
    let ended = store.unsubscribe("c1", "ops").await.unwrap();
    assert_eq!(ended, reference.unsubscribe("c1", "ops").await.unwrap(), "the membership, with its join");
    assert!(ended.and_then(|m| m.join()).is_some());
    assert!(store.unsubscribe("c1", "ops").await.unwrap().is_none(), "the second unsubscribe removed nothing");
    assert_eq!(sorted(store.get("c1").await.unwrap().unwrap().rooms), ["dev", "lobby"]);
    let team = join_of(&c1, "team");
    assert_eq!(
        store.subscribe(&c1, "team", max, &team).await.unwrap(),
        Subscribed::New,
        "room again after leaving one"
    );
    reference.subscribe(&c1, "team", max, &team).await.unwrap();

    // Delete returns the row as it was, once; its memberships stay for the departure to end.
    let deleted = store.delete("c2").await.unwrap().expect("the row");
    let expected = reference.delete("c2").await.unwrap().unwrap();
    assert_eq!(sorted(deleted.rooms.clone()), sorted(expected.rooms.clone()));
    assert_eq!(chat_core::Connection { rooms: expected.rooms.clone(), ..deleted.clone() }, expected);
    assert_eq!(store.delete("c2").await.unwrap(), None);
    assert_eq!(store.subscribe(&c2, "team", max, &join_of(&c2, "team")).await.unwrap(), Subscribed::NotConnected);
    for room in deleted.rooms() {
        assert!(
            store.unsubscribe("c2", &room).await.unwrap().is_some(),
            "{room}: the departure removes each membership"
        );
        reference.unsubscribe("c2", &room).await.unwrap();
    }
    assert_eq!(store.get("c2").await.unwrap(), None, "unsubscribing never recreates a deleted row");
    assert_eq!(keys_of(&dynamodb, "Memberships", ("room", "connection_id")).await, reference.memberships());
    assert_eq!(
        keys_of(&dynamodb, "ActiveConnections", ("connection_id", "room")).await,
        [("c1".into(), "lobby".into())]
    );

    // A row from before channels (no `rooms` set) keeps its home room when it subscribes to another.
    let legacy =
        chat_core::Connection { rooms: Vec::new(), ..chat_core::Connection::new("old", "ip", now).in_room("ops") };
    let row = serde_dynamo::to_item::<_, HashMap<String, AttributeValue>>(&legacy).unwrap();
    assert!(!row.contains_key("rooms"));
    dynamodb.put_item().table_name("ActiveConnections").set_item(Some(row)).send().await.unwrap();
    assert_eq!(store.subscribe(&legacy, "dev", max, &join_of(&legacy, "dev")).await.unwrap(), Subscribed::New);
    assert_eq!(sorted(store.get("old").await.unwrap().unwrap().rooms), ["dev", "ops"]);
}

/// DynamoCursors on moto: cursors only move forward, per reader and room, and an
/// anonymous reader's carry the expiry; the unread counts over DynamoLog are the
/// reference's.
#[tokio::test]
async fn read_cursors_and_unread_counts_on_moto_answer_as_the_reference() {
    use chat_core::memory::{MemoryCursors, MemoryLog};
    use chat_core::ports::{LogCursor, MessageLog, ReadCursors, count_unread};

    let (_moto, dynamodb) = moto_tables().await;
    let cursors = chat_aws::DynamoCursors::new(dynamodb.clone(), "ReadCursors");
    let reference = MemoryCursors::default();
    let id = |n: u32| format!("0192f3a4-0000-7000-8000-{n:012}");
    let steps = [
        ("ada", "ops", id(5), true),
        ("ada", "ops", id(3), false),
        ("ada", "ops", id(5), false),
        ("ada", "ops", id(9), true),
        ("ada", "dev", id(1), true),
        ("connection#c9", "ops", id(2), true),
    ];
    for (reader, room, message_id, moved) in steps {
        let expires_at = reader.starts_with("connection#").then_some(1_900_000_000);
        let answer = cursors.advance(reader, room, &message_id, expires_at).await.unwrap();
        assert_eq!(answer, reference.advance(reader, room, &message_id, expires_at).await.unwrap());
        assert_eq!(answer, moved, "{reader} {room} {message_id}");
    }
    for reader in ["ada", "connection#c9", "nobody"] {
        assert_eq!(cursors.cursors(reader).await.unwrap(), reference.cursors(reader).await.unwrap(), "{reader}");
    }
    assert_eq!(cursors.cursors("ada").await.unwrap()["ops"], id(9));
    let items = scan(&dynamodb, "ReadCursors").await;
    let expiring: Vec<&str> = items.iter().filter(|i| i.contains_key("expires_at")).map(|i| s(i, "reader")).collect();
    assert_eq!(expiring, ["connection#c9"], "only an anonymous reader's cursor expires");

    // 12 lines and 3 joins in ops, lines elsewhere: unread after a cursor, capped.
    let (log, reference_log) = (chat_aws::DynamoLog::new(dynamodb.clone(), "MessageHistory"), MemoryLog::default());
    let base = chrono::SubsecRound::trunc_subsecs(chrono::Utc::now(), 0);
    for i in 0..15 {
        let at = base + chrono::Duration::seconds(i);
        let event = match i % 5 {
            0 => LogEvent::join("c", at).in_room("ops"),
            _ => LogEvent::chat("c", &format!("m{i}"), at).in_room("ops"),
        };
        let elsewhere = LogEvent::chat("c", "elsewhere", at).in_room("dev");
        for event in [event, elsewhere] {
            log.append(&event).await.unwrap();
            reference_log.append(&event).await.unwrap();
        }
    }
    let third = reference_log.events()[4].message_id.clone();
    for (after, cap) in [
        (LogCursor::Time(base - chrono::Duration::seconds(1)), 100),
        (LogCursor::Time(base - chrono::Duration::seconds(1)), 5),
        (LogCursor::MessageId(third), 100),
        (LogCursor::Time(base + chrono::Duration::seconds(20)), 100),
    ] {
        let unread = count_unread(&log, "ops", after.clone(), |_| false, cap, 4).await.unwrap();
        assert_eq!(
            unread,
            count_unread(&reference_log, "ops", after.clone(), |_| false, cap, 4).await.unwrap(),
            "{after:?}"
        );
    }
    let all = count_unread(&log, "ops", LogCursor::Time(base - chrono::Duration::seconds(1)), |_| false, 100, 4)
        .await
        .unwrap();
    assert_eq!((all.count, all.more), (12, false), "chat lines only");
}

/// The local stack on moto: a connection subscribes to a second room, hears its
/// lines (a line sent right after `subscribed` included), stops hearing them
/// after unsubscribing, and its departure leaves no membership behind.
#[tokio::test]
async fn a_connection_hears_a_second_room_through_moto() {
    let moto = Moto::start().await;
    let dir = scratch("dynamodb-mode-channels");
    let stack = Stack::start(&dir.join("unused.db"), &["--dynamodb-endpoint", &moto.url, "--create-tables"]).await;
    let mut lobby = Client::connect(&stack.ws_url).await;
    let mut ops = Client::connect(&format!("{}?room=ops", stack.ws_url)).await;
    lobby.send_json(serde_json::json!({"action": "subscribe", "room": "ops"})).await;
    let subscribed = lobby.until(|f| f["kind"] == "subscribed").await;
    let expected =
        serde_json::json!({"kind": "subscribed", "room": "ops", "count": 2, "rights": "rw", "private": false});
    assert_eq!(subscribed, expected);
    ops.say("right after").await;
    let heard = lobby.chat("right after").await;
    assert_eq!(heard["room"], "ops");
    lobby.say("from the lobby").await;
    assert_eq!(lobby.chat("from the lobby").await["room"], "lobby", "the home room still heard");
    lobby.send_json(serde_json::json!({"action": "rooms"})).await;
    let rooms = lobby.until(|f| f["kind"] == "rooms").await;
    let counted: Vec<(&str, u64)> = rooms["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["room"].as_str().unwrap(), r["count"].as_u64().unwrap()))
        .collect();
    assert_eq!(counted, [("lobby", 1), ("ops", 2)], "the home room first, members counted on Memberships");
    let dynamodb = aws_sdk_dynamodb::Client::new(&moto.sdk_config().await);
    let members = keys_of(&dynamodb, "Memberships", ("room", "connection_id")).await;
    let rooms: Vec<&str> = members.iter().map(|(room, _)| room.as_str()).collect();
    assert_eq!(rooms, ["lobby", "ops", "ops"], "{members:?}");

    lobby.send_json(serde_json::json!({"action": "unsubscribe", "room": "ops"})).await;
    assert_eq!(lobby.until(|f| f["kind"] == "unsubscribed").await["room"], "ops");
    ops.say("not for the lobby").await;
    ops.chat("not for the lobby").await;
    lobby.say("lobby again").await;
    assert_eq!(lobby.until(|f| f["kind"] == "chat").await["text"], "lobby again", "ops is no longer heard");

    lobby.socket.close(None).await.unwrap();
    ops.socket.close(None).await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !keys_of(&dynamodb, "Memberships", ("room", "connection_id")).await.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "every membership ends with its connection");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    stack.stop().await;
}

/// A subscribe racing a departure on the DynamoDB adapter: the departure is the
/// broadcaster's 410 prune, which lists the room's members, deletes the row and
/// ends the memberships the row listed and the one it found. Whatever the interleaving, the subscribe's outcomes are the only
/// possible ones, a membership ends exactly when its join was announced (every
/// leave has its join), and none is left behind.
#[tokio::test]
async fn a_subscribe_racing_a_departure_on_moto_leaves_no_leave_without_its_join() {
    use chat_core::Subscribed;

    let moto = Moto::start().await;
    let settings =
        DynamoSettings { endpoint: Some(moto.url.clone()), tables: TableNames::default(), create_tables: true };
    let sdk = moto.sdk_config().await;
    let (tables, _source) = chat_local::dynamo::open_with(&sdk, &settings).await.unwrap();
    let store = tables.connections.clone();
    let now = chrono::Utc::now();

    // The plain outcomes first: new, repeated, full, departed.
    let alone = chat_core::Connection::new("alone", "ip", now).in_room("home");
    store.put(&alone).await.unwrap();
    assert_eq!(store.subscribe(&alone, "a", 2, &join_of(&alone, "a")).await.unwrap(), Subscribed::New);
    assert_eq!(store.subscribe(&alone, "a", 2, &join_of(&alone, "a")).await.unwrap(), Subscribed::Already);
    assert_eq!(store.subscribe(&alone, "b", 2, &join_of(&alone, "b")).await.unwrap(), Subscribed::Full);
    assert_eq!(store.count("b").await.unwrap(), 0, "a refused subscribe writes no membership");
    let row = store.delete("alone").await.unwrap().unwrap();
    assert_eq!(row.rooms(), ["home", "a"]);
    assert_eq!(store.subscribe(&alone, "c", 2, &join_of(&alone, "c")).await.unwrap(), Subscribed::NotConnected);
    assert_eq!(store.count("c").await.unwrap(), 0, "a departed connection gets no membership");

    let (mut joins, mut leaves) = (0, 0);
    for i in 0..40 {
        let id = format!("racer{i}");
        let connection = chat_core::Connection::new(&id, "ip", now).in_room("home");
        store.put(&connection).await.unwrap();
        let join = join_of(&connection, "busy");
        let (subscribed, ended) = tokio::join!(store.subscribe(&connection, "busy", 100, &join), async {
            let listed = store.list("busy", None, 100).await.unwrap().items.iter().any(|m| m.connection_id == id);
            let mut rooms = store.delete(&id).await.unwrap().expect("the row was there").rooms();
            if listed && !rooms.iter().any(|room| room == "busy") {
                rooms.push("busy".into());
            }
            let mut ended = Vec::new();
            for room in rooms {
                if store.end_membership(&id, &room).await.unwrap().is_some() {
                    ended.push(room);
                }
            }
            ended
        });
        let subscribed = subscribed.unwrap();
        assert!(matches!(subscribed, Subscribed::New | Subscribed::NotConnected), "{id}: {subscribed:?}");
        let joined = subscribed == Subscribed::New;
        let left = ended.iter().any(|room| room == "busy");
        assert_eq!(joined, left, "{id}: joined busy {joined}, its departure left busy {left}");
        joins += usize::from(joined);
        leaves += usize::from(left);
    }
    assert_eq!(store.count("busy").await.unwrap(), 0, "no membership outlives its connection");
    println!("subscribe racing a departure, 40 times: {joins} joined and left, {} refused", 40 - joins);
    assert_eq!(joins, leaves);
}

/// A departure that ends a subscribe's membership before the subscribe logged
/// its join, and is cut short after marking it (DynamoConnections and
/// DynamoLog on moto): the mark keeps the first leave, the membership gives
/// its join back, and whoever ends it next logs that join once, then the first
/// leave. `$connect`'s memberships end with no join; one older than its room
/// counter still gives its join back.
#[tokio::test]
async fn a_membership_ended_before_its_join_is_logged_gives_the_join_back_on_moto() {
    use chat_core::handlers::{Ending, leave_room};
    use chat_core::ports::{ConnectionStore, LogQuery, MessageLog, Subscribed};

    let (_moto, dynamodb) = moto_tables().await;
    let store = chat_aws::DynamoConnections::new(dynamodb.clone(), "ActiveConnections", "Memberships");
    let log = chat_aws::DynamoLog::new(dynamodb.clone(), "MessageHistory");
    let now = chrono::SubsecRound::trunc_subsecs(chrono::Utc::now(), 0);
    let ada = chat_core::model::Identity::verified("Ada", "https://id.example|ada");
    let c1 = chat_core::Connection::new("c1", "203.0.113.7", now).of(Some(&ada));
    store.put(&c1).await.unwrap();
    let leave = |seconds| LogEvent::leave("c1", now + chrono::Duration::seconds(seconds)).in_room("ops").by(Some(&ada));

    // The subscribe writes its membership; a departure marks it before the
    // join is logged, and is cut short there.
    let join = LogEvent::join("c1", now + chrono::Duration::seconds(1)).in_room("ops").by(Some(&ada));
    assert_eq!(store.subscribe(&c1, "ops", 10, &join).await.unwrap(), Subscribed::New);
    let first = leave(2);
    let marked = store.mark_leaving("c1", "ops", &first).await.unwrap().expect("a membership");
    assert_eq!(marked.join(), Some(join.clone()), "the same join, rebuilt from the membership");
    assert_eq!(marked.leaving.as_deref(), Some(&first), "the leave, stored as it was given");
    let again = store.mark_leaving("c1", "ops", &leave(5)).await.unwrap().expect("still there");
    assert_eq!(again.leaving.as_deref(), Some(&first), "the first mark stands");

    // Whoever ends it next, with a leave of its own, logs the join, then the first leave.
    assert_eq!(leave_room(&store, &log, "c1", "ops", leave(6), Ending::Departure).await.unwrap(), Some(true));
    assert!(!log.append(&join).await.unwrap(), "the subscribe's own append, late, is a no-op");
    let said = log.read(&LogQuery { room: "ops".into(), after: None, limit: 10 }).await.unwrap();
    let kinds: Vec<&str> = said.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["join", "leave"], "in id order: one join, then the leave");
    assert_eq!((&said[0], said[1].timestamp), (&join, first.timestamp));
    assert!(store.mark_leaving("c1", "ops", &leave(7)).await.unwrap().is_none(), "removed");
    assert_eq!(leave_room(&store, &log, "c1", "ops", first, Ending::Departure).await.unwrap(), None, "once");

    // Unsubscribing: the join logged already is not logged again; the row loses the room.
    let again = LogEvent::join("c1", now + chrono::Duration::seconds(3)).in_room("ops").by(Some(&ada));
    assert_eq!(store.subscribe(&c1, "ops", 10, &again).await.unwrap(), Subscribed::New);
    assert!(log.append(&again).await.unwrap());
    assert_eq!(leave_room(&store, &log, "c1", "ops", leave(4), Ending::Unsubscribe).await.unwrap(), Some(true));
    let said = log.read(&LogQuery { room: "ops".into(), after: None, limit: 10 }).await.unwrap();
    let kinds: Vec<&str> = said.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["join", "leave", "join", "leave"]);
    let row = ConnectionStore::get(&store, "c1").await.unwrap().expect("the row stays");
    assert!(!row.is_subscribed_to("ops"), "{:?}", row.rooms());

    // $connect's membership keeps no join: its leave comes alone.
    let home = store.end_membership("c1", "lobby").await.unwrap().expect("the put's membership");
    assert_eq!(home.join(), None);

    // A membership without a room counter (older than counters) ends alone, its join given back.
    let late = LogEvent::join("c2", now).in_room("old");
    let member = chat_core::Connection::new("c2", "ip", now).as_member_of("old").with_join(&late);
    let item = serde_dynamo::to_item::<_, HashMap<String, AttributeValue>>(&member).unwrap();
    dynamodb.put_item().table_name("Memberships").set_item(Some(item)).send().await.unwrap();
    let ended = store.end_membership("c2", "old").await.unwrap().expect("ended");
    assert_eq!(ended.join(), Some(late));
}

/// `room`'s member counter as stored (`None` before any membership was written).
async fn counter_of(client: &aws_sdk_dynamodb::Client, room: &str) -> Option<i64> {
    let item = client
        .get_item()
        .table_name("Memberships")
        .key("room", AttributeValue::S(room.into()))
        .key("connection_id", AttributeValue::S(chat_core::model::ROOM_COUNTER_ID.into()))
        .send()
        .await
        .unwrap()
        .item?;
    Some(item[chat_core::model::ROOM_COUNTER_ATTRIBUTE].as_n().unwrap().parse().unwrap())
}

/// Many connections of one room subscribing, unsubscribing, resubscribing and
/// departing at once (a departure racing its own subscribe, and two departures
/// of the same connection racing each other, as `$disconnect` and a 410 prune
/// do) on the DynamoDB adapter: each room's counter ends equal to its
/// memberships, every membership that appeared was counted once and every one
/// that went was taken off once (joins − leaves = counter), no listing or count
/// ever includes the counter, and a membership older than its counter never
/// takes the count below zero. Memberships has a NEW_AND_OLD_IMAGES stream.
#[tokio::test]
async fn room_counters_follow_racing_memberships_on_moto() {
    use chat_core::Subscribed;
    use chat_core::ports::{ConnectionStore, list_all_connections};

    let (_moto, dynamodb) = moto_tables().await;
    let described = dynamodb.describe_table().table_name("Memberships").send().await.unwrap().table.unwrap();
    let stream = described.stream_specification.expect("Memberships has a stream");
    assert_eq!(stream.stream_view_type, Some(aws_sdk_dynamodb::types::StreamViewType::NewAndOldImages));
    let store = chat_aws::DynamoConnections::new(dynamodb.clone(), "ActiveConnections", "Memberships");
    let now = chrono::Utc::now();
    const N: usize = 24;
    let connections: Vec<_> =
        (0..N).map(|i| chat_core::Connection::new(&format!("racer{i:02}="), "ip", now).in_room("lobby")).collect();
    // $connect: the row and a membership in the home room each (counted by the same transaction).
    futures::future::join_all(connections.iter().map(|c| store.put(c))).await.into_iter().for_each(|r| r.unwrap());
    assert_eq!(counter_of(&dynamodb, "lobby").await, Some(N as i64));

    // What each connection does in "busy", all at once; returns (joins, leaves) there.
    let run = |i: usize| {
        let (store, connection) = (&store, &connections[i]);
        async move {
            let id = connection.connection_id.as_str();
            let (mut joins, mut leaves) = (0i64, 0i64);
            let subscribed = store.subscribe(connection, "busy", 10, &join_of(connection, "busy")).await.unwrap();
            joins += i64::from(subscribed == Subscribed::New);
            match i % 4 {
                0 => {
                    // Subscribed twice: the second changes nothing.
                    assert_eq!(
                        store.subscribe(connection, "busy", 10, &join_of(connection, "busy")).await.unwrap(),
                        Subscribed::Already
                    );
                }
                1 => {
                    // Leaves, then comes back.
                    leaves += i64::from(store.unsubscribe(id, "busy").await.unwrap().is_some());
                    assert!(
                        store.unsubscribe(id, "busy").await.unwrap().is_none(),
                        "{id}: a second unsubscribe removes nothing"
                    );
                    joins += i64::from(
                        store.subscribe(connection, "busy", 10, &join_of(connection, "busy")).await.unwrap()
                            == Subscribed::New,
                    );
                }
                _ => {
                    // Departs: the row goes, then two departures race to end each membership.
                    let rooms = match store.delete(id).await.unwrap() {
                        Some(row) => row.rooms(),
                        None => Vec::new(),
                    };
                    for room in rooms {
                        let (a, b) = tokio::join!(store.end_membership(id, &room), store.end_membership(id, &room));
                        let ended = u8::from(a.unwrap().is_some()) + u8::from(b.unwrap().is_some());
                        assert_eq!(ended, 1, "{id} leaves {room} exactly once");
                        leaves += i64::from(room == "busy");
                    }
                }
            }
            (joins, leaves)
        }
    };
    // Listings taken while the race runs never include the counter.
    let watcher = async {
        let mut looks = 0;
        for _ in 0..20 {
            for room in ["busy", "lobby"] {
                let listed = list_all_connections(&store, room).await.unwrap();
                assert!(listed.iter().all(|m| m.connection_id.starts_with("racer")), "{room}: {listed:?}");
                looks += 1;
            }
        }
        looks
    };
    let (outcomes, looks) = tokio::join!(futures::future::join_all((0..N).map(run)), watcher);
    let (joins, leaves) = outcomes.iter().fold((0, 0), |(j, l), (dj, dl)| (j + dj, l + dl));

    for room in ["busy", "lobby"] {
        let members = keys_of(&dynamodb, "Memberships", ("room", "connection_id")).await;
        let stored = members.iter().filter(|(r, _)| r == room).count() as i64;
        assert_eq!(counter_of(&dynamodb, room).await, Some(stored), "{room}: the counter is its memberships");
        assert_eq!(store.count(room).await.unwrap() as i64, stored, "{room}: count leaves the counter out");
        assert_eq!(list_all_connections(&store, room).await.unwrap().len() as i64, stored, "{room}: so does list");
    }
    let busy = counter_of(&dynamodb, "busy").await.unwrap();
    assert_eq!(joins - leaves, busy, "{joins} joins and {leaves} leaves in busy");
    let departed = (0..N).filter(|i| i % 4 >= 2).count() as i64;
    assert_eq!(busy, N as i64 - departed);
    assert_eq!(counter_of(&dynamodb, "lobby").await, Some(N as i64 - departed));

    // Every remaining connection departs: both rooms are vacated, their counters at 0.
    for connection in &connections {
        let id = connection.connection_id.as_str();
        for room in store.delete(id).await.unwrap().map(|row| row.rooms()).unwrap_or_default() {
            assert!(store.end_membership(id, &room).await.unwrap().is_some());
        }
    }
    assert_eq!((counter_of(&dynamodb, "busy").await, counter_of(&dynamodb, "lobby").await), (Some(0), Some(0)));
    assert!(keys_of(&dynamodb, "Memberships", ("room", "connection_id")).await.is_empty());

    // A membership written before counters existed: ending it removes it, and the count stays at 0.
    let legacy = chat_core::Connection::new("legacy=", "ip", now).in_room("busy").as_member_of("busy");
    let item = serde_dynamo::to_item::<_, HashMap<String, AttributeValue>>(&legacy).unwrap();
    dynamodb.put_item().table_name("Memberships").set_item(Some(item)).send().await.unwrap();
    assert!(store.end_membership("legacy=", "busy").await.unwrap().is_some());
    assert!(store.end_membership("legacy=", "busy").await.unwrap().is_none());
    assert_eq!(counter_of(&dynamodb, "busy").await, Some(0), "never below zero");
    println!("{N} racers in one room: {joins} joins, {leaves} leaves, {looks} listings taken during the race");
}
