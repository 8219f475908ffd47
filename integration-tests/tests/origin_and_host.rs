//! Which web pages may use the local stack (issue #22, finding 2). A browser lets
//! any page send requests to 127.0.0.1: a DNS-rebinding page does so under its own
//! name (`Host: attacker.example`) and may then read the answers, and any page may
//! open a WebSocket to it. So every route answers only the stack's own host names,
//! and the upgrade and `POST /dev/token` only the stack's own page, an
//! `--allowed-origin`, or a client that is no page at all (no `Origin`: wscat, SDKs).

use crate::common;

use common::{Client, Stack, TEST_KEY, WAIT, host_of, http_exchange, raw_request, scratch, sigv4_headers};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

const SECRET: &str = "a-local-secret-of-at-least-32-bytes";
/// A connection id nobody has: a signed @connections call for it is a 410 once let in.
const NOBODY: &str = "nobody0000000000";

/// One `Connection: close` request to `address` naming `host`, with `extra`
/// header lines (each ending in CRLF): the status and the whole response.
async fn exchange(address: &str, method: &str, target: &str, host: &str, extra: &str, body: &str) -> (u16, String) {
    let request = format!(
        "{method} {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let response = http_exchange(address, request).await;
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok());
    (status.unwrap_or_else(|| panic!("{method} {target}: no status line in {response:?}")), response)
}

/// A WebSocket upgrade of `target` naming `host`, with `extra` header lines: the status.
async fn upgrade(address: &str, target: &str, host: &str, extra: &str) -> u16 {
    let mut tcp = TcpStream::connect(address).await.expect("connect to the stack");
    let request = format!(
        "GET {target} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
    );
    raw_request(&mut tcp, request.as_bytes()).await.0
}

/// Every route the stack serves, called with `Host: host`: (what, status, response).
/// The upgrade carries `token`; the @connections calls are validly signed for `host`.
async fn every_route(address: &str, host: &str, token: &str) -> Vec<(String, u16, String)> {
    let mut answers = Vec::new();
    for path in ["/", "/config.json", "/metrics", "/login.html", "/no-such-file"] {
        let (status, response) = exchange(address, "GET", path, host, "", "").await;
        answers.push((format!("GET {path}"), status, response));
    }
    let name = json!({"name": "Mallory"}).to_string();
    let (status, response) =
        exchange(address, "POST", "/dev/token", host, "Content-Type: application/json\r\n", &name).await;
    answers.push(("POST /dev/token".into(), status, response));
    let status = upgrade(address, &format!("/dev?Authorization=Bearer%20{token}"), host, "").await;
    answers.push(("the upgrade".into(), status, String::new()));
    for method in ["POST", "GET", "DELETE"] {
        let path = format!("/dev/@connections/{NOBODY}");
        let body = if method == "POST" { r#"{"message":"hi"}"# } else { "" };
        let signed = sigv4_headers(method, &format!("http://{host}{path}"), body.as_bytes(), TEST_KEY);
        let lines: String = signed.iter().map(|(name, value)| format!("{name}: {value}\r\n")).collect();
        let (status, response) = exchange(address, method, &path, host, &lines, body).await;
        answers.push((format!("{method} @connections"), status, response));
    }
    answers
}

fn refused_upgrades(metrics: &str, status: u16) -> usize {
    let line = format!("chat_upgrades_refused_total{{status=\"{status}\"}} ");
    metrics.lines().find_map(|l| l.strip_prefix(&line)).map_or(0, |n| n.parse().unwrap())
}

#[tokio::test]
async fn a_dns_rebinding_page_is_refused_on_every_route() {
    let dir = scratch("origin_and_host_rebinding");
    let stack = Stack::start(&dir.join("chat.db"), &["--jwt-secret", SECRET, "--allowed-host", "chat.lan"]).await;
    let address = host_of(&stack.http_url);
    let port = address.rsplit(':').next().unwrap();
    let body = json!({"name": "Ada"}).to_string();
    let (status, minted) =
        exchange(&address, "POST", "/dev/token", &address, "Content-Type: application/json\r\n", &body).await;
    assert_eq!(status, 200, "{minted}");
    let minted: Value = serde_json::from_str(minted.split_once("\r\n\r\n").unwrap().1).unwrap();
    let token = minted["token"].as_str().unwrap();

    let rebinding = [
        "attacker.example".to_owned(),
        format!("attacker.example:{port}"),
        format!("chat.lan.attacker.example:{port}"),
        format!("localhost.attacker.example:{port}"),
    ];
    for host in &rebinding {
        let answers = every_route(&address, host, token).await;
        assert_eq!(answers.len(), 10, "every route was tried");
        for (what, status, response) in answers {
            assert_eq!(status, 403, "{what} with Host {host}: {response}");
            // Our refusal, before any handler: no token, no metrics, no AWS-shaped error.
            let name = host.split(':').next().unwrap();
            assert!(what == "the upgrade" || response.contains(&format!("this server is not {name}")), "{response}");
            assert!(!response.contains("token\"") && !response.contains("chat_"), "{what}: {response}");
        }
    }

    // The stack's own names, with or without the port, reach every route.
    let own = [
        address.clone(),
        format!("localhost:{port}"),
        "127.0.0.1".to_owned(),
        "LOCALHOST".to_owned(),
        format!("[::1]:{port}"),
        format!("CHAT.lan:{port}"),
    ];
    for host in &own {
        let statuses: Vec<(String, u16)> =
            every_route(&address, host, token).await.into_iter().map(|(what, status, _)| (what, status)).collect();
        let expected = [
            ("GET /", 200),
            ("GET /config.json", 200),
            ("GET /metrics", 200),
            ("GET /login.html", 200),
            ("GET /no-such-file", 404),
            ("POST /dev/token", 200),
            ("the upgrade", 101),
            ("POST @connections", 410),
            ("GET @connections", 410),
            ("DELETE @connections", 410),
        ]
        .map(|(what, status)| (what.to_owned(), status));
        assert_eq!(statuses, expected, "Host {host}");
    }

    // The refused upgrades were counted like the stack's other refusals.
    let (_, metrics) = exchange(&address, "GET", "/metrics", &address, "", "").await;
    assert_eq!(refused_upgrades(&metrics, 403), rebinding.len(), "{metrics}");
    stack.stop().await;
}

/// Opens the socket as a page of `origin` would (`None`: as wscat does, no
/// `Origin`): the socket, or the status the upgrade was refused with.
async fn open_from(url: &str, origin: Option<&str>) -> Result<common::Socket, u16> {
    use tokio_tungstenite::tungstenite::Error;
    let mut request = url.into_client_request().unwrap();
    if let Some(origin) = origin {
        request.headers_mut().insert("origin", HeaderValue::from_str(origin).unwrap());
    }
    match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request)).await.expect("answered in time") {
        Ok((socket, _)) => Ok(socket),
        Err(Error::Http(response)) => Err(response.status().as_u16()),
        Err(other) => panic!("{origin:?}: failed without an HTTP status: {other}"),
    }
}

