//! Moderation on the real binary (issue #24): tokens signed with the stack's
//! shared secret carry `chat.rights`; a moderator (`m`) deletes any line,
//! kicks and bans members; a ban holds at `$connect` and on subscribe until it
//! is lifted. The same ban scenario runs on SQLite and, through the DynamoDB
//! adapters, on moto.

use crate::common;

use common::{
    Client, JWT_SECRET, Moto, Stack, count_rows as count, eventually as until, hs256_token, refused_status,
    rights_token as token, scratch, with_token,
};
use serde_json::json;

fn moderator() -> String {
    token("mo", json!({"*": "rwm"}))
}

fn member(sub: &str) -> String {
    token(sub, json!({"*": "rw"}))
}

/// `ws_url` in `room` as the holder of `token`.
fn url(ws_url: &str, room: &str, token: &str) -> String {
    with_token(&format!("{ws_url}?room={room}"), token)
}

/// The connection's own account and connection id (`who`'s `youUserId` and `you`).
async fn whoami(client: &mut Client) -> (String, String) {
    client.send_json(json!({"action": "who"})).await;
    let answer = client.until(|f| f["kind"] == "presence").await;
    (answer["youUserId"].as_str().unwrap().to_owned(), answer["you"].as_str().unwrap().to_owned())
}

/// Ann is banned from `ops` while connected there: she is told, her socket (in
/// `ops` only) is closed, she cannot reconnect to `ops` (403) nor subscribe to
/// it from elsewhere (Banned, naming the end); once unbanned she reconnects.
async fn a_banned_user_cannot_come_back_until_unbanned(ws_url: &str) {
    let mut mo = Client::connect(&url(ws_url, "ops", &moderator())).await;
    let mut ann = Client::connect(&url(ws_url, "ops", &member("ann"))).await;
    let (ann_id, _) = whoami(&mut ann).await;
    mo.send_json(json!({"action": "ban", "room": "ops", "user": ann_id, "seconds": 60, "reason": "spam"})).await;
    // The answer is posted after the ban event is logged, so the broadcast of
    // that event may reach the moderator first: take both, in either order.
    let (mut answer, mut audit) = (None, None);
    while answer.is_none() || audit.is_none() {
        let frame = mo.next_json().await;
        match frame["kind"].as_str() {
            Some("banned") => answer = Some(frame),
            Some("ban") => audit = Some(frame),
            _ => {}
        }
    }
    let (answer, audit) = (answer.unwrap(), audit.unwrap());
    assert_eq!((answer["user"].as_str(), answer["connections"].as_u64()), (Some(ann_id.as_str()), Some(1)));
    let until = answer["until"].as_str().unwrap().to_owned();
    let removed = ann.until(|f| f["kind"] == "removed").await;
    assert_eq!(removed, json!({"kind": "removed", "room": "ops", "reason": "banned", "by": "mo", "until": until}));
    assert_eq!(ann.close_code().await, Some(1000), "her only room: the socket is closed");
    assert_eq!((audit["member"].as_str(), audit["reason"].as_str()), (Some(ann_id.as_str()), Some("spam")));

    assert_eq!(refused_status(&url(ws_url, "ops", &member("ann"))).await, 403, "no reconnecting to the room");
    let mut elsewhere = Client::connect(&url(ws_url, "lobby", &member("ann"))).await;
    elsewhere.send_json(json!({"action": "subscribe", "room": "ops"})).await;
    let refused = elsewhere.until(|f| f.get("error").is_some()).await;
    assert_eq!(
        (refused["error"].as_str(), refused["room"].as_str(), refused["until"].as_str()),
        (Some("Banned"), Some("ops"), Some(until.as_str()))
    );
    let mut bob = Client::connect(&url(ws_url, "ops", &member("bob"))).await;
    bob.say("bob is not banned").await;
    bob.chat("bob is not banned").await;

    mo.send_json(json!({"action": "unban", "room": "ops", "user": ann_id})).await;
    let answer = mo.until(|f| f["kind"] == "unbanned").await;
    assert_eq!(answer["user"], ann_id.as_str());
    let mut back = Client::connect(&url(ws_url, "ops", &member("ann"))).await;
    back.say("ann is back").await;
    back.chat("ann is back").await;
    elsewhere.send_json(json!({"action": "subscribe", "room": "ops"})).await;
    assert_eq!(elsewhere.until(|f| f["kind"] == "subscribed").await["room"], "ops");
}

