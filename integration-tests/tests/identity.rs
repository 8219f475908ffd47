//! Identity on the real binary: the deployed authorizer's entrypoint runs on each
//! upgrade. With `--oidc-issuer` pointing at a loopback JWKS: no token → 401, a
//! bad one → 403, a good one → every line names its user, verified. With
//! `--jwt-secret` on loopback, the development sign-in mints such tokens.

use crate::common;

use std::sync::atomic::Ordering;

use common::issuer::{CLIENT, Issuer, RSA_A, RSA_B};
use common::{
    Client, JWT_SECRET, Stack, host_of, hs256_token, http_get, http_post_json, refused_status, scratch, with_token,
};
use jsonwebtoken::{EncodingKey, Header};
use serde_json::{Value, json};

#[tokio::test]
async fn an_oidc_issuer_s_tokens_admit_and_name_their_users() {
    let issuer = Issuer::start().await;
    let dir = scratch("identity_oidc");
    let stack = Stack::start(&dir.join("chat.db"), &["--oidc-issuer", &issuer.url, "--audience", CLIENT]).await;

    // API Gateway's answers: no identity source → 401 (the authorizer never runs), else 403.
    assert_eq!(refused_status(&stack.ws_url).await, 401);
    assert_eq!(refused_status(&format!("{}?Authorization=", stack.ws_url)).await, 401);
    assert_eq!(refused_status(&format!("{}?name=Mallory", stack.ws_url)).await, 401, "a chosen name is no identity");
    assert_eq!(issuer.fetches.load(Ordering::SeqCst), 0, "refused without reading keys");
    let bad = [
        "Bearer%20not-a-jwt".to_owned(),
        format!("Bearer%20{}", issuer.id_token("alice", RSA_B, "k1", 600)),
        format!("Bearer%20{}", issuer.id_token("alice", RSA_A, "k1", -600)),
    ];
    for authorization in &bad {
        assert_eq!(refused_status(&format!("{}?Authorization={authorization}", stack.ws_url)).await, 403);
    }

    let alice_token = issuer.id_token("alice", RSA_A, "k1", 600);
    let mut alice = Client::connect(&with_token(&stack.ws_url, &alice_token)).await;
    // The authorizer's name wins over a chosen one.
    let bob_url = format!("{}&name=Mallory", with_token(&stack.ws_url, &issuer.id_token("bob", RSA_A, "k1", 600)));
    let mut bob = Client::connect(&bob_url).await;
    let join = alice.until(|f| f["kind"] == "join").await;
    assert_eq!((join["user"].as_str(), join["verified"].as_bool()), (Some("bob"), Some(true)));

    bob.say("hi, I am verified").await;
    let line = alice.chat("hi, I am verified").await;
    assert_eq!((line["user"].as_str(), line["verified"].as_bool()), (Some("bob"), Some(true)));
    let id = line["connectionId"].as_str().unwrap();
    assert_eq!(line["message"], format!("[{} - UTC]\n {id}  hi, I am verified\n", line["timestamp"].as_str().unwrap()));
    alice.say("hello bob").await;
    assert_eq!(bob.chat("hello bob").await["user"], "alice");
    assert_eq!(issuer.fetches.load(Ordering::SeqCst), 1, "keys cached across connections");

    alice.send_json(json!({"action": "who"})).await;
    let who = alice.until(|f| f["kind"] == "presence").await;
    let mut users: Vec<_> = who["members"].as_array().unwrap().iter().filter_map(|m| m["user"].as_str()).collect();
    users.sort();
    assert_eq!(users, ["alice", "bob"]);

    // The page learns how to sign in; the development sign-in does not exist here.
    let address = host_of(&stack.http_url);
    let config = body_json(&http_get(&address, "/config.json").await);
    assert_eq!(
        config,
        json!({"auth": "oidc", "issuer": issuer.url, "clientId": CLIENT, "scope": "openid profile email"})
    );
    assert!(http_get(&address, "/login.html").await.starts_with("HTTP/1.1 404"));
    assert_eq!(http_post_json(&address, "/dev/token", &json!({"name": "eve"})).await.0, 404);
    stack.stop().await;
}

