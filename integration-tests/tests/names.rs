//! Names without an authorizer: `?name=` gives an unverified display name that
//! every chat, join and leave frame, `who`, history and replay carry; a client
//! with none stays exactly as the seed's.

use crate::common;

use common::{Client, Stack, refused_status, run_binary, scratch};
use serde_json::json;

#[tokio::test]
async fn a_chosen_name_travels_with_every_line_marked_unverified() {
    let dir = scratch("names");
    let stack = Stack::start(&dir.join("chat.db"), &[]).await;
    let mut seed = Client::connect(&stack.ws_url).await;
    let mut ada = Client::connect(&format!("{}?name=Ada%20Lovelace", stack.ws_url)).await;
    let join = seed.until(|f| f["kind"] == "join").await;
    assert_eq!((join["user"].as_str(), join["verified"].as_bool()), (Some("Ada Lovelace"), Some(false)));

    ada.say("hello").await;
    let line = seed.chat("hello").await;
    assert_eq!((line["user"].as_str(), line["verified"].as_bool()), (Some("Ada Lovelace"), Some(false)));
    let ada_id = line["connectionId"].as_str().unwrap().to_owned();
    assert_eq!(line["message"], format!("[{} - UTC]\n {ada_id}  hello\n", line["timestamp"].as_str().unwrap()));

    seed.say("anonymous").await;
    let plain = ada.chat("anonymous").await;
    assert!(plain.get("user").is_none() && plain.get("verified").is_none(), "{plain}");

    seed.send_json(json!({"action": "who"})).await;
    let who = seed.until(|f| f["kind"] == "presence").await;
    let named: Vec<_> = who["members"].as_array().unwrap().iter().filter_map(|m| m["user"].as_str()).collect();
    assert_eq!(named, ["Ada Lovelace"]);

    seed.send_json(json!({"action": "history", "limit": 10})).await;
    let from_history = seed.until(|f| f["text"] == "hello").await;
    assert_eq!(from_history["user"], "Ada Lovelace");

    ada.socket.close(None).await.unwrap();
    let leave = seed.until(|f| f["kind"] == "leave").await;
    assert_eq!(leave["user"], "Ada Lovelace");
    stack.stop().await;

    let db = format!("sqlite:{}", dir.join("chat.db").display());
    let lines = run_binary("replay", &["--from", &db]).await;
    assert!(lines.contains(&format!("  lobby  Ada Lovelace? ({ada_id})  hello")), "{lines}");
    let json = run_binary("replay", &["--from", &db, "--format", "json"]).await;
    assert!(json.contains(r#""user":"Ada Lovelace","verified":false"#), "{json}");
}

#[tokio::test]
async fn a_bad_name_is_refused_with_400() {
    let dir = scratch("names_refused");
    let stack = Stack::start(&dir.join("chat.db"), &[]).await;
    for name in ["", "%20%20", "a%0Ab", &"x".repeat(33)] {
        let url = format!("{}?name={name}", stack.ws_url);
        assert_eq!(refused_status(&url).await, 400, "{name:?}");
    }
    stack.stop().await;
}
