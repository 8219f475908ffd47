//! Coalesced delivery on the real binary: a `?batch=1` client and a seed client in
//! one room both get every line once and in order; the coalescing one in
//! `{"events":[…]}` frames of at most 32 KB; a coalescing connection whose socket
//! is gone is pruned by the broadcast that finds it.

use crate::common;

use chat_core::coalesce::COALESCED_FRAME_BYTES;
use chat_core::ports::{ConnectionStore, SessionLog};
use chat_core::{Connection, Session};
use common::{Client, Stack, WAIT, scratch};
use futures::StreamExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

/// Reads raw frames until a chat line `last` arrives; returns each frame's size
/// and the event objects it carried, unpacked, in order.
async fn frames_until(client: &mut Client, last: &str) -> Vec<(usize, Vec<Value>)> {
    let mut frames = Vec::new();
    loop {
        let message =
            tokio::time::timeout(WAIT, client.socket.next()).await.expect("a frame in time").unwrap().unwrap();
        let Message::Text(text) = message else { continue };
        let frame: Value = serde_json::from_str(&text).expect("frames are JSON");
        let events = match frame.get("events") {
            Some(events) => events.as_array().expect("events is an array").clone(),
            None => vec![frame],
        };
        let done = events.iter().any(|e| e["kind"] == "chat" && e["text"] == last);
        frames.push((text.len(), events));
        if done {
            return frames;
        }
    }
}

