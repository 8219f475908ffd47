use serde_json::json;

use super::*;
use crate::handlers::testing::{Ports, at};
use crate::model::Identity;
use crate::ports::ConnectionStore;
use crate::rate::{Limit, RateLimits};

const T0: &str = "2026-11-24T10:00:00Z";
const ANN: &str = "https://id.example|ann";

/// Room `ops` with `u1`, `u2` (both Ann), `x1` and `x2` (anonymous), `b1` (Bob);
/// `l1` hears only the lobby.
async fn stage() -> Ports {
    let ports = Ports::default();
    let t = at("2026-11-24T09:00:00Z");
    let (ann, bob) = (Identity::verified("Ann", ANN), Identity::verified("Bob", "https://id.example|bob"));
    for row in [
        Connection::new("u1", "ip", t).in_room("ops").of(Some(&ann)),
        Connection::new("u2", "ip", t).in_room("ops").of(Some(&ann)),
        Connection::new("x1", "ip", t).in_room("ops"),
        Connection::new("x2", "ip", t).in_room("ops"),
        Connection::new("b1", "ip", t).in_room("ops").of(Some(&bob)),
        Connection::new("l1", "ip", t),
    ] {
        ports.connections.put(&row).await.unwrap();
    }
    ports
}

/// A chat line by `from` in its home room; its id.
async fn line(ports: &Ports, from: &str, text: &str) -> String {
    let row = ports.connections.get(from).unwrap();
    let line = LogEvent::chat(from, text, at("2026-11-24T09:30:00Z")).in_room(&row.room).by(row.identity().as_ref());
    ports.log.append(&line).await.unwrap();
    line.message_id
}

async fn send(ports: &Ports, from: &str, body: serde_json::Value) -> Vec<serde_json::Value> {
    ports.handle(from, body, T0, Rights::default()).await
}

fn of_kind(ports: &Ports, kind: EventKind) -> Vec<LogEvent> {
    ports.log.events().into_iter().filter(|e| e.kind == kind).collect()
}

#[tokio::test]
async fn the_author_edits_from_any_of_its_connections_and_nothing_is_answered() {
    let ports = stage().await;
    let id = line(&ports, "u1", "helo").await;
    assert_eq!(
        send(&ports, "u2", json!({"action":"edit","id":id,"message":"hello"})).await,
        Vec::<serde_json::Value>::new()
    );
    let edits = of_kind(&ports, EventKind::Edit);
    assert_eq!(edits.len(), 1);
    assert_eq!(
        (edits[0].target.as_deref(), edits[0].message.as_str(), edits[0].room.as_str()),
        (Some(id.as_str()), "hello", "ops")
    );
    let frame: serde_json::Value = serde_json::from_slice(&crate::protocol::event_frame(&edits[0])).unwrap();
    assert_eq!(frame["kind"], "edit");
    assert_eq!(frame["text"], "hello");
    assert_eq!(frame["target"], id.as_str());
    assert_eq!(frame["editedAt"], T0);
    assert_eq!(frame["message"], format!("[{T0} - UTC]\n u2  hello (edited)\n"), "a plain client sees a marked line");
}

#[tokio::test]
async fn a_non_author_edit_is_forbidden_and_stores_nothing() {
    let ports = stage().await;
    let ann = line(&ports, "u1", "mine").await;
    let anon = line(&ports, "x1", "anon").await;
    let before = ports.log.events().len();
    for (from, id) in [("b1", &ann), ("x1", &ann), ("x2", &anon), ("u1", &anon)] {
        let frames = send(&ports, from, json!({"action":"edit","id":id,"message":"mine now"})).await;
        assert_eq!(frames.len(), 1, "{from}");
        assert_eq!(frames[0]["error"], "Forbidden");
        assert_eq!(frames[0]["right"], "write");
        assert_eq!(frames[0]["id"], id.as_str());
        assert!(frames[0]["message"].as_str().unwrap().contains("Only the author"), "{}", frames[0]);
    }
    assert_eq!(ports.log.events().len(), before, "nothing stored");
    send(&ports, "x1", json!({"action":"edit","id":anon,"message":"ok"})).await;
    assert_eq!(of_kind(&ports, EventKind::Edit).len(), 1, "an anonymous author edits from its own connection");
}

