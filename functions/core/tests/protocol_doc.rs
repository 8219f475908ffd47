//! `functions/PROTOCOL.md` cannot drift from the code: each inbound example is
//! parsed by the real parser, each outbound example is rendered by the real
//! renderer from its own fields and must come out exactly as written, and every
//! action and frame the code knows has an example.

use std::collections::{BTreeMap, BTreeSet};

use chat_core::coalesce::coalesce;
use chat_core::fold::Line;
use chat_core::model::{Connection, EventKind, LogEvent};
use chat_core::occupancy::{Changes, Joiner};
use chat_core::ports::{Bytes, Unread};
use chat_core::protocol::{self, Command, ProtocolError, Removal, RoomSummary};
use chat_core::reaction;
use chat_core::rights::{Forbidden, Right, Rights, RoomAccess};
use chat_core::time::parse_iso;
use serde_json::Value;

/// One fenced example: its info string after `json` and its text.
struct Example {
    tag: String,
    text: String,
    line: usize,
}

fn examples() -> Vec<Example> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../PROTOCOL.md");
    let doc = std::fs::read_to_string(path).expect("functions/PROTOCOL.md is readable");
    let mut found = Vec::new();
    let mut open: Option<Example> = None;
    for (number, line) in doc.lines().enumerate() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(info)) if info.starts_with("json ") => {
                let tag = info["json ".len()..].trim().to_owned();
                open = Some(Example { tag, text: String::new(), line: number + 1 });
            }
            (Some(_), Some("")) => found.push(open.take().expect("open")),
            (Some(example), _) => example.text.push_str(line),
            (None, _) => {}
        }
    }
    assert!(open.is_none(), "PROTOCOL.md ends inside an example");
    found
}

/// The variant's name. No wildcard arm: a new action does not compile here until
/// it is added, and then [`ACTIONS`] asks for its example.
fn action(command: &Command) -> &'static str {
    match command {
        Command::SendMessage { .. } => "sendmessage",
        Command::Ping => "ping",
        Command::History { .. } => "history",
        Command::Who { .. } => "who",
        Command::Subscribe { .. } => "subscribe",
        Command::Unsubscribe { .. } => "unsubscribe",
        Command::Rooms => "rooms",
        Command::Read { .. } => "read",
        Command::Delete { .. } => "delete",
        Command::Kick { .. } => "kick",
        Command::Ban { .. } => "ban",
        Command::Unban { .. } => "unban",
        Command::Edit { .. } => "edit",
        Command::React { .. } => "react",
        Command::Reply { .. } => "reply",
        Command::Typing { .. } => "typing",
        Command::Unknown => "unknown",
    }
}

const ACTIONS: [&str; 17] = [
    "sendmessage",
    "ping",
    "history",
    "who",
    "subscribe",
    "unsubscribe",
    "rooms",
    "read",
    "delete",
    "kick",
    "ban",
    "unban",
    "edit",
    "react",
    "reply",
    "typing",
    "unknown",
];

/// Every outbound frame the renderers make, by the name its examples carry.
const FRAMES: [&str; 27] = [
    "event",
    "events",
    "typing",
    "occupancy",
    "pong",
    "ack",
    "history",
    "line",
    "presence",
    "subscribed",
    "unsubscribed",
    "rooms",
    "read",
    "moderated",
    "removed",
    "invalid-request",
    "invalid-message",
    "forbidden",
    "not-author",
    "not-subscribed",
    "last-room",
    "too-many-rooms",
    "not-found",
    "deleted",
    "banned",
    "rate-limited",
    "not-connected",
];

fn text<'a>(example: &'a Value, field: &str) -> &'a str {
    example[field].as_str().unwrap_or_else(|| panic!("the example needs a string {field:?}: {example}"))
}

fn optional<'a>(example: &'a Value, field: &str) -> Option<&'a str> {
    example.get(field).map(|value| value.as_str().unwrap_or_else(|| panic!("{field:?} is a string: {example}")))
}

