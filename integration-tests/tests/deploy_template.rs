//! `infra/template.yaml` against the code it deploys, offline.
//!
//! Least privilege is checked from both ends:
//! 1. Which port methods each function calls is *recorded*: the same `chat_core`
//!    entrypoint its binary calls runs against recording in-memory ports.
//! 2. Which SDK operations each of those methods makes is *read from the adapter
//!    sources* in `functions/aws/src` (parsed with `syn`, following calls into the
//!    crate's own helpers); an operation missing from [`SDK_ACTIONS`] fails loudly.
//! 3. The role's statements in the template must then equal exactly those
//!    actions on the resources the function's environment names, plus what the
//!    runtime needs (its log group; the stream and failure queue of its events).
//!
//! Adding an SDK call without its permission, or granting one nobody calls, fails.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use aws_lambda_events::dynamodb::Event;
use chat_core::broadcaster::{Broadcaster, FanoutConfig};
use chat_core::entrypoints::websocket;
use chat_core::entrypoints::websocket::{ConnectSettings, RouteSettings};
use chat_core::memory::{
    MemoryArchive, MemoryBans, MemoryConnections, MemoryCursors, MemoryFanoutQueue, MemoryLog, MemorySessions,
    RecordingPoster,
};
use chat_core::outbound::{EventSink, OutboundEvent, SinkError};
use chat_core::ports::{
    Archive, Bans, Bytes, ConnectionStore, LogQuery, MessageLog, Page, PostError, ReadCursors, SessionLog,
    SocketPoster, StoreError, Subscribed, SystemClock,
};
use chat_core::room::RoomLimits;
use chat_core::split::{FanoutJob, FanoutQueue, Split};
use chat_core::{Ban, Connection, LogEvent, Session, SessionEnd};
use chrono::{DateTime, Utc};
use serde_yaml::Value;
use syn::visit::Visit;

// ------------------------------------------------------------ the functions

/// A deployed function: its binary, the entrypoint that binary calls, and a run
/// of that entrypoint through its paths against recording ports.
struct Function {
    binary: &'static str,
    entrypoint: &'static str,
}

const FUNCTIONS: &[Function] = &[
    Function { binary: "connect", entrypoint: "websocket::on_connect" },
    Function { binary: "disconnect", entrypoint: "websocket::on_disconnect" },
    Function { binary: "send_message", entrypoint: "websocket::on_send_message" },
    Function { binary: "default", entrypoint: "websocket::on_default" },
    Function { binary: "broadcaster", entrypoint: "broadcast_with_metrics" },
    Function { binary: "fanout", entrypoint: "fanout::on_sqs" },
    Function { binary: "reaper", entrypoint: "expiry::on_expired_connections" },
    Function { binary: "authorizer", entrypoint: "authorizer::on_authorize" },
    Function { binary: "publish", entrypoint: "publish::on_publish" },
    Function { binary: "events", entrypoint: "events::on_stream" },
];

/// `(port trait, method)` pairs a run called.
type Calls = BTreeSet<(&'static str, &'static str)>;

#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Calls>>);

impl Seen {
    fn note(&self, port: &'static str, method: &'static str) {
        self.0.lock().unwrap().insert((port, method));
    }
    fn take(&self) -> Calls {
        std::mem::take(&mut self.0.lock().unwrap())
    }
}

/// An in-memory port that notes every call before delegating.
struct Recorded<T> {
    inner: T,
    seen: Seen,
}

fn recorded<T: Default>(seen: &Seen) -> Recorded<T> {
    Recorded { inner: T::default(), seen: seen.clone() }
}

#[async_trait]
impl ConnectionStore for Recorded<MemoryConnections> {
    async fn put(&self, connection: &Connection) -> Result<(), StoreError> {
        self.seen.note("ConnectionStore", "put");
        self.inner.put(connection).await
    }
    async fn delete(&self, connection_id: &str) -> Result<Option<Connection>, StoreError> {
        self.seen.note("ConnectionStore", "delete");
        self.inner.delete(connection_id).await
    }
    async fn subscribe(
        &self,
        connection: &Connection,
        room: &str,
        max_rooms: usize,
        join: &LogEvent,
    ) -> Result<Subscribed, StoreError> {
        self.seen.note("ConnectionStore", "subscribe");
        self.inner.subscribe(connection, room, max_rooms, join).await
    }
    async fn mark_leaving(
        &self,
        connection_id: &str,
        room: &str,
        leave: &LogEvent,
    ) -> Result<Option<Connection>, StoreError> {
        self.seen.note("ConnectionStore", "mark_leaving");
        self.inner.mark_leaving(connection_id, room, leave).await
    }
    async fn unsubscribe(&self, connection_id: &str, room: &str) -> Result<Option<Connection>, StoreError> {
        self.seen.note("ConnectionStore", "unsubscribe");
        self.inner.unsubscribe(connection_id, room).await
    }
    async fn end_membership(&self, connection_id: &str, room: &str) -> Result<Option<Connection>, StoreError> {
        self.seen.note("ConnectionStore", "end_membership");
        self.inner.end_membership(connection_id, room).await
    }
    async fn get(&self, connection_id: &str) -> Result<Option<Connection>, StoreError> {
        self.seen.note("ConnectionStore", "get");
        ConnectionStore::get(&self.inner, connection_id).await
    }
    async fn list(&self, room: &str, after: Option<String>, limit: usize) -> Result<Page<Connection>, StoreError> {
        self.seen.note("ConnectionStore", "list");
        self.inner.list(room, after, limit).await
    }
    async fn count(&self, room: &str) -> Result<usize, StoreError> {
        self.seen.note("ConnectionStore", "count");
        self.inner.count(room).await
    }
}

#[async_trait]
impl ReadCursors for Recorded<MemoryCursors> {
    async fn cursors(&self, reader: &str) -> Result<HashMap<String, String>, StoreError> {
        self.seen.note("ReadCursors", "cursors");
        self.inner.cursors(reader).await
    }
    async fn advance(
        &self,
        reader: &str,
        room: &str,
        message_id: &str,
        expires_at: Option<i64>,
    ) -> Result<bool, StoreError> {
        self.seen.note("ReadCursors", "advance");
        self.inner.advance(reader, room, message_id, expires_at).await
    }
}

#[async_trait]
impl SessionLog for Recorded<MemorySessions> {
    async fn open(&self, session: &Session) -> Result<(), StoreError> {
        self.seen.note("SessionLog", "open");
        self.inner.open(session).await
    }
    async fn close(&self, end: &SessionEnd) -> Result<Option<Session>, StoreError> {
        self.seen.note("SessionLog", "close");
        self.inner.close(end).await
    }
}

#[async_trait]
impl MessageLog for Recorded<MemoryLog> {
    async fn append(&self, event: &LogEvent) -> Result<bool, StoreError> {
        self.seen.note("MessageLog", "append");
        self.inner.append(event).await
    }
    async fn append_once(&self, event: &LogEvent, client_message_id: &str) -> Result<String, StoreError> {
        self.seen.note("MessageLog", "append_once");
        self.inner.append_once(event, client_message_id).await
    }
    async fn read(&self, query: &LogQuery) -> Result<Vec<LogEvent>, StoreError> {
        self.seen.note("MessageLog", "read");
        self.inner.read(query).await
    }
    async fn get(&self, message_id: &str) -> Result<Option<LogEvent>, StoreError> {
        self.seen.note("MessageLog", "get");
        self.inner.get(message_id).await
    }
    async fn deleted(&self, room: &str, id: &str) -> Result<bool, StoreError> {
        self.seen.note("MessageLog", "deleted");
        self.inner.deleted(room, id).await
    }
    async fn toggle_reaction(
        &self,
        reaction: &LogEvent,
        client_message_id: Option<&str>,
    ) -> Result<LogEvent, StoreError> {
        self.seen.note("MessageLog", "toggle_reaction");
        self.inner.toggle_reaction(reaction, client_message_id).await
    }
}

#[async_trait]
impl Bans for Recorded<MemoryBans> {
    async fn ban(&self, ban: &Ban) -> Result<(), StoreError> {
        self.seen.note("Bans", "ban");
        self.inner.ban(ban).await
    }
    async fn unban(&self, room: &str, user: &str) -> Result<bool, StoreError> {
        self.seen.note("Bans", "unban");
        self.inner.unban(room, user).await
    }
    async fn active(&self, room: &str, user: &str, now: DateTime<Utc>) -> Result<Option<Ban>, StoreError> {
        self.seen.note("Bans", "active");
        self.inner.active(room, user, now).await
    }
}

#[async_trait]
impl SocketPoster for Recorded<RecordingPoster> {
    async fn post(&self, connection_id: &str, frame: &Bytes) -> Result<(), PostError> {
        self.seen.note("SocketPoster", "post");
        self.inner.post(connection_id, frame).await
    }
    async fn close(&self, connection_id: &str) -> Result<(), PostError> {
        self.seen.note("SocketPoster", "close");
        self.inner.close(connection_id).await
    }
}

#[async_trait]
impl FanoutQueue for Recorded<MemoryFanoutQueue> {
    async fn enqueue(&self, jobs: &[FanoutJob]) -> Result<(), StoreError> {
        self.seen.note("FanoutQueue", "enqueue");
        self.inner.enqueue(jobs).await
    }
}

#[async_trait]
impl Archive for Recorded<MemoryArchive> {
    async fn put(&self, key: &str, body: Vec<u8>) -> Result<(), StoreError> {
        self.seen.note("Archive", "put");
        self.inner.put(key, body).await
    }
}

