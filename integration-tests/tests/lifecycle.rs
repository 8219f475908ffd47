//! A line's life over real sockets (issue #25), on the local store and on moto's
//! DynamoDB: an edit, reactions, a reply and a delete reach every member once,
//! in order; a non-author's edit gets an error and stores nothing; `history`
//! with `fold:true` after a reconnect equals the view folded from the live frames.

use crate::common;

use std::collections::BTreeMap;

use chat_core::LogEvent;
use common::{Client, Moto, Stack, scratch};
use serde_json::{Value, json};

/// What a member shows of each line, folded from frames by id (as a page does).
#[derive(Debug, Default, PartialEq)]
struct View(BTreeMap<String, (Option<String>, bool, Value, Option<String>)>);

impl View {
    fn live(frames: &[Value]) -> Self {
        let mut view = View::default();
        for frame in frames {
            let target = frame["target"].as_str().unwrap_or_default().to_owned();
            match frame["kind"].as_str() {
                Some("chat") => {
                    let quote = frame["quote"].as_str().map(str::to_owned);
                    let text = frame["text"].as_str().map(str::to_owned);
                    view.0.insert(frame["id"].as_str().unwrap().to_owned(), (text, false, json!({}), quote));
                }
                Some("edit") => view.0.get_mut(&target).unwrap().0 = frame["text"].as_str().map(str::to_owned),
                Some("reaction") => view.0.get_mut(&target).unwrap().2 = frame["counts"].clone(),
                Some("delete") => {
                    let line = view.0.get_mut(&target).unwrap();
                    (line.0, line.1, line.2) = (None, true, json!({}));
                }
                _ => {}
            }
        }
        view
    }

    fn folded(lines: &[Value]) -> Self {
        View(
            lines
                .iter()
                // Live frames (the old connection's leave, this one's join) may arrive meanwhile.
                .filter(|line| line["kind"] == "line")
                .map(|line| {
                    let counts: serde_json::Map<String, Value> = line["reactions"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|r| (r["emoji"].as_str().unwrap().to_owned(), r["count"].clone()))
                        .collect();
                    let value = (
                        line["text"].as_str().map(str::to_owned),
                        line["deleted"] == true,
                        Value::Object(counts),
                        line["quote"].as_str().map(str::to_owned),
                    );
                    (line["id"].as_str().unwrap().to_owned(), value)
                })
                .collect(),
        )
    }
}

/// Frames up to and including the chat line `marker`, skipping presence noise.
async fn frames_until(client: &mut Client, marker: &str) -> Vec<Value> {
    let mut frames = Vec::new();
    loop {
        let frame = client.next_json().await;
        let done = frame["kind"] == "chat" && frame["text"] == marker;
        if frame["kind"] != "join" && frame["kind"] != "leave" {
            frames.push(frame);
        }
        if done {
            return frames;
        }
    }
}