#[tokio::test]
async fn unknown_other_rooms_and_non_chat_ids_are_not_found_and_deleted_lines_are_deleted() {
    let ports = stage().await;
    let lobby = line(&ports, "l1", "elsewhere").await;
    let join = LogEvent::join("u1", at(T0)).in_room("ops");
    ports.log.append(&join).await.unwrap();
    let unknown = "00000000-0000-7000-8000-000000000000".to_owned();
    let before = ports.log.events().len();
    for id in [&lobby, &join.message_id, &unknown] {
        for body in [
            json!({"action":"edit","id":id,"message":"x"}),
            json!({"action":"react","id":id,"emoji":"👍"}),
            json!({"action":"reply","to":id,"message":"x"}),
        ] {
            let frames = send(&ports, "u1", body.clone()).await;
            assert_eq!(
                (frames[0]["error"].as_str(), frames[0]["id"].as_str()),
                (Some("Not found"), Some(id.as_str())),
                "{body}"
            );
        }
    }
    let id = line(&ports, "u1", "gone").await;
    send(&ports, "u1", json!({"action":"delete","id":id})).await;
    let before_deleted = ports.log.events().len();
    for body in [json!({"action":"edit","id":id,"message":"x"}), json!({"action":"react","id":id,"emoji":"👍"})] {
        let frames = send(&ports, "u1", body).await;
        assert_eq!(frames[0]["error"], "Deleted");
    }
    assert_eq!(ports.log.events().len(), before_deleted, "nothing stored");
    assert_eq!(before_deleted, before + 2, "only the line and its tombstone");
}

#[tokio::test]
async fn reactions_toggle_per_user_and_carry_the_lines_counts() {
    let ports = stage().await;
    let id = line(&ports, "b1", "nice").await;
    for from in ["u1", "x1", "u2"] {
        send(&ports, from, json!({"action":"react","id":id,"emoji":"👍"})).await;
    }
    send(&ports, "x1", json!({"action":"react","id":id,"emoji":"🎉"})).await;
    let toggles: Vec<(Option<bool>, serde_json::Value)> = of_kind(&ports, EventKind::Reaction)
        .iter()
        .map(|e| (e.on, serde_json::to_value(e.counts.clone().unwrap()).unwrap()))
        .collect();
    assert_eq!(
        toggles,
        [
            (Some(true), json!({"👍":1})),
            (Some(true), json!({"👍":2})),
            (Some(false), json!({"👍":1})),
            (Some(true), json!({"👍":1,"🎉":1})),
        ],
        "Ann's two connections are one reactor: the second toggles hers off"
    );
    let frame: serde_json::Value =
        serde_json::from_slice(&crate::protocol::event_frame(&of_kind(&ports, EventKind::Reaction)[3])).unwrap();
    assert_eq!((frame["emoji"].as_str(), frame["on"].as_bool()), (Some("🎉"), Some(true)));
    assert_eq!(frame["counts"], json!({"👍":1,"🎉":1}));
}

#[tokio::test]
async fn a_resent_reaction_toggles_once_and_is_acked_each_time() {
    let ports = stage().await;
    let id = line(&ports, "b1", "nice").await;
    let body = json!({"action":"react","id":id,"emoji":"👍","clientMessageId":"0192f3a4-5b6c-7d8e-9f01-23456789abcd"});
    let first = send(&ports, "u1", body.clone()).await;
    let again = send(&ports, "u2", body).await;
    assert_eq!(first, again);
    assert_eq!(of_kind(&ports, EventKind::Reaction).len(), 1);
    assert_eq!(first[0]["ack"], of_kind(&ports, EventKind::Reaction)[0].message_id.as_str());
}

#[tokio::test]
async fn bad_emoji_and_bad_input_get_invalid_message() {
    let ports = stage().await;
    let id = line(&ports, "b1", "nice").await;
    for body in [
        json!({"action":"react","id":id,"emoji":"ok"}),
        json!({"action":"react","id":id,"emoji":"👍👍"}),
        json!({"action":"react","id":id}),
        json!({"action":"react","id":"nope","emoji":"👍"}),
        json!({"action":"edit","id":id,"message":"  "}),
        json!({"action":"edit","id":id}),
        json!({"action":"edit","id":id,"message":"x".repeat(crate::protocol::MAX_TEXT_BYTES + 1)}),
        json!({"action":"reply","message":"x"}),
        json!({"action":"reply","to":5,"message":"x"}),
        json!({"action":"history","fold":"yes"}),
    ] {
        let frames = send(&ports, "b1", body.clone()).await;
        assert_eq!(frames[0]["error"], "Invalid message", "{body}");
    }
    assert_eq!(ports.log.events().len(), 1);
}

#[tokio::test]
async fn writes_need_w_in_the_lines_room_from_the_request_context() {
    let ports = stage().await;
    let id = line(&ports, "u1", "mine").await;
    let read_only = Rights::parse("*=r").unwrap();
    for body in [
        json!({"action":"edit","id":id,"message":"x"}),
        json!({"action":"react","id":id,"emoji":"👍"}),
        json!({"action":"reply","to":id,"message":"x"}),
    ] {
        let frames = ports.handle("u1", body.clone(), T0, read_only.clone()).await;
        assert_eq!(
            (frames[0]["error"].as_str(), frames[0]["right"].as_str()),
            (Some("Forbidden"), Some("write")),
            "{body}"
        );
    }
    assert_eq!(ports.log.events().len(), 1);
}

