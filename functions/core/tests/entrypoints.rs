//! The shared entrypoints fed the exact JSON shapes AWS delivers
//! (fixtures copied from `../shared/spec/events/`).

use std::sync::Arc;

use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use aws_lambda_events::dynamodb::Event;
use aws_lambda_events::encodings::Body;
use chat_core::broadcaster::{Broadcaster, FanoutConfig};
use chat_core::entrypoints::websocket::{ConnectSettings, RouteSettings};
use chat_core::entrypoints::{stream, websocket};
use chat_core::memory::{
    FixedClock, MemoryBans, MemoryConnections, MemoryCursors, MemoryLog, MemorySessions, RecordingPoster,
};
use chat_core::ports::ConnectionStore;
use chat_core::room::RoomLimits;
use chat_core::time::{format_iso, parse_iso};
use chat_core::{Connection, EventKind, LogEvent};
use serde_json::{Value, json};

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn ws_event(name: &str) -> ApiGatewayWebsocketProxyRequest {
    serde_json::from_value(fixture(name)).unwrap()
}

const CONNECTION: &str = "CXzQ2cJjoAMCJ6g=";

/// `$connect` with the deployment's default settings and no bans.
async fn upgrade(
    event: &ApiGatewayWebsocketProxyRequest,
    connections: &MemoryConnections,
    sessions: &MemorySessions,
    log: &MemoryLog,
) -> aws_lambda_events::apigw::ApiGatewayProxyResponse {
    websocket::on_connect(event, &ConnectSettings::default(), connections, sessions, log, &MemoryBans::default())
        .await
        .unwrap()
}

#[tokio::test]
async fn a_session_from_connect_to_disconnect() {
    let (connections, sessions, log) = (MemoryConnections::default(), MemorySessions::default(), MemoryLog::default());

    let response = upgrade(&ws_event("connect.json"), &connections, &sessions, &log).await;
    assert_eq!(response.status_code, 200);
    let row = connections.get(CONNECTION).unwrap();
    assert_eq!(row.source_ip, "203.0.113.7");
    assert_eq!(format_iso(&row.connected_at), "2026-11-24T10:15:30Z");

    let response = websocket::on_send_message(&ws_event("message.json"), &RouteSettings::default(), &connections, &log)
        .await
        .unwrap();
    assert_eq!(response.body, None, "a chat line is not echoed by the send handler");

    websocket::on_disconnect(&ws_event("disconnect.json"), &connections, &sessions, &log).await.unwrap();
    assert!(connections.get(CONNECTION).is_none());
    let session = sessions.get(CONNECTION).unwrap();
    assert_eq!(session.duration_seconds, Some(70));
    assert_eq!(session.disconnected_at.map(|t| format_iso(&t)).as_deref(), Some("2026-11-24T10:16:40Z"));

    let kinds: Vec<_> = log.events().iter().map(|e| (e.kind, e.message.clone())).collect();
    assert_eq!(kinds[1], (EventKind::Chat, "hello".to_owned()));
    assert_eq!(kinds[0].0, EventKind::Join);
    assert_eq!(kinds[2].0, EventKind::Leave);
    assert_eq!(format_iso(&log.events()[1].timestamp), "2026-11-24T10:15:32Z");
}

#[tokio::test]
async fn the_room_query_parameter_places_the_connection_and_its_lines() {
    let (connections, sessions, log) = (MemoryConnections::default(), MemorySessions::default(), MemoryLog::default());
    let mut connect = fixture("connect.json");
    connect["queryStringParameters"]["room"] = json!("rust-users");
    let connect: ApiGatewayWebsocketProxyRequest = serde_json::from_value(connect).unwrap();
    assert_eq!(upgrade(&connect, &connections, &sessions, &log).await.status_code, 200);
    assert_eq!(connections.get(CONNECTION).unwrap().room, "rust-users");
    websocket::on_send_message(&ws_event("message.json"), &RouteSettings::default(), &connections, &log).await.unwrap();
    websocket::on_disconnect(&ws_event("disconnect.json"), &connections, &sessions, &log).await.unwrap();
    let rooms: Vec<_> = log.events().iter().map(|e| (e.kind, e.room.clone())).collect();
    let room = || "rust-users".to_owned();
    assert_eq!(rooms, [(EventKind::Join, room()), (EventKind::Chat, room()), (EventKind::Leave, room())]);
}