async fn scenario(ws_url: &str) {
    let mut alice = Client::connect(ws_url).await;
    alice.my_id().await;
    let mut bob = Client::connect(ws_url).await;
    let mut carol = Client::connect(ws_url).await;
    bob.my_id().await;
    carol.my_id().await;
    alice.say("start").await;
    for member in [&mut alice, &mut bob, &mut carol] {
        member.chat("start").await;
    }
    alice.say("helo").await;
    let line = alice.chat("helo").await["id"].as_str().unwrap().to_owned();

    // Bob may not edit Alice's line: an error to him, nothing stored or broadcast.
    bob.send_json(json!({"action":"edit","id":line,"message":"bob was here"})).await;
    let refusal = bob.until(|f| f.get("error").is_some()).await;
    assert_eq!((refusal["error"].as_str(), refusal["right"].as_str()), (Some("Forbidden"), Some("write")), "{refusal}");
    assert_eq!(refusal["id"], line.as_str());

    // Each step waits for its broadcast to Alice, so the log order is the order sent.
    let steps: Vec<(usize, Value, &str)> = vec![
        (0, json!({"action":"edit","id":line,"message":"hello"}), "edit"),
        (1, json!({"action":"react","id":line,"emoji":"👍"}), "reaction"),
        (2, json!({"action":"react","id":line,"emoji":"👍"}), "reaction"),
        (1, json!({"action":"react","id":line,"emoji":"👍"}), "reaction"),
        (2, json!({"action":"react","id":line,"emoji":"🎉"}), "reaction"),
        (2, json!({"action":"reply","to":line,"message":"hi alice"}), "chat"),
        (0, json!({"action":"sendmessage","message":"oops"}), "chat"),
    ];
    let mut members = [alice, bob, carol];
    for (who, body, kind) in steps {
        members[who].send_json(body).await;
        members[0].until(|f| f["kind"] == kind).await;
    }
    let [mut alice, mut bob, mut carol] = members;
    let oops = {
        alice.send_json(json!({"action":"history","limit":1})).await;
        alice.until(|f| f["text"] == "oops").await["id"].as_str().unwrap().to_owned()
    };
    alice.send_json(json!({"action":"delete","id":oops})).await;
    alice.say("end").await;

    let mut views = Vec::new();
    for member in [&mut alice, &mut bob, &mut carol] {
        views.push(frames_until(member, "end").await);
    }
    // Alice waited on each step, and Bob on his refusal (past Alice's line):
    // what each heard after the line, every event once and in order.
    for frames in &views[1..] {
        let after = frames.iter().position(|f| f["id"] == line.as_str()).map_or(0, |i| i + 1);
        let heard = &frames[after..];
        let kinds: Vec<&str> = heard.iter().filter_map(|f| f["kind"].as_str()).collect();
        assert_eq!(
            kinds,
            ["edit", "reaction", "reaction", "reaction", "reaction", "chat", "chat", "delete", "chat"],
            "{frames:#?}"
        );
        let counts: Vec<&Value> = heard.iter().filter(|f| f["kind"] == "reaction").map(|f| &f["counts"]).collect();
        assert_eq!(counts, [&json!({"👍":1}), &json!({"👍":2}), &json!({"👍":1}), &json!({"👍":1,"🎉":1})]);
        let reply = heard.iter().find(|f| f["text"] == "hi alice").unwrap();
        assert_eq!((reply["replyTo"].as_str(), reply["quote"].as_str()), (Some(line.as_str()), Some("hello")));
        let edit = heard.iter().find(|f| f["kind"] == "edit").unwrap();
        assert!(edit["message"].as_str().unwrap().ends_with("hello (edited)\n"), "{edit}");
        assert!(edit["editedAt"].is_string());
    }
    let live = View::live(&views[2]);
    assert_eq!(live.0.values().filter(|line| line.0.as_deref() == Some("bob was here")).count(), 0);

    // Carol reloads: history with fold, on a new connection, equals what she saw live.
    carol.socket.close(None).await.unwrap();
    let mut carol = Client::connect(ws_url).await;
    let (lines, end) = carol.history(json!({"action":"history","fold":true})).await;
    assert_eq!(end["kind"], "history");
    let mut folded = View::folded(&lines);
    folded.0.retain(|id, _| live.0.contains_key(id));
    assert_eq!(folded, live);
    let (raw, _) = carol.history(json!({"action":"history"})).await;
    assert!(raw.iter().all(|f| f["text"] != "bob was here" && f["kind"] != "line"), "raw events, no stored refusal");
}