fn chat_texts(frames: &[(usize, Vec<Value>)]) -> Vec<String> {
    let events = frames.iter().flat_map(|(_, events)| events);
    events.filter(|e| e["kind"] == "chat").map(|e| e["text"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn a_coalescing_and_a_seed_client_in_one_room_both_get_every_line_once_in_order() {
    let dir = scratch("coalescing");
    // A 300 ms batching window gathers a burst of lines into one invocation.
    // 41 lines from one writer at once: past the per-user send burst (20), so no limit here.
    let stack = Stack::start(&dir.join("chat.db"), &["--batching-window-ms", "300", "--send-rate", "off"]).await;
    let mut seed = Client::connect(&stack.ws_url).await;
    seed.my_id().await;
    let mut coalescing = Client::connect(&format!("{}?batch=1", stack.ws_url)).await;
    seed.until(|f| f["kind"] == "join").await;
    // Sent together, so most land in one invocation; lines of 1–9 KB make it
    // more than 32 KB, so it must be split.
    let lines: Vec<String> = (0..40).map(|i| format!("line {i:02} {}", "x".repeat(1000 * (1 + i % 9)))).collect();
    for line in &lines {
        seed.say(line).await;
    }
    seed.say("end").await;

    let seed_frames = frames_until(&mut seed, "end").await;
    let batched_frames = frames_until(&mut coalescing, "end").await;
    let mut expected = lines.clone();
    expected.push("end".into());
    assert_eq!(chat_texts(&seed_frames), expected, "the seed client: every line once, in order");
    assert_eq!(chat_texts(&batched_frames), expected, "the coalescing client: every line once, in order");
    assert!(seed_frames.iter().all(|(_, events)| events.len() == 1), "the seed client gets one frame per event");
    for (bytes, events) in &batched_frames {
        assert!(*bytes <= COALESCED_FRAME_BYTES, "a coalesced frame of {bytes} bytes ({} events)", events.len());
    }
    let most = batched_frames.iter().map(|(_, events)| events.len()).max().unwrap();
    assert!(most > 1, "lines sent together arrive together");
    assert!(batched_frames.len() < expected.len(), "{} frames for {} lines", batched_frames.len(), expected.len());
    // Each coalesced event is byte-for-byte the frame the seed client got.
    let seed_events: Vec<&Value> = seed_frames.iter().flat_map(|(_, e)| e).filter(|e| e["kind"] == "chat").collect();
    let batched_events: Vec<&Value> =
        batched_frames.iter().flat_map(|(_, e)| e).filter(|e| e["kind"] == "chat").collect();
    assert_eq!(seed_events, batched_events);
    stack.stop().await;
}

#[tokio::test]
async fn a_coalescing_connection_whose_socket_is_gone_is_pruned_by_the_next_broadcast() {
    let dir = scratch("coalescing_gone");
    let db = dir.join("chat.db");
    let stack = Stack::start(&db, &[]).await;
    let mut live = Client::connect(&format!("{}?batch=1", stack.ws_url)).await;

    // A row (and session) for a coalescing socket this gateway does not hold: what a
    // lost $disconnect leaves behind, a minute ago (a younger one may still be in
    // its $connect: not pruned). Posting to it is a 410.
    let connected_at = chrono::Utc::now() - chrono::Duration::minutes(1);
    let ghost = Connection::new("ghostGHOSTghost=", "198.51.100.9", connected_at).coalescing(true);
    let store = chat_local::store::SqliteStore::open(&db).unwrap();
    store.put(&ghost).await.unwrap();
    store.open(&Session::opened(&ghost)).await.unwrap();

    live.say("anyone there?").await;
    // The prune announces the ghost's leave, which the live client hears: after its
    // line, or before it if the broadcast of its own join found the ghost first.
    let (mut heard_line, mut leave) = (false, None);
    while !heard_line || leave.is_none() {
        let message = tokio::time::timeout(WAIT, live.socket.next()).await.expect("a frame in time").unwrap().unwrap();
        let Message::Text(text) = message else { continue };
        assert!(text.len() <= COALESCED_FRAME_BYTES);
        let frame: Value = serde_json::from_str(&text).expect("frames are JSON");
        let events = match frame.get("events") {
            Some(events) => events.as_array().expect("events is an array").clone(),
            None => vec![frame],
        };
        for event in events {
            heard_line |= event["kind"] == "chat" && event["text"] == "anyone there?";
            if event["kind"] == "leave" && event["connectionId"] == ghost.connection_id {
                leave = Some(event);
            }
        }
    }
    let leave = leave.expect("heard");
    assert_eq!(leave["message"], format!("User {} has left the chat.", ghost.connection_id));
    // The prune closes the session after it logs the leave, so it may still be at it.
    let closed = || store.session(&ghost.connection_id).unwrap().is_some_and(|s| s.disconnected_at.is_some());
    common::eventually(closed, "pruning closed the ghost's session").await;
    stack.stop().await;

    assert!(store.get(&ghost.connection_id).await.unwrap().is_none(), "the 410 deleted the ghost's row");
    assert!(store.session(&ghost.connection_id).unwrap().is_some(), "the ghost had a session");
    assert!(closed(), "pruning closed the ghost's session");
}

#[tokio::test]
async fn history_to_a_coalescing_client_comes_packed_with_its_end_last() {
    let dir = scratch("coalescing_history");
    // 60 lines from one writer to fill the history: past the per-user send burst, so no limit here.
    let stack = Stack::start(&dir.join("chat.db"), &["--send-rate", "off"]).await;
    let mut seed = Client::connect(&stack.ws_url).await;
    let lines: Vec<String> = (0..60).map(|i| format!("past {i:02} {}", "y".repeat(500))).collect();
    for line in &lines {
        seed.say(line).await;
    }
    seed.chat(lines.last().unwrap()).await;

    let mut reader = Client::connect(&format!("{}?batch=1", stack.ws_url)).await;
    reader.send_json(serde_json::json!({"action": "history", "limit": 200})).await;
    // Frames until the one carrying the closing `history` frame.
    let mut frames: Vec<(usize, Vec<Value>)> = Vec::new();
    while !frames.last().is_some_and(|(_, events)| events.iter().any(|e| e["kind"] == "history")) {
        let message =
            tokio::time::timeout(WAIT, reader.socket.next()).await.expect("a frame in time").unwrap().unwrap();
        let Message::Text(text) = message else { continue };
        let frame: Value = serde_json::from_str(&text).expect("frames are JSON");
        let events = frame.get("events").and_then(Value::as_array).cloned().unwrap_or_else(|| vec![frame]);
        frames.push((text.len(), events));
    }
    let events: Vec<&Value> = frames.iter().flat_map(|(_, events)| events).collect();
    let end = events.last().unwrap();
    assert_eq!((end["kind"].as_str(), end["more"].as_bool()), (Some("history"), Some(false)), "the end comes last");
    assert_eq!(chat_texts(&frames), lines, "every line once, in order");
    assert!(frames.iter().all(|(bytes, _)| *bytes <= COALESCED_FRAME_BYTES));
    // 60 lines of ~1.3 KB as frames: a few 32 KB frames rather than 61.
    assert!(frames.len() <= 4, "{} frames for {} events", frames.len(), events.len());
    stack.stop().await;
}