#[tokio::test]
async fn a_malformed_room_refuses_the_upgrade_with_400_and_stores_nothing() {
    for room in ["", "has space", "../etc", &"x".repeat(65)] {
        let (connections, sessions, log) =
            (MemoryConnections::default(), MemorySessions::default(), MemoryLog::default());
        let mut connect = fixture("connect.json");
        connect["queryStringParameters"]["room"] = json!(room);
        let connect: ApiGatewayWebsocketProxyRequest = serde_json::from_value(connect).unwrap();
        let response = upgrade(&connect, &connections, &sessions, &log).await;
        assert_eq!(response.status_code, 400, "{room:?}");
        let Some(Body::Text(body)) = response.body else { panic!("a reason") };
        assert!(body.contains("Room must be"), "{body}");
        assert!(connections.ids().is_empty() && log.events().is_empty());
    }
}

#[tokio::test]
async fn batch_1_on_connect_is_remembered_on_the_row_and_a_bad_value_refused() {
    for (query, expected) in [
        (json!({"batch": "1", "room": "ops"}), Some(true)),
        (json!({}), Some(false)),
        (json!({"batch": "0"}), Some(false)),
        (json!({"batch": "yes"}), None),
    ] {
        let (connections, sessions, log) =
            (MemoryConnections::default(), MemorySessions::default(), MemoryLog::default());
        let mut raw = fixture("connect.json");
        raw["queryStringParameters"] = query.clone();
        let event: ApiGatewayWebsocketProxyRequest = serde_json::from_value(raw).unwrap();
        let response = upgrade(&event, &connections, &sessions, &log).await;
        match expected {
            Some(batch) => {
                assert_eq!(response.status_code, 200, "{query}");
                assert_eq!(connections.get(CONNECTION).unwrap().batch, batch, "{query}");
            }
            None => {
                assert_eq!(response.status_code, 400, "{query}");
                let Some(Body::Text(body)) = response.body else { panic!("a reason") };
                assert!(body.contains("batch must be"), "{body}");
                assert!(connections.ids().is_empty() && log.events().is_empty());
            }
        }
    }
}

/// Connects with `query` and, if given, the authorizer context API Gateway attaches;
/// returns the status and the stored join event's `(user, verified, user_id)`,
/// after checking that the connection row and the session carry the same identity.
async fn connect_with(query: Value, authorizer: Option<Value>) -> (i64, Option<StoredIdentity>) {
    let (connections, sessions, log) = (MemoryConnections::default(), MemorySessions::default(), MemoryLog::default());
    let mut raw = fixture("connect.json");
    raw["queryStringParameters"] = query;
    if let Some(context) = authorizer {
        raw["requestContext"]["authorizer"] = context;
    }
    let event: ApiGatewayWebsocketProxyRequest = serde_json::from_value(raw).unwrap();
    let status = upgrade(&event, &connections, &sessions, &log).await.status_code;
    let join = log.events().first().map(|e| (e.user.clone(), e.verified, e.user_id.clone()));
    if let Some(row) = connections.get(CONNECTION) {
        let session = sessions.get(CONNECTION).unwrap();
        assert_eq!(Some((row.user, row.verified, row.user_id)), join, "the row names the join's speaker");
        assert_eq!(Some((session.user, session.verified, session.user_id)), join, "and so does the session");
    }
    (status, join)
}

type StoredIdentity = (Option<String>, Option<bool>, Option<String>);