fn time(example: &Value, field: &str) -> chrono::DateTime<chrono::Utc> {
    parse_iso(text(example, field)).unwrap_or_else(|| panic!("{field:?} is an ISO time: {example}"))
}

fn number(example: &Value, field: &str) -> u64 {
    example[field].as_u64().unwrap_or_else(|| panic!("the example needs a number {field:?}: {example}"))
}

fn access(rights: &str, private: bool) -> RoomAccess {
    let rights = Rights::parse(&format!("room={rights}")).expect("the example's rights parse").in_room("room");
    RoomAccess { rights, private }
}

/// The log event an event frame shows, built with the constructor its handler uses.
fn event_of(example: &Value) -> LogEvent {
    let (connection, at) = (text(example, "connectionId"), time(example, "timestamp"));
    let target = || text(example, "target");
    let mut event = match text(example, "kind") {
        "chat" => {
            let line = LogEvent::chat(connection, text(example, "text"), at);
            match optional(example, "replyTo") {
                Some(parent) => line.replying_to(parent, optional(example, "quote")),
                None => line,
            }
        }
        "join" => LogEvent::join(connection, at),
        "leave" => LogEvent::leave(connection, at),
        "edit" => LogEvent::edit(connection, target(), text(example, "text"), at),
        "delete" => LogEvent::delete(connection, target(), at),
        "kick" => LogEvent::kick(connection, text(example, "member"), at),
        "ban" => {
            LogEvent::ban(connection, text(example, "member"), time(example, "until"), optional(example, "reason"), at)
        }
        "unban" => LogEvent::unban(connection, text(example, "member"), at),
        "reaction" => LogEvent::reaction(connection, target(), text(example, "emoji"), at),
        other => panic!("no event kind {other:?}"),
    };
    if let (Some(reason), EventKind::Leave) = (optional(example, "reason"), event.kind) {
        event = event.because(reason);
    }
    event.message_id = text(example, "id").to_owned();
    event.room = text(example, "room").to_owned();
    event.user = optional(example, "user").map(str::to_owned);
    event.verified = example.get("verified").and_then(Value::as_bool);
    event.user_id = optional(example, "userId").map(str::to_owned);
    if example.get("server").and_then(Value::as_bool) == Some(true) {
        // The publish API's caller; its frames carry only the mark.
        event = event.published_by("arn:aws:iam::123456789012:user/ci");
    }
    if event.kind == EventKind::Reaction {
        // The store decides the toggle from the counts before it.
        let emoji = text(example, "emoji");
        let on = example["on"].as_bool().expect("a reaction says on");
        let mut before: BTreeMap<String, u32> = serde_json::from_value(example["counts"].clone()).expect("counts");
        let count = before.entry(emoji.to_owned()).or_insert(0);
        *count = if on { *count - 1 } else { *count + 1 };
        before.retain(|_, count| *count > 0);
        event = reaction::decided(event, !on, before);
    }
    event
}

fn line_of(example: &Value) -> Line {
    let mut sent = LogEvent::chat(text(example, "connectionId"), "", time(example, "timestamp"));
    sent.message_id = text(example, "id").to_owned();
    sent.room = text(example, "room").to_owned();
    sent.user = optional(example, "user").map(str::to_owned);
    sent.user_id = optional(example, "userId").map(str::to_owned);
    sent.reply_to = optional(example, "replyTo").map(str::to_owned);
    let reactions = example["reactions"].as_array().expect("reactions").iter().map(|reaction| {
        let users = reaction["users"].as_array().expect("users").iter().map(|u| u.as_str().unwrap().to_owned());
        (text(reaction, "emoji").to_owned(), users.collect::<BTreeSet<_>>())
    });
    Line {
        sent,
        text: optional(example, "text").map(str::to_owned),
        edited_at: optional(example, "editedAt").and_then(parse_iso),
        deleted: example.get("deleted").and_then(Value::as_bool).unwrap_or(false),
        reactions: reactions.collect(),
        quote: optional(example, "quote").map(str::to_owned),
    }
}

