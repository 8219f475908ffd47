//! Presence that scales, on the real binary (issue #27): a room above the
//! presence limit (default 100) gets occupancy frames, at most one a second,
//! instead of a join notice per member per join; a small room still gets the
//! seed's join and leave notices; the flag is checked at start.

use crate::common;

use std::time::{Duration, Instant};

use common::{Client, Stack, count_rows, scratch};
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

/// The events of a frame: a coalesced `{"events":[…]}` unpacked, any other as it is.
fn events_of(frame: Value) -> Vec<Value> {
    match frame.get("events").and_then(Value::as_array) {
        Some(events) => events.clone(),
        None => vec![frame],
    }
}

/// Every event a client receives until it has had an occupancy frame counting
/// `members` and then nothing for `quiet`; and the client, still connected (a
/// client dropped early would be a leave the others see).
async fn read_until_settled(mut client: Client, members: u64, quiet: Duration) -> (Client, Vec<Value>) {
    let mut seen: Vec<Value> = Vec::new();
    loop {
        let settled = seen.iter().any(|e| e["kind"] == "occupancy" && e["count"] == members);
        let next = if settled {
            match tokio::time::timeout(quiet, client.next_json()).await {
                Ok(frame) => frame,
                Err(_) => return (client, seen),
            }
        } else {
            client.next_json().await
        };
        seen.extend(events_of(next));
    }
}

#[tokio::test]
async fn a_room_of_300_gets_occupancy_frames_not_a_join_notice_per_member() {
    let dir = scratch("presence-300");
    let stack = Stack::start(&dir.join("chat.db"), &[]).await;
    let plain = format!("{}?room=big", stack.ws_url);
    let coalescing = format!("{plain}&batch=1");

    // 300 clients, 25 connecting at a time; every tenth coalesces.
    let started = Instant::now();
    let clients: Vec<Client> = futures::stream::iter(0..300)
        .map(|i| {
            let url = if i % 10 == 0 { coalescing.clone() } else { plain.clone() };
            async move { Client::connect(&url).await }
        })
        .buffer_unordered(25)
        .collect()
        .await;
    let filling = started.elapsed();
    let readers: Vec<_> = clients
        .into_iter()
        .map(|client| tokio::spawn(read_until_settled(client, 300, Duration::from_secs(2))))
        .collect();
    let (mut clients, mut received) = (Vec::new(), Vec::new());
    for reader in readers {
        let (client, events) = reader.await.unwrap();
        clients.push(client);
        received.push(events);
    }

    let seconds = started.elapsed().as_secs() + 1;
    let (mut notices, mut frames) = (0, 0);
    for (i, events) in received.iter().enumerate() {
        let joins = events.iter().filter(|e| e["kind"] == "join").count();
        let occupancy: Vec<&Value> = events.iter().filter(|e| e["kind"] == "occupancy").collect();
        assert!(joins < 100, "client {i}: {joins} join notices, only while the room had at most 100 members");
        assert!(events.iter().all(|e| e["kind"] != "leave"), "client {i}: nobody left");
        // At most one a second (plus the first of the burst and a last held-back one).
        assert!(
            occupancy.len() as u64 <= seconds + 2,
            "client {i}: {} occupancy frames in {seconds} s",
            occupancy.len()
        );
        let last = events.last().expect("something arrived");
        let tail: Vec<String> = events.iter().rev().take(4).map(Value::to_string).collect();
        assert_eq!(last["kind"], "occupancy", "client {i} ends with: {tail:#?}");
        assert_eq!(
            (&last["kind"], &last["count"], &last["room"]),
            (&"occupancy".into(), &300.into(), &"big".into()),
            "client {i} ends with: {tail:#?}"
        );
        assert!(last["joined"].as_u64().is_some() && last["left"] == 0, "client {i}: {last}");
        notices += joins;
        frames += events.len();
    }
    // Every join is in the log all the same: history, replay and integrations see each.
    let logged = count_rows(&stack.db, "SELECT count(*) FROM message_history WHERE kind = 'join' AND room = 'big'");
    assert_eq!(logged, 300);
    println!(
        "300 joined in {filling:?}: {frames} presence events delivered ({notices} join notices); \
         a notice per join would have been 44850"
    );
    assert!(frames < 300 * 100, "{frames} events delivered in all");
    drop(clients);
    stack.stop().await;
}

#[tokio::test]
async fn a_room_of_20_still_gets_the_seed_s_join_and_leave_notices() {
    let dir = scratch("presence-20");
    let stack = Stack::start(&dir.join("chat.db"), &[]).await;
    let url = format!("{}?room=small", stack.ws_url);
    let mut first = Client::connect(&url).await;
    let mut others = Vec::new();
    let mut ids = Vec::new();
    for _ in 1..20 {
        others.push(Client::connect(&url).await);
        // In the order they joined, each in the seed's words.
        let notice = first.next_json().await;
        let text = notice["message"].as_str().unwrap();
        let id = text.strip_prefix("A new user has joined the chat - ").unwrap_or_else(|| panic!("{notice}"));
        assert_eq!(notice["kind"], "join");
        ids.push(id.to_owned());
    }
    let mut last = others.pop().unwrap();
    let leaver = ids.last().unwrap().clone();
    last.socket.send(Message::Close(None)).await.unwrap();
    let leave = format!("User {leaver} has left the chat.");
    let mut everyone = vec![first];
    everyone.extend(others);
    for (i, client) in everyone.iter_mut().enumerate() {
        let frame = client.until(|f| f["kind"] == "leave" || f["kind"] == "occupancy").await;
        assert_eq!(frame["message"], leave.as_str(), "client {i}");
    }
    stack.stop().await;
}

#[tokio::test]
async fn the_presence_limit_is_a_documented_flag_checked_at_start() {
    let help = common::help_text();
    assert!(help.contains("--presence-limit <MEMBERS>") && help.contains("[default: 100]"), "{help}");
    for bad in ["0", "many", "1.5"] {
        let stderr = common::refused_args(&["--presence-limit", bad]);
        assert!(stderr.contains("--presence-limit") && stderr.contains("from 1 up, or off"), "{stderr}");
    }
}
