//! Rights on the real binary (issue #24): tokens signed by a test JWKS carry
//! `chat.rights` (or `cognito:groups` that `--group-rights` maps), the local
//! authorizer turns them into the connection's rights, and every route checks
//! them over real sockets — on SQLite and on moto's DynamoDB, with the same
//! matrix of (token, room, action) → allowed or refused. Refusals are
//! `{"error":"Forbidden","room","right","message"}` and store nothing; what a
//! frame's body says about rights is never read.

use crate::common;

use common::issuer::{CLIENT, Issuer};
use common::{Client, Moto, Stack, refused_status, scratch, with_token};
use serde_json::{Value, json};

/// A closed default and three groups, as a team deployment might map them.
const DEFAULT_RIGHTS: &str = "lobby=rw;announcements=r";
const GROUP_RIGHTS: &str = "moderators:*=rwm staff:team-*=rw;announcements=rw org:readers:*=r";

/// Fields a client might forge in a frame's body to claim rights: ignored.
fn forged() -> Value {
    json!({"rights": {"*": "rwm"}, "chat": {"rights": {"*": "rwm"}}, "requestContext": {"authorizer": {"rights": "*=rwm"}}})
}

/// `command` with the forged fields added.
fn with_forgery(command: Value) -> Value {
    let mut command = command;
    command.as_object_mut().unwrap().extend(forged().as_object().unwrap().clone());
    command
}

/// The stack's flags: the issuer's tokens, the closed default, the group mapping.
fn rights_flags(issuer: &Issuer) -> Vec<String> {
    ["--oidc-issuer", &issuer.url, "--audience", CLIENT, "--default-rights", DEFAULT_RIGHTS]
        .into_iter()
        .chain(["--group-rights", GROUP_RIGHTS])
        .map(str::to_owned)
        .collect()
}

/// What one room should allow one token: its letters (`"rw"`), and whether the
/// room is private (the default alone would not let one read it).
struct Expect {
    room: &'static str,
    letters: &'static str,
    private: bool,
}

/// One token of the matrix: its extra claims and what each room allows it.
struct Row {
    label: &'static str,
    claims: Value,
    rooms: Vec<Expect>,
}

fn expect(room: &'static str, letters: &'static str, private: bool) -> Expect {
    Expect { room, letters, private }
}

fn matrix() -> Vec<Row> {
    vec![
        Row {
            label: "a claim with a wildcard",
            claims: json!({"chat": {"rights": {"lobby": "rw", "team-*": "rw", "announcements": "r"}}}),
            rooms: vec![expect("team-a", "rw", true), expect("announcements", "r", false), expect("random", "", true)],
        },
        Row {
            label: "the most specific pattern wins",
            claims: json!({"chat": {"rights": {"*": "rw", "team-*": "r", "team-lead": "rw", "secret-*": ""}}}),
            rooms: vec![
                expect("team-a", "r", true),
                expect("team-lead", "rw", true),
                expect("secret-x", "", true),
                expect("random", "rw", true),
            ],
        },
        Row {
            label: "no claim: the default",
            claims: json!({}),
            rooms: vec![expect("announcements", "r", false), expect("team-a", "", true), expect("random", "", true)],
        },
        Row {
            label: "no claim, in a mapped and an unmapped group",
            claims: json!({"cognito:groups": ["staff", "strangers"]}),
            rooms: vec![expect("team-a", "rw", true), expect("announcements", "rw", false), expect("random", "", true)],
        },
        Row {
            label: "two groups, one named with a ':'",
            claims: json!({"cognito:groups": ["org:readers", "staff"]}),
            rooms: vec![expect("random", "r", true), expect("team-b", "rw", true)],
        },
        Row {
            label: "moderators",
            claims: json!({"cognito:groups": ["moderators"]}),
            rooms: vec![expect("random", "rwm", true), expect("announcements", "rwm", false)],
        },
        Row {
            label: "the claim alone decides, whatever the groups",
            claims: json!({"cognito:groups": ["moderators"], "chat": {"rights": {"lobby": "rw"}}}),
            rooms: vec![expect("announcements", "", false), expect("random", "", true)],
        },
    ]
}

/// Sends `command` (with forged rights) and reads the answer about `room`:
/// the frame of kind `kind` (or an ack, for a send), else the error naming it.
async fn ask(client: &mut Client, command: Value, room: &str, kind: &str) -> Value {
    client.send_json(with_forgery(command)).await;
    client
        .until(|f| {
            let about = f["room"] == room;
            (about && (f["error"].is_string() || f["kind"] == kind)) || (kind == "ack" && f["ack"].is_string())
        })
        .await
}