fn member_of(example: &Value) -> Connection {
    let mut member = Connection::new(text(example, "connectionId"), "", time(example, "connectedAt"));
    member.user = optional(example, "user").map(str::to_owned);
    member.verified = example.get("verified").and_then(Value::as_bool);
    member.user_id = optional(example, "userId").map(str::to_owned);
    member
}

fn right(name: &str) -> Right {
    Right::ALL.into_iter().find(|right| right.as_str() == name).unwrap_or_else(|| panic!("no right {name:?}"))
}

fn render(name: &str, example: &Value, last_invalid: Option<&ProtocolError>) -> Vec<u8> {
    let room = || text(example, "room");
    let id = || text(example, "id");
    match name {
        "event" => protocol::event_frame(&event_of(example)),
        "events" => {
            let events = example["events"].as_array().expect("events");
            let frames: Vec<Bytes> = events.iter().map(|e| Bytes::from(protocol::event_frame(&event_of(e)))).collect();
            let packed = coalesce(&frames);
            assert_eq!(packed.len(), 1, "the example fits one frame");
            packed[0].bytes.to_vec()
        }
        "typing" => {
            let mut typist = Connection::new(text(example, "connectionId"), "", chrono::Utc::now());
            typist.user = optional(example, "user").map(str::to_owned);
            typist.user_id = optional(example, "userId").map(str::to_owned);
            typist.verified = typist.user_id.as_ref().map(|_| true);
            protocol::typing_frame(room(), &typist)
        }
        "occupancy" => {
            let recent = example["recent"].as_array().expect("recent").iter().map(|joiner| Joiner {
                connection_id: text(joiner, "connectionId").to_owned(),
                user: optional(joiner, "user").map(str::to_owned),
            });
            let changes =
                Changes { joined: number(example, "joined"), left: number(example, "left"), recent: recent.collect() };
            protocol::occupancy_frame(room(), number(example, "count") as usize, &changes)
        }
        "pong" => protocol::pong_frame(),
        "ack" => protocol::ack_frame(text(example, "ack"), text(example, "clientMessageId")),
        "history" => {
            protocol::history_end_frame(room(), number(example, "count") as usize, example["more"].as_bool().unwrap())
        }
        "line" => protocol::line_frame(&line_of(example)),
        "presence" => {
            let members: Vec<Connection> =
                example["members"].as_array().expect("members").iter().map(member_of).collect();
            let count = example.get("count").map(|_| number(example, "count") as usize);
            let (you, you_user_id, next) =
                (text(example, "you"), optional(example, "youUserId"), optional(example, "next"));
            protocol::presence_frame(room(), count, &members, you, you_user_id, next)
        }
        "subscribed" => protocol::subscribed_frame(
            room(),
            number(example, "count") as usize,
            access(text(example, "rights"), example["private"].as_bool().unwrap()),
        ),
        "unsubscribed" => protocol::unsubscribed_frame(room()),
        "rooms" => {
            let rooms: Vec<RoomSummary> = example["rooms"]
                .as_array()
                .expect("rooms")
                .iter()
                .map(|r| RoomSummary {
                    room: text(r, "room").to_owned(),
                    count: number(r, "count") as usize,
                    unread: Unread { count: number(r, "unread") as usize, more: r["more"].as_bool().unwrap() },
                    access: access(text(r, "rights"), r["private"].as_bool().unwrap()),
                })
                .collect();
            protocol::rooms_frame(&rooms)
        }
        "read" => protocol::read_frame(room(), id()),
        "moderated" => {
            let until = optional(example, "until").and_then(parse_iso);
            let (kind, user, connections) =
                (text(example, "kind"), text(example, "user"), number(example, "connections"));
            protocol::moderated_frame(kind, room(), user, connections as usize, until.as_ref())
        }
        "removed" => {
            let reason = match text(example, "reason") {
                "kicked" => Removal::Kicked,
                "banned" => Removal::Banned,
                other => panic!("no removal {other:?}"),
            };
            let until = optional(example, "until").and_then(parse_iso);
            protocol::removed_frame(room(), reason, text(example, "by"), until.as_ref())
        }
        "invalid-request" => protocol::invalid_request_frame(),
        "invalid-message" => {
            protocol::protocol_error_frame(last_invalid.expect("an `inbound invalid` example comes before"))
        }
        "forbidden" => protocol::forbidden_frame(&Forbidden { room: room(), right: right(text(example, "right")) }),
        "not-author" => protocol::not_author_frame(room(), id()),
        "not-subscribed" => protocol::not_subscribed_frame(room()),
        "last-room" => protocol::last_room_frame(room()),
        "too-many-rooms" => {
            let message = text(example, "message");
            let max: usize = message.split_whitespace().find_map(|word| word.parse().ok()).expect("a number in it");
            protocol::too_many_rooms_frame(room(), max)
        }
        "not-found" => protocol::not_found_frame(id()),
        "deleted" => protocol::deleted_frame(id()),
        "banned" => protocol::banned_frame(room(), &time(example, "until")),
        "rate-limited" => protocol::rate_limited_frame(
            text(example, "action"),
            number(example, "retryAfterMs"),
            optional(example, "clientMessageId"),
        ),
        "not-connected" => protocol::not_registered_frame(),
        other => panic!("PROTOCOL.md names a frame the test does not know: {other:?}"),
    }
}