#[tokio::test]
async fn the_development_sign_in_mints_tokens_the_authorizer_accepts() {
    let dir = scratch("identity_dev");
    let secret = JWT_SECRET;
    let stack = Stack::start(&dir.join("chat.db"), &["--jwt-secret", secret]).await;
    let address = host_of(&stack.http_url);
    assert_eq!(body_json(&http_get(&address, "/config.json").await), json!({"auth": "dev", "loginUrl": "/login.html"}));

    for bad in [json!({}), json!({"name": "  "}), json!({"name": "x".repeat(33)}), json!("ada")] {
        let (status, body) = http_post_json(&address, "/dev/token", &bad).await;
        assert_eq!(status, 400, "{bad}");
        assert!(body["message"].is_string(), "a readable reason: {body}");
    }
    let (status, minted) = http_post_json(&address, "/dev/token", &json!({"name": " Ada Lovelace "})).await;
    assert_eq!(status, 200);
    assert_eq!(minted["name"], "Ada Lovelace");
    let now = chrono::Utc::now().timestamp();
    let exp = minted["exp"].as_i64().unwrap();
    assert!((now + 3500..=now + 3700).contains(&exp), "short-lived: {exp} vs {now}");

    assert_eq!(refused_status(&stack.ws_url).await, 401);
    let forged = {
        let key = EncodingKey::from_secret(b"another-secret-that-is-32-bytes!!").unwrap();
        jsonwebtoken::encode(&Header::default(), &json!({"sub": "x", "exp": now + 60}), &key).unwrap()
    };
    assert_eq!(refused_status(&with_token(&stack.ws_url, &forged)).await, 403);

    let mut ada = Client::connect(&with_token(&stack.ws_url, minted["token"].as_str().unwrap())).await;
    ada.say("signed in").await;
    let line = ada.chat("signed in").await;
    assert_eq!((line["user"].as_str(), line["verified"].as_bool()), (Some("Ada Lovelace"), Some(true)));
    assert_eq!(line["userId"], "local|dev:Ada Lovelace", "a stable account per typed name");
    let (status, spoof) = http_post_json(&address, "/dev/token", &json!({"name": "Ada\u{202E}ecalevoL"})).await;
    assert_eq!(status, 400, "no bidi overrides in a name: {spoof}");
    stack.stop().await;
}

/// Two accounts that both call themselves "alice" (the same display name, a
/// different `sub`) are told apart: their join, chat and leave frames and the
/// `who` members carry different `userId`s, and each asker learns its own as
/// `youUserId`. The name stays a label.
#[tokio::test]
async fn two_accounts_with_the_same_name_have_different_user_ids() {
    let dir = scratch("identity_same_name");
    let secret = JWT_SECRET;
    let stack = Stack::start(&dir.join("chat.db"), &["--jwt-secret", secret]).await;
    let mut first = Client::connect(&with_token(&stack.ws_url, &hs256_token(secret, "user-1", "alice"))).await;
    let mut second = Client::connect(&with_token(&stack.ws_url, &hs256_token(secret, "user-2", "alice"))).await;
    let join = first.until(|f| f["kind"] == "join").await;
    assert_eq!((join["user"].as_str(), join["userId"].as_str()), (Some("alice"), Some("local|user-2")));

    first.say("from the first").await;
    assert_eq!(first.chat("from the first").await["userId"], "local|user-1");
    second.say("from the second").await;
    let speakers = [second.chat("from the first").await, second.chat("from the second").await];
    let ids = speakers.map(|f| (f["user"].clone(), f["userId"].clone()));
    assert_eq!(ids, [(json!("alice"), json!("local|user-1")), (json!("alice"), json!("local|user-2"))]);

    second.send_json(json!({"action": "who"})).await;
    let who = second.until(|f| f["kind"] == "presence").await;
    let mut members: Vec<_> =
        who["members"].as_array().unwrap().iter().map(|m| (m["user"].clone(), m["userId"].clone())).collect();
    members.sort_by_key(|(_, id)| id.to_string());
    assert_eq!(members, [(json!("alice"), json!("local|user-1")), (json!("alice"), json!("local|user-2"))]);
    assert_eq!(who["youUserId"], "local|user-2", "the asker's own account, to mark \"(you)\" by");

    first.socket.close(None).await.unwrap();
    let leave = second.until(|f| f["kind"] == "leave").await;
    assert_eq!(leave["userId"], "local|user-1");
    stack.stop().await;
}

/// The JSON body of a whole HTTP response.
fn body_json(response: &str) -> Value {
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    serde_json::from_str(body).expect("a JSON body")
}
