//! Properties of the wire protocol and of stream-record decoding, over generated
//! inputs: nothing panics on any input, and what is rendered parses back to what
//! was rendered.

use aws_lambda_events::dynamodb::EventRecord;
use chat_core::entrypoints::stream::{RecordError, decode};
use chat_core::model::{EventKind, LogEvent};
use chat_core::ports::LogCursor;
use chat_core::protocol::{
    Command, MAX_FRAME_BYTES, MAX_HISTORY_LIMIT, MAX_TEXT_BYTES, PING, event_frame, join_notice, leave_notice,
    parse_command,
};
use chat_core::time::{format_iso, parse_iso};
use chrono::{DateTime, TimeZone, Utc};
use proptest::prelude::*;
use serde_json::{Value, json};

/// Every LogEvent here is built through this one function, so a new field is a one-line change.
fn log_event(
    message_id: String,
    connection_id: String,
    message: String,
    timestamp: DateTime<Utc>,
    kind: EventKind,
) -> LogEvent {
    let (room, user, verified, user_id) = ("lobby".to_owned(), None, None, None);
    let (target, member, until, reason) = (None, None, None, None);
    LogEvent {
        message_id,
        connection_id,
        message,
        timestamp,
        kind,
        room,
        user,
        verified,
        user_id,
        target,
        member,
        until,
        reason,
        emoji: None,
        on: None,
        counts: None,
        reply_to: None,
        quote: None,
        principal: None,
    }
}

fn kind() -> impl Strategy<Value = EventKind> {
    prop_oneof![Just(EventKind::Chat), Just(EventKind::Join), Just(EventKind::Leave)]
}

/// Whole seconds (what the log stores), from 1970 to 9999 (four-digit years).
fn timestamp() -> impl Strategy<Value = DateTime<Utc>> {
    (0i64..253_402_300_799).prop_map(|seconds| Utc.timestamp_opt(seconds, 0).single().expect("in range"))
}

fn message_id() -> impl Strategy<Value = String> {
    any::<u128>().prop_map(|bits| uuid::Uuid::from_u128(bits).to_string())
}

/// An event as the handlers write it: join and leave carry their notice as the message.
fn event() -> impl Strategy<Value = LogEvent> {
    (message_id(), any::<String>(), any::<String>(), timestamp(), kind()).prop_map(
        |(id, connection_id, text, at, kind)| {
            let message = match kind {
                EventKind::Chat => text,
                EventKind::Join => join_notice(&connection_id),
                EventKind::Leave => leave_notice(&connection_id),
                // Not drawn (see kind()): moderation events carry their own notice.
                EventKind::Delete
                | EventKind::Kick
                | EventKind::Ban
                | EventKind::Unban
                | EventKind::Edit
                | EventKind::Reaction => text,
            };
            log_event(id, connection_id, message, at, kind)
        },
    )
}

/// Reads an event frame back the way a rich client does: from `id`, `connectionId`,
/// `text` (chat) or `message` (notices), `timestamp` and `kind`.
fn event_from_frame(frame: &[u8]) -> LogEvent {
    let frame: Value = serde_json::from_slice(frame).expect("a frame is JSON");
    let field = |name: &str| frame[name].as_str().unwrap_or_else(|| panic!("{name} in {frame}")).to_owned();
    let kind = match frame["kind"].as_str() {
        Some("chat") => EventKind::Chat,
        Some("join") => EventKind::Join,
        Some("leave") => EventKind::Leave,
        other => panic!("unknown kind {other:?}"),
    };
    let message = if kind == EventKind::Chat { field("text") } else { field("message") };
    let at = parse_iso(&field("timestamp")).expect("an ISO timestamp");
    log_event(field("id"), field("connectionId"), message, at, kind)
}

/// Any JSON value, nested a little, with the protocol's field names more likely than chance.
fn json_value() -> impl Strategy<Value = Value> {
    let name = prop_oneof![
        Just("action".to_owned()),
        Just("message".to_owned()),
        Just("data".to_owned()),
        Just("limit".to_owned()),
        Just("since".to_owned()),
        any::<String>(),
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        prop_oneof![Just("sendmessage".to_owned()), Just("history".to_owned()), Just(PING.to_owned()), any::<String>()]
            .prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 32, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map(name.clone(), inner, 0..6)
                .prop_map(|fields| Value::Object(fields.into_iter().collect())),
        ]
    })
}

