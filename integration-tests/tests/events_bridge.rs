//! The deployed events path of #26 against moto: a scripted session runs through
//! the very entrypoints the Lambdas call (`$connect`, `sendmessage`,
//! `$disconnect`) on the DynamoDB adapters; both tables' real streams
//! (MessageHistory's, and Memberships' with each room counter's old and new
//! count) are read as the event source mappings read them and handed to
//! `entrypoints::events::on_stream` with the EventBridge sink; a rule on the
//! bus (source `websocket-chat`) sends every event to an SQS queue, which must
//! receive each expected event, once, with its detail.

use crate::common;

use std::collections::HashMap;
use std::time::Duration;

use aws_lambda_events::dynamodb::{Event, EventRecord};
use chat_aws::{
    DynamoBans, DynamoConnections, DynamoLog, DynamoSessions, EventBridgeSink, StartingPosition, StreamReader,
    TableNames,
};
use chat_core::entrypoints::events::on_stream;
use chat_core::entrypoints::websocket::{self, ConnectSettings, RouteSettings};
use chat_local::events::{ConnectionContext, Route, aws_id, now_ms, websocket_event};
use common::{Moto, WAIT};
use serde_json::Value;

const BUS: &str = "chat-bus";
const ROOM: &str = "ops";

/// Every record a table's stream holds, read until no shard gives more.
async fn drain(reader: &mut StreamReader) -> Vec<EventRecord> {
    let mut records = Vec::new();
    let mut idle = 0;
    while idle < 3 {
        let batch = reader.next_batch(1000, None).await.unwrap();
        if batch.records.is_empty() {
            idle += 1;
        } else {
            idle = 0;
            records.extend(batch.records);
        }
    }
    records
}

/// A bus whose rule sends every chat event to a new queue: the queue's URL.
async fn bus_to_queue(sdk: &aws_config::SdkConfig) -> String {
    let (events, sqs) = (aws_sdk_eventbridge::Client::new(sdk), aws_sdk_sqs::Client::new(sdk));
    events.create_event_bus().name(BUS).send().await.unwrap();
    let queue = sqs.create_queue().queue_name("chat-events").send().await.unwrap().queue_url.unwrap();
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(&queue)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap();
    let queue_arn = attributes.attributes.unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn].clone();
    events
        .put_rule()
        .name("chat-to-queue")
        .event_bus_name(BUS)
        .event_pattern(r#"{"source": ["websocket-chat"]}"#)
        .send()
        .await
        .unwrap();
    let target = aws_sdk_eventbridge::types::Target::builder().id("queue").arn(queue_arn).build().unwrap();
    events.put_targets().rule("chat-to-queue").event_bus_name(BUS).targets(target).send().await.unwrap();
    queue
}