#[tokio::test]
async fn names_come_verified_from_the_authorizer_or_unverified_from_the_query() {
    let named = |user: &str, verified, user_id: Option<&str>| {
        Some((Some(user.to_owned()), Some(verified), user_id.map(str::to_owned)))
    };
    assert_eq!(connect_with(json!({"name": " Ada "}), None).await, (200, named("Ada", false, None)));
    assert_eq!(connect_with(json!({}), None).await, (200, Some((None, None, None))), "anonymous, as the seed");
    let context =
        json!({"principalId": "https://id.example|sub-123", "name": "grace", "userId": "https://id.example|sub-123"});
    assert_eq!(
        connect_with(json!({"name": "mallory"}), Some(context)).await,
        (200, named("grace", true, Some("https://id.example|sub-123"))),
        "a verified name wins over a chosen one, and the account comes with it"
    );
    let no_name = json!({"principalId": "sub-123"});
    assert_eq!(connect_with(json!({}), Some(no_name)).await, (200, named("sub-123", true, None)));
    for bad in ["", "   ", "line\nbreak", "ali\u{202E}ce", &"x".repeat(33)] {
        assert_eq!(connect_with(json!({"name": bad}), None).await, (400, None), "{bad:?}");
    }
}

#[tokio::test]
async fn ping_is_answered_in_the_route_response() {
    let log = MemoryLog::default();
    let mut event = ws_event("message.json");
    event.body = Some(r#"{"action":"sendmessage","message":"ping"}"#.into());
    let response = websocket::on_send_message(&event, &RouteSettings::default(), &MemoryConnections::default(), &log)
        .await
        .unwrap();
    assert_eq!(response.body, Some(Body::Text(r#"{"message":"pong"}"#.into())));
    assert!(log.events().is_empty());
}

#[tokio::test]
async fn default_posts_the_error_to_the_sender() {
    let (log, poster) = (MemoryLog::default(), RecordingPoster::default());
    let mut event = ws_event("message.json");
    event.body = Some(r#"{"action":"nope"}"#.into());
    let (settings, cursors) = (RouteSettings::default(), MemoryCursors::default());
    websocket::on_default(
        &event,
        &settings,
        &MemoryConnections::default(),
        &cursors,
        &log,
        &poster,
        &MemoryBans::default(),
    )
    .await
    .unwrap();
    assert_eq!(poster.frames_to(CONNECTION)[0]["error"], "Invalid request");
}

#[tokio::test]
async fn the_tokens_rooms_are_subscribed_at_connect_and_bad_names_left_out() {
    let (connections, sessions, log) = (MemoryConnections::default(), MemorySessions::default(), MemoryLog::default());
    let mut raw = fixture("connect.json");
    raw["queryStringParameters"] = json!({"room": "ops"});
    raw["requestContext"]["authorizer"] =
        json!({"principalId": "iss|u1", "name": "ada", "userId": "iss|u1", "rooms": "team-a, ops,no good,,dev"});
    let event: ApiGatewayWebsocketProxyRequest = serde_json::from_value(raw).unwrap();
    let settings = ConnectSettings {
        routes: RouteSettings { limits: RoomLimits { max_rooms: 3 }, ..RouteSettings::default() },
        ..ConnectSettings::default()
    };
    let status = websocket::on_connect(&event, &settings, &connections, &sessions, &log, &MemoryBans::default())
        .await
        .unwrap()
        .status_code;
    assert_eq!(status, 200, "a bad room name in the token does not refuse the user");
    assert_eq!(connections.get(CONNECTION).unwrap().rooms, ["ops", "team-a", "dev"], "home first, then the token's");
    let joins: Vec<String> = log.events().iter().map(|e| e.room.clone()).collect();
    assert_eq!(joins, ["ops", "team-a", "dev"]);
}

#[tokio::test]
async fn an_event_without_connection_id_is_an_error() {
    let mut raw = fixture("message.json");
    raw["requestContext"].as_object_mut().unwrap().remove("connectionId");
    let event: ApiGatewayWebsocketProxyRequest = serde_json::from_value(raw).unwrap();
    let error = websocket::on_send_message(
        &event,
        &RouteSettings::default(),
        &MemoryConnections::default(),
        &MemoryLog::default(),
    )
    .await
    .unwrap_err();
    assert!(error.to_string().contains("connectionId"), "{error}");
}

fn broadcaster(connections: Arc<MemoryConnections>, poster: Arc<RecordingPoster>) -> Broadcaster {
    Broadcaster {
        connections,
        sessions: Arc::new(MemorySessions::default()),
        log: Arc::new(MemoryLog::default()),
        poster,
        archive: None,
        clock: Arc::new(FixedClock::at(parse_iso("2026-11-24T10:20:00Z").unwrap())),
        config: FanoutConfig::default(),
        occupancy: Default::default(),
    }
}

#[tokio::test]
async fn a_stream_insert_reaches_every_connection() {
    let connections = Arc::new(MemoryConnections::default());
    let poster = Arc::new(RecordingPoster::default());
    for id in [CONNECTION, "other0000000000="] {
        connections.put(&Connection::new(id, "ip", parse_iso("2026-11-24T10:00:00Z").unwrap())).await.unwrap();
    }
    let event: Event = serde_json::from_value(fixture("stream-insert.json")).unwrap();
    let response = stream::on_stream(&event, &broadcaster(connections, poster.clone())).await;

    assert!(response.batch_item_failures.is_empty());
    for id in [CONNECTION, "other0000000000="] {
        let frames = poster.frames_to(id);
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0]["message"], "[2026-11-24T10:15:32Z - UTC]\n CXzQ2cJjoAMCJ6g=  hello\n");
        assert_eq!(frames[0]["id"], "019ab5e1-3c44-7d2a-9f1e-2b7c1d0e4a55");
    }
}

#[tokio::test]
async fn malformed_records_are_skipped_and_the_rest_delivered() {
    let connections = Arc::new(MemoryConnections::default());
    let poster = Arc::new(RecordingPoster::default());
    connections
        .put(&Connection::new("reader000000000=", "ip", parse_iso("2026-11-24T10:00:00Z").unwrap()))
        .await
        .unwrap();

    let mut raw = fixture("stream-insert.json");
    let good = raw["Records"][0].clone();
    let mut no_text = good.clone();
    no_text["dynamodb"]["NewImage"].as_object_mut().unwrap().remove("message");
    no_text["dynamodb"]["SequenceNumber"] = json!("100");
    let mut bad_time = good.clone();
    bad_time["dynamodb"]["NewImage"]["timestamp"] = json!({"S": "yesterday"});
    let mut removal = good.clone();
    removal["eventName"] = json!("REMOVE");
    // The receipt an acknowledged send writes beside its line: not an event; nor
    // is its replacement once expired (MODIFY), nor its deletion by the TTL.
    let receipt_image = json!({
        "message_id": {"S": "client#lobby#0192f3a4-5b6c-7d8e-9f01-23456789abcd#local|u-1"},
        "event_id": {"S": "019ab5e1-3c44-7d2a-9f1e-2b7c1d0e4a55"},
        "expires_at": {"N": "1795601730"}
    });
    let mut receipt = good.clone();
    receipt["dynamodb"]["NewImage"] = receipt_image.clone();
    let mut renewed = receipt.clone();
    renewed["eventName"] = json!("MODIFY");
    let mut expired = good.clone();
    expired["eventName"] = json!("REMOVE");
    expired["userIdentity"] = json!({"type": "Service", "principalId": "dynamodb.amazonaws.com"});
    expired["dynamodb"].as_object_mut().unwrap().remove("NewImage");
    expired["dynamodb"]["OldImage"] = receipt_image;
    raw["Records"] = json!([no_text, bad_time, removal, receipt, renewed, expired, good]);

    let event: Event = serde_json::from_value(raw).unwrap();
    let response = stream::on_stream(&event, &broadcaster(connections, poster.clone())).await;

    assert!(response.batch_item_failures.is_empty(), "malformed records are never retried");
    let frames = poster.frames_to("reader000000000=");
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0]["text"], "hello");
}

#[tokio::test]
async fn failures_name_the_stream_sequence_numbers() {
    let connections = Arc::new(MemoryConnections::default());
    connections.outage.set(true);
    let event: Event = serde_json::from_value(fixture("stream-insert.json")).unwrap();
    let response = stream::on_stream(&event, &broadcaster(connections, Arc::new(RecordingPoster::default()))).await;
    let ids: Vec<_> = response.batch_item_failures.iter().map(|f| f.item_identifier.clone()).collect();
    assert_eq!(ids, [Some("4421584500000000017450439091".to_owned())]);
    let wire = serde_json::to_value(&response).unwrap();
    assert_eq!(wire["batchItemFailures"][0]["itemIdentifier"], "4421584500000000017450439091");
}

/// Connects with `headers` merged into the fixture's (both maps, as API Gateway
/// sends them); returns the status and whether anything was stored.
async fn connect_from(settings: &ConnectSettings, headers: &[(&str, &str)]) -> (i64, bool) {
    let (connections, sessions, log) = (MemoryConnections::default(), MemorySessions::default(), MemoryLog::default());
    let mut raw = fixture("connect.json");
    for (name, value) in headers {
        raw["headers"][name] = json!(value);
        raw["multiValueHeaders"][name] = json!([value]);
    }
    let event: ApiGatewayWebsocketProxyRequest = serde_json::from_value(raw).unwrap();
    let status = websocket::on_connect(&event, settings, &connections, &sessions, &log, &MemoryBans::default())
        .await
        .unwrap()
        .status_code;
    let stored = !connections.ids().is_empty() || !log.events().is_empty() || sessions.get(CONNECTION).is_some();
    (status, stored)
}

#[tokio::test]
async fn an_upgrade_from_a_page_of_another_origin_is_refused_with_403() {
    let vars = |name: &str| (name == "ALLOWED_ORIGINS").then(|| "https://chat.example.com".to_owned());
    let settings = ConnectSettings::from_settings(vars).unwrap();
    for name in ["Origin", "origin", "ORIGIN"] {
        assert_eq!(connect_from(&settings, &[(name, "https://evil.example")]).await, (403, false), "{name}");
        assert_eq!(connect_from(&settings, &[(name, "https://chat.example.com")]).await, (200, true), "{name}");
    }
    assert_eq!(connect_from(&settings, &[("Origin", "null")]).await, (403, false), "a sandboxed page");
    assert_eq!(connect_from(&settings, &[]).await, (200, true), "no Origin: wscat, apps");
    let any = ConnectSettings::default();
    assert_eq!(connect_from(&any, &[("Origin", "https://evil.example")]).await, (200, true), "no list: any origin");
}

#[tokio::test]
async fn sessions_carry_an_expiry_only_when_a_retention_is_configured() {
    let expiry = |days: Option<&'static str>| async move {
        let settings =
            ConnectSettings::from_settings(|name| (name == "SESSION_RETENTION_DAYS").then_some(days?.to_owned()));
        let (connections, sessions, log) =
            (MemoryConnections::default(), MemorySessions::default(), MemoryLog::default());
        websocket::on_connect(
            &ws_event("connect.json"),
            &settings.unwrap(),
            &connections,
            &sessions,
            &log,
            &MemoryBans::default(),
        )
        .await
        .unwrap();
        sessions.get(CONNECTION).unwrap().expires_at
    };
    // connect.json's connectedAt is 2026-11-24T10:15:30.123Z.
    let thirty_days = parse_iso("2026-12-24T10:15:30Z").unwrap().timestamp();
    assert_eq!(expiry(Some("30")).await, Some(thirty_days));
    assert_eq!(expiry(Some("0")).await, None, "0 keeps sessions forever");
    assert_eq!(expiry(None).await, None);
    for bad in ["-1", "a week", "1.5"] {
        let vars = |name: &str| (name == "SESSION_RETENTION_DAYS").then(|| bad.to_owned());
        assert!(ConnectSettings::from_settings(vars).is_err(), "{bad}: refuse to start");
    }
}