/// A chat text `parse_command` accepts: not blank, not the heartbeat, within the limit once escaped.
fn accepted(text: &str) -> bool {
    let escaped = serde_json::to_string(text).expect("strings serialize").len() - 2;
    !text.trim().is_empty() && text != PING && escaped <= MAX_TEXT_BYTES
}

proptest! {
    #[test]
    fn parse_command_never_panics_on_any_text(body in any::<String>()) {
        let _ = parse_command(&body);
    }

    #[test]
    fn parse_command_never_panics_on_any_json(value in json_value()) {
        let _ = parse_command(&value.to_string());
    }

    #[test]
    fn an_unknown_action_is_unknown(action in any::<String>(), value in json_value()) {
        prop_assume!(!["sendmessage", "history", "who"].contains(&action.as_str()));
        let body = json!({"action": action, "message": value});
        prop_assert_eq!(parse_command(&body.to_string()), Ok(Command::Unknown));
    }

    #[test]
    fn a_sent_text_parses_back_from_either_field(text in any::<String>(), field in prop_oneof![Just("message"), Just("data")]) {
        let body = json!({"action": "sendmessage", field: text}).to_string();
        let parsed = parse_command(&body);
        if text == PING {
            prop_assert_eq!(parsed, Ok(Command::Ping));
        } else if accepted(&text) {
            prop_assert_eq!(parsed, Ok(Command::SendMessage { text, client_message_id: None, room: None, reply_to: None }));
        } else {
            prop_assert!(parsed.is_err(), "{parsed:?}");
        }
    }

    #[test]
    fn a_history_request_parses_back(limit in 1..=MAX_HISTORY_LIMIT, at in timestamp(), id in message_id(), by_id in any::<bool>()) {
        let (since, cursor) = if by_id {
            (id.clone(), LogCursor::MessageId(id))
        } else {
            (format_iso(&at), LogCursor::Time(at))
        };
        let body = json!({"action": "history", "limit": limit, "since": since}).to_string();
        prop_assert_eq!(parse_command(&body), Ok(Command::History { limit, since: Some(cursor), room: None, fold: false }));
    }

    #[test]
    fn a_history_limit_out_of_range_is_refused(limit in prop_oneof![Just(0u64), (MAX_HISTORY_LIMIT as u64 + 1)..]) {
        let body = json!({"action": "history", "limit": limit}).to_string();
        prop_assert!(parse_command(&body).is_err());
    }

    #[test]
    fn an_event_frame_parses_back_to_its_event(event in event()) {
        let frame = event_frame(&event);
        prop_assert_eq!(event_from_frame(&frame), event);
    }

    #[test]
    fn an_accepted_text_always_fits_one_post(unit in any::<char>(), count in 1..=MAX_TEXT_BYTES, at in timestamp()) {
        let text: String = std::iter::repeat_n(unit, count).collect();
        prop_assume!(accepted(&text));
        let chat = log_event("019ab5e1-3c44-7d2a-9f1e-2b7c1d0e4a55".into(), "CXzQ2cJjoAMCJ6g=".into(), text, at, EventKind::Chat);
        prop_assert!(event_frame(&chat).len() <= MAX_FRAME_BYTES);
    }
}

/// A MessageHistory stream record in Lambda's JSON shape (the fixture, with parts replaced).
fn record(event_name: &str, sequence_number: Option<&str>, new_image: Value) -> Result<EventRecord, serde_json::Error> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/stream-insert.json");
    let fixture: Value = serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("fixture JSON");
    let mut record = fixture["Records"][0].clone();
    record["eventName"] = json!(event_name);
    record["dynamodb"]["NewImage"] = new_image;
    match sequence_number {
        Some(number) => record["dynamodb"]["SequenceNumber"] = json!(number),
        None => {
            record["dynamodb"].as_object_mut().expect("an object").remove("SequenceNumber");
        }
    }
    serde_json::from_value(record)
}