#[tokio::test]
async fn a_lines_life_on_the_local_stack() {
    let dir = scratch("lifecycle-local");
    let db = dir.join("chat.db");
    let stack = Stack::start(&db, &[]).await;
    scenario(&stack.ws_url).await;
    stack.stop().await;
    assert_eq!(common::count_rows(&db, "SELECT COUNT(*) FROM message_history WHERE kind = 'edit'"), 1);
    assert_eq!(common::count_rows(&db, "SELECT COUNT(*) FROM reactions"), 2, "Carol's 👍 and 🎉");
    let folded = common::run_binary("replay", &["--from", &format!("sqlite:{}", db.display()), "--fold"]).await;
    assert!(folded.contains("hello (edited "), "{folded}");
    assert!(
        folded.contains("(deleted)") && folded.contains("[🎉 1, 👍 1]") && folded.contains(": \"hello\")"),
        "{folded}"
    );
    assert!(!folded.contains("helo") && !folded.contains("oops"), "{folded}");
}

#[tokio::test]
async fn a_lines_life_on_moto() {
    let moto = Moto::start().await;
    let dir = scratch("lifecycle-moto");
    let stack = Stack::start(&dir.join("unused.db"), &["--dynamodb-endpoint", &moto.url, "--create-tables"]).await;
    scenario(&stack.ws_url).await;
    stack.stop().await;
}

/// Racing toggles on one line, through a store: six reactors at once each add
/// 👍 (every count from 1 to 6 is some event's, once: decided one at a time),
/// then one reactor toggles eight times at once (four on, four off: it ends
/// where it began), and the fold of the log agrees with the last counts.
async fn toggles_are_decided_one_at_a_time(log: std::sync::Arc<dyn chat_core::MessageLog>) {
    use chat_core::Identity;
    let at = chrono::Utc::now();
    let line = LogEvent::chat("author", "react to me", at).in_room("race");
    log.append(&line).await.unwrap();
    let toggle = |reactor: usize| {
        let log = log.clone();
        let identity = Identity::verified(&format!("r{reactor}"), &format!("iss|r{reactor}"));
        let reaction =
            LogEvent::reaction(&format!("c{reactor}"), &line.message_id, "👍", at).in_room("race").by(Some(&identity));
        tokio::spawn(async move { log.toggle_reaction(&reaction, None).await.unwrap() })
    };
    let mut seen: Vec<u32> = Vec::new();
    for task in (0..6).map(toggle).collect::<Vec<_>>() {
        let event = task.await.unwrap();
        assert_eq!(event.on, Some(true));
        seen.push(event.counts.unwrap()["👍"]);
    }
    seen.sort();
    assert_eq!(seen, [1, 2, 3, 4, 5, 6]);
    let (mut ons, mut counts) = (0, Vec::new());
    for task in (0..8).map(|_| toggle(0)).collect::<Vec<_>>() {
        let event = task.await.unwrap();
        ons += usize::from(event.on == Some(true));
        counts.push(event.counts.unwrap()["👍"]);
    }
    assert_eq!(ons, 4, "one reactor's racing toggles alternate");
    counts.sort();
    assert_eq!(counts, [5, 5, 5, 5, 6, 6, 6, 6], "each toggle's counts are the line's after it");
    let events = log.read(&chat_core::ports::LogQuery { room: "race".into(), after: None, limit: 100 }).await.unwrap();
    let folded = chat_core::fold::fold(&events);
    assert_eq!(folded[0].reactions["👍"].len(), 6);
}

#[tokio::test]
async fn racing_toggles_on_moto() {
    let moto = Moto::start().await;
    let settings = chat_local::DynamoSettings {
        endpoint: Some(moto.url.clone()),
        tables: chat_aws::TableNames::default(),
        create_tables: true,
    };
    let (tables, _) = chat_local::dynamo::open_with(&moto.sdk_config().await, &settings).await.unwrap();
    toggles_are_decided_one_at_a_time(tables.log.clone()).await;
}

#[tokio::test]
async fn racing_toggles_on_sqlite() {
    let dir = scratch("lifecycle-race");
    let store = chat_local::store::SqliteStore::open(&dir.join("chat.db")).unwrap();
    toggles_are_decided_one_at_a_time(std::sync::Arc::new(store)).await;
}
