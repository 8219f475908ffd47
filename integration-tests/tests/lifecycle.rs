//! A line's life over real sockets (issue #25), on the local store and on moto's
//! DynamoDB: an edit, reactions, a reply and a delete reach every member once,
//! in order; a non-author's edit gets an error and stores nothing; `history`
//! with `fold:true` after a reconnect equals the view folded from the live frames.

mod common;

use std::collections::BTreeMap;

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
                .map(|line| {
                    assert_eq!(line["kind"], "line", "{line}");
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