/// The rights matrix through the entrypoints, as API Gateway delivers them: the
/// authorizer's `rights` (or, without an authorizer, the deployment's default)
/// decide each (room, action); a `rights` field in the frame body changes nothing.
#[tokio::test]
async fn rights_come_from_the_authorizer_context_and_decide_every_room_action() {
    use chat_core::rights::Rights;

    struct Case {
        /// The context's `rights`; `None`: no authorizer ran (the default applies).
        rights: Option<&'static str>,
        default: &'static str,
        room: &'static str,
        /// (subscribe, send, history, who) allowed?
        allowed: [bool; 4],
    }
    let cases = [
        Case {
            rights: Some("lobby=rw;team-*=rw;announcements=r"),
            default: "*=rw",
            room: "team-a",
            allowed: [true; 4],
        },
        Case {
            rights: Some("lobby=rw;team-*=rw;announcements=r"),
            default: "*=rw",
            room: "announcements",
            allowed: [true, false, true, true],
        },
        Case {
            rights: Some("lobby=rw;team-*=rw;announcements=r"),
            default: "*=rw",
            room: "random",
            allowed: [false; 4],
        },
        // Most specific wins: the exact name over the prefix, the longer prefix over `*`.
        Case {
            rights: Some("*=rw;team-*=r;team-lead=rw"),
            default: "",
            room: "team-a",
            allowed: [true, false, true, true],
        },
        Case { rights: Some("*=rw;team-*=r;team-lead=rw"), default: "", room: "team-lead", allowed: [true; 4] },
        Case { rights: Some("*=rw;secret-*="), default: "*=rw", room: "secret-x", allowed: [false; 4] },
        // No authorizer: the default decides.
        Case { rights: None, default: "*=rw", room: "anything", allowed: [true; 4] },
        Case { rights: None, default: "*=r", room: "anything", allowed: [true, false, true, true] },
        Case { rights: None, default: "lobby=rw", room: "anything", allowed: [false; 4] },
        // Context rights that do not parse grant nothing (fail closed).
        Case { rights: Some("lobby=all"), default: "*=rw", room: "anything", allowed: [false; 4] },
    ];
    for case in cases {
        let settings =
            RouteSettings { default_rights: Rights::parse(case.default).unwrap(), ..RouteSettings::default() };
        let (connections, log, poster, cursors) =
            (MemoryConnections::default(), MemoryLog::default(), RecordingPoster::default(), MemoryCursors::default());
        let lobby = Connection::new(CONNECTION, "ip", parse_iso("2026-11-24T10:00:00Z").unwrap()).in_room("lobby");
        connections.put(&lobby).await.unwrap();
        let event = |body: Value| {
            let mut raw = fixture("message.json");
            raw["body"] = json!(body.to_string());
            if let Some(rights) = case.rights {
                raw["requestContext"]["authorizer"] =
                    json!({"principalId": "iss|u1", "userId": "iss|u1", "rights": rights});
            }
            serde_json::from_value::<ApiGatewayWebsocketProxyRequest>(raw).unwrap()
        };
        let forged = json!({"*": "rwm"});
        let subscribe = event(json!({"action": "subscribe", "room": case.room, "rights": forged}));
        websocket::on_default(&subscribe, &settings, &connections, &cursors, &log, &poster, &MemoryBans::default())
            .await
            .unwrap();
        let answer = poster.frames_to(CONNECTION).pop().unwrap();
        let label = format!("{:?} default {:?} in {}", case.rights, case.default, case.room);
        assert_eq!(answer["kind"] == "subscribed", case.allowed[0], "subscribe, {label}: {answer}");
        if !case.allowed[0] {
            assert_eq!(
                (&answer["error"], &answer["room"], &answer["right"]),
                (&json!("Forbidden"), &json!(case.room), &json!("read"))
            );
            assert!(answer.get("count").is_none(), "nothing leaks, not even the member count");
            // Subscribed anyway (as if an earlier grant had let it in): the other actions still check.
            let join = LogEvent::join(CONNECTION, lobby.connected_at).in_room(case.room);
            connections.subscribe(&lobby, case.room, 100, &join).await.unwrap();
        }
        let send = event(json!({"action": "sendmessage", "room": case.room, "message": "hi", "rights": forged}));
        let before = log.events().iter().filter(|e| e.kind == EventKind::Chat).count();
        let reply = websocket::on_send_message(&send, &settings, &connections, &log).await.unwrap();
        let stored = log.events().iter().filter(|e| e.kind == EventKind::Chat).count() - before;
        assert_eq!(stored == 1, case.allowed[1], "send, {label}");
        if !case.allowed[1] {
            let Some(Body::Text(reply)) = reply.body else { panic!("a refusal") };
            let reply: Value = serde_json::from_str(&reply).unwrap();
            assert_eq!((&reply["error"], &reply["right"]), (&json!("Forbidden"), &json!("write")), "{label}");
        }
        for (action, allowed) in [("history", case.allowed[2]), ("who", case.allowed[3])] {
            let request = event(json!({"action": action, "room": case.room, "rights": forged}));
            websocket::on_default(&request, &settings, &connections, &cursors, &log, &poster, &MemoryBans::default())
                .await
                .unwrap();
            let frames = poster.frames_to(CONNECTION);
            let last = frames.last().unwrap();
            assert_eq!(last.get("error").is_none(), allowed, "{action}, {label}: {last}");
        }
    }
}