#[tokio::test]
async fn only_the_stacks_own_page_and_allowed_origins_may_open_the_socket() {
    let dir = scratch("origin_and_host_upgrade");
    let stack = Stack::start(&dir.join("chat.db"), &["--allowed-origin", "https://chat.example"]).await;
    let address = host_of(&stack.http_url);
    let port = address.rsplit(':').next().unwrap();

    let accepted = [
        None,
        Some(format!("http://127.0.0.1:{port}")),
        Some(format!("http://localhost:{port}")),
        Some("https://chat.example".to_owned()),
    ];
    for origin in &accepted {
        let socket =
            open_from(&stack.ws_url, origin.as_deref()).await.unwrap_or_else(|status| panic!("{origin:?}: {status}"));
        let mut client = Client { socket };
        client.send_json(json!({"action": "who"})).await;
        let who = client.until(|f| f["kind"] == "presence").await;
        assert!(who["count"].as_u64().is_some_and(|n| n >= 1), "{origin:?}: {who}");
    }

    let refused = [
        "https://evil.example".to_owned(),
        format!("http://evil.example:{port}"),
        "http://127.0.0.1:1".to_owned(),
        format!("https://127.0.0.1:{port}"),
        "https://chat.example:8443".to_owned(),
        "null".to_owned(),
    ];
    for origin in &refused {
        assert_eq!(open_from(&stack.ws_url, Some(origin)).await.err(), Some(403), "{origin}");
    }

    // Refused before the authorizer or $connect ran: counted as refused, never connected.
    let (_, metrics) = exchange(&address, "GET", "/metrics", &address, "", "").await;
    assert_eq!(refused_upgrades(&metrics, 403), refused.len(), "{metrics}");
    let connects = format!("chat_connects_total{{status=\"200\"}} {}", accepted.len());
    assert!(metrics.lines().any(|l| l == connects), "{metrics}");
    stack.stop().await;
}

#[tokio::test]
async fn only_the_stacks_own_page_may_mint_development_tokens() {
    let dir = scratch("origin_and_host_token");
    let stack = Stack::start(&dir.join("chat.db"), &["--jwt-secret", SECRET]).await;
    let address = host_of(&stack.http_url);
    let port = address.rsplit(':').next().unwrap();
    let mint = |origin: Option<String>| {
        let address = address.clone();
        async move {
            let origin = origin.map(|o| format!("Origin: {o}\r\n")).unwrap_or_default();
            let extra = format!("Content-Type: application/json\r\n{origin}");
            let body = json!({"name": "Ada"}).to_string();
            exchange(&address, "POST", "/dev/token", &address, &extra, &body).await
        }
    };
    for origin in [None, Some(format!("http://127.0.0.1:{port}")), Some(format!("http://localhost:{port}"))] {
        let (status, response) = mint(origin.clone()).await;
        assert_eq!(status, 200, "{origin:?}: {response}");
        assert!(response.contains("\"token\""), "{response}");
    }
    for origin in ["https://evil.example", "null", "http://127.0.0.1:1"] {
        let (status, response) = mint(Some(origin.to_owned())).await;
        assert_eq!(status, 403, "{origin}: {response}");
        assert!(!response.contains("\"token\""), "{response}");
        assert!(response.contains("may not use this server"), "{response}");
    }
    stack.stop().await;
}
