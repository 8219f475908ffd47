//! What an operator sees of the local stack: `GET /metrics` (after a scripted
//! chat, the Prometheus text parses and its counters equal what the test did),
//! the startup banner and `--version`.

use crate::common;

use std::time::Duration;

use common::{Client, Stack, WAIT, host_of, http_get, scratch};
use prometheus_parse::{Sample, Scrape, Value};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// The stack's metrics, parsed. Strict: the parser skips lines it cannot read,
/// so every line is also checked against the text format's grammar first.
pub(crate) async fn scrape(stack: &Stack) -> Scrape {
    let response = http_get(&host_of(&stack.http_url), "/metrics").await;
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.to_ascii_lowercase().contains("content-type: text/plain; version=0.0.4"), "{head}");
    let mut typed = Vec::new();
    for line in body.lines().filter(|l| !l.is_empty()) {
        if let Some(declared) = line.strip_prefix("# TYPE ") {
            let (name, kind) = declared.split_once(' ').expect("# TYPE name kind");
            assert!(valid_name(name), "{line:?}");
            assert!(["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind), "{line:?}");
            typed.push(name.to_owned());
        } else if !line.starts_with("# HELP ") {
            let name = check_sample(line);
            let family = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name);
            assert!(typed.iter().any(|t| t == name || t == family), "{line:?} has a # TYPE before it");
        }
    }
    Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).expect("Prometheus text")
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// `name{label="value",...} number`: checks one sample line, returning its name.
fn check_sample(line: &str) -> &str {
    let (series, number) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value in {line:?}"));
    let parsed = number.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&number);
    assert!(parsed, "value of {line:?}");
    let (name, labels) = match series.split_once('{') {
        Some((name, rest)) => (name, rest.strip_suffix('}').unwrap_or_else(|| panic!("unclosed labels in {line:?}"))),
        None => (series, ""),
    };
    assert!(valid_name(name), "name in {line:?}");
    let mut rest = labels;
    while !rest.is_empty() {
        let (key, value) = rest.split_once("=\"").unwrap_or_else(|| panic!("label in {line:?}"));
        assert!(valid_name(key), "label name in {line:?}");
        let end = value.find('"').unwrap_or_else(|| panic!("unterminated label in {line:?}"));
        rest = value[end + 1..].strip_prefix(',').unwrap_or(&value[end + 1..]);
    }
    name
}

/// The value of the sample `name` with exactly `labels` (0 if absent, as a
/// counter never incremented is not rendered).
pub(crate) fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let matches = |sample: &&Sample| {
        sample.metric == name
            && sample.labels.len() == labels.len()
            && labels.iter().all(|(key, want)| sample.labels.get(key) == Some(*want))
    };
    match scrape.samples.iter().find(matches).map(|s| &s.value) {
        None => 0.0,
        Some(Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v)) => *v,
        Some(other) => panic!("{name} is not a single value: {other:?}"),
    }
}

