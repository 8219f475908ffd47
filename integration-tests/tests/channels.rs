//! Channels on the real binary (issue #23): one connection hears several rooms,
//! subscribes and unsubscribes, counts what it has not read; every join has one
//! leave however the connection ends; a seed client and a `?room=` client see
//! exactly what they saw before.

use crate::common;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use common::{
    Client, JWT_SECRET, Moto, Stack, count_rows as count, eventually as until, host_of, http_post_json, log_of,
    scratch, with_token,
};
use serde_json::{Value, json};

/// Subscribes and returns the answer: `subscribed`, or the error frame naming the room.
async fn subscribe(client: &mut Client, room: &str) -> Value {
    client.send_json(json!({"action": "subscribe", "room": room})).await;
    answer_about(client, room, &["subscribed"]).await
}

/// Unsubscribes and returns the answer (`unsubscribed`).
async fn unsubscribe(client: &mut Client, room: &str) -> Value {
    client.send_json(json!({"action": "unsubscribe", "room": room})).await;
    answer_about(client, room, &["unsubscribed"]).await
}

/// The next frame about `room` that is one of `kinds` or an error.
async fn answer_about(client: &mut Client, room: &str, kinds: &[&str]) -> Value {
    client
        .until(|f| f["room"] == room && (f.get("error").is_some() || kinds.iter().any(|kind| f["kind"] == *kind)))
        .await
}

/// The answer to `rooms`: room → (members, unread, more), and the rooms in the order given.
async fn rooms(client: &mut Client) -> (Vec<String>, HashMap<String, (u64, u64, bool)>) {
    client.send_json(json!({"action": "rooms"})).await;
    let frame = client.until(|f| f["kind"] == "rooms").await;
    let rooms = frame["rooms"].as_array().unwrap();
    let order = rooms.iter().map(|r| r["room"].as_str().unwrap().to_owned()).collect();
    let summaries = rooms
        .iter()
        .map(|r| {
            let summary = (r["count"].as_u64().unwrap(), r["unread"].as_u64().unwrap(), r["more"].as_bool().unwrap());
            (r["room"].as_str().unwrap().to_owned(), summary)
        })
        .collect();
    (order, summaries)
}

/// Says `text` in `room` (by the frame's `"room"`) and waits for its broadcast: the line's id.
async fn say_in(client: &mut Client, room: &str, text: &str) -> String {
    client.send_json(json!({"action": "sendmessage", "room": room, "message": text})).await;
    let frame = client.chat(text).await;
    assert_eq!(frame["room"], room);
    frame["id"].as_str().unwrap().to_owned()
}

/// The chat lines (text, room) a client receives up to and including `last`.
async fn lines_until(client: &mut Client, last: &str) -> Vec<(String, String)> {
    let mut seen = Vec::new();
    loop {
        let frame = client.next_json().await;
        if frame["kind"] != "chat" {
            continue;
        }
        let text = frame["text"].as_str().unwrap().to_owned();
        seen.push((text.clone(), frame["room"].as_str().unwrap().to_owned()));
        if text == last {
            return seen;
        }
    }
}

/// Every frame a client receives up to and including the chat line `last`.
async fn frames_until(client: &mut Client, last: &str) -> Vec<Value> {
    let mut seen = Vec::new();
    loop {
        let frame = client.next_json().await;
        let done = frame["kind"] == "chat" && frame["text"] == last;
        seen.push(frame);
        if done {
            return seen;
        }
    }
}

#[tokio::test]
async fn one_connection_in_three_rooms_hears_each_rooms_lines_once_and_nothing_else() {
    let dir = scratch("channels_three_rooms");
    let stack = Stack::start(&dir.join("chat.db"), &[]).await;
    let mut member = Client::connect(&stack.ws_url).await; // home: the lobby
    for room in ["red", "blue"] {
        let subscribed = json!({"kind": "subscribed", "room": room, "count": 1, "rights": "rw", "private": false});
        assert_eq!(subscribe(&mut member, room).await, subscribed, "the open default: read and write");
    }
    assert_eq!(subscribe(&mut member, "red").await["kind"], "subscribed", "twice is harmless");
    let mut speakers = Vec::new();
    for room in ["lobby", "red", "blue", "green"] {
        speakers.push((room, Client::connect(&format!("{}?room={room}", stack.ws_url)).await));
    }
    // Each speaker waits for its own line, so the log's order is the order spoken.
    let mut spoken: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for round in 0..3 {
        for (room, speaker) in &mut speakers {
            let text = format!("{room} {round}");
            speaker.say(&text).await;
            speaker.chat(&text).await;
            spoken.entry(room).or_default().push(text);
        }
    }
    let (_, lobby) = &mut speakers[0];
    lobby.say("end").await;
    spoken.get_mut("lobby").unwrap().push("end".into());

    let seen = lines_until(&mut member, "end").await;
    let mut heard: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (text, room) in &seen {
        assert!(text.starts_with(room.as_str()) || text == "end", "{text} came in {room}");
        heard.entry(room.as_str()).or_default().push(text.clone());
    }
    spoken.remove("green");
    assert_eq!(heard, spoken, "each room's lines once, in order, and no other room's");
    let mut joins: HashMap<String, Vec<String>> = HashMap::new();
    for (kind, room, id) in log_of(&stack.db) {
        if kind == "join" {
            joins.entry(id).or_default().push(room);
        }
    }
    let member_joins: Vec<&Vec<String>> = joins.values().filter(|rooms| rooms.len() > 1).collect();
    assert_eq!(member_joins, [&["lobby", "red", "blue"]], "one join per room, none for subscribing twice");
    stack.stop().await;
}