/// `$connect` to a home room without the read right is refused with 403 and
/// stores nothing; the token's rooms without it are left out.
#[tokio::test]
async fn connect_needs_the_read_right_in_the_home_room_and_drops_unreadable_token_rooms() {
    let connect = |query: Value, rights: &str| {
        let mut raw = fixture("connect.json");
        raw["queryStringParameters"] = query;
        raw["requestContext"]["authorizer"] =
            json!({"principalId": "iss|u1", "userId": "iss|u1", "rights": rights, "rooms": "team-a,secret,team-b"});
        serde_json::from_value::<ApiGatewayWebsocketProxyRequest>(raw).unwrap()
    };
    let (connections, sessions, log) = (MemoryConnections::default(), MemorySessions::default(), MemoryLog::default());
    let (settings, bans) = (ConnectSettings::default(), MemoryBans::default());
    let home = |room: &str| connect(json!({ "room": room }), "team-*=rw");
    let refused =
        websocket::on_connect(&home("secret"), &settings, &connections, &sessions, &log, &bans).await.unwrap();
    assert_eq!(refused.status_code, 403);
    let Some(Body::Text(body)) = refused.body else { panic!("a reason") };
    assert!(body.contains("may not read room \\\"secret\\\""), "{body}");
    assert!(connections.ids().is_empty() && log.events().is_empty(), "nothing stored");

    let ok = websocket::on_connect(&home("team-x"), &settings, &connections, &sessions, &log, &bans).await.unwrap();
    assert_eq!(ok.status_code, 200);
    assert_eq!(connections.get(CONNECTION).unwrap().rooms, ["team-x", "team-a", "team-b"], "secret left out");
}