#[tokio::test]
async fn a_banned_user_cannot_reconnect_to_the_room_until_the_ban_is_lifted() {
    let dir = scratch("moderation_ban");
    let db = dir.join("chat.db");
    let stack = Stack::start(&db, &["--jwt-secret", JWT_SECRET]).await;
    a_banned_user_cannot_come_back_until_unbanned(&stack.ws_url).await;
    stack.stop().await;
    let leaves = count(&db, "SELECT COUNT(*) FROM message_history WHERE kind = 'leave' AND reason = 'banned'");
    assert_eq!(leaves, 1, "one leave for the one connection removed, none from its $disconnect");
    assert_eq!(count(&db, "SELECT COUNT(*) FROM bans"), 0, "lifted");
}

#[tokio::test]
async fn on_moto_a_banned_user_cannot_reconnect_to_the_room_until_the_ban_is_lifted() {
    let moto = Moto::start().await;
    let dir = scratch("moderation_ban_moto");
    let args = ["--jwt-secret", JWT_SECRET, "--dynamodb-endpoint", &moto.url, "--create-tables"];
    let stack = Stack::start(&dir.join("unused.db"), &args).await;
    a_banned_user_cannot_come_back_until_unbanned(&stack.ws_url).await;
    stack.stop().await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&moto.sdk_config().await);
    let log = dynamodb.scan().table_name("MessageHistory").send().await.unwrap().items.unwrap_or_default();
    let text = |item: &std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>, name: &str| {
        item.get(name).and_then(|v| v.as_s().ok()).cloned().unwrap_or_default()
    };
    let leaves = log.iter().filter(|i| text(i, "kind") == "leave" && text(i, "reason") == "banned").count();
    assert_eq!(leaves, 1, "one leave for the one connection removed");
    let kinds: Vec<String> = log.iter().map(|i| text(i, "kind")).collect();
    assert!(kinds.contains(&"ban".to_owned()) && kinds.contains(&"unban".to_owned()), "audited: {kinds:?}");
    let bans = dynamodb.scan().table_name("Bans").send().await.unwrap();
    assert_eq!(bans.count, 0, "lifted");
}

/// Ann hears `ops` on two connections (her phone also hears the lobby, her
/// laptop only `ops`); a kick removes both from `ops` with one leave each,
/// which Bob sees; the laptop is closed and its `$disconnect` adds no leave;
/// the phone stays in the lobby.
#[tokio::test]
async fn a_kicked_user_gets_exactly_one_leave() {
    let dir = scratch("moderation_kick");
    let db = dir.join("chat.db");
    let stack = Stack::start(&db, &["--jwt-secret", JWT_SECRET]).await;
    let ws_url = stack.ws_url.clone();
    let mut mo = Client::connect(&url(&ws_url, "ops", &moderator())).await;
    let mut bob = Client::connect(&url(&ws_url, "ops", &member("bob"))).await;
    let mut phone = Client::connect(&url(&ws_url, "lobby", &member("ann"))).await;
    phone.send_json(json!({"action": "subscribe", "room": "ops"})).await;
    phone.until(|f| f["kind"] == "subscribed").await;
    let mut laptop = Client::connect(&url(&ws_url, "ops", &member("ann"))).await;
    let (ann_id, laptop_id) = whoami(&mut laptop).await;
    let (_, phone_id) = whoami(&mut phone).await;

    mo.send_json(json!({"action": "kick", "room": "ops", "user": ann_id})).await;
    let answer = mo.until(|f| f["kind"] == "kicked").await;
    assert_eq!(answer, json!({"kind": "kicked", "room": "ops", "user": ann_id, "connections": 2}));
    for client in [&mut phone, &mut laptop] {
        let removed = client.until(|f| f["kind"] == "removed").await;
        assert_eq!(removed, json!({"kind": "removed", "room": "ops", "reason": "kicked", "by": "mo"}));
    }
    assert_eq!(laptop.close_code().await, Some(1000), "the laptop heard only ops");
    let mut left = Vec::new();
    while left.len() < 2 {
        let leave = bob.until(|f| f["kind"] == "leave").await;
        assert_eq!((leave["room"].as_str(), leave["reason"].as_str()), (Some("ops"), Some("kicked")));
        left.push(leave["connectionId"].as_str().unwrap().to_owned());
    }
    left.sort();
    let mut ann_connections = vec![phone_id.clone(), laptop_id.clone()];
    ann_connections.sort();
    assert_eq!(left, ann_connections, "one leave per connection");

    // The phone still hears the lobby, and ops no more.
    phone.say("still here").await;
    phone.chat("still here").await;
    phone.send_json(json!({"action": "sendmessage", "room": "ops", "message": "in ops?"})).await;
    assert_eq!(phone.until(|f| f.get("error").is_some()).await["error"], "Not subscribed");

    let leaves_of = |id: &str, room: &str| {
        count(
            &db,
            &format!(
                "SELECT COUNT(*) FROM message_history WHERE kind = 'leave' AND connection_id = '{id}' AND room = '{room}'"
            ),
        )
    };
    // The laptop's $disconnect has run once its session is complete.
    until(
        || count(&db, &format!("SELECT COUNT(*) FROM session_history WHERE connection_id = '{laptop_id}' AND disconnected_at IS NOT NULL")) == 1,
        "the laptop's $disconnect",
    )
    .await;
    drop(phone);
    until(|| leaves_of(&phone_id, "lobby") == 1, "the phone's leave from the lobby").await;
    stack.stop().await;
    for id in [&phone_id, &laptop_id] {
        assert_eq!(leaves_of(id, "ops"), 1, "{id}: exactly one leave from ops");
    }
    assert_eq!(leaves_of(&laptop_id, "lobby"), 0);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM message_history WHERE kind = 'kick'"), 1, "audited");
}

