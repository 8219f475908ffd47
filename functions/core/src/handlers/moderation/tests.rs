use super::*;
use crate::handlers::testing::{Ports, at};
use crate::handlers::{DisconnectRequest, disconnect};
use crate::memory::MemorySessions;
use crate::model::{Identity, Session};
use crate::ports::{Bans, ConnectionStore, MessageLog, SessionLog};

const T0: &str = "2026-11-24T10:00:00Z";

/// A room `ops` with: `mod` (a moderator, Mo), `u1` (Ann's phone, in lobby and
/// ops), `u2` (Ann's laptop, in ops only), `x1` (anonymous, in ops), `b1` (Bob, in ops).
struct Stage {
    ports: Ports,
    sessions: MemorySessions,
}

const ANN: &str = "https://id.example|ann";

impl std::ops::Deref for Stage {
    type Target = Ports;
    fn deref(&self) -> &Ports {
        &self.ports
    }
}

impl Stage {
    async fn new() -> Self {
        let stage = Self { ports: Ports::default(), sessions: MemorySessions::default() };
        let t = at("2026-11-24T09:00:00Z");
        let (mo, ann, bob) = (
            Identity::verified("Mo", "https://id.example|mo"),
            Identity::verified("Ann", ANN),
            Identity::verified("Bob", "https://id.example|bob"),
        );
        let rows = [
            Connection::new("mod", "ip", t).in_room("ops").of(Some(&mo)),
            Connection::new("u1", "ip", t).also_in(["ops"]).of(Some(&ann)),
            Connection::new("u2", "ip", t).in_room("ops").of(Some(&ann)),
            Connection::new("x1", "ip", t).in_room("ops"),
            Connection::new("b1", "ip", t).in_room("ops").of(Some(&bob)),
        ];
        for row in rows {
            stage.connections.put(&row).await.unwrap();
            stage.sessions.open(&Session::opened(&row)).await.unwrap();
        }
        stage
    }

    /// `from` sends `body` on `$default` with `rights` (its request context's) at `when`;
    /// the frames it got back.
    async fn send_at(&self, from: &str, rights: &str, body: serde_json::Value, when: &str) -> Vec<serde_json::Value> {
        self.handle(from, body, when, Rights::parse(rights).unwrap()).await
    }

    async fn send(&self, from: &str, rights: &str, body: serde_json::Value) -> Vec<serde_json::Value> {
        self.send_at(from, rights, body, T0).await
    }

    /// A chat line said by `from` (as its row says who it is) in `room`.
    async fn line(&self, from: &str, room: &str) -> String {
        let row = self.connections.get(from).unwrap();
        let line = LogEvent::chat(from, "hello", at("2026-11-24T09:30:00Z")).in_room(room).by(row.identity().as_ref());
        self.log.append(&line).await.unwrap();
        line.message_id
    }

    fn events_of(&self, kind: EventKind) -> Vec<LogEvent> {
        self.log.events().into_iter().filter(|e| e.kind == kind).collect()
    }
}

fn delete(id: &str) -> serde_json::Value {
    serde_json::json!({"action":"delete","id":id})
}

#[tokio::test]
async fn an_author_deletes_its_own_line_with_a_tombstone_the_room_hears() {
    let stage = Stage::new().await;
    let id = stage.line("u2", "ops").await;
    // Ann's other connection: the same account.
    assert!(stage.send("u1", "*=rw", delete(&id)).await.is_empty(), "no answer: the room hears the tombstone");
    let tombstones = stage.events_of(EventKind::Delete);
    assert_eq!(tombstones.len(), 1);
    let tombstone = &tombstones[0];
    assert_eq!(
        (tombstone.target.as_deref(), tombstone.room.as_str(), tombstone.user_id.as_deref()),
        (Some(id.as_str()), "ops", Some(ANN))
    );
    let frame: serde_json::Value = serde_json::from_slice(&crate::protocol::event_frame(tombstone)).unwrap();
    assert_eq!(
        (frame["kind"].as_str(), frame["target"].as_str(), frame["message"].as_str()),
        (Some("delete"), Some(id.as_str()), Some("A message was deleted."))
    );
    assert!(stage.log.get(&id).await.unwrap().is_some(), "the line stays in the log");

    let anonymous = stage.line("x1", "ops").await;
    assert!(stage.send("x1", "*=rw", delete(&anonymous)).await.is_empty(), "an anonymous author: same connection");
    assert_eq!(stage.events_of(EventKind::Delete).len(), 2);
}

