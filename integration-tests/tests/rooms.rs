//! Rooms on the real binary: every line reaches exactly its room, a seed client
//! with no room is in the lobby, `who` lists the room, bad names are refused.

use crate::common;

use common::{Client, Stack, refused_status, run_binary, scratch};
use serde_json::{Value, json};

/// Appends the chat texts (with each frame's room) a client receives, up to and
/// including `last`, to `seen`; the id-learning lines of [`Client::my_id`] are left out.
async fn collect_until(client: &mut Client, last: &str, seen: &mut Vec<(String, String)>) {
    loop {
        let frame = client.next_json().await;
        let Some(text) = frame["text"].as_str().filter(|_| frame["kind"] == "chat") else { continue };
        if !text.starts_with("whoami-") {
            seen.push((text.to_owned(), frame["room"].as_str().unwrap().to_owned()));
        }
        if text == last {
            return;
        }
    }
}

fn texts(seen: &[(String, String)]) -> Vec<&str> {
    seen.iter().map(|(text, _)| text.as_str()).collect()
}

#[tokio::test]
async fn each_line_reaches_exactly_its_room_and_who_lists_it() {
    let dir = scratch("rooms");
    let stack = Stack::start(&dir.join("chat.db"), &[]).await;
    let room = |name: &str| format!("{}?room={name}", stack.ws_url);
    let mut red = Client::connect(&room("red")).await;
    let red_id = red.my_id().await;
    let mut red2 = Client::connect(&room("red")).await;
    let red2_id = red2.my_id().await;
    let mut blue = Client::connect(&room("blue")).await;
    let blue_id = blue.my_id().await;
    let mut seed = Client::connect(&stack.ws_url).await; // no room: the lobby, as the seed page
    let seed_id = seed.my_id().await;

    // Each speaker waits for its own line, so the log's order is the order spoken.
    let (mut red_saw, mut red2_saw, mut blue_saw, mut seed_saw) = (vec![], vec![], vec![], vec![]);
    red.say("red says hi").await;
    collect_until(&mut red, "red says hi", &mut red_saw).await;
    blue.say("blue says hi").await;
    collect_until(&mut blue, "blue says hi", &mut blue_saw).await;
    seed.say("seed says hi").await;
    collect_until(&mut seed, "seed says hi", &mut seed_saw).await;
    red2.say("red2 says hi").await;
    // A last line per room: everything before it has been delivered.
    red2.say("end").await;
    collect_until(&mut red2, "end", &mut red2_saw).await;
    collect_until(&mut red, "end", &mut red_saw).await;
    blue.say("end").await;
    collect_until(&mut blue, "end", &mut blue_saw).await;
    seed.say("end").await;
    collect_until(&mut seed, "end", &mut seed_saw).await;

    assert_eq!(texts(&red_saw), ["red says hi", "red2 says hi", "end"]);
    assert_eq!(red2_saw[1..], red_saw[1..], "red2 had read nothing yet when red spoke");
    assert_eq!(texts(&red2_saw), ["red says hi", "red2 says hi", "end"]);
    assert!(red_saw.iter().chain(&red2_saw).all(|(_, room)| room == "red"));
    assert_eq!(texts(&blue_saw), ["blue says hi", "end"]);
    assert!(blue_saw.iter().all(|(_, room)| room == "blue"));
    assert_eq!(texts(&seed_saw), ["seed says hi", "end"]);
    assert!(seed_saw.iter().all(|(_, room)| room == "lobby"));

    // The seed client's frames keep the seed's exact `message` line.
    seed.say("plain").await;
    let frame = seed.chat("plain").await;
    let timestamp = frame["timestamp"].as_str().unwrap();
    assert_eq!(frame["message"], format!("[{timestamp} - UTC]\n {seed_id}  plain\n"));

    red.send_json(json!({"action": "who"})).await;
    let presence = red.until(|f| f["kind"] == "presence").await;
    assert_eq!(presence["room"], "red");
    assert_eq!(presence["count"], 2);
    let mut members: Vec<&str> =
        presence["members"].as_array().unwrap().iter().map(|m| m["connectionId"].as_str().unwrap()).collect();
    members.sort_unstable();
    let mut expected = [red_id.as_str(), red2_id.as_str()];
    expected.sort_unstable();
    assert_eq!(members, expected);
    assert!(presence.get("next").is_none());
    assert_eq!(presence["you"], red_id.as_str(), "the asker's own id");

    seed.send_json(json!({"action": "who"})).await;
    let lobby = seed.until(|f| f["kind"] == "presence").await;
    assert_eq!((lobby["room"].clone(), lobby["count"].clone()), (json!("lobby"), json!(1)));
    assert_eq!(lobby["members"][0]["connectionId"], seed_id.as_str());

    // A leave is said in the room of the one who left, and nowhere else.
    let mut blue2 = Client::connect(&room("blue")).await;
    blue.socket.close(None).await.unwrap();
    let leave = blue2.until(|f| f["kind"] == "leave").await;
    assert_eq!((leave["connectionId"].as_str(), leave["room"].as_str()), (Some(blue_id.as_str()), Some("blue")));
    red.say("after blue left").await;
    let leave_or_line = red.until(|f| f["kind"] == "leave" || f["text"] == "after blue left").await;
    assert_eq!(leave_or_line["text"], "after blue left", "red never hears blue's leave");
    stack.stop().await;
}