#[tokio::test]
async fn edits_reactions_and_replies_take_send_tokens() {
    let mut ports = stage().await;
    let limits = RateLimits { send: Some(Limit { rate: 0.001, burst: 2 }), read: None };
    ports.settings = ports.settings.clone().with_rate_limits(limits);
    let id = line(&ports, "b1", "nice").await;
    send(&ports, "u1", json!({"action":"react","id":id,"emoji":"👍"})).await;
    send(&ports, "u1", json!({"action":"reply","to":id,"message":"re"})).await;
    let refused = send(&ports, "u1", json!({"action":"edit","id":id,"message":"x"})).await;
    assert_eq!((refused[0]["error"].as_str(), refused[0]["action"].as_str()), (Some("Rate limited"), Some("edit")));
}

#[tokio::test]
async fn a_reply_quotes_the_parents_current_text_and_nothing_once_it_is_deleted() {
    let ports = stage().await;
    let id = line(&ports, "u1", &"long ".repeat(40)).await;
    send(&ports, "u1", json!({"action":"edit","id":id,"message":"edited parent"})).await;
    send(&ports, "b1", json!({"action":"reply","to":id,"message":"agreed"})).await;
    let reply = of_kind(&ports, EventKind::Chat).pop().unwrap();
    assert_eq!((reply.reply_to.as_deref(), reply.quote.as_deref()), (Some(id.as_str()), Some("edited parent")));
    assert_eq!(reply.room, "ops");
    let frame: serde_json::Value = serde_json::from_slice(&crate::protocol::event_frame(&reply)).unwrap();
    assert_eq!((frame["replyTo"].as_str(), frame["quote"].as_str()), (Some(id.as_str()), Some("edited parent")));

    let long = line(&ports, "x1", &"é".repeat(100)).await;
    send(&ports, "b1", json!({"action":"reply","to":long,"message":"ok"})).await;
    assert_eq!(of_kind(&ports, EventKind::Chat).pop().unwrap().quote, Some("é".repeat(80)), "80 characters");

    send(&ports, "u1", json!({"action":"delete","id":id})).await;
    send(&ports, "b1", json!({"action":"reply","to":id,"message":"still"})).await;
    let reply = of_kind(&ports, EventKind::Chat).pop().unwrap();
    assert_eq!((reply.reply_to.as_deref(), reply.quote), (Some(id.as_str()), None));
}

#[tokio::test]
async fn history_with_fold_answers_lines_then_the_closing_frame() {
    let ports = stage().await;
    let a = line(&ports, "u1", "helo").await;
    let b = line(&ports, "x1", "bye").await;
    send(&ports, "u1", json!({"action":"edit","id":a,"message":"hello"})).await;
    send(&ports, "b1", json!({"action":"react","id":a,"emoji":"👍"})).await;
    send(&ports, "x1", json!({"action":"delete","id":b})).await;
    send(&ports, "b1", json!({"action":"reply","to":a,"message":"hi Ann"})).await;
    let frames = send(&ports, "x2", json!({"action":"history","fold":true})).await;
    assert_eq!(frames.len(), 4, "{frames:?}");
    assert_eq!(frames[0]["kind"], "line");
    assert_eq!((frames[0]["id"].as_str(), frames[0]["text"].as_str()), (Some(a.as_str()), Some("hello")));
    assert_eq!(frames[0]["editedAt"], T0);
    assert_eq!(frames[0]["reactions"], json!([{"emoji":"👍","count":1,"users":["https://id.example|bob"]}]));
    assert_eq!((frames[1]["deleted"].as_bool(), frames[1].get("text")), (Some(true), None));
    assert_eq!((frames[2]["replyTo"].as_str(), frames[2]["quote"].as_str()), (Some(a.as_str()), Some("hello")));
    assert_eq!(frames[3]["kind"], "history");
    let raw = send(&ports, "x2", json!({"action":"history"})).await;
    assert_eq!(raw.len(), 7, "the raw history (six events and the closing frame) is every event, in log order");
}

#[tokio::test]
async fn a_sendmessage_reply_needs_its_parent_in_the_same_room() {
    let ports = stage().await;
    let id = line(&ports, "u1", "parent").await;
    let lobby = line(&ports, "l1", "elsewhere").await;
    let limiter = crate::rate::RateLimiter::default();
    let request = |body: serde_json::Value| MessageRequest {
        connection_id: "b1".into(),
        body: body.to_string(),
        received_at: at(T0),
        rights: Rights::default(),
        account: None,
    };
    let ok = json!({"action":"sendmessage","message":"re","replyTo":id});
    let answer = crate::handlers::send_message(&request(ok), &limiter, &ports.connections, &ports.log).await.unwrap();
    assert_eq!(answer, None);
    let reply = ports.log.events().pop().unwrap();
    assert_eq!((reply.reply_to.as_deref(), reply.quote.as_deref()), (Some(id.as_str()), Some("parent")));
    let other_room = json!({"action":"sendmessage","message":"re","replyTo":lobby});
    let answer = crate::handlers::send_message(&request(other_room), &limiter, &ports.connections, &ports.log).await;
    let frame: serde_json::Value = serde_json::from_slice(&answer.unwrap().unwrap()).unwrap();
    assert_eq!(frame["error"], "Not found");
    assert_eq!(ports.log.events().len(), 3);
}