/// Polls until the broadcaster has handled `records` stream records.
async fn until_broadcast(stack: &Stack, records: f64) -> Scrape {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let scrape = scrape(stack).await;
        let done = value(&scrape, "chat_stream_records_total", &[]);
        if done >= records {
            assert_eq!(done, records, "more records than the test wrote");
            return scrape;
        }
        assert!(tokio::time::Instant::now() < deadline, "only {done} of {records} records broadcast in time");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn counters_equal_what_a_scripted_chat_did() {
    let dir = scratch("metrics");
    let stack = Stack::start(&dir.join("chat.db"), &[]).await;
    let lobby = stack.ws_url.clone();
    let side_room = format!("{}?room=side", stack.ws_url);

    // Connect one at a time, each join broadcast before the next connection, so
    // who receives which join is fixed: a's reaches nobody, b's reaches a, c's a and b.
    let mut a = Client::connect(&lobby).await;
    until_broadcast(&stack, 1.0).await;
    let mut b = Client::connect(&lobby).await;
    a.until(|f| f["kind"] == "join").await;
    let mut c = Client::connect(&lobby).await;
    for client in [&mut a, &mut b] {
        client.until(|f| f["kind"] == "join").await;
    }
    let mut d = Client::connect(&side_room).await;
    until_broadcast(&stack, 4.0).await;

    // 3 lines in the lobby (3 recipients each, the sender included), 1 in the side room.
    a.say("one").await;
    a.say("two").await;
    b.say("three").await;
    d.say("aside").await;
    for client in [&mut a, &mut b, &mut c] {
        // The two senders' lines may be logged in either order.
        let mut seen = Vec::new();
        while seen.len() < 3 {
            let line = client.until(|f| f["kind"] == "chat").await;
            seen.push(line["text"].as_str().unwrap().to_owned());
        }
        seen.sort();
        assert_eq!(seen, ["one", "three", "two"]);
    }
    d.chat("aside").await;

    // b leaves with 1000; a and c hear of it.
    let normal = CloseFrame { code: CloseCode::Normal, reason: "bye".into() };
    b.socket.close(Some(normal)).await.unwrap();
    for client in [&mut a, &mut c] {
        client.until(|f| f["kind"] == "leave").await;
    }

    // 4 joins + 4 lines + 1 leave.
    let metrics = until_broadcast(&stack, 9.0).await;
    // a: nobody, b: a, c: a and b, d: nobody in its room.
    let joins = 1 + 2;
    let lines = 3 * 3 + 1;
    let leave = 2;
    assert_eq!(value(&metrics, "chat_deliveries_total", &[]), f64::from(joins + lines + leave));
    assert_eq!(value(&metrics, "chat_posts_total", &[("outcome", "ok")]), f64::from(joins + lines + leave));
    for outcome in ["gone", "throttled", "failed"] {
        assert_eq!(value(&metrics, "chat_posts_total", &[("outcome", outcome)]), 0.0, "{outcome}");
    }
    assert_eq!(value(&metrics, "chat_messages_appended_total", &[("kind", "chat")]), 4.0);
    assert_eq!(value(&metrics, "chat_messages_appended_total", &[("kind", "join")]), 4.0);
    assert_eq!(value(&metrics, "chat_messages_appended_total", &[("kind", "leave")]), 1.0);
    assert_eq!(value(&metrics, "chat_connects_total", &[("status", "200")]), 4.0);
    assert_eq!(value(&metrics, "chat_disconnects_total", &[("code", "1000")]), 1.0);
    // a and c in the lobby, d in the side room: one number, no room names.
    assert_eq!(value(&metrics, "chat_connections_open", &[]), 3.0);
    assert_eq!(value(&metrics, "chat_stream_lag_records", &[]), 0.0);
    for quiet in ["chat_stream_batches_retried_total", "chat_stream_batches_given_up_total"] {
        assert_eq!(value(&metrics, quiet, &[]), 0.0, "{quiet}");
    }
    assert!(metrics.samples.iter().all(|s| s.metric != "chat_handler_errors_total"), "no handler failed");

    // The fan-out histogram saw every invocation: its count is the number of
    // batches (at least one, at most one per record), its buckets cumulative.
    let histogram =
        metrics.samples.iter().find(|s| s.metric == "chat_fanout_duration_seconds").expect("the fan-out histogram");
    let Value::Histogram(buckets) = &histogram.value else { panic!("a histogram: {histogram:?}") };
    let total = buckets.last().expect("buckets").count;
    assert!((1.0..=9.0).contains(&total), "{total} invocations");
    assert!(buckets.windows(2).all(|w| w[0].count <= w[1].count), "{buckets:?}");
    assert!(value(&metrics, "chat_stream_lag_seconds", &[]) < 60.0);

    // A refused upgrade and a handler-level refusal show up by status.
    let refused = tokio_tungstenite::connect_async(format!("{}?room=no%20spaces", stack.ws_url)).await;
    assert!(refused.is_err(), "a bad room is refused");
    let metrics = scrape(&stack).await;
    assert_eq!(value(&metrics, "chat_connects_total", &[("status", "400")]), 1.0);
    stack.stop().await;
}

#[tokio::test]
async fn metrics_name_no_room_and_are_served_to_loopback() {
    let dir = scratch("metrics_rooms");
    let stack = Stack::start(&dir.join("chat.db"), &[]).await;
    let mut clients = Vec::new();
    for room in ["secret-room-1", "secret-room-2", "secret-room-3"] {
        let mut client = Client::connect(&format!("{}?room={room}", stack.ws_url)).await;
        client.say(&format!("hello {room}")).await;
        client.chat(&format!("hello {room}")).await;
        clients.push(client);
    }
    // Three joins and three lines broadcast; the scrape (from 127.0.0.1) is served.
    let metrics = until_broadcast(&stack, 6.0).await;
    assert_eq!(value(&metrics, "chat_connections_open", &[]), 3.0);
    let text = http_get(&host_of(&stack.http_url), "/metrics").await;
    assert!(!text.contains("secret-room"), "a room name in /metrics:\n{text}");
    assert!(!text.contains("room="), "a room label in /metrics:\n{text}");
    stack.stop().await;
}

#[tokio::test]
async fn a_bad_metrics_host_or_send_budget_stops_the_stack_with_what_it_takes() {
    for (flag, value, says) in [
        ("--metrics-host", "localhost", "not `any`, an IP address or an address block"),
        ("--metrics-host", "10.0.0.0/40", "not `any`, an IP address or an address block"),
        ("--send-budget", "4 MB", "unknown unit"),
        ("--send-budget", "1000", "cannot hold the largest frame"),
    ] {
        let output = tokio::process::Command::new(common::binary())
            .args(["--port", "0", "--db", ":memory:", flag, value])
            .output()
            .await
            .unwrap();
        assert!(!output.status.success(), "{flag} {value} was accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(says) && stderr.contains(flag), "{flag} {value}: {stderr}");
    }
}

#[tokio::test]
async fn the_banner_lists_every_url_and_each_answers() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let dir = scratch("banner");
    let mut child = tokio::process::Command::new(common::binary())
        .args(["--port", "0", "--db"])
        .arg(dir.join("chat.db"))
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start chat-local");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut banner = std::collections::BTreeMap::new();
    while !banner.contains_key("version") {
        let line = tokio::time::timeout(WAIT, lines.next_line()).await.expect("the banner in time").unwrap();
        let line = line.expect("the banner ends with the version");
        let (label, value) = line.split_once(':').expect("label: value");
        banner.insert(label.to_owned(), value.trim().to_owned());
    }
    let version = format!("chat-local {}", env!("CARGO_PKG_VERSION"));
    assert_eq!(banner["version"], version);
    assert_eq!(banner["signed by"], "AWS SigV4, access key id test (the default test/test pair)");

    let websocket = &banner["websocket"];
    let host = host_of(websocket);
    let mut client = Client::connect(websocket).await;
    client.say("hello").await;
    client.chat("hello").await;
    let page = http_get(&host, "/").await;
    assert!(page.starts_with("HTTP/1.1 200") && page.contains("<html"), "the web chat");
    assert_eq!(banner["web chat"], format!("http://{host}/"));
    assert_eq!(banner["metrics"], format!("http://{host}/metrics"));
    assert!(http_get(&host, "/metrics").await.contains("chat_connections_open 1"));
    let template = format!("http://{host}/dev/@connections/{{connection_id}}");
    assert_eq!(banner["@connections"], template);
    // Unsigned, so refused — but by the @connections API, in AWS's shape.
    let refused = http_get(&host, "/dev/@connections/abc").await;
    assert!(refused.contains("Missing Authentication Token"), "{refused}");
    let publish = format!("POST http://{host}/rooms/{{room}}/messages (SigV4, service execute-api, region us-east-1)");
    assert_eq!(banner["publish"], publish);
    let unsigned = common::http_post_json(&host, "/rooms/ops/messages", &serde_json::json!({"message": "x"})).await;
    assert_eq!(
        unsigned,
        (403, serde_json::json!({"message": "Missing Authentication Token"})),
        "signed like @connections"
    );
    child.kill().await.unwrap();

    let output = tokio::process::Command::new(common::binary()).arg("--version").output().await.unwrap();
    assert!(output.status.success());
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), version);
}