#[tokio::test]
async fn unsubscribe_stops_delivery_and_says_one_leave() {
    let dir = scratch("channels_unsubscribe");
    let stack = Stack::start(&dir.join("chat.db"), &[]).await;
    let mut member = Client::connect(&stack.ws_url).await;
    let member_id = member.my_id().await;
    let mut red = Client::connect(&format!("{}?room=red", stack.ws_url)).await;
    let mut lobby = Client::connect(&stack.ws_url).await;
    subscribe(&mut member, "red").await;
    say_in(&mut red, "red", "before").await;
    member.chat("before").await;

    for _ in 0..2 {
        assert_eq!(unsubscribe(&mut member, "red").await, json!({"kind": "unsubscribed", "room": "red"}));
    }
    say_in(&mut red, "red", "after").await;
    say_in(&mut lobby, "lobby", "marker").await;
    let seen = lines_until(&mut member, "marker").await;
    assert!(!seen.iter().any(|(text, _)| text == "after"), "unsubscribed from red: {seen:?}");

    let (order, _) = rooms(&mut member).await;
    assert_eq!(order, ["lobby"]);
    member.send_json(json!({"action": "sendmessage", "room": "red", "message": "sneaky"})).await;
    let refusal = member.until(|f| f.get("error").is_some()).await;
    assert_eq!((refusal["error"].as_str(), refusal["room"].as_str()), (Some("Not subscribed"), Some("red")));
    let said_in_red: Vec<String> = log_of(&stack.db)
        .into_iter()
        .filter(|(_, room, id)| room == "red" && *id == member_id)
        .map(|(kind, _, _)| kind)
        .collect();
    assert_eq!(said_in_red, ["join", "leave"], "unsubscribing twice: one leave; the refused line: nothing");
    stack.stop().await;
}

#[tokio::test]
async fn a_line_sent_right_after_subscribed_reaches_the_new_member_every_time() {
    const TIMES: usize = 200;
    let dir = scratch("channels_right_after");
    // One speaker says 200 lines as fast as the member subscribes: no per-user limit here.
    let stack = Stack::start(&dir.join("chat.db"), &["--send-rate", "off"]).await;
    let mut speaker = Client::connect(&format!("{}?room=hot", stack.ws_url)).await;
    let mut member = Client::connect(&stack.ws_url).await;
    let (mut missed, mut latencies, started) = (Vec::new(), Vec::new(), Instant::now());
    for i in 0..TIMES {
        let asked = Instant::now();
        member.send_json(json!({"action": "subscribe", "room": "hot"})).await;
        member.until(|f| f["kind"] == "subscribed").await;
        latencies.push(asked.elapsed());
        // 0 ms after `subscribed` reached the member.
        let text = format!("right after {i}");
        speaker.say(&text).await;
        // Not "until some later frame": the broadcaster's one pass over the
        // room may queue the speaker's copy, be preempted, and queue the
        // member's after an answer the member asked for meanwhile. The line
        // itself, then, within a time no delivery takes.
        let heard = member.until(|f| f["kind"] == "chat" && f["text"] == text);
        if tokio::time::timeout(Duration::from_secs(5), heard).await.is_err() {
            missed.push(i);
            if missed.len() == 5 {
                break;
            }
        }
        speaker.chat(&text).await;
        member.send_json(json!({"action": "unsubscribe", "room": "hot"})).await;
        member.until(|f| f["kind"] == "unsubscribed").await;
    }
    latencies.sort();
    let at = |share: f64| latencies[((latencies.len() - 1) as f64 * share) as usize];
    println!(
        "{TIMES} subscribe → line → unsubscribe rounds in {:?}; subscribe → subscribed p50 {:?}, p99 {:?}",
        started.elapsed(),
        at(0.5),
        at(0.99)
    );
    assert_eq!(missed, Vec::<usize>::new(), "lines missed by a member subscribed a moment before");
    stack.stop().await;
}

/// How one churned connection ends.
#[derive(Clone, Copy, Debug)]
enum Ending {
    /// Subscribes (waiting for each answer), closes cleanly.
    Close,
    /// Subscribes, unsubscribes one room, drops the TCP connection (no close frame).
    Drop,
    /// Sends its subscribes and closes at once: `$disconnect` races them.
    Race,
    /// Subscribes, unsubscribes every room but its home room, closes.
    Unsubscribe,
    /// Stays until the stack is killed: the restart's sweep ends it.
    Stay,
}