/// Messages from `queue` until `count` arrived (or `wait` passed), as the events EventBridge delivered.
async fn receive(sdk: &aws_config::SdkConfig, queue: &str, count: usize, wait: Duration) -> Vec<Value> {
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let deadline = tokio::time::Instant::now() + wait;
    let mut received = Vec::new();
    while received.len() < count && tokio::time::Instant::now() < deadline {
        let output = sqs.receive_message().queue_url(queue).max_number_of_messages(10).send().await.unwrap();
        for message in output.messages() {
            received.push(serde_json::from_str(message.body().unwrap()).unwrap());
            sqs.delete_message()
                .queue_url(queue)
                .receipt_handle(message.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
        }
    }
    received
}

#[tokio::test]
async fn a_session_s_events_reach_a_rule_s_queue_through_eventbridge() {
    let moto = Moto::start().await;
    let sdk = moto.sdk_config().await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
    let tables = TableNames::default();
    chat_aws::provision::create_tables(&dynamodb, &tables).await.unwrap();
    let streams = aws_sdk_dynamodbstreams::Client::new(&sdk);
    let mut log_stream =
        StreamReader::open(&dynamodb, streams.clone(), &tables.messages, StartingPosition::TrimHorizon).await.unwrap();
    let mut counter_stream =
        StreamReader::open(&dynamodb, streams, &tables.memberships, StartingPosition::TrimHorizon).await.unwrap();
    let queue = bus_to_queue(&sdk).await;

    // The session, through the Lambdas' entrypoints and adapters: 3 join, 4 lines, 3 leave.
    let connections = DynamoConnections::new(dynamodb.clone(), &tables.connections, &tables.memberships);
    let sessions = DynamoSessions::new(dynamodb.clone(), &tables.sessions);
    let log = DynamoLog::new(dynamodb.clone(), &tables.messages);
    let bans = DynamoBans::new(dynamodb.clone(), &tables.bans);
    let members: Vec<(ConnectionContext, &str)> = ["ada", "bob", "cy"]
        .into_iter()
        .map(|name| {
            let context = ConnectionContext {
                connection_id: aws_id(),
                connected_at_ms: now_ms(),
                source_ip: "203.0.113.7".into(),
                user_agent: "test".into(),
                api_id: "a1b2c3d4e5".into(),
                stage: "dev".into(),
                domain_name: "a1b2c3d4e5.execute-api.us-east-1.amazonaws.com".into(),
                authorizer: HashMap::new(),
            };
            (context, name)
        })
        .collect();
    for (context, name) in &members {
        let query = vec![("room".to_owned(), ROOM.to_owned()), ("name".to_owned(), name.to_string())];
        let connect = websocket_event(context, Route::Connect { headers: Default::default(), query });
        let response =
            websocket::on_connect(&connect, &ConnectSettings::default(), &connections, &sessions, &log, &bans).await;
        assert_eq!(response.unwrap().status_code, 200, "{name} connects");
    }
    let lines = [(0, "hello"), (1, "hi ada"), (2, "morning"), (0, "bye all")];
    for (speaker, text) in lines {
        let body = serde_json::json!({"action": "sendmessage", "message": text}).to_string();
        let send = websocket_event(&members[speaker].0, Route::Message { route_key: "sendmessage".into(), body });
        websocket::on_send_message(&send, &RouteSettings::default(), &connections, &log).await.unwrap();
    }
    for (context, _) in &members {
        let leave = websocket_event(context, Route::Disconnect { status_code: 1005, reason: "Client closed".into() });
        websocket::on_disconnect(&leave, &connections, &sessions, &log).await.unwrap();
    }

    // The two event source mappings' batches, on the bus.
    let sink = EventBridgeSink::new(&sdk, BUS);
    let log_records = drain(&mut log_stream).await;
    let counter_records = drain(&mut counter_stream).await;
    // moto writes an UpdateItem that creates an item as two INSERTs, the keys
    // alone and then the count (DynamoDB: one); the key-only one is no change.
    let counters = counter_records
        .iter()
        .filter(|r| r.change.keys.get("connection_id") == Some(&serde_dynamo::AttributeValue::S("#members".into())))
        .filter(|r| r.change.new_image.get("members").is_some())
        .count();
    assert_eq!(counters, 6, "one counter change per join and per leave");
    for records in [log_records, counter_records] {
        let mut batch = Event::default();
        batch.records = records;
        let response = on_stream(&batch, &sink).await;
        assert!(response.batch_item_failures.is_empty(), "{:?}", response.batch_item_failures);
    }

    let expected = 3 + lines.len() + 3 + 2;
    let received = receive(&sdk, &queue, expected, WAIT).await;
    let of = |kind: &str| received.iter().filter(|e| e["detail-type"] == kind).collect::<Vec<_>>();
    assert!(received.iter().all(|e| e["source"] == "websocket-chat"), "{received:#?}");
    assert!(received.iter().all(|e| e["detail"]["room"] == ROOM), "{received:#?}");

    let ids: Vec<&str> = members.iter().map(|(c, _)| c.connection_id.as_str()).collect();
    let connection_ids = |kind: &str| {
        let mut seen: Vec<String> =
            of(kind).iter().map(|e| e["detail"]["connectionId"].as_str().unwrap().to_owned()).collect();
        seen.sort();
        seen
    };
    let mut sorted_ids: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
    sorted_ids.sort();
    assert_eq!(connection_ids("chat.member.joined"), sorted_ids, "each member joined once");
    assert_eq!(connection_ids("chat.member.left"), sorted_ids, "and left once");
    for joined in of("chat.member.joined") {
        let name = members.iter().find(|(c, _)| c.connection_id == joined["detail"]["connectionId"]).unwrap().1;
        assert_eq!(joined["detail"]["user"], name);
        assert!(joined["detail"].get("message").is_none(), "a join has no message: {joined}");
    }

    let mut created: Vec<(String, String, String)> = of("chat.message.created")
        .iter()
        .map(|e| {
            let detail = &e["detail"];
            assert!(detail["messageId"].as_str().is_some_and(|id| id.len() == 36), "{e}");
            let text = |name: &str| detail[name].as_str().unwrap().to_owned();
            (text("message"), text("connectionId"), text("user"))
        })
        .collect();
    created.sort();
    let mut said: Vec<(String, String, String)> = lines
        .iter()
        .map(|(speaker, text)| (text.to_string(), ids[*speaker].to_owned(), members[*speaker].1.to_owned()))
        .collect();
    said.sort();
    assert_eq!(created, said, "every line once, with its speaker");

    let occupied = of("chat.room.occupied");
    let vacated = of("chat.room.vacated");
    assert_eq!(occupied.len(), 1, "{received:#?}");
    assert_eq!(vacated.len(), 1, "{received:#?}");
    assert_eq!(occupied[0]["detail"], serde_json::json!({"room": ROOM, "members": 1}));
    assert_eq!(vacated[0]["detail"], serde_json::json!({"room": ROOM, "members": 0}));
    assert_eq!(received.len(), expected, "nothing else: {received:#?}");
    let time = chrono::DateTime::parse_from_rfc3339(vacated[0]["time"].as_str().unwrap()).unwrap();
    assert!((chrono::Utc::now() - time.to_utc()).num_seconds().abs() < 120, "the change's own time: {time}");

    let late = receive(&sdk, &queue, 1, Duration::from_secs(1)).await;
    assert!(late.is_empty(), "no event beyond the expected ones: {late:#?}");
    let mut kinds: Vec<&str> = received.iter().map(|e| e["detail-type"].as_str().unwrap()).collect();
    kinds.sort();
    kinds.dedup();
    println!("events through moto's EventBridge rule to SQS: {} of kinds {kinds:?}", received.len());
}