/// A moderator deletes Ann's line: every member of the room hears the
/// tombstone (`kind: delete`, `target`), `history` shows it after the line,
/// and a member without `m` may not delete someone else's line.
#[tokio::test]
async fn a_moderators_delete_reaches_every_member_and_history_shows_the_tombstone() {
    let dir = scratch("moderation_delete");
    let stack = Stack::start(&dir.join("chat.db"), &["--jwt-secret", JWT_SECRET]).await;
    let ws_url = stack.ws_url.clone();
    let mut mo = Client::connect(&url(&ws_url, "ops", &moderator())).await;
    let mut ann = Client::connect(&url(&ws_url, "ops", &member("ann"))).await;
    let mut bob = Client::connect(&url(&ws_url, "ops", &member("bob"))).await;
    // A token without chat.rights: the default rights (*=rw).
    let mut plain = Client::connect(&url(&ws_url, "ops", &hs256_token(JWT_SECRET, "dora", "dora"))).await;
    ann.say("a line to delete").await;
    let id = ann.chat("a line to delete").await["id"].as_str().unwrap().to_owned();

    bob.send_json(json!({"action": "delete", "id": id, "rights": "*=rwm"})).await;
    let refused = bob.until(|f| f.get("error").is_some()).await;
    assert_eq!((refused["error"].as_str(), refused["right"].as_str()), (Some("Forbidden"), Some("moderate")));

    mo.send_json(json!({"action": "delete", "id": id})).await;
    for client in [&mut mo, &mut ann, &mut bob, &mut plain] {
        let tombstone = client.until(|f| f["kind"] == "delete").await;
        assert_eq!(
            (tombstone["target"].as_str(), tombstone["room"].as_str(), tombstone["user"].as_str()),
            (Some(id.as_str()), Some("ops"), Some("mo"))
        );
        assert_eq!(tombstone["message"], "A message was deleted.", "what a seed page shows");
    }
    let mut later = Client::connect(&url(&ws_url, "ops", &member("carol"))).await;
    let (events, _) = later.history(json!({"action": "history", "limit": 50})).await;
    let line = events.iter().position(|e| e["id"] == id.as_str()).expect("the line stays in history");
    let tombstone = events.iter().position(|e| e["kind"] == "delete" && e["target"] == id.as_str());
    assert!(tombstone.is_some_and(|t| t > line), "the tombstone follows the line: {events:?}");

    mo.send_json(json!({"action": "delete", "id": id})).await;
    let again = mo.until(|f| f.get("error").is_some()).await;
    assert_eq!((again["error"].as_str(), again["id"].as_str()), (Some("Not found"), Some(id.as_str())));
    stack.stop().await;
}