#[tokio::test]
async fn history_never_leaks_another_rooms_events() {
    let dir = scratch("rooms_history");
    let stack = Stack::start(&dir.join("chat.db"), &[]).await;
    let mut red = Client::connect(&format!("{}?room=red", stack.ws_url)).await;
    let mut blue = Client::connect(&format!("{}?room=blue", stack.ws_url)).await;
    blue.say("blue secret").await;
    let blue_id = blue.chat("blue secret").await["id"].as_str().unwrap().to_owned();
    red.say("red one").await;
    red.chat("red one").await;
    red.say("red two").await;
    red.chat("red two").await;

    // Asking history since blue's id answers from red's log only.
    let (answered, end) = red.history(json!({"action": "history", "since": blue_id})).await;
    assert_eq!((end["room"].as_str(), end["more"].as_bool()), (Some("red"), Some(false)));
    assert_eq!(end["count"], answered.len());
    assert!(answered.iter().all(|f| f["room"] == "red"), "{answered:?}");
    let chat: Vec<&str> = answered.iter().filter_map(|f| f["text"].as_str()).collect();
    assert_eq!(chat, ["red one", "red two"]);

    // replay --room reads one room back from the store.
    let db = format!("sqlite:{}", stack.db.display());
    let red_log = run_binary("replay", &["--from", &db, "--room", "red", "--format", "json"]).await;
    let red_log: Vec<Value> = red_log.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(red_log.iter().all(|e| e["room"] == "red"));
    let red_texts: Vec<&str> =
        red_log.iter().filter(|e| e["kind"] == "chat").map(|e| e["message"].as_str().unwrap()).collect();
    assert_eq!(red_texts, ["red one", "red two"]);
    let everything = run_binary("replay", &["--from", &db]).await;
    assert!(everything.contains("  blue  ") && everything.contains("blue secret"), "{everything}");

    for garbage in [json!({"action":"who","next":{"$gt":""}}), json!({"action":"history","since":["x"]})] {
        red.send_json(garbage).await;
        let error = red.until(|f| f.get("error").is_some()).await;
        assert_eq!(error["error"], "Invalid message");
    }
    stack.stop().await;
}

#[tokio::test]
async fn a_malformed_room_is_refused_with_400() {
    let dir = scratch("rooms_refused");
    let stack = Stack::start(&dir.join("chat.db"), &[]).await;
    for room in ["", "two%20words", "a%2Fb", &"x".repeat(65), "%C3%A9"] {
        let url = format!("{}?room={room}", stack.ws_url);
        assert_eq!(refused_status(&url).await, 400, "{room:?}");
    }
    // Nothing was stored for the refused attempts: a new lobby client is alone.
    let mut client = Client::connect(&stack.ws_url).await;
    client.send_json(json!({"action": "who"})).await;
    assert_eq!(client.until(|f| f["kind"] == "presence").await["count"], 1);
    stack.stop().await;
}