/// Says `text` in `room` and reads the answer (the ack, or the error naming the
/// room) and, once acked, the line's broadcast (which may come first).
async fn send_in(client: &mut Client, room: &str, text: &str, client_message_id: String) -> (Value, Option<Value>) {
    let send = json!({"action": "sendmessage", "room": room, "message": text, "clientMessageId": client_message_id});
    client.send_json(with_forgery(send)).await;
    let (mut answer, mut delivered): (Option<Value>, Option<Value>) = (None, None);
    while answer.as_ref().is_none_or(|a| a["ack"].is_string() && delivered.is_none()) {
        let frame = client.next_json().await;
        if frame["kind"] == "chat" && frame["text"] == text {
            delivered = Some(frame);
        } else if frame["ack"].is_string() || (frame["room"] == room && frame["error"].is_string()) {
            answer = Some(frame);
        }
    }
    (answer.unwrap_or_default(), delivered)
}

/// The `n`th send's `clientMessageId` (a UUID, as the protocol asks).
fn client_message_id(n: usize) -> String {
    format!("00000000-0000-4000-8000-{n:012x}")
}

/// A refusal must name the room and the right, and say nothing else.
fn assert_forbidden(answer: &Value, room: &str, right: &str, label: &str) {
    assert_eq!(
        (&answer["error"], &answer["room"], &answer["right"]),
        (&json!("Forbidden"), &json!(room), &json!(right)),
        "{label}: {answer}"
    );
    let mut keys: Vec<&str> = answer.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["error", "message", "right", "room"], "{label}: nothing leaks, not even a count");
}

/// Runs the matrix on a stack started with [`rights_flags`]: for each token
/// and room, subscribe, send, history and who, each allowed or refused as its
/// letters say. Returns the texts sent, each with whether it was stored.
async fn run_matrix(stack: &Stack, issuer: &Issuer) -> Vec<(String, &'static str, bool)> {
    let mut sent = Vec::new();
    for (n, row) in matrix().into_iter().enumerate() {
        let token = issuer.id_token_with(&format!("user{n}"), row.claims.clone());
        // Every token of the matrix may read its home room, the lobby.
        let mut client = Client::connect(&with_token(&stack.ws_url, &token)).await;
        for Expect { room, letters, private } in row.rooms {
            let label = format!("{}: {room}", row.label);
            let (read, write) = (letters.contains('r'), letters.contains('w'));
            let answer = ask(&mut client, json!({"action": "subscribe", "room": room}), room, "subscribed").await;
            if read {
                assert_eq!(answer["kind"], "subscribed", "{label}: {answer}");
                assert_eq!((answer["rights"].as_str(), answer["private"].as_bool()), (Some(letters), Some(private)));
            } else {
                assert_forbidden(&answer, room, "read", &label);
            }

            let text = format!("{label} #{n}");
            let (answer, delivered) = send_in(&mut client, room, &text, client_message_id(sent.len())).await;
            if write {
                assert!(answer["ack"].is_string(), "{label}: stored and acked: {answer}");
                assert_eq!(delivered.map(|line| line["room"].clone()), Some(json!(room)), "{label}: delivered there");
            } else {
                assert_forbidden(&answer, room, "write", &label);
            }
            sent.push((text, room, write));

            for (action, kind) in [("history", "history"), ("who", "presence")] {
                let answer = ask(&mut client, json!({"action": action, "room": room}), room, kind).await;
                if read {
                    assert_eq!(answer["kind"], kind, "{label}: {action} answered: {answer}");
                } else {
                    assert_forbidden(&answer, room, "read", &format!("{label}: {action}"));
                }
            }
        }
        client.socket.close(None).await.unwrap();
    }
    sent
}

/// Reads every room of `sent` as a token that may read everything: exactly
/// the lines that were allowed are stored.
async fn assert_only_allowed_lines_stored(stack: &Stack, issuer: &Issuer, sent: &[(String, &str, bool)]) {
    let auditor = issuer.id_token_with("auditor", json!({"chat": {"rights": {"*": "r"}}}));
    let mut auditor = Client::connect(&with_token(&stack.ws_url, &auditor)).await;
    let mut rooms: Vec<&str> = sent.iter().map(|(_, room, _)| *room).collect();
    rooms.sort();
    rooms.dedup();
    let mut stored = Vec::new();
    for room in rooms {
        let answer = ask(&mut auditor, json!({"action": "subscribe", "room": room}), room, "subscribed").await;
        assert_eq!(answer["kind"], "subscribed", "{answer}");
        stored.extend(auditor.history_texts(json!({"action": "history", "room": room, "limit": 100})).await);
    }
    for (text, room, allowed) in sent {
        assert_eq!(stored.contains(text), *allowed, "{room}: {text:?} stored only if allowed");
    }
}

