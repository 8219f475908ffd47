//! History paging over the socket, and the `replay` binary against the local
//! store: after a restart, a range, a connection, and re-publishing into a
//! running stack whose clients then see the replayed lines.

use crate::common;

use common::{Client, Stack, run_binary, scratch};
use serde_json::{Value, json};

/// Chats `texts` from one client and returns their broadcast frames.
async fn chat_lines(client: &mut Client, texts: &[&str]) -> Vec<Value> {
    let mut frames = Vec::new();
    for text in texts {
        client.say(text).await;
        frames.push(client.chat(text).await);
    }
    frames
}

/// The chat texts of `count` history frames.
async fn history_texts(client: &mut Client, request: Value, count: usize) -> Vec<String> {
    client.send_json(request).await;
    let mut texts = Vec::new();
    while texts.len() < count {
        let frame = client.until(|f| f.get("kind").is_some() || f.get("error").is_some()).await;
        assert!(frame.get("error").is_none(), "unexpected error {frame}");
        if frame["kind"] == "chat" {
            texts.push(frame["text"].as_str().unwrap().to_owned());
        }
    }
    texts
}

#[tokio::test]
async fn history_pages_through_the_log() {
    let dir = scratch("history-paging");
    let stack = Stack::start(&dir.join("chat.db"), &[]).await;
    let mut writer = Client::connect(&stack.ws_url).await;
    let frames = chat_lines(&mut writer, &["h1", "h2", "h3", "h4", "h5"]).await;

    let mut reader = Client::connect(&stack.ws_url).await;
    // The newest two chat lines (the reader's own join is newer, hence limit 3).
    let newest = history_texts(&mut reader, json!({"action": "history", "limit": 3}), 2).await;
    assert_eq!(newest, ["h4", "h5"]);
    // Forward from an id, a page at a time.
    let page = json!({"action": "history", "limit": 2, "since": frames[0]["id"]});
    assert_eq!(history_texts(&mut reader, page, 2).await, ["h2", "h3"]);
    let page = json!({"action": "history", "limit": 2, "since": frames[2]["id"]});
    assert_eq!(history_texts(&mut reader, page, 2).await, ["h4", "h5"]);
    // Bad arguments get a clear error frame, not silence.
    reader.send_json(json!({"action": "history", "limit": 5000})).await;
    let error = reader.until(|f| f.get("error").is_some()).await;
    assert!(error["message"].as_str().unwrap().contains("limit"), "{error}");
    reader.send_json(json!({"action": "history", "since": "last tuesday"})).await;
    let error = reader.until(|f| f.get("error").is_some()).await;
    assert!(error["message"].as_str().unwrap().contains("since"), "{error}");
    stack.stop().await;
}

#[tokio::test]
async fn replay_reads_the_store_after_a_restart_by_range_and_connection() {
    let dir = scratch("replay-sqlite");
    let db = dir.join("chat.db");
    let stack = Stack::start(&db, &[]).await;
    let mut alice = Client::connect(&stack.ws_url).await;
    let mut bob = Client::connect(&stack.ws_url).await;
    let first = chat_lines(&mut alice, &["a1", "a2"]).await;
    let from_bob = chat_lines(&mut bob, &["b1"]).await;
    let last = chat_lines(&mut alice, &["a3"]).await;
    stack.stop().await;

    let source = format!("sqlite:{}", db.display());
    let all = run_binary("replay", &["--from", &source]).await;
    let chat: Vec<&str> = all.lines().filter(|l| !l.contains("has joined") && !l.contains("has left")).collect();
    assert_eq!(chat.len(), 4, "{all}");
    for (line, text) in chat.iter().zip(["a1", "a2", "b1", "a3"]) {
        assert!(line.ends_with(&format!("  {text}")), "{line}");
    }
    assert!(all.lines().count() > 4, "joins and leaves are replayed too:\n{all}");

    // A range by id: after a1, up to and including b1.
    let since = first[0]["id"].as_str().unwrap();
    let until = from_bob[0]["id"].as_str().unwrap();
    let range =
        run_binary("replay", &["--from", &source, "--since", since, "--until", until, "--format", "json"]).await;
    let range: Vec<Value> = range.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let texts: Vec<&str> =
        range.iter().filter(|e| e["kind"] == "chat").map(|e| e["message"].as_str().unwrap()).collect();
    assert_eq!(texts, ["a2", "b1"]);
    assert_eq!(range.last().unwrap()["message_id"], from_bob[0]["id"]);

    // One connection's events.
    let bob_id = from_bob[0]["connectionId"].as_str().unwrap();
    let of_bob = run_binary("replay", &["--from", &source, "--connection", bob_id]).await;
    assert!(of_bob.lines().all(|l| l.contains(bob_id)), "{of_bob}");
    assert!(of_bob.contains("  b1") && !of_bob.contains("  a3"));
    assert_eq!(last.len(), 1);
}

#[tokio::test]
async fn replay_republishes_into_a_running_stack_once() {
    let dir = scratch("replay-publish");
    let old_db = dir.join("old.db");
    let stack = Stack::start(&old_db, &[]).await;
    let mut writer = Client::connect(&stack.ws_url).await;
    let originals = chat_lines(&mut writer, &["from the past 1", "from the past 2"]).await;
    stack.stop().await;

    let new_db = dir.join("new.db");
    let live = Stack::start(&new_db, &[]).await;
    let mut watcher = Client::connect(&live.ws_url).await;
    let source = format!("sqlite:{}", old_db.display());
    let target = format!("sqlite:{}", new_db.display());
    run_binary("replay", &["--from", &source, "--publish", &target]).await;

    // The running stack's stream picks the appended events up and broadcasts them, ids kept.
    for original in &originals {
        let replayed = watcher.chat(original["text"].as_str().unwrap()).await;
        assert_eq!(replayed["id"], original["id"]);
        assert_eq!(replayed["message"], original["message"]);
    }
    let count = || {
        let db = rusqlite::Connection::open(&new_db).unwrap();
        db.query_row("SELECT count(*) FROM message_history", [], |r| r.get::<_, i64>(0)).unwrap()
    };
    let after_first = count();
    run_binary("replay", &["--from", &source, "--publish", &target]).await;
    assert_eq!(count(), after_first, "replaying again appends nothing");
    live.stop().await;
}

#[tokio::test]
async fn replay_prints_no_control_or_bidi_character_a_user_sent() {
    let dir = scratch("replay-escapes");
    let db = dir.join("chat.db");
    let stack = Stack::start(&db, &[]).await;
    let mut mallory = Client::connect(&stack.ws_url).await;
    // Clear the screen, set the window title, return to column 0, a one-byte CSI, reverse the text.
    let hostile = "hi\u{1b}[2J\u{1b}]0;owned\u{7}\r\u{9b}31m\u{202e}txt.exe";
    chat_lines(&mut mallory, &[hostile]).await;
    stack.stop().await;

    let source = format!("sqlite:{}", db.display());
    let raw = |c: char| c.is_control() && c != '\n' || ('\u{202a}'..='\u{202e}').contains(&c);
    let text = run_binary("replay", &["--from", &source]).await;
    assert!(!text.chars().any(raw), "{text:?}");
    assert!(text.contains(r"  hi\u{1b}[2J\u{1b}]0;owned\u{7}\r\u{9b}31m\u{202e}txt.exe"), "{text}");
    let json = run_binary("replay", &["--from", &source, "--format", "json"]).await;
    assert!(!json.chars().any(raw), "{json:?}");
    let said = json.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()).find(|e| e["kind"] == "chat").unwrap();
    assert_eq!(said["message"], hostile, "the JSON still reads back as what was said");
}