#[tokio::test]
async fn a_moderator_deletes_anyones_line_and_others_are_refused() {
    let stage = Stage::new().await;
    let id = stage.line("b1", "ops").await;
    let refused = stage.send("u2", "*=rw", delete(&id)).await;
    assert_eq!(
        (refused[0]["error"].as_str(), refused[0]["room"].as_str(), refused[0]["right"].as_str()),
        (Some("Forbidden"), Some("ops"), Some("moderate"))
    );
    let anonymous = stage.send("x1", "*=rwm;ops=rw", delete(&id)).await;
    assert_eq!(anonymous[0]["right"], "moderate", "another anonymous connection is not the author either");
    assert!(stage.events_of(EventKind::Delete).is_empty(), "nothing stored");

    assert!(stage.send("mod", "ops=rwm", delete(&id)).await.is_empty());
    let tombstones = stage.events_of(EventKind::Delete);
    assert_eq!((tombstones.len(), tombstones[0].user.as_deref()), (1, Some("Mo")), "naming the moderator");

    let again = stage.send("b1", "*=rw", delete(&id)).await;
    assert_eq!((again[0]["error"].as_str(), again[0]["id"].as_str()), (Some("Not found"), Some(id.as_str())));
    assert_eq!(stage.events_of(EventKind::Delete).len(), 1, "deleted once, whoever asks again");
}

#[tokio::test]
async fn a_delete_of_what_is_no_line_here_is_not_found() {
    let stage = Stage::new().await;
    let join = LogEvent::join("b1", at(T0)).in_room("ops");
    stage.log.append(&join).await.unwrap();
    let elsewhere = stage.line("u1", "lobby").await;
    for id in ["00000000-0000-7000-8000-000000000000", join.message_id.as_str(), elsewhere.as_str()] {
        let answer = stage.send("mod", "*=rwm", delete(id)).await;
        assert_eq!((answer[0]["error"].as_str(), answer[0]["id"].as_str()), (Some("Not found"), Some(id)), "{id}");
    }
    assert!(stage.events_of(EventKind::Delete).is_empty());
    let bad = stage.send("mod", "*=rwm", serde_json::json!({"action":"delete","id":"last"})).await;
    assert_eq!(bad[0]["error"], "Invalid message");
}

fn kick(user: &str) -> serde_json::Value {
    serde_json::json!({"action":"kick","room":"ops","user":user})
}