/// `$connect` of an account banned from its home room is refused with 403
/// naming the ban's end, and stores nothing; a token room it is banned from is
/// left out; once the ban ends (at the connect time API Gateway gives) it
/// connects. An anonymous connection reads no ban.
#[tokio::test]
async fn connect_refuses_a_home_room_the_account_is_banned_from_and_drops_banned_token_rooms() {
    use chat_core::Ban;
    use chat_core::ports::Bans;
    let connect = |room: &str, authorized: bool| {
        let mut raw = fixture("connect.json");
        raw["queryStringParameters"] = json!({ "room": room });
        if authorized {
            raw["requestContext"]["authorizer"] =
                json!({"principalId": "iss|u1", "userId": "iss|u1", "name": "Ann", "rooms": "team-a,team-b"});
        }
        serde_json::from_value::<ApiGatewayWebsocketProxyRequest>(raw).unwrap()
    };
    let connected_at =
        chat_core::time::from_epoch_millis(ws_event("connect.json").request_context.connected_at).unwrap();
    let bans = MemoryBans::default();
    let until = connected_at + chrono::Duration::minutes(5);
    for room in ["ops", "team-b"] {
        bans.ban(&Ban::new(room, "iss|u1", until, "Mo", None)).await.unwrap();
    }
    let (connections, sessions, log) = (MemoryConnections::default(), MemorySessions::default(), MemoryLog::default());
    let settings = ConnectSettings::default();
    let refused =
        websocket::on_connect(&connect("ops", true), &settings, &connections, &sessions, &log, &bans).await.unwrap();
    assert_eq!(refused.status_code, 403);
    let Some(Body::Text(body)) = refused.body else { panic!("a reason") };
    assert!(body.contains(&format!("Banned from room \\\"ops\\\" until {}", format_iso(&until))), "{body}");
    assert!(connections.ids().is_empty() && log.events().is_empty(), "nothing stored");

    let anonymous = connect("ops", false);
    let anonymous = websocket::on_connect(&anonymous, &settings, &connections, &sessions, &log, &bans).await.unwrap();
    assert_eq!(anonymous.status_code, 200, "no account: no ban names it");
    connections.delete(CONNECTION).await.unwrap();

    let lobby = connect("lobby", true);
    let ok = websocket::on_connect(&lobby, &settings, &connections, &sessions, &log, &bans).await.unwrap();
    assert_eq!(ok.status_code, 200);
    assert_eq!(connections.get(CONNECTION).unwrap().rooms, ["lobby", "team-a"], "team-b left out");

    let mut later = connect("ops", true);
    later.request_context.connected_at = (until + chrono::Duration::seconds(1)).timestamp_millis();
    let back = websocket::on_connect(&later, &settings, &connections, &sessions, &log, &bans).await.unwrap();
    assert_eq!(back.status_code, 200, "the ban has ended");
}

