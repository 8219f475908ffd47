//! Rooms on the real binary: every line reaches exactly its room, a seed client
//! with no room is in the lobby, `who` lists the room, bad names are refused.

mod common;

use common::{Client, Stack, WAIT, scratch};
use serde_json::{Value, json};
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Error as WsError;

/// Chat texts a client receives until (and without) `sentinel`, with each frame's
/// room; the id-learning lines of [`Client::my_id`] are left out.
async fn chat_until(client: &mut Client, sentinel: &str) -> Vec<(String, String)> {
    let mut seen = Vec::new();
    loop {
        let frame = client.next_json().await;
        if frame["kind"] != "chat" {
            continue;
        }
        let text = frame["text"].as_str().unwrap().to_owned();
        if text == sentinel {
            return seen;
        }
        if text.starts_with("whoami-") {
            continue; // another member learning its id
        }
        seen.push((text, frame["room"].as_str().unwrap().to_owned()));
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

    red.say("red says hi").await;
    blue.say("blue says hi").await;
    seed.say("seed says hi").await;
    red2.say("red2 says hi").await;
    // A sentinel per room, sent last: everything before it has been delivered.
    for (client, sentinel) in [(&mut red, "end-red"), (&mut blue, "end-blue"), (&mut seed, "end-lobby")] {
        client.say(sentinel).await;
    }
    let red_saw = chat_until(&mut red, "end-red").await;
    let red2_saw = chat_until(&mut red2, "end-red").await;
    let blue_saw = chat_until(&mut blue, "end-blue").await;
    let seed_saw = chat_until(&mut seed, "end-lobby").await;

    assert_eq!(texts(&red_saw), ["red says hi", "red2 says hi"]);
    assert_eq!(red2_saw, red_saw);
    assert!(red_saw.iter().all(|(_, room)| room == "red"));
    assert_eq!(texts(&blue_saw), ["blue says hi"]);
    assert_eq!(blue_saw[0].1, "blue");
    assert_eq!(texts(&seed_saw), ["seed says hi"]);
    assert_eq!(seed_saw[0].1, "lobby");

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
    red.send_json(json!({"action": "history", "since": blue_id})).await;
    let mut answered: Vec<Value> = Vec::new();
    loop {
        let frame = red.next_json().await;
        if frame["kind"] == "history" {
            assert_eq!(frame["room"], "red");
            assert_eq!(frame["more"], false);
            assert_eq!(frame["count"], answered.len());
            break;
        }
        answered.push(frame);
    }
    assert!(answered.iter().all(|f| f["room"] == "red"), "{answered:?}");
    let chat: Vec<&str> = answered.iter().filter_map(|f| f["text"].as_str()).collect();
    assert_eq!(chat, ["red one", "red two"]);

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
        let refused = tokio::time::timeout(WAIT, connect_async(url.as_str())).await.expect("answered in time");
        match refused {
            Err(WsError::Http(response)) => assert_eq!(response.status(), 400, "{room:?}"),
            other => panic!("room {room:?} was not refused: {other:?}"),
        }
    }
    // Nothing was stored for the refused attempts: a new lobby client is alone.
    let mut client = Client::connect(&stack.ws_url).await;
    client.send_json(json!({"action": "who"})).await;
    assert_eq!(client.until(|f| f["kind"] == "presence").await["count"], 1);
    stack.stop().await;
}