#[tokio::test]
async fn a_kick_removes_exactly_that_users_connections_with_one_leave_each() {
    let stage = Stage::new().await;
    let answer = stage.send("mod", "ops=rwm", kick(ANN)).await;
    assert_eq!(answer, [serde_json::json!({"kind":"kicked","room":"ops","user":ANN,"connections":2})]);

    let leaves: Vec<(String, Option<String>)> =
        stage.events_of(EventKind::Leave).into_iter().map(|e| (e.connection_id, e.reason)).collect();
    assert_eq!(leaves, [("u1".to_owned(), Some("kicked".to_owned())), ("u2".to_owned(), Some("kicked".to_owned()))]);
    assert!(stage.log.events().iter().all(|e| e.room == "ops"));
    let audit = stage.events_of(EventKind::Kick);
    assert_eq!((audit[0].member.as_deref(), audit[0].user.as_deref()), (Some(ANN), Some("Mo")));
    for id in ["u1", "u2"] {
        assert_eq!(
            stage.poster.frames_to(id),
            [serde_json::json!({"kind":"removed","room":"ops","reason":"kicked","by":"Mo"})],
            "{id} is told first"
        );
    }
    assert!(stage.poster.frames_to("b1").is_empty() && stage.poster.frames_to("x1").is_empty());
    let members = stage.connections.memberships();
    assert!(!members.contains(&("ops".into(), "u1".into())) && !members.contains(&("ops".into(), "u2".into())));
    assert!(members.contains(&("ops".into(), "b1".into())) && members.contains(&("ops".into(), "x1".into())));
    assert_eq!(stage.connections.get("u1").unwrap().rooms, ["lobby"], "the phone keeps the lobby");
    assert_eq!(stage.poster.closed(), ["u2"], "the laptop heard only ops: closed");

    // The closed socket's $disconnect, and a second kick, announce nothing more.
    let bye = DisconnectRequest {
        connection_id: "u2".into(),
        connected_at: at("2026-11-24T09:00:00Z"),
        disconnected_at: at(T0),
    };
    disconnect(&bye, &stage.connections, &stage.sessions, &stage.log).await.unwrap();
    assert_eq!(stage.send("mod", "ops=rwm", kick(ANN)).await[0]["connections"], 0);
    assert_eq!(stage.events_of(EventKind::Leave).len(), 2, "exactly one leave per connection");
    assert!(stage.connections.get("u2").is_none() && stage.sessions.get("u2").unwrap().disconnected_at.is_some());
}

#[tokio::test]
async fn an_anonymous_member_is_kicked_by_its_connection_id() {
    let stage = Stage::new().await;
    let answer = stage.send("mod", "ops=rwm", kick("x1")).await;
    assert_eq!(answer[0]["connections"], 1);
    assert_eq!(stage.poster.closed(), ["x1"]);
    assert_eq!(stage.send("mod", "ops=rwm", kick(ANN.trim_end_matches("ann"))).await[0]["connections"], 0);
}

#[tokio::test]
async fn moderation_needs_the_moderate_right_from_the_context_never_the_frame() {
    let stage = Stage::new().await;
    let forged =
        serde_json::json!({"action":"kick","room":"ops","user":ANN,"rights":"*=rwm","chat":{"rights":{"*":"rwm"}}});
    for body in [
        forged,
        serde_json::json!({"action":"ban","room":"ops","user":ANN}),
        serde_json::json!({"action":"unban","room":"ops","user":ANN}),
    ] {
        let refused = stage.send("b1", "*=rw;mods=rwm", body.clone()).await;
        assert_eq!((refused[0]["error"].as_str(), refused[0]["right"].as_str()), (Some("Forbidden"), Some("moderate")));
    }
    assert!(stage.log.events().is_empty() && stage.poster.closed().is_empty(), "nothing done");
    assert_eq!(stage.connections.memberships().len(), 6);
}

fn ban(seconds: i64) -> serde_json::Value {
    serde_json::json!({"action":"ban","room":"ops","user":ANN,"seconds":seconds,"reason":"spam"})
}

fn subscribe_ops() -> serde_json::Value {
    serde_json::json!({"action":"subscribe","room":"ops"})
}