fn fixture(name: &str) -> serde_json::Value {
    let path = repo().join("functions/core/tests/fixtures").join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn ws_event(name: &str, body: Option<&str>) -> ApiGatewayWebsocketProxyRequest {
    let mut event: ApiGatewayWebsocketProxyRequest = serde_json::from_value(fixture(name)).unwrap();
    if let Some(body) = body {
        event.body = Some(body.to_owned());
    }
    event
}

/// Runs `function`'s entrypoint through every path it has (success, refusals,
/// history, 410 pruning, archive) and returns the port methods it called.
/// `id` (connected) subscribes to `room` straight in the store, unrecorded:
/// ending a subscribe's membership reads whether its join is logged.
async fn subscribed(connections: &MemoryConnections, id: &str, room: &str) {
    let row = connections.get(id).expect("connected");
    let join = LogEvent::join(id, row.connected_at).in_room(room);
    assert_eq!(connections.subscribe(&row, room, 100, &join).await.unwrap(), Subscribed::New);
}

async fn port_calls(function: &str, archive: bool) -> Calls {
    let seen = Seen::default();
    let connections = recorded::<MemoryConnections>(&seen);
    let sessions = recorded::<MemorySessions>(&seen);
    let log = recorded::<MemoryLog>(&seen);
    let cursors = recorded::<MemoryCursors>(&seen);
    let poster = recorded::<RecordingPoster>(&seen);
    let bans = recorded::<MemoryBans>(&seen);
    let (connect, message) = (ws_event("connect.json", None), |body: &str| ws_event("message.json", Some(body)));
    match function {
        "connect" => {
            websocket::on_connect(&connect, &ConnectSettings::default(), &connections, &sessions, &log, &bans)
                .await
                .unwrap();
            // An account (the authorizer's context): its bans are read.
            let mut verified = connect.clone();
            verified.request_context.connection_id = Some("verified".into());
            verified.request_context.authorizer.fields =
                [("principalId", "iss|ann"), ("userId", "iss|ann"), ("rooms", "team")]
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), serde_json::Value::from(v)))
                    .collect();
            websocket::on_connect(&verified, &ConnectSettings::default(), &connections, &sessions, &log, &bans)
                .await
                .unwrap();
        }
        "disconnect" => {
            websocket::on_connect(&connect, &ConnectSettings::default(), &connections, &sessions, &log, &bans)
                .await
                .unwrap();
            subscribed(&connections.inner, "CXzQ2cJjoAMCJ6g=", "ops").await;
            seen.take();
            websocket::on_disconnect(&ws_event("disconnect.json", None), &connections, &sessions, &log).await.unwrap();
        }
        "send_message" => {
            websocket::on_connect(&connect, &ConnectSettings::default(), &connections, &sessions, &log, &bans)
                .await
                .unwrap();
            seen.take();
            let acked =
                r#"{"action":"sendmessage","message":"hi","clientMessageId":"0192f3a4-5b6c-7d8e-9f01-23456789abcd"}"#;
            for body in
                [r#"{"action":"sendmessage","message":"hi"}"#, r#"{"action":"sendmessage","message":"ping"}"#, acked]
            {
                websocket::on_send_message(&message(body), &RouteSettings::default(), &connections, &log)
                    .await
                    .unwrap();
            }
            websocket::on_send_message(
                &message(r#"{"action":"sendmessage"}"#),
                &RouteSettings::default(),
                &connections,
                &log,
            )
            .await
            .ok();
            // A reply quotes its parent: the parent read, its tombstone, its edits.
            let parent = log.inner.events().last().unwrap().message_id.clone();
            let reply = format!(r#"{{"action":"sendmessage","message":"re","replyTo":"{parent}"}}"#);
            websocket::on_send_message(&message(&reply), &RouteSettings::default(), &connections, &log).await.unwrap();
        }
        "default" => {
            websocket::on_connect(&connect, &ConnectSettings::default(), &connections, &sessions, &log, &bans)
                .await
                .unwrap();
            let hi = message(r#"{"action":"sendmessage","message":"hi"}"#);
            websocket::on_send_message(&hi, &RouteSettings::default(), &connections, &log).await.unwrap();
            seen.take();
            let line = log.inner.events().last().unwrap().message_id.clone();
            // Members to kick and ban: one hearing only the lobby (closed when kicked).
            let at = chat_core::time::parse_iso("2026-11-24T10:00:00Z").unwrap();
            for id in ["kicked", "banned"] {
                connections.inner.put(&Connection::new(id, "203.0.113.7", at)).await.unwrap();
            }
            let read_to = |id: &str| format!(r#"{{"action":"read","room":"lobby","id":"{id}"}}"#);
            // Two rooms at most: the second subscribe fills the connection, the third is refused.
            let settings = RouteSettings { limits: RoomLimits { max_rooms: 2 }, ..RouteSettings::default() };
            for body in [
                r#"{"action":"history","limit":5}"#,
                r#"{"action":"who"}"#,
                // Posted to the room's other members, never stored.
                r#"{"action":"typing"}"#,
                r#"{"action":"subscribe","room":"ops","since":"2026-11-24T10:00:00Z"}"#,
                r#"{"action":"subscribe","room":"ops"}"#,
                r#"{"action":"subscribe","room":"dev"}"#,
                r#"{"action":"rooms"}"#,
                &read_to(&line),
                // Behind the cursor: answered with where the cursor is.
                &read_to("00000000-0000-7000-8000-000000000000"),
                r#"{"action":"unsubscribe","room":"ops"}"#,
                &format!(r#"{{"action":"edit","id":"{line}","message":"hi!"}}"#),
                &format!(r#"{{"action":"react","id":"{line}","emoji":"👍"}}"#),
                &format!(r#"{{"action":"reply","to":"{line}","message":"re"}}"#),
                r#"{"action":"history","fold":true}"#,
                r#"{"action":"dance"}"#,
                "not json",
            ] {
                websocket::on_default(&message(body), &settings, &connections, &cursors, &log, &poster, &bans)
                    .await
                    .unwrap();
            }
            // Moderation, with the moderate right.
            let moderator =
                RouteSettings { default_rights: chat_core::rights::Rights::parse("*=rwm").unwrap(), ..settings };
            for body in [
                &format!(r#"{{"action":"delete","id":"{line}"}}"#),
                r#"{"action":"kick","room":"lobby","user":"kicked"}"#,
                r#"{"action":"ban","room":"lobby","user":"banned","seconds":60}"#,
                r#"{"action":"unban","room":"lobby","user":"banned"}"#,
            ] {
                websocket::on_default(&message(body), &moderator, &connections, &cursors, &log, &poster, &bans)
                    .await
                    .unwrap();
            }
        }
        "broadcaster" => {
            let at = chat_core::time::parse_iso("2026-11-24T10:00:00Z").unwrap();
            for id in ["alive", "gone"] {
                let connection = Connection::new(id, "203.0.113.7", at);
                connections.put(&connection).await.unwrap();
                sessions.open(&Session::opened(&connection)).await.unwrap();
            }
            subscribed(&connections.inner, "gone", "ops").await;
            poster.inner.mark_gone("gone");
            seen.take();
            let queue = Arc::new(recorded::<MemoryFanoutQueue>(&seen));
            let broadcaster = Broadcaster {
                connections: Arc::new(connections),
                sessions: Arc::new(sessions),
                log: Arc::new(log),
                poster: Arc::new(poster),
                archive: archive.then(|| Arc::new(recorded::<MemoryArchive>(&seen)) as Arc<dyn Archive>),
                clock: Arc::new(SystemClock),
                config: FanoutConfig { split: Some(Split::new(queue.clone())), ..FanoutConfig::default() },
                occupancy: Default::default(),
            };
            let event: Event = serde_json::from_value(fixture("stream-insert.json")).unwrap();
            // The binary's own wrapper (EMF counting around stream::broadcast_records), minus the printing.
            let counts = chat_lambdas::emf::PostCounts::default();
            let (response, _) = chat_lambdas::measured_broadcast(&event, &broadcaster, &counts).await;
            assert!(response.batch_item_failures.is_empty(), "the broadcast itself must succeed");
            // A room above the threshold is handed to the fan-out workers.
            let split = Split { above: 0, ..Split::new(queue.clone()) };
            let splitting =
                Broadcaster { config: FanoutConfig { split: Some(split), ..FanoutConfig::default() }, ..broadcaster };
            let (response, _) = chat_lambdas::measured_broadcast(&event, &splitting, &counts).await;
            assert!(response.batch_item_failures.is_empty());
            assert_eq!(queue.inner.take().len(), 1, "one job");
        }
        "fanout" => {
            // A job of three members: one gets it, one is gone (pruned), one stays throttled (re-enqueued).
            let at = chat_core::time::parse_iso("2026-11-24T10:00:00Z").unwrap();
            let mut members = Vec::new();
            for id in ["alive", "gone", "throttled"] {
                let connection = Connection::new(id, "203.0.113.7", at);
                connections.put(&connection).await.unwrap();
                sessions.open(&Session::opened(&connection)).await.unwrap();
                members.push(connection.as_member_of("lobby"));
            }
            subscribed(&connections.inner, "gone", "ops").await;
            poster.inner.mark_gone("gone");
            poster.inner.fail_next("throttled", std::iter::repeat_n(PostError::Throttled, 5));
            seen.take();
            let queue = Arc::new(recorded::<MemoryFanoutQueue>(&seen));
            let job = FanoutJob {
                room: "lobby".into(),
                message_id: "m".into(),
                frame: Bytes::from_static(b"{}"),
                members,
                attempt: 0,
            };
            let mut message = aws_lambda_events::sqs::SqsMessage::default();
            (message.message_id, message.body) = (Some("1".into()), Some(job.to_body()));
            let mut jobs = aws_lambda_events::sqs::SqsEvent::default();
            jobs.records.push(message);
            let worker = Broadcaster {
                connections: Arc::new(connections),
                sessions: Arc::new(sessions),
                log: Arc::new(log),
                poster: Arc::new(poster),
                archive: None,
                clock: Arc::new(SystemClock),
                occupancy: Default::default(),
                config: chat_core::split::worker_config(FanoutConfig {
                    split: Some(Split::new(queue.clone())),
                    ..FanoutConfig::default()
                }),
            };
            let response = chat_core::entrypoints::fanout::on_sqs(&jobs, &worker).await;
            assert!(response.batch_item_failures.is_empty());
            assert_eq!(queue.inner.take().len(), 1, "the throttled member, re-enqueued");
        }
        "reaper" => {
            websocket::on_connect(&connect, &ConnectSettings::default(), &connections, &sessions, &log, &bans)
                .await
                .unwrap();
            subscribed(&connections.inner, "CXzQ2cJjoAMCJ6g=", "ops").await;
            seen.take();
            let row =
                serde_dynamo::to_item::<_, serde_dynamo::Item>(connections.inner.get("CXzQ2cJjoAMCJ6g=").unwrap());
            let removal = serde_json::json!({"Records": [{
                "eventID": "1", "eventName": "REMOVE", "eventSource": "aws:dynamodb", "awsRegion": "us-east-1",
                "eventSourceARN": "arn:aws:dynamodb:us-east-1:123456789012:table/ActiveConnections/stream/2026",
                "userIdentity": {"type": "Service", "principalId": "dynamodb.amazonaws.com"},
                "dynamodb": {"OldImage": row.unwrap(), "SequenceNumber": "1", "SizeBytes": 90}
            }]});
            let removal: Event = serde_json::from_value(removal).unwrap();
            let response = chat_core::entrypoints::expiry::on_expired_connections(
                &removal,
                &connections,
                &sessions,
                &log,
                chrono::Utc::now(),
            )
            .await;
            assert!(response.batch_item_failures.is_empty());
        }
        "authorizer" => {
            // Pure verification: it calls no port (and so needs no grant but its logs).
            let mut request = aws_lambda_events::apigw::ApiGatewayCustomAuthorizerRequestTypeRequest::default();
            request.method_arn = Some("arn:aws:execute-api:us-east-1:123456789012:a1b2c3d4e5/dev/$connect".into());
            let secret = chat_core::auth::SharedSecret::new(b"a-test-secret-that-is-32-bytes!!");
            let config = chat_core::auth::VerifierConfig::with_shared_secret(secret);
            let verifier = chat_core::auth::Verifier::new(config, Arc::new(chat_core::memory::MemoryJwks::default()));
            chat_core::entrypoints::authorizer::on_authorize(&request, &verifier, 0).await;
        }
        "publish" => {
            // A line without a key (append), then one with a key twice (append_once; the retry).
            for (body, key) in [
                (r#"{"message":"hi"}"#, None),
                (r#"{"message":"once"}"#, Some("k")),
                (r#"{"message":"once"}"#, Some("k")),
            ] {
                let event = publish_event(body, key);
                let response = chat_core::entrypoints::publish::on_publish(&event, &log).await;
                assert!(response.status_code < 300, "{:?}", response.body);
            }
        }
        "events" => {
            // A line from the MessageHistory stream and a room counter's 0 -> 1 from Memberships'.
            let mut event: Event = serde_json::from_value(fixture("stream-insert.json")).unwrap();
            let counter = serde_json::json!({
                "eventID": "2", "eventName": "INSERT", "eventSource": "aws:dynamodb", "awsRegion": "us-east-1",
                "eventSourceARN": "arn:aws:dynamodb:us-east-1:123456789012:table/Memberships/stream/2026",
                "dynamodb": {
                    "Keys": {"room": {"S": "lobby"}, "connection_id": {"S": "#members"}},
                    "NewImage": {"room": {"S": "lobby"}, "connection_id": {"S": "#members"}, "members": {"N": "1"}},
                    "SequenceNumber": "2", "SizeBytes": 60, "StreamViewType": "NEW_AND_OLD_IMAGES"
                }
            });
            event
                .records
                .extend(serde_json::from_value::<Event>(serde_json::json!({"Records": [counter]})).unwrap().records);
            let sink = recorded::<MemorySink>(&seen);
            let response = chat_core::entrypoints::events::on_stream(&event, &sink).await;
            assert!(response.batch_item_failures.is_empty());
            let kinds: Vec<&str> = sink.inner.0.lock().unwrap().iter().map(|e| e.detail_type.as_str()).collect();
            assert_eq!(kinds, ["chat.message.created", "chat.room.occupied"], "both streams were read");
        }
        other => panic!("no scenario for {other}"),
    }
    seen.take()
}

/// A publish API call as API Gateway delivers it (HTTP API, payload 2.0, IAM-authorized).
fn publish_event(body: &str, key: Option<&str>) -> aws_lambda_events::apigw::ApiGatewayV2httpRequest {
    let mut headers = serde_json::json!({"content-type": "application/json"});
    if let Some(key) = key {
        headers["idempotency-key"] = key.into();
    }
    serde_json::from_value(serde_json::json!({
        "version": "2.0", "routeKey": "POST /rooms/{room}/messages", "rawPath": "/rooms/ops/messages",
        "headers": headers, "pathParameters": {"room": "ops"},
        "requestContext": {"http": {"method": "POST", "path": "/rooms/ops/messages"}, "timeEpoch": 1795515332000_i64,
            "authorizer": {"iam": {"userArn": "arn:aws:iam::123456789012:user/ci"}}},
        "body": body, "isBase64Encoded": false
    }))
    .unwrap()
}

/// Events out: kept in memory.
#[derive(Default)]
struct MemorySink(Mutex<Vec<OutboundEvent>>);

#[async_trait]
impl EventSink for Recorded<MemorySink> {
    async fn put(&self, events: &[OutboundEvent]) -> Result<(), SinkError> {
        self.seen.note("EventSink", "put");
        self.inner.0.lock().unwrap().extend_from_slice(events);
        Ok(())
    }
}

// ------------------------------------------------------ SDK calls per adapter

/// Every SDK operation the adapters may call, and the IAM action it needs.
/// The @connections operations also carry the HTTP method in their resource.
const SDK_ACTIONS: &[(&str, &str)] = &[
    ("put_item", "dynamodb:PutItem"),
    ("get_item", "dynamodb:GetItem"),
    ("update_item", "dynamodb:UpdateItem"),
    ("delete_item", "dynamodb:DeleteItem"),
    ("scan", "dynamodb:Scan"),
    ("query", "dynamodb:Query"),
    ("batch_get_item", "dynamodb:BatchGetItem"),
    ("batch_write_item", "dynamodb:BatchWriteItem"),
    // A transaction needs the action of each kind of item it writes, named by the item's builder.
    ("transact_write_items", ""),
    ("Put::builder", "dynamodb:PutItem"),
    ("Update::builder", "dynamodb:UpdateItem"),
    ("Delete::builder", "dynamodb:DeleteItem"),
    ("ConditionCheck::builder", "dynamodb:ConditionCheckItem"),
    ("post_to_connection", "execute-api:ManageConnections POST"),
    ("get_connection", "execute-api:ManageConnections GET"),
    ("delete_connection", "execute-api:ManageConnections DELETE"),
    ("put_object", "s3:PutObject"),
    ("get_object", "s3:GetObject"),
    ("get_secret_value", "secretsmanager:GetSecretValue"),
    ("put_events", "events:PutEvents"),
    // SendMessageBatch is authorized as SendMessage.
    ("send_message_batch", "sqs:SendMessage"),
];

/// What a binary reads through the SDK once per cold start, outside any port:
/// `(binary, environment variable naming the resource, chat-aws function)`.
const COLD_START_READS: &[(&str, &str, &str)] = &[("authorizer", "JWT_SECRET_ARN", "secret_string")];

/// The environment variable each adapter's resource comes from (see chat-lambdas'
/// lib.rs); a DynamoDB adapter's tables are per method, in [`TABLE_ACCESS`].
const ADAPTER_ENV: &[(&str, &str)] = &[
    ("DynamoConnections", "CONNECTIONS_TABLE MEMBERSHIPS_TABLE"),
    ("DynamoCursors", "READ_CURSORS_TABLE"),
    ("DynamoSessions", "SESSIONS_TABLE"),
    ("DynamoLog", "MESSAGES_TABLE"),
    ("DynamoBans", "BANS_TABLE"),
    ("ApiGatewayPoster", "CONNECTIONS_ENDPOINT"),
    ("S3Archive", "ARCHIVE_BUCKET"),
    ("EventBridgeSink", "EVENT_BUS_NAME"),
    ("SqsFanoutQueue", "FANOUT_QUEUE_URL"),
];

/// `(table variable, IAM action)` pairs of one port method.
type Tables = &'static [(&'static str, &'static str)];

/// Where each DynamoDB port method's requests go: `(port, method, [(table, action)])`,
/// the table as the environment variable naming it, with `/index/NAME` when a
/// Query reads an index. The adapter scan must find exactly these actions in the
/// method (so a new SDK call fails until declared here); which table each goes
/// to is declared, as one adapter reaches two tables (DynamoConnections: the
/// rows and the memberships).
const TABLE_ACCESS: &[(&str, &str, Tables)] = &[
    // Memberships' UpdateItem: the room counter, in a transaction with each membership write.
    (
        "ConnectionStore",
        "put",
        &[
            ("CONNECTIONS_TABLE", "dynamodb:PutItem"),
            ("MEMBERSHIPS_TABLE", "dynamodb:PutItem"),
            ("MEMBERSHIPS_TABLE", "dynamodb:UpdateItem"),
        ],
    ),
    ("ConnectionStore", "get", &[("CONNECTIONS_TABLE", "dynamodb:GetItem")]),
    ("ConnectionStore", "delete", &[("CONNECTIONS_TABLE", "dynamodb:DeleteItem")]),
    (
        "ConnectionStore",
        "subscribe",
        &[
            ("MEMBERSHIPS_TABLE", "dynamodb:PutItem"),
            ("MEMBERSHIPS_TABLE", "dynamodb:UpdateItem"),
            ("CONNECTIONS_TABLE", "dynamodb:UpdateItem"),
            ("CONNECTIONS_TABLE", "dynamodb:GetItem"),
        ],
    ),
    (
        "ConnectionStore",
        "unsubscribe",
        &[
            ("MEMBERSHIPS_TABLE", "dynamodb:GetItem"),
            ("MEMBERSHIPS_TABLE", "dynamodb:DeleteItem"),
            ("MEMBERSHIPS_TABLE", "dynamodb:UpdateItem"),
            ("CONNECTIONS_TABLE", "dynamodb:UpdateItem"),
        ],
    ),
    (
        "ConnectionStore",
        "end_membership",
        &[
            ("MEMBERSHIPS_TABLE", "dynamodb:GetItem"),
            ("MEMBERSHIPS_TABLE", "dynamodb:DeleteItem"),
            ("MEMBERSHIPS_TABLE", "dynamodb:UpdateItem"),
        ],
    ),
    ("ConnectionStore", "mark_leaving", &[("MEMBERSHIPS_TABLE", "dynamodb:UpdateItem")]),
    ("ConnectionStore", "list", &[("MEMBERSHIPS_TABLE", "dynamodb:Query")]),
    ("ConnectionStore", "count", &[("MEMBERSHIPS_TABLE", "dynamodb:Query")]),
    ("ReadCursors", "cursors", &[("READ_CURSORS_TABLE", "dynamodb:Query")]),
    ("ReadCursors", "advance", &[("READ_CURSORS_TABLE", "dynamodb:UpdateItem")]),
    ("SessionLog", "open", &[("SESSIONS_TABLE", "dynamodb:PutItem")]),
    ("SessionLog", "close", &[("SESSIONS_TABLE", "dynamodb:UpdateItem")]),
    ("MessageLog", "append", &[("MESSAGES_TABLE", "dynamodb:PutItem")]),
    ("MessageLog", "append_once", &[("MESSAGES_TABLE", "dynamodb:PutItem"), ("MESSAGES_TABLE", "dynamodb:GetItem")]),
    ("MessageLog", "read", &[("MESSAGES_TABLE/index/room-index", "dynamodb:Query")]),
    ("MessageLog", "get", &[("MESSAGES_TABLE", "dynamodb:GetItem")]),
    ("MessageLog", "deleted", &[("MESSAGES_TABLE", "dynamodb:GetItem")]),
    (
        "MessageLog",
        "toggle_reaction",
        &[("MESSAGES_TABLE", "dynamodb:PutItem"), ("MESSAGES_TABLE", "dynamodb:GetItem")],
    ),
    ("Bans", "ban", &[("BANS_TABLE", "dynamodb:PutItem")]),
    ("Bans", "unban", &[("BANS_TABLE", "dynamodb:DeleteItem")]),
    ("Bans", "active", &[("BANS_TABLE", "dynamodb:GetItem")]),
];

/// One grant the code needs: the adapter calling, the IAM action (with the HTTP
/// method for @connections), and where: the environment variable naming the
/// resource, and the index a Query reads.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Access {
    adapter: String,
    action: String,
    variable: String,
    index: Option<String>,
}

/// What `port::method` needs: the SDK calls its adapter makes, on the tables
/// [`TABLE_ACCESS`] declares (DynamoDB) or the resource [`ADAPTER_ENV`] names.
fn accesses(bodies: &[Body], port: &str, method: &str) -> BTreeSet<Access> {
    let scanned = iam_actions(bodies, port, method);
    let declared = TABLE_ACCESS.iter().find(|(p, m, _)| *p == port && *m == method);
    let Some((_, _, tables)) = declared else {
        return scanned
            .into_iter()
            .map(|(adapter, action)| {
                assert!(!adapter.starts_with("Dynamo"), "{port}::{method}: declare its tables in TABLE_ACCESS");
                let variable = ADAPTER_ENV.iter().find(|(a, _)| *a == adapter).expect("adapter has an env variable").1;
                Access { adapter, action, variable: variable.to_owned(), index: None }
            })
            .collect();
    };
    let actions = |pairs: &mut dyn Iterator<Item = &str>| pairs.map(str::to_owned).collect::<BTreeSet<_>>();
    assert_eq!(
        actions(&mut scanned.iter().map(|(_, action)| action.as_str())),
        actions(&mut tables.iter().map(|(_, action)| *action)),
        "{port}::{method}: the SDK calls its adapter makes vs what TABLE_ACCESS declares"
    );
    let adapter = scanned.iter().next().expect("a DynamoDB method makes a request").0.clone();
    tables
        .iter()
        .map(|(table, action)| {
            let (variable, index) = match table.split_once("/index/") {
                Some((variable, index)) => (variable, Some(index.to_owned())),
                None => (*table, None),
            };
            let owned = ADAPTER_ENV
                .iter()
                .any(|(a, variables)| *a == adapter && variables.split_whitespace().any(|v| v == variable));
            assert!(owned, "{port}::{method}: {adapter} reaches {variable}? (ADAPTER_ENV)");
            Access { adapter: adapter.clone(), action: (*action).to_owned(), variable: variable.to_owned(), index }
        })
        .collect()
}

/// A function body of the adapter crate, and what it belongs to.
struct Body {
    self_type: Option<String>,
    port: Option<String>,
    name: String,
    block: syn::Block,
}

/// Every fn in `functions/aws/src`, with the type and trait it implements.
fn adapter_sources() -> Vec<Body> {
    let mut bodies = Vec::new();
    let dir = repo().join("functions/aws/src");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let file = syn::parse_file(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for item in file.items {
            match item {
                syn::Item::Fn(f) => {
                    bodies.push(Body { self_type: None, port: None, name: f.sig.ident.to_string(), block: *f.block })
                }
                syn::Item::Impl(imp) => {
                    let self_type = last_ident(&imp.self_ty);
                    let port = imp.trait_.as_ref().and_then(|(_, p, _)| p.segments.last()).map(|s| s.ident.to_string());
                    for item in imp.items {
                        if let syn::ImplItem::Fn(f) = item {
                            bodies.push(Body {
                                self_type: self_type.clone(),
                                port: port.clone(),
                                name: f.sig.ident.to_string(),
                                block: f.block,
                            });
                        }
                    }
                }
                _ => {}
            }
        }
    }
    bodies
}

fn last_ident(ty: &syn::Type) -> Option<String> {
    match ty {
        syn::Type::Path(p) => p.path.segments.last().map(|s| s.ident.to_string()),
        _ => None,
    }
}

/// Method names, plain function calls, and the operation of each `.send()` chain in a body.
#[derive(Default)]
struct CallsIn {
    methods: BTreeSet<String>,
    functions: BTreeSet<String>,
    sent: BTreeSet<String>,
}

impl<'ast> Visit<'ast> for CallsIn {
    fn visit_expr_method_call(&mut self, call: &'ast syn::ExprMethodCall) {
        self.methods.insert(call.method.to_string());
        if call.method == "send" {
            // `client.<operation>().<setters>()...send()`: the innermost call is the operation.
            // A `client()` accessor before it is not the operation.
            let mut chain = Vec::new();
            let mut receiver = &call.receiver;
            while let syn::Expr::MethodCall(inner) = &**receiver {
                chain.push(inner.method.to_string());
                receiver = &inner.receiver;
            }
            if let Some(op) = chain.into_iter().rev().find(|name| name != "client") {
                self.sent.insert(op);
            }
        }
        syn::visit::visit_expr_method_call(self, call);
    }
    fn visit_expr_call(&mut self, call: &'ast syn::ExprCall) {
        if let syn::Expr::Path(p) = &*call.func {
            if let Some(ident) = p.path.get_ident() {
                self.functions.insert(ident.to_string());
            }
            // `Put::builder()` and its kin: the items of a transaction.
            let segments: Vec<String> = p.path.segments.iter().map(|s| s.ident.to_string()).collect();
            if let [kind, builder] = segments.as_slice()
                && builder == "builder"
            {
                self.methods.insert(format!("{kind}::builder"));
            }
        }
        syn::visit::visit_expr_call(self, call);
    }
}

/// The SDK operations `body` makes, directly or through the crate's own
/// inherent methods and free functions of the same name (all of them, if several).
fn sdk_operations(bodies: &[Body], body: &Body, seen: &mut BTreeSet<*const Body>) -> BTreeSet<String> {
    let mut ops = BTreeSet::new();
    if !seen.insert(body as *const Body) {
        return ops;
    }
    let mut calls = CallsIn::default();
    calls.visit_block(&body.block);
    for op in &calls.sent {
        // A chain may start at the crate's own helper that builds the request
        // (`self.live_in_room(room).limit(n).send()`); its body is followed below.
        let own_helper = bodies.iter().any(|b| b.self_type.is_some() && b.port.is_none() && &b.name == op);
        assert!(
            own_helper || SDK_ACTIONS.iter().any(|(name, _)| name == op),
            "{}::{} sends the SDK operation `{op}`: add it to SDK_ACTIONS and grant it in infra/template.yaml",
            body.self_type.as_deref().unwrap_or("fn"),
            body.name
        );
    }
    for method in &calls.methods {
        if SDK_ACTIONS.iter().any(|(name, _)| name == method) {
            ops.insert(method.clone());
        }
    }
    let helpers = bodies.iter().filter(|b| {
        (b.port.is_none() && b.self_type.is_some() && calls.methods.contains(&b.name))
            || (b.self_type.is_none() && calls.functions.contains(&b.name))
    });
    for helper in helpers {
        ops.extend(sdk_operations(bodies, helper, seen));
    }
    ops
}

/// `(adapter type, IAM action)` for a port method, from the adapter implementing that port.
fn iam_actions(bodies: &[Body], port: &str, method: &str) -> BTreeSet<(String, String)> {
    let implementations: Vec<&Body> =
        bodies.iter().filter(|b| b.port.as_deref() == Some(port) && b.name == method).collect();
    assert_eq!(implementations.len(), 1, "exactly one AWS adapter implements {port}::{method}");
    let body = implementations[0];
    let adapter = body.self_type.clone().unwrap();
    sdk_operations(bodies, body, &mut BTreeSet::new())
        .into_iter()
        .map(|op| SDK_ACTIONS.iter().find(|(name, _)| *name == op).unwrap().1)
        .filter(|action| !action.is_empty())
        .map(|action| (adapter.clone(), action.to_owned()))
        .collect()
}

// ------------------------------------------------------------- the template

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

fn template() -> Value {
    serde_yaml::from_str(&std::fs::read_to_string(repo().join("infra/template.yaml")).unwrap()).unwrap()
}

/// The template with every `Fn::If` decided by `conditions` and `AWS::NoValue` dropped.
fn resolve(value: &Value, conditions: &HashMap<&str, bool>) -> Option<Value> {
    match value {
        Value::Tagged(t) if t.tag == "If" => {
            let args = t.value.as_sequence().expect("!If takes a list");
            let chosen = conditions[args[0].as_str().unwrap()];
            resolve(&args[if chosen { 1 } else { 2 }], conditions)
        }
        Value::Tagged(t) if t.tag == "Ref" && t.value.as_str() == Some("AWS::NoValue") => None,
        Value::Mapping(m) if m.contains_key("Fn::If") => panic!("use the short !If form in the template: {m:?}"),
        Value::Mapping(m) => {
            Some(Value::Mapping(m.iter().filter_map(|(k, v)| resolve(v, conditions).map(|v| (k.clone(), v))).collect()))
        }
        Value::Sequence(s) => Some(Value::Sequence(s.iter().filter_map(|v| resolve(v, conditions)).collect())),
        other => Some(other.clone()),
    }
}

/// A resource expression as comparable text: `GetAtt:X.Arn`, `Sub:...`, `Ref:X`.
fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Tagged(t) => format!("{}:{}", t.tag.to_string().trim_start_matches('!'), text(&t.value)),
        other => panic!("unexpected expression {other:?}"),
    }
}

fn list(value: &Value) -> Vec<&Value> {
    match value {
        Value::Sequence(s) => s.iter().collect(),
        one => vec![one],
    }
}

/// Every `(action, resource)` the role grants; panics on anything but plain Allow statements.
fn granted(template: &Value, role: &str) -> BTreeSet<(String, String)> {
    let role = &template["Resources"][role];
    assert_eq!(role["Type"], "AWS::IAM::Role");
    assert!(role["Properties"].get("ManagedPolicyArns").is_none(), "managed policies are not checked: inline only");
    let mut grants = BTreeSet::new();
    for policy in role["Properties"]["Policies"].as_sequence().unwrap() {
        for statement in policy["PolicyDocument"]["Statement"].as_sequence().unwrap() {
            assert_eq!(statement["Effect"], "Allow");
            assert!(statement.get("NotAction").is_none() && statement.get("NotResource").is_none());
            if let Some(condition) = statement.get("Condition") {
                // The one condition in use narrows a key to Secrets Manager's use of it.
                assert_eq!(list(&statement["Action"]), [&Value::from("kms:Decrypt")], "{condition:?}");
                let via = text(&condition["StringEquals"]["kms:ViaService"]);
                assert_eq!(via, "Sub:secretsmanager.${AWS::Region}.amazonaws.com");
                assert_eq!(condition.as_mapping().unwrap().len(), 1);
            }
            for action in list(&statement["Action"]) {
                let action = action.as_str().unwrap();
                assert!(!action.contains('*'), "wildcard action {action}");
                for resource in list(&statement["Resource"]) {
                    assert_ne!(text(resource), "*", "{action} on every resource");
                    grants.insert((action.to_owned(), text(resource)));
                }
            }
        }
    }
    grants
}

/// What the template's function needs: the code's SDK calls on the resources its
/// environment names, its log group, and its event sources' stream and failure queue.
/// `secret_key`: the customer-managed KMS key the shared secret is encrypted with,
/// if any; Secrets Manager decrypts with the reader's rights, so reading the
/// secret then also needs `kms:Decrypt` on that key.
fn needed(
    template: &Value,
    bodies: &[Body],
    function: &Value,
    code: &BTreeSet<Access>,
    secret_key: Option<&str>,
) -> BTreeSet<(String, String)> {
    let globals = &template["Globals"]["Function"]["Environment"]["Variables"];
    let env = |name: &str| {
        let value = function["Properties"]["Environment"]["Variables"].get(name).or_else(|| globals.get(name));
        value.unwrap_or_else(|| panic!("the function's code needs {name}")).clone()
    };
    let logical = |value: &Value| text(value).trim_start_matches("Ref:").to_owned();
    let mut needs = BTreeSet::new();
    for Access { adapter, action, variable, index } in code {
        let variable = variable.as_str();
        let resource = match adapter.as_str() {
            _ if adapter.starts_with("Dynamo") => match index {
                Some(index) => format!("Sub:${{{}.Arn}}/index/{index}", logical(&env(variable))),
                None => format!("GetAtt:{}.Arn", logical(&env(variable))),
            },
            "S3Archive" => format!("Sub:${{{}.Arn}}/*", logical(&env(variable))),
            // The bus is named by a parameter; a name, so its ARN is built in this account and Region.
            "EventBridgeSink" => format!(
                "Sub:arn:${{AWS::Partition}}:events:${{AWS::Region}}:${{AWS::AccountId}}:event-bus/${{{}}}",
                logical(&env(variable))
            ),
            // `Ref` of a queue is its URL, which the code needs; IAM names it by ARN.
            "SqsFanoutQueue" => format!("GetAtt:{}.Arn", logical(&env(variable))),
            "ApiGatewayPoster" => {
                let endpoint = text(&env(variable));
                let stage = endpoint
                    .strip_prefix("Sub:https://${WebSocketApi}.execute-api.${AWS::Region}.amazonaws.com/")
                    .expect("the endpoint is this API's stage");
                let method = action.rsplit(' ').next().unwrap();
                format!(
                    "Sub:arn:${{AWS::Partition}}:execute-api:${{AWS::Region}}:${{AWS::AccountId}}:${{WebSocketApi}}/{stage}/{method}/@connections/*"
                )
            }
            other => panic!("no resource rule for {other}"),
        };
        needs.insert((action.split(' ').next().unwrap().to_owned(), resource));
    }
    let binary = function["Metadata"]["BuildProperties"]["Binary"].as_str().unwrap();
    for (_, variable, reader) in COLD_START_READS.iter().filter(|(b, _, _)| *b == binary) {
        let Some(resource) = function["Properties"]["Environment"]["Variables"].get(*variable) else { continue };
        let wiring = ["functions/lambdas/src/lib.rs", &format!("functions/lambdas/src/bin/{binary}.rs")]
            .map(|path| std::fs::read_to_string(repo().join(path)).unwrap());
        assert!(wiring.iter().any(|source| source.contains(reader)), "{binary} reads {variable} with {reader}");
        let body =
            bodies.iter().find(|b| b.self_type.is_none() && b.name == *reader).expect("the reader is in chat-aws");
        for op in sdk_operations(bodies, body, &mut BTreeSet::new()) {
            let action = SDK_ACTIONS.iter().find(|(name, _)| *name == op).unwrap().1;
            needs.insert((action.to_owned(), text(resource)));
            if let Some(key) = secret_key.filter(|_| action == "secretsmanager:GetSecretValue") {
                needs.insert(("kms:Decrypt".to_owned(), key.to_owned()));
            }
        }
    }
    let log_group = logical(&function["Properties"]["LoggingConfig"]["LogGroup"]);
    for action in ["logs:CreateLogStream", "logs:PutLogEvents"] {
        needs.insert((action.to_owned(), format!("GetAtt:{log_group}.Arn")));
    }
    if let Some(events) = function["Properties"].get("Events").and_then(Value::as_mapping) {
        for event in events.values() {
            if event["Type"] == "SQS" {
                // What the event source mapping does with the function's role.
                let queue = text(&event["Properties"]["Queue"]);
                for action in ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"] {
                    needs.insert((action.to_owned(), queue.clone()));
                }
                continue;
            }
            assert_eq!(event["Type"], "DynamoDB", "only stream and queue events are modelled");
            let table = text(&event["Properties"]["Stream"]);
            let table = table.strip_prefix("GetAtt:").and_then(|t| t.strip_suffix(".StreamArn")).unwrap();
            for action in
                ["dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator", "dynamodb:ListStreams"]
            {
                needs.insert((action.to_owned(), format!("Sub:${{{table}.Arn}}/stream/*")));
            }
            let queue = text(&event["Properties"]["DestinationConfig"]["OnFailure"]["Destination"]);
            needs.insert(("sqs:SendMessage".to_owned(), queue));
        }
    }
    needs
}

/// The template's functions by binary name.
fn functions(template: &Value) -> BTreeMap<String, Value> {
    template["Resources"]
        .as_mapping()
        .unwrap()
        .values()
        .filter(|r| r["Type"] == "AWS::Serverless::Function")
        .map(|r| (r["Metadata"]["BuildProperties"]["Binary"].as_str().unwrap().to_owned(), r.clone()))
        .collect()
}

/// The adapter types a binary builds through `Aws`'s accessors in chat-lambdas' lib.rs.
fn adapters_built(binary: &str) -> BTreeSet<String> {
    let lib = syn::parse_file(&std::fs::read_to_string(repo().join("functions/lambdas/src/lib.rs")).unwrap()).unwrap();
    let adapters: BTreeSet<&str> = ADAPTER_ENV.iter().map(|(a, _)| *a).collect();
    let mut accessors = HashMap::new();
    for item in &lib.items {
        let syn::Item::Impl(imp) = item else { continue };
        for item in &imp.items {
            let syn::ImplItem::Fn(f) = item else { continue };
            let syn::ReturnType::Type(_, ty) = &f.sig.output else { continue };
            let ty = quote_type(ty);
            if let Some(adapter) = adapters.iter().find(|a| ty.contains(**a)) {
                accessors.insert(f.sig.ident.to_string(), adapter.to_string());
            }
        }
    }
    let source = std::fs::read_to_string(repo().join(format!("functions/lambdas/src/bin/{binary}.rs"))).unwrap();
    let mut calls = CallsIn::default();
    calls.visit_file(&syn::parse_file(&source).unwrap());
    calls.methods.iter().filter_map(|m| accessors.get(m).cloned()).collect()
}

fn quote_type(ty: &syn::Type) -> String {
    let mut names = CallsInType::default();
    names.visit_type(ty);
    names.0.join(" ")
}

#[derive(Default)]
struct CallsInType(Vec<String>);

impl<'ast> Visit<'ast> for CallsInType {
    fn visit_ident(&mut self, ident: &'ast syn::Ident) {
        self.0.push(ident.to_string());
    }
}

// ---------------------------------------------------------------- the tests

#[tokio::test]
async fn every_role_grants_exactly_what_its_code_calls() {
    let raw = template();
    let bodies = adapter_sources();
    let deployed = functions(&raw);
    assert_eq!(
        deployed.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        FUNCTIONS.iter().map(|f| f.binary).collect::<BTreeSet<_>>(),
        "the template deploys every Lambda binary and nothing else"
    );
    let combinations = [false, true].into_iter().flat_map(|archive| {
        AUTH_MODES.iter().flat_map(move |auth| {
            let keys: &[bool] = if auth.starts_with("shared-secret") { &[false, true] } else { &[false] };
            keys.iter().map(move |cmk| (archive, *auth, *cmk))
        })
    });
    for (archive, auth, cmk) in combinations {
        let conditions = template_conditions(auth, archive, cmk);
        let template = resolve(&raw, &conditions).unwrap();
        let secret_key = cmk.then_some("Ref:JwtSecretKmsKeyArn");
        let deployed = functions(&template);
        for function in FUNCTIONS {
            let source =
                std::fs::read_to_string(repo().join(format!("functions/lambdas/src/bin/{}.rs", function.binary)));
            assert!(source.unwrap().contains(function.entrypoint), "{} calls {}", function.binary, function.entrypoint);

            let ports = port_calls(function.binary, archive).await;
            let code: BTreeSet<Access> =
                ports.iter().flat_map(|(port, method)| accesses(&bodies, port, method)).collect();
            let used: BTreeSet<String> = code.iter().map(|access| access.adapter.clone()).collect();
            let mut built = adapters_built(function.binary);
            if !archive {
                built.remove("S3Archive");
            }
            assert_eq!(built, used, "{}: adapters built vs adapters the entrypoint calls", function.binary);

            let resource = &deployed[function.binary];
            let role = text(&resource["Properties"]["Role"]);
            let role = role.strip_prefix("GetAtt:").and_then(|r| r.strip_suffix(".Arn")).expect("Role: !GetAtt X.Arn");
            assert!(resource["Properties"].get("Policies").is_none(), "grants live in the role only");
            let needs = needed(&template, &bodies, resource, &code, secret_key);
            let grants = granted(&template, role);
            let missing: Vec<_> = needs.difference(&grants).collect();
            let extra: Vec<_> = grants.difference(&needs).collect();
            assert!(
                missing.is_empty() && extra.is_empty(),
                "{} (archive {archive}, auth {auth}, customer key {cmk}): role {role} is missing {missing:?} and grants unused {extra:?}",
                function.binary
            );
        }
    }
}

#[tokio::test]
async fn the_recorded_calls_are_the_ones_the_handlers_document() {
    // Guards the recording itself: a scenario that silently stopped exercising a
    // path would shrink the expected grants.
    let expect = |calls: &[(&'static str, &'static str)]| calls.iter().copied().collect::<Calls>();
    assert_eq!(
        port_calls("connect", false).await,
        expect(&[("ConnectionStore", "put"), ("SessionLog", "open"), ("MessageLog", "append"), ("Bans", "active")])
    );
    assert_eq!(
        port_calls("disconnect", false).await,
        expect(&[
            ("ConnectionStore", "delete"),
            ("ConnectionStore", "mark_leaving"),
            ("ConnectionStore", "end_membership"),
            ("SessionLog", "close"),
            ("MessageLog", "append"),
            ("MessageLog", "get")
        ])
    );
    assert_eq!(
        port_calls("send_message", false).await,
        expect(&[
            ("ConnectionStore", "get"),
            ("MessageLog", "append"),
            ("MessageLog", "append_once"),
            ("MessageLog", "get"),
            ("MessageLog", "deleted"),
            ("MessageLog", "read")
        ])
    );
    assert_eq!(
        port_calls("default", false).await,
        expect(&[
            ("ConnectionStore", "get"),
            ("ConnectionStore", "count"),
            ("ConnectionStore", "list"),
            ("ConnectionStore", "subscribe"),
            ("ConnectionStore", "unsubscribe"),
            ("ConnectionStore", "mark_leaving"),
            ("ConnectionStore", "end_membership"),
            ("ReadCursors", "cursors"),
            ("ReadCursors", "advance"),
            ("MessageLog", "read"),
            ("MessageLog", "append"),
            ("MessageLog", "append_once"),
            ("MessageLog", "get"),
            ("MessageLog", "deleted"),
            ("MessageLog", "toggle_reaction"),
            ("Bans", "ban"),
            ("Bans", "unban"),
            ("Bans", "active"),
            ("SocketPoster", "post"),
            ("SocketPoster", "close")
        ])
    );
    assert_eq!(
        port_calls("reaper", false).await,
        expect(&[
            ("ConnectionStore", "delete"),
            ("ConnectionStore", "mark_leaving"),
            ("ConnectionStore", "end_membership"),
            ("SessionLog", "close"),
            ("MessageLog", "append"),
            ("MessageLog", "get")
        ])
    );
    assert_eq!(port_calls("publish", false).await, expect(&[("MessageLog", "append"), ("MessageLog", "append_once")]));
    assert_eq!(port_calls("events", false).await, expect(&[("EventSink", "put")]));
    assert_eq!(
        port_calls("broadcaster", true).await,
        expect(&[
            ("ConnectionStore", "list"),
            ("ConnectionStore", "delete"),
            ("ConnectionStore", "mark_leaving"),
            ("ConnectionStore", "end_membership"),
            ("SessionLog", "close"),
            ("MessageLog", "append"),
            ("MessageLog", "get"),
            ("SocketPoster", "post"),
            ("Archive", "put"),
            ("FanoutQueue", "enqueue"),
        ])
    );
    assert_eq!(
        port_calls("fanout", false).await,
        expect(&[
            ("ConnectionStore", "delete"),
            ("ConnectionStore", "mark_leaving"),
            ("ConnectionStore", "end_membership"),
            ("SessionLog", "close"),
            ("MessageLog", "append"),
            ("MessageLog", "get"),
            ("SocketPoster", "post"),
            ("FanoutQueue", "enqueue"),
        ])
    );
}

#[tokio::test]
async fn no_request_or_broadcast_path_scans_a_table() {
    let bodies = adapter_sources();
    for function in FUNCTIONS {
        let calls = port_calls(function.binary, true).await;
        let actions: BTreeSet<String> =
            calls.iter().flat_map(|(port, method)| iam_actions(&bodies, port, method)).map(|(_, a)| a).collect();
        assert!(!actions.contains("dynamodb:Scan"), "{} scans: {actions:?}", function.binary);
    }
}

#[test]
fn the_adapter_scan_finds_each_sdk_call() {
    let bodies = adapter_sources();
    let actions = |port, method| iam_actions(&bodies, port, method).into_iter().map(|(_, a)| a).collect::<Vec<_>>();
    assert_eq!(
        actions("ConnectionStore", "put"),
        ["dynamodb:PutItem", "dynamodb:UpdateItem"],
        "through the Table helper, and add_membership's transaction with the room counter"
    );
    assert_eq!(actions("ConnectionStore", "get"), ["dynamodb:GetItem"]);
    assert_eq!(actions("ConnectionStore", "list"), ["dynamodb:Query"]);
    assert_eq!(actions("ConnectionStore", "count"), ["dynamodb:Query"]);
    assert_eq!(actions("ConnectionStore", "delete"), ["dynamodb:DeleteItem"]);
    // A transaction's items by their builders (Put, Update), and Table::get_consistent.
    assert_eq!(
        actions("ConnectionStore", "subscribe"),
        ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"]
    );
    assert_eq!(
        actions("ConnectionStore", "unsubscribe"),
        ["dynamodb:DeleteItem", "dynamodb:GetItem", "dynamodb:UpdateItem"]
    );
    assert_eq!(actions("ConnectionStore", "mark_leaving"), ["dynamodb:UpdateItem"]);
    assert_eq!(
        actions("ConnectionStore", "end_membership"),
        ["dynamodb:DeleteItem", "dynamodb:GetItem", "dynamodb:UpdateItem"],
        "the membership (read first, for its join) and its room counter; the row is not touched"
    );
    assert_eq!(actions("ReadCursors", "cursors"), ["dynamodb:Query"]);
    assert_eq!(actions("ReadCursors", "advance"), ["dynamodb:UpdateItem"]);
    assert_eq!(actions("MessageLog", "read"), ["dynamodb:Query"]);
    assert_eq!(actions("SessionLog", "close"), ["dynamodb:UpdateItem"]);
    assert_eq!(actions("SocketPoster", "post"), ["execute-api:ManageConnections POST"]);
    assert_eq!(actions("Archive", "put"), ["s3:PutObject"]);
}

#[test]
fn tables_are_keyed_as_the_adapters_write_them() {
    let template = template();
    let at = chat_core::time::parse_iso("2026-11-24T10:00:00Z").unwrap();
    let connection = Connection::new("c1", "203.0.113.7", at);
    // (table, a row, whether the TTL deletes it): sessions only with a retention set;
    // events never (only receipts of acked sends expire in MessageHistory).
    let retained = Session::opened(&connection).kept_for(Some(chrono::Duration::days(30)));
    let rows = [
        ("CONNECTIONS_TABLE", serde_json::to_value(&connection).unwrap(), true),
        ("SESSIONS_TABLE", serde_json::to_value(retained).unwrap(), true),
        ("SESSIONS_TABLE", serde_json::to_value(Session::opened(&connection)).unwrap(), false),
        ("MESSAGES_TABLE", serde_json::to_value(LogEvent::chat("c1", "hi", at)).unwrap(), false),
    ];
    for (variable, row, expires) in rows {
        let table = text(&template["Globals"]["Function"]["Environment"]["Variables"][variable]);
        let table = &template["Resources"][table.trim_start_matches("Ref:")]["Properties"];
        assert_eq!(table["BillingMode"], "PAY_PER_REQUEST");
        let keys = table["KeySchema"].as_sequence().unwrap();
        assert_eq!(keys.len(), 1, "{variable}: a partition key only");
        let key = keys[0]["AttributeName"].as_str().unwrap();
        assert!(row.get(key).is_some_and(serde_json::Value::is_string), "{variable}: rows carry their key {key}");
        let ttl = &table["TimeToLiveSpecification"];
        assert_eq!(
            (&ttl["AttributeName"], &ttl["Enabled"]),
            (&Value::from("expires_at"), &Value::from(true)),
            "{variable}"
        );
        if expires {
            assert!(row.get("expires_at").is_some_and(serde_json::Value::is_i64), "{variable}: TTL is epoch seconds");
        } else {
            assert!(row.get("expires_at").is_none(), "{variable}: {row} is kept");
        }
    }
    let messages = &template["Resources"]["MessagesTable"]["Properties"];
    assert_eq!(messages["StreamSpecification"]["StreamViewType"], "NEW_IMAGE");
    assert_eq!(
        template["Resources"]["ConnectionsTable"]["Properties"]["TimeToLiveSpecification"]["AttributeName"],
        "expires_at"
    );
    for table in ["SessionsTable", "MessagesTable", "ReadCursorsTable"] {
        let pitr = &template["Resources"][table]["Properties"]["PointInTimeRecoverySpecification"];
        assert_eq!(pitr["PointInTimeRecoveryEnabled"], true, "{table} has point-in-time recovery");
    }
}

/// Memberships and ReadCursors as DynamoCursors, DynamoConnections and
/// `--create-tables` key them (the moto tests write and read them there), and
/// ActiveConnections without the room GSI Memberships replaced.
#[test]
fn channel_tables_are_keyed_as_the_adapters_write_them() {
    let template = template();
    let default_env = &functions(&template)["default"]["Properties"]["Environment"]["Variables"];
    let globals = &template["Globals"]["Function"]["Environment"]["Variables"];
    for (variable, env, keys, ttl) in [
        ("MEMBERSHIPS_TABLE", globals, ["room", "connection_id"], "purge_at"),
        ("READ_CURSORS_TABLE", default_env, ["reader", "room"], "expires_at"),
        ("BANS_TABLE", default_env, ["room", "user"], "expires_at"),
    ] {
        let table = text(&env[variable]);
        let table = &template["Resources"][table.trim_start_matches("Ref:")]["Properties"];
        assert_eq!(table["BillingMode"], "PAY_PER_REQUEST");
        let schema: Vec<(&str, &str)> = table["KeySchema"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|k| (k["AttributeName"].as_str().unwrap(), k["KeyType"].as_str().unwrap()))
            .collect();
        assert_eq!(schema, [(keys[0], "HASH"), (keys[1], "RANGE")], "{variable}");
        let ttl_spec = &table["TimeToLiveSpecification"];
        assert_eq!((&ttl_spec["AttributeName"], &ttl_spec["Enabled"]), (&Value::from(ttl), &Value::from(true)));
        assert!(table.get("GlobalSecondaryIndexes").is_none(), "{variable}: read by its keys only");
    }
    let connections = &template["Resources"]["ConnectionsTable"]["Properties"];
    assert!(connections.get("GlobalSecondaryIndexes").is_none(), "rooms are listed from Memberships");
    let read_by_default: BTreeSet<&str> =
        default_env.as_mapping().unwrap().keys().map(|k| k.as_str().unwrap()).collect();
    for (binary, function) in functions(&template) {
        let env = &function["Properties"]["Environment"]["Variables"];
        let has_cursors = env.get("READ_CURSORS_TABLE").is_some();
        assert_eq!(has_cursors, binary == "default", "{binary}: only $default reads and moves cursors");
        let has_bans = env.get("BANS_TABLE").is_some();
        assert_eq!(
            has_bans,
            ["connect", "default"].contains(&binary.as_str()),
            "{binary}: bans are read and written there only"
        );
    }
    assert!(read_by_default.contains("MAX_ROOMS_PER_CONNECTION"));
}

#[test]
fn the_stage_throttles_every_route_within_bounds() {
    let template = template();
    let stage = &template["Resources"]["Stage"];
    assert_eq!(stage["Type"], "AWS::ApiGatewayV2::Stage", "the WebSocket API's stage");
    let settings = &stage["Properties"]["DefaultRouteSettings"];
    let default_route = stage["Properties"].get("RouteSettings").and_then(|r| r.get("$default"));
    let default_route = default_route.expect("$default has route settings of its own");
    let default_of = |setting: &Value| {
        let parameter = text(setting);
        let parameter = &template["Parameters"][parameter.trim_start_matches("Ref:")];
        assert!(parameter.get("MaxValue").is_some(), "{setting:?} is bounded");
        parameter["Default"].as_u64().filter(|d| *d > 0).expect("a default")
    };
    for limit in ["ThrottlingRateLimit", "ThrottlingBurstLimit"] {
        let (stage, default_route) = (default_of(&settings[limit]), default_of(&default_route[limit]));
        // One $default frame costs a Query and many posts: its own, tighter bucket.
        assert!(default_route < stage, "$default {limit} {default_route} is below the stage's {stage}");
        // The one-post channel actions a page repeats (read, rooms, unsubscribe): a
        // bucket of their own, above $default's and within the stage's.
        for route in ["rooms", "read", "unsubscribe"] {
            let own =
                stage_routes(stage_properties(&template), route).unwrap_or_else(|| panic!("{route} has settings"));
            let own = default_of(&own[limit]);
            assert!(default_route < own && own <= stage, "{route} {limit} {own}: above $default's, within the stage's");
        }
        // Typing: each signal is a Query and a post per member, so a bucket of its own
        // (a typing room must not use up $default's history), within the stage's.
        let typing = stage_routes(stage_properties(&template), "typing").expect("typing has settings");
        assert_eq!(text(&typing[limit]), format!("Ref:TypingRoute{limit}"), "typing's own parameter");
        let own = default_of(&typing[limit]);
        assert!(default_route < own && own <= stage, "typing {limit} {own}: above $default's, within the stage's");
    }
}

fn stage_properties(template: &Value) -> &Value {
    &template["Resources"]["Stage"]["Properties"]
}

fn stage_routes<'t>(stage: &'t Value, route: &str) -> Option<&'t Value> {
    stage.get("RouteSettings").and_then(|r| r.get(route))
}

#[test]
fn the_stage_logs_every_request_but_never_a_body() {
    let raw = template();
    let stage = &raw["Resources"]["Stage"]["Properties"];
    let access = stage.get("AccessLogSettings").expect("access logs are on");
    assert_eq!(text(&access["DestinationArn"]), "GetAtt:ApiAccessLogGroup.Arn");
    let format: serde_json::Value =
        serde_json::from_str(access["Format"].as_str().unwrap()).expect("access log lines are JSON");
    for (field, variable) in [
        ("requestId", "$context.requestId"),
        ("connectionId", "$context.connectionId"),
        ("eventType", "$context.eventType"),
        ("routeKey", "$context.routeKey"),
        ("status", "$context.status"),
        ("ip", "$context.identity.sourceIp"),
        ("integrationError", "$context.integrationErrorMessage"),
    ] {
        assert_eq!(format[field], variable, "access log field {field}");
    }
    let parameter = |setting: &Value| raw["Parameters"][text(setting).trim_start_matches("Ref:")].clone();
    let routes = ["$default", "rooms", "read", "unsubscribe", "typing"].map(|route| &stage["RouteSettings"][route]);
    for settings in routes.into_iter().chain([&stage["DefaultRouteSettings"]]) {
        assert_eq!(settings["DataTraceEnabled"], false, "message bodies are never logged");
        assert_eq!(parameter(&settings["LoggingLevel"])["Default"], "ERROR", "execution logs: errors by default");
    }
    for group in ["ApiAccessLogGroup", "ApiExecutionLogGroup"] {
        let group = &raw["Resources"][group]["Properties"];
        assert_eq!(text(&group["RetentionInDays"]), "Ref:LogRetentionDays");
    }
    let execution = text(&raw["Resources"]["ApiExecutionLogGroup"]["Properties"]["LogGroupName"]);
    assert_eq!(execution, "Sub:/aws/apigateway/${WebSocketApi}/${StageName}", "where API Gateway writes them");
    // A first deploy works on a fresh account: the stack sets the account-wide log role,
    // and keeps it when deleted, since every API of the account logs through it.
    assert_eq!(raw["Parameters"]["ApiGatewayAccountLogRole"]["Default"], "create");
    assert_eq!(raw["Resources"]["ApiGatewayLogRole"]["DeletionPolicy"], "Retain");
    for resource in ["ApiGatewayAccount", "ApiGatewayLogRole"] {
        assert_eq!(raw["Resources"][resource]["Condition"], "CreateApiGatewayLogRole");
    }
}

#[test]
fn the_broadcaster_and_the_authorizer_keep_reserved_concurrency() {
    let raw = template();
    for (resource, parameter) in [
        ("BroadcasterFunction", "BroadcasterReservedConcurrency"),
        ("AuthorizerFunction", "AuthorizerReservedConcurrency"),
    ] {
        let parameter_default = raw["Parameters"][parameter]["Default"].as_u64().unwrap();
        assert!(parameter_default > 0, "{parameter}: reserved by default");
        assert_eq!(raw["Parameters"][parameter]["MinValue"], 0, "{parameter}: 0 leaves it unreserved");
        for reserved in [true, false] {
            let mut conditions = template_conditions("shared-secret", false, false);
            conditions.insert("BroadcasterConcurrencyReserved", reserved);
            conditions.insert("AuthorizerConcurrencyReserved", reserved);
            let template = resolve(&raw, &conditions).unwrap();
            let setting = template["Resources"][resource]["Properties"].get("ReservedConcurrentExecutions");
            assert_eq!(setting.map(text), reserved.then(|| format!("Ref:{parameter}")), "{resource}");
        }
        // ... and the condition deciding it is that parameter's (0 = unreserved).
        let Value::Tagged(choice) = &raw["Resources"][resource]["Properties"]["ReservedConcurrentExecutions"] else {
            panic!("{resource}: ReservedConcurrentExecutions is an !If")
        };
        let condition = choice.value[0].as_str().unwrap();
        let definition = format!("{:?}", raw["Conditions"][condition]);
        assert!(definition.contains(parameter) && definition.contains("Not"), "{condition}: {definition}");
    }
}

#[test]
fn cognito_sign_up_is_by_administrators_unless_allowed() {
    let raw = template();
    assert_eq!(raw["Parameters"]["CognitoAllowSelfSignUp"]["Default"], "false");
    for (allowed, admin_only) in [(false, true), (true, false)] {
        let mut conditions = template_conditions("cognito", false, false);
        conditions.insert("CognitoSelfSignUp", allowed);
        let template = resolve(&raw, &conditions).unwrap();
        let config = &template["Resources"]["UserPool"]["Properties"]["AdminCreateUserConfig"];
        assert_eq!(config["AllowAdminCreateUserOnly"], admin_only, "self sign-up allowed: {allowed}");
    }
    assert!(format!("{:?}", raw["Conditions"]["CognitoSelfSignUp"]).contains("CognitoAllowSelfSignUp"));
}

#[test]
fn the_broadcaster_hears_inserts_only() {
    let raw = template();
    let stream = &raw["Resources"]["BroadcasterFunction"]["Properties"]["Events"]["MessageStream"]["Properties"];
    let filters = stream["FilterCriteria"]["Filters"].as_sequence().expect("a filter on the MessageHistory stream");
    let patterns: Vec<serde_json::Value> =
        filters.iter().map(|f| serde_json::from_str(f["Pattern"].as_str().unwrap()).unwrap()).collect();
    // The TTL's deletions of receipts are REMOVE records: they must not invoke the broadcaster.
    assert_eq!(patterns, [serde_json::json!({"eventName": ["INSERT"]})]);
}

/// The events function (#26): its role may put events on the one bus the
/// `EventBusName` parameter names and do nothing else outside its streams, logs
/// and failure queue; it hears lines, joins and leaves of MessageHistory and
/// the room counters of Memberships (whose stream has both images), and only
/// exists while a bus is named.
#[test]
fn the_events_function_puts_exactly_on_its_bus() {
    let raw = template();
    let template = resolve(&raw, &template_conditions("none", false, false)).unwrap();
    let grants = granted(&template, "EventsRole");
    let bus = "Sub:arn:${AWS::Partition}:events:${AWS::Region}:${AWS::AccountId}:event-bus/${EventBusName}";
    let outside: Vec<&(String, String)> = grants
        .iter()
        .filter(|(action, _)| !action.starts_with("logs:") && !action.starts_with("sqs:"))
        .filter(|(action, resource)| !(action.starts_with("dynamodb:") && resource.ends_with("/stream/*")))
        .collect();
    assert_eq!(outside, [&("events:PutEvents".to_owned(), bus.to_owned())], "exactly PutEvents on the bus");
    let streams: BTreeSet<&str> =
        grants.iter().filter(|(a, _)| a.starts_with("dynamodb:")).map(|(_, r)| r.as_str()).collect();
    assert_eq!(streams, BTreeSet::from(["Sub:${MembershipsTable.Arn}/stream/*", "Sub:${MessagesTable.Arn}/stream/*"]));

    let function = &functions(&template)["events"];
    assert_eq!(text(&function["Properties"]["Environment"]["Variables"]["EVENT_BUS_NAME"]), "Ref:EventBusName");
    assert_eq!(raw["Parameters"]["EventBusName"]["Default"], "default", "the account's default bus");
    let pattern = regex::Regex::new(raw["Parameters"]["EventBusName"]["AllowedPattern"].as_str().unwrap()).unwrap();
    for (name, allowed) in [("default", true), ("chat-events", true), ("", true), ("arn:aws:events:x", false)] {
        assert_eq!(pattern.is_match(name), allowed, "{name:?}");
    }
    for resource in ["EventsFunction", "EventsRole", "EventsLogGroup"] {
        assert_eq!(raw["Resources"][resource]["Condition"], "EventsEnabled", "{resource}");
    }
    let enabled: Value = serde_yaml::from_str("!Not [!Equals [!Ref EventBusName, \"\"]]").unwrap();
    assert_eq!(raw["Conditions"]["EventsEnabled"], enabled, "an empty EventBusName deploys no events function");

    let events = &function["Properties"]["Events"];
    let pattern_of = |source: &str| -> Vec<serde_json::Value> {
        let properties = &events[source]["Properties"];
        assert_eq!(
            properties["FunctionResponseTypes"],
            serde_yaml::from_str::<Value>("[ReportBatchItemFailures]").unwrap()
        );
        assert_eq!(properties["BisectBatchOnFunctionError"], true);
        assert_eq!(text(&properties["MaximumRetryAttempts"]), "Ref:StreamMaximumRetryAttempts");
        assert_eq!(
            text(&properties["DestinationConfig"]["OnFailure"]["Destination"]),
            "GetAtt:BroadcastFailureQueue.Arn"
        );
        let filters = properties["FilterCriteria"]["Filters"].as_sequence().unwrap();
        filters.iter().map(|f| serde_json::from_str(f["Pattern"].as_str().unwrap()).unwrap()).collect()
    };
    assert_eq!(text(&events["MessageEvents"]["Properties"]["Stream"]), "GetAtt:MessagesTable.StreamArn");
    assert_eq!(
        pattern_of("MessageEvents"),
        [
            serde_json::json!({"eventName": ["INSERT"], "dynamodb": {"NewImage": {"kind": {"S": ["chat", "join", "leave"]}}}})
        ]
    );
    assert_eq!(text(&events["RoomCounters"]["Properties"]["Stream"]), "GetAtt:MembershipsTable.StreamArn");
    assert_eq!(
        pattern_of("RoomCounters"),
        [serde_json::json!({"dynamodb": {"Keys": {"connection_id": {"S": [chat_core::model::ROOM_COUNTER_ID]}}}})]
    );
    let memberships = &raw["Resources"]["MembershipsTable"]["Properties"]["StreamSpecification"];
    assert_eq!(memberships["StreamViewType"], "NEW_AND_OLD_IMAGES", "a counter record carries its old and new count");
}

#[test]
fn the_shared_secret_key_is_granted_only_when_named_and_only_through_secrets_manager() {
    let raw = template();
    for mode in AUTH_MODES {
        for cmk in [false, true] {
            let template = resolve(&raw, &template_conditions(mode, false, cmk)).unwrap();
            let grants = granted(&template, "AuthorizerRole");
            let kms: Vec<_> = grants.iter().filter(|(action, _)| action.starts_with("kms:")).collect();
            let expected = cmk && mode.starts_with("shared-secret");
            let key = ("kms:Decrypt".to_owned(), "Ref:JwtSecretKmsKeyArn".to_owned());
            assert_eq!(kms, if expected { vec![&key] } else { vec![] }, "{mode}, customer key {cmk}");
            let secret = template["Resources"]["JwtSecret"]["Properties"].get("KmsKeyId").map(text);
            if *mode == "shared-secret" {
                assert_eq!(secret, expected.then(|| "Ref:JwtSecretKmsKeyArn".to_owned()), "a created secret uses it");
            }
        }
    }
    assert_eq!(raw["Parameters"]["JwtSecretKmsKeyArn"]["Default"], "", "the AWS-managed key by default");
}

#[test]
fn the_broadcaster_gets_the_presence_limit_its_code_reads() {
    let raw = template();
    let broadcaster = &functions(&raw)["broadcaster"];
    let env = &broadcaster["Properties"]["Environment"]["Variables"];
    assert_eq!(text(&env["PRESENCE_LIMIT"]), "Ref:PresenceLimit");
    assert_eq!(text(&env["STREAM_BATCH_SIZE"]), "Ref:StreamBatchSize", "the event source mapping's BatchSize");
    let read = Mutex::new(BTreeSet::new());
    chat_lambdas::presence_config_from(|name| {
        read.lock().unwrap().insert(name.to_owned());
        None
    })
    .unwrap();
    assert_eq!(
        read.into_inner().unwrap(),
        BTreeSet::from(["PRESENCE_LIMIT".to_owned(), "STREAM_BATCH_SIZE".to_owned()])
    );
    // The parameter admits exactly what the code accepts, its default included.
    let parameter = &raw["Parameters"]["PresenceLimit"];
    let default = parameter["Default"].as_str().unwrap();
    assert_eq!(default, chat_core::occupancy::DEFAULT_PRESENCE_LIMIT.to_string());
    let pattern = regex::Regex::new(parameter["AllowedPattern"].as_str().unwrap()).unwrap();
    for value in [default, "1", "50000", "off", "0", "-1", "", "Off", "1e3", "many"] {
        let accepted = chat_lambdas::presence_config_from(|name| (name == "PRESENCE_LIMIT").then(|| value.to_owned()));
        assert_eq!(pattern.is_match(value), accepted.is_ok(), "{value:?}: template and code agree");
    }
}

#[test]
fn connect_is_configured_with_the_settings_its_code_reads() {
    let raw = template();
    let connect = &functions(&raw)["connect"];
    let env = connect["Properties"]["Environment"]["Variables"].as_mapping().unwrap();
    let given: BTreeMap<String, String> =
        env.iter().map(|(name, value)| (name.as_str().unwrap().to_owned(), text(value))).collect();
    let read = Mutex::new(BTreeSet::new());
    ConnectSettings::from_settings(|name| {
        read.lock().unwrap().insert(name.to_owned());
        None
    })
    .unwrap();
    // Table names are the adapters' (ADAPTER_ENV; the grants test checks them), not settings.
    let settings = given.keys().filter(|name| !name.ends_with("_TABLE")).cloned().collect::<BTreeSet<_>>();
    assert_eq!(settings, read.into_inner().unwrap());
    assert_eq!(given["BANS_TABLE"], "Ref:BansTable");
    assert_eq!(given["ALLOWED_ORIGINS"], "Ref:AllowedOrigins");
    assert_eq!(given["SESSION_RETENTION_DAYS"], "Ref:SessionRetentionDays");
    assert_eq!(given["MAX_ROOMS_PER_CONNECTION"], "Ref:MaxRoomsPerConnection");
    assert_eq!(given["DEFAULT_RIGHTS"], "Ref:DefaultRights");
    let max_rooms = &raw["Parameters"]["MaxRoomsPerConnection"];
    assert_eq!(max_rooms["Default"].as_u64(), Some(chat_core::room::DEFAULT_MAX_ROOMS as u64));
    // The parameter's bounds are the ones RoomLimits accepts.
    for (bound, ok) in [("MinValue", true), ("MaxValue", true)] {
        let value = max_rooms[bound].as_u64().unwrap();
        assert_eq!(RoomLimits::from_settings(|_| Some(value.to_string())).is_ok(), ok, "{bound} {value}");
        let past = if bound == "MinValue" { value - 1 } else { value + 1 };
        assert!(RoomLimits::from_settings(|_| Some(past.to_string())).is_err(), "past {bound}");
    }
    // $default (subscribe) holds connections to the same limit, read at cold start.
    let default = &functions(&raw)["default"];
    let limit = &default["Properties"]["Environment"]["Variables"]["MAX_ROOMS_PER_CONNECTION"];
    assert_eq!(text(limit), "Ref:MaxRoomsPerConnection");
    let binary = std::fs::read_to_string(repo().join("functions/lambdas/src/bin/default.rs")).unwrap();
    assert!(binary.contains("RouteSettings::from_settings(|name| std::env::var(name).ok())"), "read at cold start");
    assert_eq!(raw["Parameters"]["AllowedOrigins"]["Default"], "", "any origin unless listed");
    assert_eq!(raw["Parameters"]["SessionRetentionDays"]["Default"], 0, "kept forever unless set");
    let binary = std::fs::read_to_string(repo().join("functions/lambdas/src/bin/connect.rs")).unwrap();
    assert!(binary.contains("ConnectSettings::from_settings(|name| std::env::var(name).ok())"), "read at cold start");
}

/// Rights are read where they are enforced: `DEFAULT_RIGHTS` by the
/// authorizer (tokens without `chat.rights`) and by every route that checks
/// rights (connections no authorizer vouched for), `GROUP_RIGHTS` by the
/// authorizer alone, in every AuthMode; each from its parameter, whose default
/// and AllowedPattern agree with the parsers the functions start with.
#[test]
fn rights_are_configured_where_the_code_reads_them() {
    let raw = template();
    type Vars<'a> = &'a dyn Fn(&str) -> Option<String>;
    let read_by = |read: fn(Vars)| {
        let names = Mutex::new(BTreeSet::new());
        read(&|name| {
            names.lock().unwrap().insert(name.to_owned());
            (name == "JWT_SECRET").then(|| "a-test-secret-that-is-32-bytes!!".to_owned())
        });
        names.into_inner().unwrap()
    };
    let routes = read_by(|var| {
        RouteSettings::from_settings(var).unwrap();
    });
    let authorizer = read_by(|var| {
        chat_core::auth::VerifierConfig::from_settings(var).unwrap();
    });
    assert!(
        routes.contains("DEFAULT_RIGHTS")
            && authorizer.is_superset(&BTreeSet::from(["DEFAULT_RIGHTS".into(), "GROUP_RIGHTS".into()]))
    );
    let mut with_rights = BTreeSet::new();
    for mode in AUTH_MODES.iter().copied().chain(["none"]) {
        let template = resolve(&raw, &auth_conditions(mode, false)).unwrap();
        for (binary, function) in functions(&template) {
            let Some(env) = function["Properties"]["Environment"]["Variables"].as_mapping() else { continue };
            let given = |name: &str| env.get(name).map(text);
            if given("DEFAULT_RIGHTS").is_some() {
                with_rights.insert(binary.clone());
                assert_eq!(given("DEFAULT_RIGHTS").as_deref(), Some("Ref:DefaultRights"), "{mode}: {binary}");
            }
            let groups = given("GROUP_RIGHTS");
            assert_eq!(groups.is_some(), binary == "authorizer", "{mode}: {binary} reads GROUP_RIGHTS?");
            if let Some(groups) = groups {
                assert_eq!(groups, "Ref:CognitoGroupRights", "{mode}");
            }
        }
    }
    let expected = ["authorizer", "connect", "default", "send_message"];
    assert_eq!(with_rights, expected.iter().map(|b| b.to_string()).collect(), "the functions that check rights");
    // Each route function reads its settings once, at cold start.
    for binary in ["default", "send_message"] {
        let source = std::fs::read_to_string(repo().join(format!("functions/lambdas/src/bin/{binary}.rs"))).unwrap();
        assert!(source.contains("RouteSettings::from_settings(|name| std::env::var(name).ok())"), "{binary}");
    }

    let parameter = |name: &str| &raw["Parameters"][name];
    let default = parameter("DefaultRights");
    assert_eq!(default["Default"], chat_core::rights::OPEN, "today's behaviour unless configured");
    let groups = parameter("CognitoGroupRights");
    assert_eq!(groups["Default"], "", "groups grant nothing unless mapped");
    // The patterns refuse at deploy time only what the functions would refuse at
    // cold start (the parsers stay the judges of the limits).
    let pattern = |p: &Value| regex::Regex::new(p["AllowedPattern"].as_str().unwrap()).unwrap();
    let (default_pattern, groups_pattern) = (pattern(default), pattern(groups));
    let rights =
        ["*=rw", "lobby=rw;team-*=rw;announcements=r", " lobby = rw ;; ops=r ;", "*=", "mods=rwm;*=r", "a-_9*=w"];
    for good in rights {
        assert!(chat_core::rights::Rights::parse(good).is_ok(), "{good:?}");
        assert!(default_pattern.is_match(good), "DefaultRights refuses {good:?}");
    }
    for bad in ["lobby", "lobby=rx", "no spaces=r", "a*b=r", "lobby:rw", "*=rw,ops=r", "lobby=rw;;x", ""] {
        assert!(chat_core::rights::Rights::parse(bad).is_err() || bad.is_empty(), "{bad:?}");
        assert!(!default_pattern.is_match(bad), "DefaultRights accepts {bad:?}");
    }
    let open = chat_core::rights::Rights::default();
    for good in ["", "moderators:*=rwm", "moderators:*=rwm staff:team-*=rw;announcements=r", "org:team:a:team-a=rw"] {
        assert!(chat_core::auth::GroupRights::parse(good, &open).is_ok(), "{good:?}");
        assert!(groups_pattern.is_match(good), "CognitoGroupRights refuses {good:?}");
    }
    for bad in ["moderators", "moderators=rwm", ":*=r", "staff:", "staff:lobby=rx;ops", "staff:lobby=r, mods:*=m"] {
        assert!(chat_core::auth::GroupRights::parse(bad, &open).is_err(), "{bad:?}");
        assert!(!groups_pattern.is_match(bad), "CognitoGroupRights accepts {bad:?}");
    }
}

#[test]
fn rate_limits_are_parameters_given_to_the_functions_that_count_them() {
    use chat_core::rate::RateLimits;
    let raw = template();
    let functions = functions(&raw);
    let wired = [
        ("send_message", [("SEND_RATE", "SendRate"), ("SEND_BURST", "SendBurst")]),
        ("default", [("READ_RATE", "ReadRate"), ("READ_BURST", "ReadBurst")]),
    ];
    let mut defaults = BTreeMap::new();
    for (binary, settings) in wired {
        let env = &functions[binary]["Properties"]["Environment"]["Variables"];
        for (name, parameter) in settings {
            assert_eq!(text(&env[name]), format!("Ref:{parameter}"), "{binary}: {name}");
            let default = &raw["Parameters"][parameter]["Default"];
            let default = default.as_str().map(str::to_owned).or_else(|| default.as_u64().map(|n| n.to_string()));
            defaults.insert(name, default.unwrap_or_else(|| panic!("{parameter} has a default")));
        }
        // Read once per cold start, with the rest of the route settings.
        let source = std::fs::read_to_string(repo().join(format!("functions/lambdas/src/bin/{binary}.rs"))).unwrap();
        assert!(source.contains("RouteSettings::from_settings(|name| std::env::var(name).ok())"), "{binary}");
    }
    // The template's defaults are the code's, and what the parameters allow the code accepts.
    let from = |vars: &BTreeMap<&str, String>| RateLimits::from_settings(|name| vars.get(name).cloned());
    assert_eq!(from(&defaults).unwrap(), RateLimits::default());
    for burst in ["SendBurst", "ReadBurst"] {
        let (min, max) = (&raw["Parameters"][burst]["MinValue"], &raw["Parameters"][burst]["MaxValue"]);
        for (value, ok) in [(min.as_u64().unwrap(), true), (max.as_u64().unwrap(), true), (0, false)] {
            let vars = BTreeMap::from([("SEND_BURST", value.to_string()), ("READ_BURST", value.to_string())]);
            assert_eq!(from(&vars).is_ok(), ok, "{burst} {value}");
        }
    }
    let pattern = raw["Parameters"]["SendRate"]["AllowedPattern"].as_str().unwrap();
    assert_eq!(pattern, raw["Parameters"]["ReadRate"]["AllowedPattern"].as_str().unwrap());
    assert_eq!(pattern, r"^(off|[0-9]+(\.[0-9]+)?)$", "off, or a decimal the code parses");
    for rate in ["off", "0.5", "10", "250"] {
        assert!(from(&BTreeMap::from([("SEND_RATE", rate.to_owned())])).is_ok(), "{rate}");
    }
    // No other function holds them: the limits live where the tokens are taken.
    for (binary, function) in &functions {
        let env = &function["Properties"]["Environment"]["Variables"];
        for name in ["SEND_RATE", "SEND_BURST", "READ_RATE", "READ_BURST"] {
            let expected = matches!((binary.as_str(), name), ("send_message", "SEND_RATE" | "SEND_BURST"))
                || matches!((binary.as_str(), name), ("default", "READ_RATE" | "READ_BURST"));
            assert_eq!(env.get(name).is_some(), expected, "{binary}: {name}");
        }
    }
}

#[test]
fn routes_match_the_local_stack() {
    let template = template();
    let resources = template["Resources"].as_mapping().unwrap();
    let api = &template["Resources"]["WebSocketApi"];
    assert_eq!(api["Properties"]["RouteSelectionExpression"], "$request.body.action");
    let routes: BTreeMap<String, (String, bool)> = resources
        .iter()
        .filter(|(_, r)| {
            r["Type"] == "AWS::ApiGatewayV2::Route" && text(&r["Properties"]["ApiId"]) == "Ref:WebSocketApi"
        })
        .map(|(id, r)| {
            let two_way = resources.values().any(|rr| {
                rr["Type"] == "AWS::ApiGatewayV2::RouteResponse"
                    && text(&rr["Properties"]["RouteId"]) == format!("Ref:{}", id.as_str().unwrap())
            });
            (r["Properties"]["RouteKey"].as_str().unwrap().to_owned(), (id.as_str().unwrap().to_owned(), two_way))
        })
        .collect();
    let mut expected: BTreeMap<String, bool> =
        ["$connect", "$disconnect", "$default"].iter().map(|k| (k.to_string(), false)).collect();
    for (key, route_response) in chat_local::functions::ROUTES {
        expected.insert(key.to_string(), *route_response);
    }
    let actual: BTreeMap<String, bool> = routes.iter().map(|(k, (_, two_way))| (k.clone(), *two_way)).collect();
    assert_eq!(actual, expected, "route keys and route responses as infra/local's ROUTES");
    let (sendmessage, _) = &routes["sendmessage"];
    assert_eq!(
        template["Resources"][sendmessage.as_str()]["Properties"]["RouteResponseSelectionExpression"],
        "$default"
    );
}

/// The publish API: an HTTP API whose one route, the local stack's, is
/// IAM-authorized and proxied (payload 2.0) to the publish function, on an
/// auto-deployed stage throttled by its own parameters, invokable by that API
/// alone, with its URL as an output.
#[test]
fn the_publish_api_is_one_iam_authorized_throttled_route_to_the_publish_function() {
    let template = template();
    let resources = &template["Resources"];
    assert_eq!(resources["PublishApi"]["Type"], "AWS::ApiGatewayV2::Api");
    assert_eq!(resources["PublishApi"]["Properties"]["ProtocolType"], "HTTP");
    let on_api = |kind: &str| -> Vec<&Value> {
        resources
            .as_mapping()
            .unwrap()
            .values()
            .filter(|r| r["Type"] == kind && text(&r["Properties"]["ApiId"]) == "Ref:PublishApi")
            .collect()
    };
    let routes = on_api("AWS::ApiGatewayV2::Route");
    assert_eq!(routes.len(), 1, "one route");
    let route = &routes[0]["Properties"];
    assert_eq!(route["RouteKey"], format!("POST {}", chat_local::publish::ROUTE_PATH));
    assert_eq!(route["AuthorizationType"], "AWS_IAM", "SigV4-signed callers only");
    assert_eq!(text(&route["Target"]), "Sub:integrations/${PublishIntegration}");
    let integration = &resources["PublishIntegration"]["Properties"];
    assert_eq!(
        (integration["IntegrationType"].as_str(), integration["PayloadFormatVersion"].as_str()),
        (Some("AWS_PROXY"), Some("2.0"))
    );
    assert_eq!(text(&integration["IntegrationUri"]), "GetAtt:PublishFunction.Arn");
    let stages = on_api("AWS::ApiGatewayV2::Stage");
    assert_eq!(stages.len(), 1);
    let stage = &stages[0]["Properties"];
    assert_eq!(stage["AutoDeploy"], true);
    for limit in ["ThrottlingRateLimit", "ThrottlingBurstLimit"] {
        let parameter = text(&stage["DefaultRouteSettings"][limit]);
        assert_eq!(parameter, format!("Ref:Publish{limit}"));
        let parameter = &template["Parameters"][parameter.trim_start_matches("Ref:")];
        assert!(parameter["Default"].as_u64().is_some_and(|d| d > 0) && parameter.get("MaxValue").is_some());
    }
    let access = &stage["AccessLogSettings"];
    assert_eq!(text(&access["DestinationArn"]), "GetAtt:PublishAccessLogGroup.Arn");
    let format: serde_json::Value = serde_json::from_str(access["Format"].as_str().unwrap()).unwrap();
    assert_eq!(format["caller"], "$context.identity.userArn", "who published");
    let permission = &resources["PublishInvokePermission"]["Properties"];
    assert_eq!(text(&permission["FunctionName"]), "Ref:PublishFunction");
    assert_eq!(
        text(&permission["SourceArn"]),
        "Sub:arn:${AWS::Partition}:execute-api:${AWS::Region}:${AWS::AccountId}:${PublishApi}/*/POST/rooms/*/messages"
    );
    let url = text(&template["Outputs"]["PublishApiUrl"]["Value"]);
    assert_eq!(url, "Sub:https://${PublishApi}.execute-api.${AWS::Region}.amazonaws.com");
    let function = &functions(&template)["publish"];
    assert_eq!(text(&function["Properties"]["LoggingConfig"]["LogGroup"]), "Ref:PublishLogGroup");
}

#[test]
fn the_stream_event_source_reports_partial_failures_and_gives_up() {
    let template = template();
    let broadcaster = &functions(&template)["broadcaster"];
    let stream = &broadcaster["Properties"]["Events"]["MessageStream"]["Properties"];
    assert_eq!(stream["FunctionResponseTypes"], serde_yaml::from_str::<Value>("[ReportBatchItemFailures]").unwrap());
    assert_eq!(stream["BisectBatchOnFunctionError"], true);
    for bounded in ["MaximumRetryAttempts", "MaximumRecordAgeInSeconds", "BatchSize", "MaximumBatchingWindowInSeconds"]
    {
        let parameter = text(&stream[bounded]);
        let parameter = &template["Parameters"][parameter.trim_start_matches("Ref:")];
        assert!(parameter.get("MaxValue").is_some(), "{bounded} is a bounded parameter");
    }
    let retries = &template["Parameters"]["StreamMaximumRetryAttempts"];
    assert!(retries["Default"].as_i64().unwrap() <= 10, "failing batches are given up soon");
    for function in functions(&template).values() {
        let properties = &function["Properties"];
        let globals = &template["Globals"]["Function"];
        let get = |key: &str| properties.get(key).unwrap_or(&globals[key]).clone();
        assert_eq!(get("Runtime"), "provided.al2023");
        assert_eq!(get("Architectures"), serde_yaml::from_str::<Value>("[arm64]").unwrap());
        assert_eq!(function["Metadata"]["BuildMethod"], "rust-cargolambda");
    }
}

/// Each `AuthMode` with an authorizer; `shared-secret+arn` brings its own secret.
const AUTH_MODES: &[&str] = &["shared-secret", "shared-secret+arn", "cognito", "oidc"];

/// The template's conditions for an `AuthMode` (`none` included), the archive
/// switch and a customer-managed key on the shared secret; every other parameter
/// at its default.
fn template_conditions(mode: &str, archive: bool, cmk: bool) -> HashMap<&'static str, bool> {
    let shared_secret = mode.starts_with("shared-secret");
    HashMap::from([
        ("ArchiveEnabled", archive),
        ("EventsEnabled", true),
        ("AuthorizerEnabled", mode != "none"),
        ("SharedSecretMode", shared_secret),
        ("CreateJwtSecret", mode == "shared-secret"),
        ("CognitoMode", mode == "cognito"),
        ("OidcMode", mode == "oidc"),
        ("AlarmEmailGiven", false),
        ("JwtSecretCustomerKey", shared_secret && cmk),
        ("CognitoSelfSignUp", false),
        ("CreateApiGatewayLogRole", false),
        ("BroadcasterConcurrencyReserved", true),
        ("AuthorizerConcurrencyReserved", true),
    ])
}

fn auth_conditions(mode: &str, archive: bool) -> HashMap<&'static str, bool> {
    template_conditions(mode, archive, false)
}

#[test]
fn the_conditions_modelled_are_the_templates() {
    let raw = template();
    let declared: BTreeSet<&str> =
        raw["Conditions"].as_mapping().unwrap().keys().map(|k| k.as_str().unwrap()).collect();
    let modelled: BTreeSet<&str> = template_conditions("none", false, false).into_keys().collect();
    assert_eq!(declared, modelled, "every condition has a value in template_conditions");
}

#[test]
fn the_authorizer_guards_connect_in_every_auth_mode_but_none() {
    let raw = template();
    let modes = raw["Parameters"]["AuthMode"]["AllowedValues"].as_sequence().unwrap();
    let modes: Vec<&str> = modes.iter().map(|m| m.as_str().unwrap()).collect();
    assert_eq!(modes, ["none", "shared-secret", "cognito", "oidc"]);
    for mode in AUTH_MODES.iter().copied().chain(["none"]) {
        let template = resolve(&raw, &auth_conditions(mode, false)).unwrap();
        let enabled = mode != "none";
        let route = &template["Resources"]["ConnectRoute"]["Properties"];
        assert_eq!(route["AuthorizationType"], if enabled { "CUSTOM" } else { "NONE" }, "{mode}");
        assert_eq!(route.get("AuthorizerId").is_some(), enabled);
        if !enabled {
            continue;
        }
        let env = &template["Resources"]["AuthorizerFunction"]["Properties"]["Environment"]["Variables"];
        let names: BTreeSet<&str> = env.as_mapping().unwrap().keys().map(|k| k.as_str().unwrap()).collect();
        let expected: &[&str] = match mode {
            "cognito" | "oidc" => &["DEFAULT_RIGHTS", "GROUP_RIGHTS", "OIDC_AUDIENCE", "OIDC_ISSUER"],
            _ => &["DEFAULT_RIGHTS", "GROUP_RIGHTS", "JWT_AUDIENCE", "JWT_ISSUER", "JWT_SECRET_ARN"],
        };
        assert_eq!(names, expected.iter().copied().collect(), "{mode}: the secret itself is never in the environment");
        // Every variable but the secret's ARN (read by chat-lambdas) is one the verifier reads.
        let read = Mutex::new(BTreeSet::new());
        chat_core::auth::VerifierConfig::from_settings(|name| {
            read.lock().unwrap().insert(name.to_owned());
            match name {
                "JWT_SECRET" => Some("a-test-secret-that-is-32-bytes!!".into()),
                "OIDC_ISSUER" | "OIDC_AUDIENCE" if !mode.starts_with("shared-secret") => Some("x".into()),
                _ => None,
            }
        })
        .unwrap();
        for name in names.iter().filter(|n| **n != "JWT_SECRET_ARN") {
            assert!(read.lock().unwrap().contains(*name), "{mode}: {name} is read by the verifier");
        }
        if mode.starts_with("shared-secret") {
            // HS256 tokens are pinned: a token minted with the secret for something else is refused.
            for (variable, parameter) in [("JWT_ISSUER", "JwtIssuer"), ("JWT_AUDIENCE", "JwtAudience")] {
                assert_eq!(text(&env[variable]), format!("Ref:{parameter}"));
                let parameter = &raw["Parameters"][parameter];
                assert_eq!(parameter["Default"], "websocket-chat", "{variable}");
                assert_eq!(parameter["MinLength"], 1, "{variable} cannot be empty");
            }
        }
        if mode == "cognito" {
            let issuer = text(&env["OIDC_ISSUER"]);
            assert_eq!(issuer, "Sub:https://cognito-idp.${AWS::Region}.amazonaws.com/${UserPool}");
            assert_eq!(text(&env["OIDC_AUDIENCE"]), "Ref:UserPoolClient");
            let client = &template["Resources"]["UserPoolClient"]["Properties"];
            assert_eq!(client["GenerateSecret"], false, "a page keeps no secret: PKCE instead");
            assert_eq!(client["AllowedOAuthFlows"][0], "code");
        }
    }
    for resource in ["ConnectAuthorizer", "AuthorizerFunction", "AuthorizerRole", "AuthorizerLogGroup"] {
        assert_eq!(raw["Resources"][resource]["Condition"], "AuthorizerEnabled", "{resource} exists only when enabled");
    }
    for resource in ["UserPool", "UserPoolClient", "UserPoolDomain"] {
        assert_eq!(raw["Resources"][resource]["Condition"], "CognitoMode");
    }
    assert_eq!(raw["Resources"]["JwtSecret"]["Type"], "AWS::SecretsManager::Secret");
    let authorizer = &raw["Resources"]["ConnectAuthorizer"]["Properties"];
    assert_eq!(authorizer["IdentitySource"][0], "route.request.querystring.Authorization");
}

/// The metric names of one dashboard widget's `metrics` rows, as (namespace,
/// name), expanding CloudWatch's `"."` (same as the row above) and `"..."`
/// (the row above, with other dimension values) shorthands.
fn dashboard_metrics(rows: &[serde_json::Value]) -> Vec<(String, String)> {
    let mut previous: Vec<String> = Vec::new();
    let mut named = Vec::new();
    for row in rows {
        let row: Vec<String> = row.as_array().unwrap().iter().filter_map(|v| v.as_str().map(str::to_owned)).collect();
        let expanded: Vec<String> = if row.first().map(String::as_str) == Some("...") {
            previous[..2].to_vec()
        } else {
            row.iter().enumerate().map(|(i, v)| if v == "." { previous[i].clone() } else { v.clone() }).collect()
        };
        named.push((expanded[0].clone(), expanded[1].clone()));
        previous = expanded;
    }
    named
}

#[test]
fn alarms_and_the_dashboard_watch_metrics_that_exist() {
    let raw = template();
    let resources = raw["Resources"].as_mapping().unwrap();
    // What the broadcaster's EMF line carries (every optional member present).
    let metrics = chat_lambdas::emf::BroadcastMetrics { lag: Some(Duration::ZERO), ..Default::default() };
    let document = chat_lambdas::emf::document("broadcaster", &metrics, 0);
    let emitted: BTreeSet<String> = document["_aws"]["CloudWatchMetrics"][0]["Metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["Name"].as_str().unwrap().to_owned())
        .collect();
    let namespace = chat_lambdas::emf::NAMESPACE;

    let mut watched = BTreeSet::new();
    for (name, alarm) in resources.iter().filter(|(_, r)| r["Type"] == "AWS::CloudWatch::Alarm") {
        let properties = &alarm["Properties"];
        let actions: Vec<String> = list(&properties["AlarmActions"]).into_iter().map(text).collect();
        assert_eq!(actions, ["Ref:AlarmTopic"], "{name:?} notifies the alarm topic");
        let single = properties.get("MetricName").map(|m| (properties["Namespace"].clone(), m.clone()));
        let math = properties.get("Metrics").into_iter().flat_map(|m| m.as_sequence().unwrap()).filter_map(|query| {
            let metric = query.get("MetricStat")?.get("Metric")?;
            Some((metric["Namespace"].clone(), metric["MetricName"].clone()))
        });
        for (ns, metric) in single.into_iter().chain(math) {
            let (ns, metric) = (ns.as_str().unwrap().to_owned(), metric.as_str().unwrap().to_owned());
            if ns == namespace {
                assert!(emitted.contains(&metric), "{name:?} watches {metric}, which the EMF line does not carry");
            }
            watched.insert(metric);
        }
    }
    for concern in [
        "IteratorAge",                        // the stream falls behind
        "ApproximateNumberOfMessagesVisible", // batches given up
        "Errors",                             // broadcaster failures
        "BatchesRetried",                     // ... and batches it asked to retry
        "IntegrationError",                   // 5xx
        "ExecutionError",
        "ClientError", // 4xx
        "ConnectCount",
        "MessageCount",
    ] {
        assert!(watched.contains(concern), "no alarm watches {concern}");
    }
    assert_eq!(text(&raw["Resources"]["AlarmEmailSubscription"]["Condition"]), "AlarmEmailGiven");

    // The dashboard's body is JSON once CloudFormation substitutes it, and its
    // EMF widgets name metrics the broadcaster emits.
    let body = &raw["Resources"]["Dashboard"]["Properties"]["DashboardBody"];
    let serde_yaml::Value::Tagged(sub) = body else { panic!("DashboardBody: !Sub [body, variables]") };
    let body = sub.value.as_sequence().unwrap()[0].as_str().unwrap();
    let mut substituted = String::new();
    let mut rest = body;
    while let Some(start) = rest.find("${") {
        let end = rest[start..].find('}').expect("closed ${...}") + start;
        substituted.push_str(&rest[..start]);
        substituted.push_str("placeholder");
        rest = &rest[end + 1..];
    }
    substituted.push_str(rest);
    let dashboard: serde_json::Value = serde_json::from_str(&substituted).expect("the dashboard body is JSON");
    let mut shown = 0;
    for widget in dashboard["widgets"].as_array().unwrap() {
        let Some(rows) = widget["properties"]["metrics"].as_array() else { continue };
        for (ns, metric) in dashboard_metrics(rows) {
            if ns == namespace {
                assert!(emitted.contains(&metric), "the dashboard shows {metric}, which the EMF line does not carry");
                shown += 1;
            }
        }
    }
    assert!(shown >= 8, "the dashboard shows the broadcaster's counters");
}

#[test]
fn the_page_config_names_the_stacks_own_endpoint() {
    // The page sends its token only to the endpoint its config.json names
    // (frontend/address.js): every mode's PageConfig must name the stack's own.
    let raw = template();
    let url = text(&raw["Outputs"]["WebSocketUrl"]["Value"]);
    let endpoint = url.trim_start_matches("Sub:");
    for mode in AUTH_MODES {
        let resolved = resolve(&raw, &auth_conditions(mode, false)).unwrap();
        // The JSON is the first string under the `!Sub` (plain, or `[text, variables]`).
        let mut value = &resolved["Outputs"]["PageConfig"]["Value"];
        while let Value::Tagged(tagged) = value {
            value = &tagged.value;
        }
        let page_config = list(value)[0].as_str().unwrap();
        assert!(page_config.contains(&format!(r#""endpoint":"{endpoint}""#)), "{mode}: {page_config}");
    }
}