/// The NewImage DynamoDB writes for an event (DynamoDB JSON).
fn image_of(event: &LogEvent) -> Value {
    let kind = event.kind.as_str();
    json!({
        "message_id": {"S": event.message_id},
        "connection_id": {"S": event.connection_id},
        "message": {"S": event.message},
        "timestamp": {"S": format_iso(&event.timestamp)},
        "kind": {"S": kind},
    })
}

/// Any DynamoDB attribute value, nested a little.
fn attribute_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        any::<String>().prop_map(|s| json!({"S": s})),
        any::<f64>().prop_filter("finite", |n| n.is_finite()).prop_map(|n| json!({"N": n.to_string()})),
        any::<String>().prop_map(|n| json!({"N": n})),
        any::<bool>().prop_map(|b| json!({"BOOL": b})),
        Just(json!({"NULL": true})),
        prop::collection::vec(any::<String>(), 0..4).prop_map(|ss| json!({"SS": ss})),
    ];
    leaf.prop_recursive(2, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|items| json!({"L": items})),
            prop::collection::btree_map(any::<String>(), inner, 0..4).prop_map(|fields| json!({"M": fields})),
        ]
    })
}

/// An image with the log's attribute names more likely than chance, each with any value.
fn any_image() -> impl Strategy<Value = Value> {
    let name = prop_oneof![
        Just("message_id".to_owned()),
        Just("connection_id".to_owned()),
        Just("message".to_owned()),
        Just("timestamp".to_owned()),
        Just("kind".to_owned()),
        any::<String>(),
    ];
    prop::collection::btree_map(name, attribute_value(), 0..8).prop_map(|fields| json!(fields))
}

/// A valid image with fields dropped at random and some replaced by any value.
fn mutated_image() -> impl Strategy<Value = Value> {
    let names = ["message_id", "connection_id", "message", "timestamp", "kind"];
    let keep = prop::collection::vec(prop::bool::weighted(0.85), names.len());
    (event(), keep, prop::option::of(any_image())).prop_map(move |(event, keep, noise)| {
        let mut image = image_of(&event);
        if let Value::Object(fields) = &mut image {
            for (name, keep) in names.iter().zip(keep) {
                if !keep {
                    fields.remove(*name);
                }
            }
            if let Some(Value::Object(noise)) = noise {
                fields.extend(noise.into_iter().take(1));
            }
        }
        image
    })
}

proptest! {
    #[test]
    fn decode_never_panics_on_any_image(
        event_name in prop_oneof![Just("INSERT".to_owned()), Just("MODIFY".to_owned()), any::<String>()],
        sequence_number in proptest::option::of("[0-9]{1,30}"),
        image in prop_oneof![any_image(), mutated_image()],
    ) {
        // Lambda would not deliver what does not deserialize; what does must decode or be refused.
        if let Ok(record) = record(&event_name, sequence_number.as_deref(), image) {
            let decoded = decode(&record);
            if event_name != "INSERT" {
                prop_assert!(matches!(decoded, Ok(None)), "{decoded:?}");
            }
        }
    }

    #[test]
    fn an_inserted_event_decodes_back(event in event(), sequence_number in "[1-9][0-9]{0,29}") {
        let record = record("INSERT", Some(&sequence_number), image_of(&event)).expect("a valid record");
        let decoded = decode(&record).expect("decodes").expect("an INSERT is an event");
        prop_assert_eq!(decoded.sequence_number, sequence_number);
        prop_assert_eq!(decoded.event, event);
    }

    #[test]
    fn a_seed_row_without_kind_is_a_chat_line(event in event(), sequence_number in "[1-9][0-9]{0,29}") {
        let mut image = image_of(&event);
        image.as_object_mut().expect("an object").remove("kind");
        let record = record("INSERT", Some(&sequence_number), image).expect("a valid record");
        let decoded = decode(&record).expect("decodes").expect("an INSERT is an event");
        prop_assert_eq!(decoded.event.kind, EventKind::Chat);
    }

    #[test]
    fn an_insert_without_a_sequence_number_is_refused(event in event()) {
        let record = record("INSERT", None, image_of(&event)).expect("a valid record");
        prop_assert!(matches!(decode(&record), Err(RecordError::NoSequenceNumber)));
    }
}