/// The send route keys its bucket by the authorizer's `userId` (no read needed):
/// two connections of one account share it; without an authorizer each
/// connection has its own. Limits come from the route settings (`SEND_BURST=2`).
#[tokio::test]
async fn the_rate_limit_is_the_accounts_from_the_authorizer_context_else_the_connections() {
    let settings = RouteSettings::from_settings(|name| (name == "SEND_BURST").then(|| "2".to_owned())).unwrap();
    let (connections, log) = (MemoryConnections::default(), MemoryLog::default());
    let send = |connection: &str, authorizer: Option<Value>| {
        let mut raw = fixture("message.json");
        raw["requestContext"]["connectionId"] = connection.into();
        if let Some(context) = authorizer {
            raw["requestContext"]["authorizer"] = context;
        }
        serde_json::from_value::<ApiGatewayWebsocketProxyRequest>(raw).unwrap()
    };
    let at = parse_iso("2026-11-24T10:00:00Z").unwrap();
    for id in ["ada-phone", "ada-laptop", "anon-1", "anon-2"] {
        connections.put(&Connection::new(id, "ip", at)).await.unwrap();
    }
    let ada = || Some(json!({"principalId": "iss|ada", "name": "Ada", "userId": "iss|ada"}));
    let reply = |response: aws_lambda_events::apigw::ApiGatewayProxyResponse| match response.body {
        Some(Body::Text(text)) => serde_json::from_str::<Value>(&text).unwrap(),
        None => Value::Null,
        other => panic!("{other:?}"),
    };
    for (connection, authorizer, refused) in [
        ("ada-phone", ada(), false),
        ("ada-laptop", ada(), false),
        ("ada-phone", ada(), true),
        ("ada-laptop", ada(), true),
        ("anon-1", None, false),
        ("anon-1", None, false),
        ("anon-1", None, true),
        ("anon-2", None, false),
    ] {
        let response = websocket::on_send_message(&send(connection, authorizer), &settings, &connections, &log).await;
        let answer = reply(response.unwrap());
        assert_eq!(answer["error"] == "Rate limited", refused, "{connection}: {answer}");
    }
    assert_eq!(log.events().len(), 5, "the refused lines were not stored");
}