/// The upgrade's home room needs `r` (else 403), and a token's rooms without
/// `r` are left out; `rooms` reports each room's rights and privacy.
async fn assert_upgrades_need_read(stack: &Stack, issuer: &Issuer) {
    let claim = |rights: Value| json!({"chat": {"rights": rights}});
    let wildcard = issuer.id_token_with("w", claim(json!({"lobby": "rw", "team-*": "rw"})));
    assert_eq!(refused_status(&format!("{}&room=random", with_token(&stack.ws_url, &wildcard))).await, 403);
    let plain = issuer.id_token_with("p", json!({}));
    assert_eq!(refused_status(&format!("{}&room=team-a", with_token(&stack.ws_url, &plain))).await, 403);
    // A forged rights parameter on the upgrade is not the token's.
    let forged = format!("{}&room=team-a&rights=*%3Drwm", with_token(&stack.ws_url, &plain));
    assert_eq!(refused_status(&forged).await, 403);
    let staff = issuer.id_token_with("s", json!({"cognito:groups": ["staff"]}));
    let mut staff = Client::connect(&format!("{}&room=team-a", with_token(&stack.ws_url, &staff))).await;
    staff.send_json(json!({"action": "rooms"})).await;
    let rooms = staff.until(|f| f["kind"] == "rooms").await;
    assert_eq!(rooms["rooms"][0]["room"], "team-a");
    assert_eq!((&rooms["rooms"][0]["rights"], &rooms["rooms"][0]["private"]), (&json!("rw"), &json!(true)));

    let listed = json!({"chat": {"rights": {"lobby": "rw", "ops": "r"}, "rooms": ["ops", "secret", "lobby"]}});
    let mut listed = Client::connect(&with_token(&stack.ws_url, &issuer.id_token_with("l", listed))).await;
    listed.send_json(json!({"action": "rooms"})).await;
    let rooms = listed.until(|f| f["kind"] == "rooms").await;
    let mut heard: Vec<(String, String)> = rooms["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["room"].as_str().unwrap().to_owned(), r["rights"].as_str().unwrap().to_owned()))
        .collect();
    heard.sort();
    assert_eq!(heard, [("lobby".into(), "rw".into()), ("ops".into(), "r".into())], "secret left out");
}

/// Starts a stack with [`rights_flags`] and `backend`'s flags, and runs every
/// check of the matrix on it.
async fn the_matrix_holds(name: &str, backend: &[&str]) {
    let issuer = Issuer::start().await;
    let dir = scratch(name);
    let flags = rights_flags(&issuer);
    let flags: Vec<&str> = flags.iter().map(String::as_str).chain(backend.iter().copied()).collect();
    let stack = Stack::start(&dir.join("chat.db"), &flags).await;
    let sent = run_matrix(&stack, &issuer).await;
    assert_only_allowed_lines_stored(&stack, &issuer, &sent).await;
    assert_upgrades_need_read(&stack, &issuer).await;
    stack.stop().await;
}

#[tokio::test]
async fn the_rights_matrix_holds_over_real_sockets_on_sqlite() {
    the_matrix_holds("rights_sqlite", &[]).await;
}

#[tokio::test]
async fn the_rights_matrix_holds_over_real_sockets_on_moto() {
    let moto = Moto::start().await;
    the_matrix_holds("rights_moto", &["--dynamodb-endpoint", &moto.url, "--create-tables"]).await;
}

/// No authorizer: every connection has the default rights, whatever it claims
/// in its query or its frames.
#[tokio::test]
async fn anonymous_connections_have_the_default_rights_and_cannot_claim_more() {
    let dir = scratch("rights_anonymous");
    let stack = Stack::start(&dir.join("chat.db"), &["--default-rights", DEFAULT_RIGHTS]).await;
    assert_eq!(refused_status(&format!("{}?room=random", stack.ws_url)).await, 403, "no r in the home room");
    assert_eq!(refused_status(&format!("{}?room=random&rights=*%3Drwm", stack.ws_url)).await, 403, "forged query");

    let mut reader = Client::connect(&format!("{}?room=announcements&name=Reader", stack.ws_url)).await;
    let refused =
        ask(&mut reader, json!({"action": "sendmessage", "message": "from a reader"}), "announcements", "ack").await;
    assert_forbidden(&refused, "announcements", "write", "anonymous in a read-only home room");

    let mut anon = Client::connect(&format!("{}?name=Anon", stack.ws_url)).await;
    let subscribed =
        ask(&mut anon, json!({"action": "subscribe", "room": "announcements"}), "announcements", "subscribed").await;
    assert_eq!((&subscribed["rights"], &subscribed["private"]), (&json!("r"), &json!(false)), "{subscribed}");
    let refused = ask(&mut anon, json!({"action": "subscribe", "room": "random"}), "random", "subscribed").await;
    assert_forbidden(&refused, "random", "read", "anonymous elsewhere");
    for (action, kind) in [("history", "history"), ("who", "presence")] {
        let refused = ask(&mut anon, json!({"action": action, "room": "random"}), "random", kind).await;
        assert_forbidden(&refused, "random", "read", action);
    }
    let send = json!({"action": "sendmessage", "room": "random", "message": "forged", "clientMessageId": client_message_id(0)});
    assert_forbidden(&ask(&mut anon, send, "random", "ack").await, "random", "write", "anonymous send");
    anon.say("allowed in the lobby").await;
    anon.chat("allowed in the lobby").await;
    let texts = anon.history_texts(json!({"action": "history", "room": "announcements"})).await;
    assert!(texts.is_empty(), "nothing stored in announcements: {texts:?}");
    drop((reader, anon));
    stack.stop().await;
}

/// The development sign-in mints tokens with the rights or groups asked for,
/// refusing what the authorizer would refuse; and `--group-rights` is checked
/// at start-up like the Lambda's GROUP_RIGHTS.
#[tokio::test]
async fn the_development_sign_in_mints_rights_and_groups_for_trying_them_by_hand() {
    let dir = scratch("rights_dev_signin");
    let flags = ["--jwt-secret", common::JWT_SECRET, "--default-rights", "lobby=rw", "--group-rights", "mods:*=rwm"];
    let stack = Stack::start(&dir.join("chat.db"), &flags).await;
    let address = common::host_of(&stack.http_url);
    let mint = |body: Value| {
        let address = address.clone();
        async move { common::http_post_json(&address, "/dev/token", &body).await }
    };
    for bad in [json!({"name": "Ada", "rights": {"lobby": "all"}}), json!({"name": "Ada", "groups": "mods"})] {
        let (status, body) = mint(bad.clone()).await;
        assert_eq!(status, 400, "{bad}");
        assert!(body["message"].is_string(), "a readable reason: {body}");
    }
    let (status, moderator) = mint(json!({"name": "Mo", "groups": ["mods"]})).await;
    assert_eq!(status, 200, "{moderator}");
    let mut moderator = Client::connect(&with_token(&stack.ws_url, moderator["token"].as_str().unwrap())).await;
    let subscribed = ask(&mut moderator, json!({"action": "subscribe", "room": "ops"}), "ops", "subscribed").await;
    assert_eq!((&subscribed["rights"], &subscribed["private"]), (&json!("rwm"), &json!(true)), "{subscribed}");
    let (_, reader) = mint(json!({"name": "Rea", "rights": {"lobby": "r"}})).await;
    let mut reader = Client::connect(&with_token(&stack.ws_url, reader["token"].as_str().unwrap())).await;
    let refused = ask(&mut reader, json!({"action": "sendmessage", "message": "hello"}), "lobby", "ack").await;
    assert_forbidden(&refused, "lobby", "write", "a read-only development token");
    drop((moderator, reader));
    stack.stop().await;

    for (extra, says) in [
        (&["--group-rights", "mods=rwm"][..], "GROUP_RIGHTS: \"mods=rwm\" is not group:rights"),
        (&["--group-rights", "mods:*=rwm"][..], "--group-rights needs an authorizer"),
    ] {
        let mut args = vec!["--port", "0", "--db"];
        let db = dir.join("never.db");
        args.push(db.to_str().unwrap());
        if !says.starts_with("--group-rights needs") {
            args.extend(["--jwt-secret", common::JWT_SECRET]);
        }
        args.extend(extra);
        let output = tokio::process::Command::new(common::binary()).args(&args).output();
        let output = tokio::time::timeout(common::WAIT, output).await.expect("exits in time").unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success() && stderr.contains(says), "{extra:?}: {stderr}");
    }
}