#[test]
fn every_inbound_example_parses_as_its_action_and_every_action_has_one() {
    let mut seen = BTreeSet::new();
    for example in examples().iter().filter(|e| e.tag.starts_with("inbound")) {
        let parsed = protocol::parse_command(&example.text);
        match example.tag.as_str() {
            "inbound" => {
                let command = parsed.unwrap_or_else(|e| panic!("line {}: {e}: {}", example.line, example.text));
                assert_ne!(command, Command::Unknown, "line {}: not an action: {}", example.line, example.text);
                seen.insert(action(&command));
            }
            "inbound unknown" => {
                assert_eq!(parsed, Ok(Command::Unknown), "line {}", example.line);
                seen.insert("unknown");
            }
            "inbound invalid" => assert!(parsed.is_err(), "line {}: parsed: {}", example.line, example.text),
            other => panic!("line {}: unknown tag {other:?}", example.line),
        }
    }
    let missing: Vec<_> = ACTIONS.iter().filter(|a| !seen.contains(*a)).collect();
    assert!(missing.is_empty(), "PROTOCOL.md has no example of {missing:?}");
}

#[test]
fn every_outbound_example_is_what_the_renderer_makes_and_every_frame_has_one() {
    let mut seen = BTreeSet::new();
    let mut last_invalid = None;
    for example in examples() {
        if example.tag == "inbound invalid" {
            last_invalid = protocol::parse_command(&example.text).err();
            continue;
        }
        let Some(name) = example.tag.strip_prefix("outbound ") else { continue };
        let written: Value = serde_json::from_str(&example.text)
            .unwrap_or_else(|e| panic!("line {}: not JSON ({e}): {}", example.line, example.text));
        let rendered: Value = serde_json::from_slice(&render(name, &written, last_invalid.as_ref())).unwrap();
        assert_eq!(
            rendered, written,
            "line {}: the renderer of {name:?} makes the first, PROTOCOL.md says the second",
            example.line
        );
        seen.insert(name.to_owned());
    }
    let missing: Vec<_> = FRAMES.iter().filter(|f| !seen.contains(**f)).collect();
    assert!(missing.is_empty(), "PROTOCOL.md has no example of {missing:?}");
}