#[tokio::test]
async fn a_ban_removes_and_refuses_the_member_until_it_ends() {
    let stage = Stage::new().await;
    let answer = stage.send("mod", "ops=rwm", ban(600)).await;
    let until = "2026-11-24T10:10:00Z";
    assert_eq!(answer, [serde_json::json!({"kind":"banned","room":"ops","user":ANN,"connections":2,"until":until})]);
    assert_eq!(
        stage.poster.frames_to("u1"),
        [serde_json::json!({"kind":"removed","room":"ops","reason":"banned","by":"Mo","until":until})]
    );
    let audit = &stage.events_of(EventKind::Ban)[0];
    assert_eq!((audit.member.as_deref(), audit.reason.as_deref()), (Some(ANN), Some("spam")));
    assert_eq!(audit.until.map(|u| crate::time::format_iso(&u)).as_deref(), Some(until));
    let leaves = stage.events_of(EventKind::Leave);
    assert!(leaves.len() == 2 && leaves.iter().all(|l| l.reason.as_deref() == Some("banned")));

    let refused = stage.send_at("u1", "*=rw", subscribe_ops(), "2026-11-24T10:09:59Z").await;
    assert_eq!(
        (refused[0]["error"].as_str(), refused[0]["room"].as_str(), refused[0]["until"].as_str()),
        (Some("Banned"), Some("ops"), Some(until))
    );
    assert!(!stage.connections.get("u1").unwrap().is_subscribed_to("ops"), "nothing changed");
    let bob = stage.send_at("b1", "*=rw", serde_json::json!({"action":"who","room":"ops"}), T0).await;
    assert_eq!(bob[0]["count"], 3, "others stay");

    let after = stage.send_at("u1", "*=rw", subscribe_ops(), until).await;
    assert_eq!(after[0]["kind"], "subscribed", "the ban ends at its end");
}

#[tokio::test]
async fn an_unban_lets_the_member_back_at_once() {
    let stage = Stage::new().await;
    stage.send("mod", "ops=rwm", ban(3600)).await;
    assert_eq!(stage.send("u1", "*=rw", subscribe_ops()).await[0]["error"], "Banned");
    let answer = stage.send("mod", "ops=rwm", serde_json::json!({"action":"unban","room":"ops","user":ANN})).await;
    assert_eq!(answer, [serde_json::json!({"kind":"unbanned","room":"ops","user":ANN,"connections":0})]);
    assert_eq!(stage.events_of(EventKind::Unban)[0].member.as_deref(), Some(ANN));
    assert_eq!(stage.send("u1", "*=rw", subscribe_ops()).await[0]["kind"], "subscribed");
    assert!(stage.bans.active("ops", ANN, at(T0)).await.unwrap().is_none());
    stage.send("mod", "ops=rwm", serde_json::json!({"action":"unban","room":"ops","user":ANN})).await;
    assert_eq!(stage.events_of(EventKind::Unban).len(), 1, "no ban, no audit event");
}

#[tokio::test]
async fn bad_moderation_frames_get_clear_errors() {
    let stage = Stage::new().await;
    let too_long = "x".repeat(201);
    for (body, needle) in [
        (serde_json::json!({"action":"kick","room":"ops"}), "\"user\" is required"),
        (serde_json::json!({"action":"kick","user":ANN}), "\"room\" is required"),
        (serde_json::json!({"action":"kick","room":"ops","user":7}), "\"user\" has the wrong type"),
        (serde_json::json!({"action":"kick","room":"ops","user":""}), "userId"),
        (serde_json::json!({"action":"ban","room":"ops","user":ANN,"seconds":59}), "from 60 to 2592000"),
        (serde_json::json!({"action":"ban","room":"ops","user":ANN,"seconds":2_592_001}), "from 60"),
        (serde_json::json!({"action":"ban","room":"ops","user":ANN,"seconds":"60"}), "\"seconds\" has the wrong type"),
        (serde_json::json!({"action":"ban","room":"ops","user":ANN,"reason":too_long}), "201 characters"),
        (serde_json::json!({"action":"unban","room":"no spaces","user":ANN}), "Room must be"),
        (serde_json::json!({"action":"delete"}), "\"id\" is required"),
    ] {
        let answer = stage.send("mod", "*=rwm", body.clone()).await;
        assert_eq!(answer[0]["error"], "Invalid message", "{body}");
        assert!(answer[0]["message"].as_str().unwrap().contains(needle), "{body}: {}", answer[0]["message"]);
    }
    assert!(stage.log.events().is_empty() && stage.bans.active("ops", ANN, at(T0)).await.unwrap().is_none());
}