/// Rooms the churn spreads its connections over.
const CHURN_ROOMS: usize = 20;

/// Churns `connections` connections, `at_once` at a time, each in five rooms
/// (a home room and four subscribed), ending in every [`Ending`] — with
/// [`Ending::Stay`] only if `stay` — while a chatter keeps the broadcaster
/// posting to them, so its 410 prunes race their own `$disconnect`s. Returns
/// the connections that stay.
async fn churn(ws_url: &str, connections: usize, at_once: usize, stay: bool) -> Vec<Client> {
    let url = ws_url.to_owned();
    let chatter = tokio::spawn(async move {
        let mut client = Client::connect(&format!("{url}?room=r0")).await;
        for room in 1..5 {
            subscribe(&mut client, &format!("r{room}")).await;
        }
        for i in 0.. {
            let line = json!({"action": "sendmessage", "room": format!("r{}", i % 5), "message": format!("line {i}")});
            client.send_json(line).await;
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
    });
    let workers: Vec<_> = (0..at_once)
        .map(|worker| {
            let url = ws_url.to_owned();
            tokio::spawn(async move {
                let mut staying = Vec::new();
                for i in (worker..connections).step_by(at_once) {
                    let ending = match i % 5 {
                        0 => Ending::Close,
                        1 => Ending::Drop,
                        2 => Ending::Race,
                        3 => Ending::Unsubscribe,
                        _ if stay && i % 20 == 4 => Ending::Stay,
                        _ => Ending::Close,
                    };
                    let rooms: Vec<String> = (1..5).map(|k| format!("r{}", (i + 3 * k) % CHURN_ROOMS)).collect();
                    let mut client = Client::connect(&format!("{url}?room=r{}", i % CHURN_ROOMS)).await;
                    for room in &rooms {
                        match ending {
                            Ending::Race => {
                                client.send_json(json!({"action": "subscribe", "room": room})).await;
                            }
                            _ => assert_eq!(subscribe(&mut client, room).await["kind"], "subscribed"),
                        }
                    }
                    match ending {
                        // A racing close may find the server closing already.
                        Ending::Close | Ending::Race => drop(client.socket.close(None).await),
                        Ending::Drop => {
                            unsubscribe(&mut client, &rooms[0]).await;
                        }
                        Ending::Unsubscribe => {
                            for room in &rooms {
                                unsubscribe(&mut client, room).await;
                            }
                            client.socket.close(None).await.unwrap();
                        }
                        Ending::Stay => staying.push(client),
                    }
                }
                staying
            })
        })
        .collect();
    let mut staying = Vec::new();
    for worker in workers {
        staying.extend(tokio::time::timeout(Duration::from_secs(300), worker).await.expect("churn in time").unwrap());
    }
    chatter.abort();
    staying
}

/// Checks that per connection and room, joins and leaves alternate, ending
/// with a leave; returns (joins, leaves, (connection, room) pairs).
fn every_join_has_one_leave(log: Vec<(String, String, String)>) -> (usize, usize, usize) {
    let mut said: HashMap<(String, String), Vec<String>> = HashMap::new();
    for (kind, room, id) in log {
        if kind != "chat" {
            said.entry((id, room)).or_default().push(kind);
        }
    }
    for ((id, room), kinds) in &said {
        let alternating = kinds.iter().enumerate().all(|(i, kind)| kind == if i % 2 == 0 { "join" } else { "leave" });
        assert!(alternating && kinds.len() % 2 == 0, "{id} in {room}: {kinds:?}");
    }
    let joins = said.values().flatten().filter(|kind| *kind == "join").count();
    let leaves = said.values().flatten().filter(|kind| *kind == "leave").count();
    assert_eq!(joins, leaves);
    (joins, leaves, said.len())
}

#[tokio::test]
async fn churn_of_a_thousand_connections_in_five_rooms_gives_every_join_one_leave() {
    const CONNECTIONS: usize = 1000;
    let dir = scratch("channels_churn");
    let db = dir.join("chat.db");
    let stack = Stack::start(&db, &[]).await;
    let started = Instant::now();
    let staying = churn(&stack.ws_url, CONNECTIONS, 50, true).await;
    let churned = started.elapsed();

    // Quiet: only the staying connections are left, each in its five rooms.
    let stay = staying.len() as i64;
    until(
        || {
            count(&db, "SELECT count(*) FROM active_connections") == stay
                && count(&db, "SELECT count(*) FROM memberships") == 5 * stay
        },
        "the departed connections' rows and memberships are gone",
    )
    .await;
    // The process dies; then, as if it had died in the middle of departures,
    // some rows are gone with their memberships left behind.
    stack.kill().await;
    drop(staying);
    let cut_short = rusqlite::Connection::open(&db)
        .unwrap()
        .execute(
            "DELETE FROM active_connections WHERE connection_id IN
                 (SELECT connection_id FROM active_connections ORDER BY connection_id LIMIT 10)",
            [],
        )
        .unwrap();
    assert_eq!(cut_short, 10);
    let orphans = count(
        &db,
        "SELECT count(*) FROM memberships m
         WHERE NOT EXISTS (SELECT 1 FROM active_connections a WHERE a.connection_id = m.connection_id)",
    );
    assert_eq!(orphans, 50, "ten connections' five memberships each");

    let stack = Stack::start(&db, &[]).await;
    until(
        || {
            count(&db, "SELECT count(*) FROM active_connections") == 0
                && count(&db, "SELECT count(*) FROM memberships") == 0
        },
        "the restart ends the previous run's connections and memberships",
    )
    .await;
    stack.stop().await;

    let (joins, leaves, pairs) = every_join_has_one_leave(log_of(&db));
    println!(
        "churn: {CONNECTIONS} connections ({stay} left for the sweep, 10 of them cut short) in {churned:?}; \
         {joins} joins, {leaves} leaves over {pairs} (connection, room) pairs"
    );
    assert!(joins >= 4 * CONNECTIONS, "homes and most subscribes joined: {joins}");
}

/// Every item of a moto table.
async fn scan(client: &aws_sdk_dynamodb::Client, table: &str) -> Vec<HashMap<String, AttributeValue>> {
    let pages = client.scan().table_name(table).consistent_read(true).into_paginator().items().send();
    pages.collect::<Result<Vec<_>, _>>().await.unwrap()
}

/// The same churn through the DynamoDB adapters on moto (no restart: the
/// sweep is the embedded store's; deployed, the reaper and the TTL end what a
/// lost `$disconnect` leaves). Smaller: moto answers every call in Python.
#[tokio::test]
async fn churn_on_moto_gives_every_join_one_leave() {
    const CONNECTIONS: usize = 200;
    let moto = Moto::start().await;
    let dir = scratch("channels_churn_moto");
    let stack = Stack::start(&dir.join("unused.db"), &["--dynamodb-endpoint", &moto.url, "--create-tables"]).await;
    let started = Instant::now();
    assert!(churn(&stack.ws_url, CONNECTIONS, 20, false).await.is_empty());
    let churned = started.elapsed();
    let dynamodb = aws_sdk_dynamodb::Client::new(&moto.sdk_config().await);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    // Each room's member counter (sort key #members) stays, at 0 once its room is empty.
    let is_counter = |item: &HashMap<String, AttributeValue>| {
        item["connection_id"].as_s().unwrap() == chat_core::model::ROOM_COUNTER_ID
    };
    let counters = loop {
        let (counters, members): (Vec<_>, Vec<_>) =
            scan(&dynamodb, "Memberships").await.into_iter().partition(is_counter);
        if scan(&dynamodb, "ActiveConnections").await.is_empty() && members.is_empty() {
            break counters;
        }
        assert!(tokio::time::Instant::now() < deadline, "every row and membership ends with its connection");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let counts: Vec<(String, String)> = counters
        .iter()
        .map(|c| {
            (c["room"].as_s().unwrap().clone(), c[chat_core::model::ROOM_COUNTER_ATTRIBUTE].as_n().unwrap().clone())
        })
        .collect();
    assert!(!counts.is_empty() && counts.iter().all(|(_, n)| n == "0"), "every room counted back to 0: {counts:?}");
    stack.stop().await;
    let text = |item: &HashMap<String, AttributeValue>, name: &str| item[name].as_s().unwrap().clone();
    let log = scan(&dynamodb, "MessageHistory").await;
    let mut log: Vec<(String, String, String, String)> = log
        .iter()
        .map(|item| (text(item, "message_id"), text(item, "kind"), text(item, "room"), text(item, "connection_id")))
        .collect();
    log.sort();
    let (joins, leaves, pairs) =
        every_join_has_one_leave(log.into_iter().map(|(_, kind, room, id)| (kind, room, id)).collect());
    println!(
        "churn on moto: {CONNECTIONS} connections in {churned:?}; {joins} joins, {leaves} leaves over {pairs} pairs"
    );
    assert!(joins >= 4 * CONNECTIONS, "homes and most subscribes joined: {joins}");
}

#[tokio::test]
async fn a_restart_ends_every_room_of_the_previous_runs_connections_and_memberships() {
    let dir = scratch("channels_restart");
    let db = dir.join("chat.db");
    let stack = Stack::start(&db, &[]).await;
    let mut stale = Client::connect(&stack.ws_url).await;
    let stale_id = stale.my_id().await;
    for room in ["x", "y"] {
        subscribe(&mut stale, room).await;
    }
    let mut cut_short = Client::connect(&format!("{}?room=solo", stack.ws_url)).await;
    let cut_short_id = cut_short.my_id().await;
    subscribe(&mut cut_short, "solo2").await;
    stack.kill().await;
    drop((stale, cut_short));
    // As if the process had died in the middle of a departure: the row is gone,
    // its memberships (in rooms where nobody else is, so no broadcast's 410
    // would find them) are not.
    let db_file = rusqlite::Connection::open(&db).unwrap();
    db_file.execute("DELETE FROM active_connections WHERE connection_id = ?1", [&cut_short_id]).unwrap();
    drop(db_file);

    let stack = Stack::start(&db, &[]).await;
    until(|| count(&db, "SELECT count(*) FROM memberships") == 0, "the previous run's memberships are ended").await;
    stack.stop().await;
    let departures: Vec<(String, String)> = log_of(&db)
        .into_iter()
        .filter(|(kind, _, _)| kind == "leave")
        .map(|(_, room, id)| {
            (
                if id == stale_id {
                    "stale"
                } else if id == cut_short_id {
                    "cut short"
                } else {
                    "?"
                }
                .to_owned(),
                room,
            )
        })
        .collect();
    let mut departures = departures;
    departures.sort();
    let expected = [("cut short", "solo"), ("cut short", "solo2"), ("stale", "lobby"), ("stale", "x"), ("stale", "y")];
    assert_eq!(departures, expected.map(|(who, room)| (who.to_owned(), room.to_owned())), "one leave per room");
    assert_eq!(count(&db, "SELECT count(*) FROM session_history WHERE disconnected_at IS NULL"), 0);
}

#[tokio::test]
async fn the_room_past_the_limit_is_refused_by_name() {
    let dir = scratch("channels_limit");
    let stack = Stack::start(&dir.join("chat.db"), &[]).await;
    let mut member = Client::connect(&stack.ws_url).await;
    for room in 1..100 {
        assert_eq!(subscribe(&mut member, &format!("r{room}")).await["kind"], "subscribed", "room {room}");
    }
    let refusal = subscribe(&mut member, "r100").await;
    assert_eq!((refusal["error"].as_str(), refusal["room"].as_str()), (Some("Too many rooms"), Some("r100")));
    assert!(refusal["message"].as_str().unwrap().contains("100"), "{refusal}");
    let (order, _) = rooms(&mut member).await;
    assert_eq!(order.len(), 100, "the lobby and 99 more");
    assert!(!log_of(&stack.db).iter().any(|(_, room, _)| room == "r100"), "nothing said in the refused room");
    stack.stop().await;

    let dir = scratch("channels_limit_3");
    let stack = Stack::start(&dir.join("chat.db"), &["--max-rooms", "3"]).await;
    let mut member = Client::connect(&stack.ws_url).await;
    for room in ["a", "b"] {
        assert_eq!(subscribe(&mut member, room).await["kind"], "subscribed");
    }
    assert_eq!(subscribe(&mut member, "c").await["error"], "Too many rooms");
    unsubscribe(&mut member, "a").await;
    assert_eq!(subscribe(&mut member, "c").await["kind"], "subscribed", "room again after leaving one");
    stack.stop().await;
}

#[tokio::test]
async fn max_rooms_is_a_documented_flag_checked_at_start() {
    let help = common::help_text();
    assert!(help.contains("--max-rooms") && help.contains("[default: 100]"), "{help}");
    for bad in ["0", "1001", "many"] {
        let stderr = common::refused_args(&["--max-rooms", bad]);
        assert!(stderr.contains("--max-rooms") && stderr.contains("1 to 1000"), "{stderr}");
    }
}

/// An HS256 token the stack started with `--jwt-secret JWT_SECRET` accepts, with `chat.rooms`.
fn token_with_rooms(sub: &str, rooms: &[&str]) -> String {
    let now = chrono::Utc::now().timestamp();
    let claims = json!({"sub": sub, "preferred_username": sub, "iat": now, "exp": now + 600, "chat": {"rooms": rooms}});
    let key = jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()).unwrap();
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap()
}

#[tokio::test]
async fn the_tokens_rooms_are_subscribed_at_connect_up_to_the_limit() {
    let dir = scratch("channels_token_rooms");
    let stack = Stack::start(&dir.join("chat.db"), &["--jwt-secret", JWT_SECRET, "--max-rooms", "3"]).await;
    let token = token_with_rooms("ada", &["team", "ops", "no good", "dev"]);
    let mut ada = Client::connect(&with_token(&format!("{}?room=home", stack.ws_url), &token)).await;
    let (order, _) = rooms(&mut ada).await;
    assert_eq!(order, ["home", "ops", "team"], "home first; the bad name left out; past 3 rooms left out");
    let mut other = Client::connect(&with_token(&stack.ws_url, &token_with_rooms("bob", &["ops"]))).await;
    say_in(&mut other, "ops", "to ops").await;
    assert_eq!(ada.chat("to ops").await["room"], "ops");
    stack.stop().await;
}

/// Waits until the wall clock is in a later second than `since`: stored times
/// are whole seconds, and "unread since the connection connected" counts lines
/// of later seconds (see the report on the connect second).
async fn next_second(since: chrono::DateTime<chrono::Utc>) {
    while chrono::Utc::now().timestamp() <= since.timestamp() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn unread_counts_follow_the_account_across_devices() {
    let dir = scratch("channels_unread");
    // One speaker fills the rooms with 115 lines: no per-user send limit here.
    let stack = Stack::start(&dir.join("chat.db"), &["--jwt-secret", JWT_SECRET, "--send-rate", "off"]).await;
    let address = host_of(&stack.http_url);
    let mut devices = Vec::new();
    for _ in 0..2 {
        let (status, minted) = http_post_json(&address, "/dev/token", &json!({"name": "ada"})).await;
        assert_eq!(status, 200);
        devices.push(Client::connect(&with_token(&stack.ws_url, minted["token"].as_str().unwrap())).await);
    }
    let speaker_token = token_with_rooms("speaker", &["a", "b", "c"]);
    let mut speaker = Client::connect(&with_token(&stack.ws_url, &speaker_token)).await;
    for device in &mut devices {
        for room in ["a", "b", "c"] {
            subscribe(device, room).await;
        }
    }
    next_second(chrono::Utc::now()).await;

    // The reference: every line's id, per room, in order.
    let mut lines: HashMap<&str, Vec<String>> = HashMap::new();
    for (room, n) in [("a", 5), ("b", 3), ("lobby", 2), ("c", 105)] {
        for i in 0..n {
            lines.entry(room).or_default().push(say_in(&mut speaker, room, &format!("{room} {i}")).await);
        }
    }
    let unread = |cursor: Option<&String>, room: &str| {
        let after = lines[room].iter().filter(|id| cursor.is_none_or(|c| *id > c)).count() as u64;
        (after.min(100), after > 100)
    };
    let expect = |cursors: &HashMap<&str, &String>| {
        ["lobby", "a", "b", "c"]
            .map(|room| {
                let (count, more) = unread(cursors.get(room).copied(), room);
                (room.to_owned(), (3, count, more))
            })
            .into_iter()
            .collect::<HashMap<_, _>>()
    };
    let (order, phone) = rooms(&mut devices[0]).await;
    assert_eq!(order, ["lobby", "a", "b", "c"], "the home room first, then by name");
    assert_eq!(phone, expect(&HashMap::new()));
    assert_eq!(phone["c"], (3, 100, true), "capped: 99+");

    // The phone reads room a up to its third line; the laptop sees it too.
    devices[0].send_json(json!({"action": "read", "room": "a", "id": lines["a"][2]})).await;
    let read = devices[0].until(|f| f["kind"] == "read").await;
    assert_eq!(read, json!({"kind": "read", "room": "a", "id": lines["a"][2]}));
    let mut cursors = HashMap::from([("a", &lines["a"][2])]);
    assert_eq!(rooms(&mut devices[1]).await.1, expect(&cursors));
    // The laptop, behind, reads an older line: the cursor stays where the phone put it.
    devices[1].send_json(json!({"action": "read", "room": "a", "id": lines["a"][1]})).await;
    assert_eq!(devices[1].until(|f| f["kind"] == "read").await["id"], lines["a"][2].as_str());
    devices[1].send_json(json!({"action": "read", "room": "b", "id": lines["b"][2]})).await;
    devices[1].until(|f| f["kind"] == "read").await;
    cursors.insert("b", &lines["b"][2]);
    assert_eq!(rooms(&mut devices[0]).await.1, expect(&cursors));
    assert_eq!(rooms(&mut devices[0]).await.1["b"], (3, 0, false));
    stack.stop().await;
}

#[tokio::test]
async fn anonymous_connections_keep_their_own_read_cursors() {
    let dir = scratch("channels_unread_anonymous");
    let stack = Stack::start(&dir.join("chat.db"), &[]).await;
    let mut guests = Vec::new();
    for _ in 0..2 {
        let mut guest = Client::connect(&format!("{}?name=guest", stack.ws_url)).await;
        subscribe(&mut guest, "a").await;
        guests.push(guest);
    }
    let mut speaker = Client::connect(&format!("{}?room=a", stack.ws_url)).await;
    next_second(chrono::Utc::now()).await;
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(say_in(&mut speaker, "a", &format!("a {i}")).await);
    }
    guests[0].send_json(json!({"action": "read", "room": "a", "id": ids[0]})).await;
    assert_eq!(guests[0].until(|f| f["kind"] == "read").await["id"], ids[0].as_str());
    assert_eq!(rooms(&mut guests[0]).await.1["a"], (3, 3, false));
    assert_eq!(rooms(&mut guests[1]).await.1["a"], (3, 4, false), "the other guest read nothing");
    stack.stop().await;
}

#[tokio::test]
async fn a_seed_client_and_a_room_client_see_exactly_what_they_saw_before() {
    let dir = scratch("channels_seed");
    let stack = Stack::start(&dir.join("chat.db"), &[]).await;
    let mut seed = Client::connect(&stack.ws_url).await;
    let mut red = Client::connect(&format!("{}?room=red", stack.ws_url)).await;
    // Someone using channels: home in the lobby, also in red and blue.
    let mut member = Client::connect(&stack.ws_url).await;
    let member_id = member.my_id().await;
    for room in ["red", "blue"] {
        subscribe(&mut member, room).await;
    }
    for action in [json!({"action": "rooms"}), json!({"action": "who", "room": "blue"})] {
        member.send_json(action).await;
    }
    member.say("in the lobby").await;
    say_in(&mut member, "red", "in red").await;
    say_in(&mut member, "blue", "in blue").await;
    unsubscribe(&mut member, "red").await;
    member.socket.close(None).await.unwrap();
    let left = |(kind, room, id): &(String, String, String)| kind == "leave" && room == "lobby" && *id == member_id;
    until(|| log_of(&stack.db).iter().any(left), "the member's departure is logged").await;
    // The seed page's heartbeat, and its own last line.
    seed.say("ping").await;
    seed.say("seed end").await;
    red.say("red end").await;

    let mut seed_frames = frames_until(&mut seed, "seed end").await;
    let pongs = seed_frames.len();
    seed_frames.retain(|f| *f != json!({"message": "pong"}));
    assert_eq!(pongs - seed_frames.len(), 1, "the heartbeat answered, once");
    let seed_messages: Vec<String> = seed_frames.iter().map(|f| f["message"].as_str().unwrap().to_owned()).collect();
    let line = |frame: &Value| {
        let (at, id, text) = (&frame["timestamp"], &frame["connectionId"], &frame["text"]);
        format!("[{} - UTC]\n {}  {}\n", at.as_str().unwrap(), id.as_str().unwrap(), text.as_str().unwrap())
    };
    let whoami = seed_frames.iter().find(|f| f["kind"] == "chat").unwrap();
    assert_eq!(
        seed_messages,
        [
            format!("A new user has joined the chat - {member_id}"),
            line(whoami),
            line(&seed_frames[2]),
            format!("User {member_id} has left the chat."),
            line(seed_frames.last().unwrap()),
        ]
    );
    assert_eq!(seed_frames[2]["text"], "in the lobby");
    assert!(seed_frames.iter().all(|f| f["room"] == "lobby" && f.get("error").is_none()), "{seed_frames:?}");

    let red_frames = frames_until(&mut red, "red end").await;
    let red_messages: Vec<&str> = red_frames.iter().map(|f| f["message"].as_str().unwrap()).collect();
    assert_eq!(
        red_messages,
        [
            format!("A new user has joined the chat - {member_id}").as_str(),
            line(&red_frames[1]).as_str(),
            format!("User {member_id} has left the chat.").as_str(),
            line(&red_frames[3]).as_str(),
        ]
    );
    assert_eq!(
        (red_frames[1]["text"].as_str(), red_frames[1]["connectionId"].as_str()),
        (Some("in red"), Some(member_id.as_str()))
    );
    assert!(red_frames.iter().all(|f| f["room"] == "red"));
    stack.stop().await;
}

#[tokio::test]
async fn who_history_and_sendmessage_with_a_room_answer_as_in_that_room() {
    let dir = scratch("channels_same_actions");
    let stack = Stack::start(&dir.join("chat.db"), &[]).await;
    let mut resident = Client::connect(&format!("{}?room=red", stack.ws_url)).await;
    let resident_id = resident.my_id().await;
    let mut visitor = Client::connect(&stack.ws_url).await;
    subscribe(&mut visitor, "red").await;
    for text in ["one", "two"] {
        resident.say(text).await;
        resident.chat(text).await;
    }
    visitor.chat("two").await;

    let (theirs, their_end) = resident.history(json!({"action": "history", "limit": 10})).await;
    let (mine, my_end) = visitor.history(json!({"action": "history", "limit": 10, "room": "red"})).await;
    assert_eq!(mine, theirs, "the same frames");
    assert_eq!(my_end, their_end);
    assert_eq!(my_end["room"], "red");

    resident.send_json(json!({"action": "who"})).await;
    let their_who = resident.until(|f| f["kind"] == "presence").await;
    visitor.send_json(json!({"action": "who", "room": "red"})).await;
    let my_who = visitor.until(|f| f["kind"] == "presence").await;
    assert_eq!((my_who["room"].clone(), my_who["count"].clone()), (json!("red"), json!(2)));
    assert_eq!(my_who["members"], their_who["members"], "the same members");

    let client_message_id = "0b8f2a3e-6c1d-4f6a-9a51-3d2c1b0a9e87";
    let send = json!({"action": "sendmessage", "room": "red", "message": "from the visitor", "clientMessageId": client_message_id});
    let mut acks = Vec::new();
    for _ in 0..2 {
        visitor.send_json(send.clone()).await;
        acks.push(visitor.until(|f| f.get("ack").is_some()).await);
    }
    assert_eq!(acks[0], acks[1], "a resend is stored once");
    assert_eq!(acks[0]["clientMessageId"], client_message_id);
    let frame = resident.chat("from the visitor").await;
    assert_eq!(frame["id"], acks[0]["ack"]);
    assert_eq!(frame["room"], "red");
    let timestamp = frame["timestamp"].as_str().unwrap();
    let visitor_id = frame["connectionId"].as_str().unwrap();
    assert_eq!(frame["message"], format!("[{timestamp} - UTC]\n {visitor_id}  from the visitor\n"));
    assert_ne!(visitor_id, resident_id);
    let stored =
        log_of(&stack.db).iter().filter(|(kind, room, id)| kind == "chat" && room == "red" && id == visitor_id).count();
    assert_eq!(stored, 1);
    stack.stop().await;
}

#[tokio::test]
async fn a_room_not_subscribed_to_is_refused_by_name_and_nothing_is_stored() {
    let dir = scratch("channels_not_subscribed");
    let stack = Stack::start(&dir.join("chat.db"), &[]).await;
    let mut member = Client::connect(&stack.ws_url).await;
    member.my_id().await;
    let requests = [
        json!({"action": "sendmessage", "room": "blue", "message": "hello?"}),
        json!({"action": "sendmessage", "room": "blue", "message": "hello?", "clientMessageId": "0b8f2a3e-6c1d-4f6a-9a51-3d2c1b0a9e87"}),
        json!({"action": "history", "room": "blue"}),
        json!({"action": "who", "room": "blue"}),
        json!({"action": "read", "room": "blue", "id": "019ab5e1-3c44-7d2a-9f1e-2b7c1d0e4a55"}),
    ];
    for request in requests {
        member.send_json(request.clone()).await;
        let refusal = member.next_json().await;
        assert_eq!(
            (refusal["error"].as_str(), refusal["room"].as_str()),
            (Some("Not subscribed"), Some("blue")),
            "{request}"
        );
        assert!(refusal["message"].as_str().unwrap().contains("blue"), "{refusal}");
    }
    assert!(!log_of(&stack.db).iter().any(|(_, room, _)| room == "blue"), "nothing stored in blue");
    assert_eq!(count(&stack.db, "SELECT count(*) FROM read_cursors"), 0, "no cursor moved");
    stack.stop().await;
}

#[tokio::test]
async fn bad_channel_requests_get_clear_error_frames_and_the_connection_goes_on() {
    let dir = scratch("channels_bad_input");
    let stack = Stack::start(&dir.join("chat.db"), &[]).await;
    let mut member = Client::connect(&stack.ws_url).await;
    let bad_room = "Room must be 1-64 characters of A-Z, a-z, 0-9, '_' and '-'.";
    let cases = [
        (json!({"action": "subscribe"}), "Field \"room\" is required."),
        (json!({"action": "subscribe", "room": null}), "Field \"room\" is required."),
        (json!({"action": "subscribe", "room": "no good"}), bad_room),
        (json!({"action": "subscribe", "room": ""}), bad_room),
        (json!({"action": "subscribe", "room": "x".repeat(65)}), bad_room),
        (json!({"action": "subscribe", "room": 7}), "Field \"room\" has the wrong type."),
        (
            json!({"action": "subscribe", "room": "ok", "since": "yesterday"}),
            "Field \"since\" must be a message id or an ISO-8601 time.",
        ),
        (json!({"action": "subscribe", "room": "ok", "limit": 0}), "Field \"limit\" must be between 1 and 200."),
        (json!({"action": "unsubscribe"}), "Field \"room\" is required."),
        (json!({"action": "unsubscribe", "room": "a,b"}), bad_room),
        (json!({"action": "read", "id": "019ab5e1-3c44-7d2a-9f1e-2b7c1d0e4a55"}), "Field \"room\" is required."),
        (json!({"action": "read", "room": "lobby"}), "Field \"id\" is required."),
        (json!({"action": "read", "room": "lobby", "id": "nope"}), "Field \"id\" must be a message id."),
        (json!({"action": "read", "room": "lobby", "id": 5}), "Field \"id\" has the wrong type."),
        (json!({"action": "history", "room": "a b"}), bad_room),
        (json!({"action": "who", "room": ["lobby"]}), "Field \"room\" has the wrong type."),
        (json!({"action": "sendmessage", "room": "../x", "message": "hi"}), bad_room),
    ];
    for (request, message) in cases {
        member.send_json(request.clone()).await;
        assert_eq!(member.next_json().await, json!({"error": "Invalid message", "message": message}), "{request}");
    }
    let id = member.my_id().await;
    let said: Vec<(String, String, String)> = log_of(&stack.db);
    assert_eq!(said.len(), 2, "the connect's join and the whoami line only: {said:?}");
    assert!(said.iter().all(|(_, room, who)| room == "lobby" && *who == id));
    assert_eq!(count(&stack.db, "SELECT count(*) FROM memberships"), 1);
    stack.stop().await;
}
