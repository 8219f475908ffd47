//! Webhooks on the real binary (issue #26, `--webhook URL --webhook-secret S`): a
//! receiver in the test (a minimal HTTP/1.1 server on 127.0.0.1) sees every event
//! of a scripted session (3 joins, 10 lines, 3 leaves) exactly once, in log order
//! per room, each HMAC verified; a refused delivery is retried before the room's
//! next event; a receiver that takes 5 s per call leaves the chat's p99 within
//! 2× + 20 ms of a run without webhooks while the full queue drops and counts;
//! in DynamoDB mode (moto) the events come from a second stream reader.

use crate::common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

const SECRET: &str = "whsec-local-test";

/// One test at a time: the latency test's two runs must not share the CPU with the other test.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// One request the receiver got.
#[derive(Clone, Debug)]
struct Received {
    path: String,
    content_type: String,
    signature: String,
    body: Vec<u8>,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }
}

/// A webhook receiver: records each request as it arrives, then answers 200
/// after `delay` (or, if it fails first attempts, 503 to an event's first
/// request). Stops (its task aborted) when dropped.
struct Receiver {
    url: String,
    seen: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    async fn start(delay: Duration) -> Receiver {
        Self::start_with(delay, false).await
    }

    async fn start_with(delay: Duration, fail_first_attempts: bool) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/events", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recorded = seen.clone();
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((tcp, _)) = listener.accept().await {
                connections.spawn(serve(tcp, recorded.clone(), delay, fail_first_attempts));
            }
        });
        Receiver { url, seen, task }
    }

    fn received(&self) -> Vec<Received> {
        self.seen.lock().unwrap().clone()
    }
}

/// Answers the requests of one kept-alive connection in turn.
async fn serve(tcp: tokio::net::TcpStream, seen: Arc<Mutex<Vec<Received>>>, delay: Duration, fail_first: bool) {
    let mut tcp = BufReader::new(tcp);
    loop {
        let mut request_line = String::new();
        if tcp.read_line(&mut request_line).await.unwrap_or(0) == 0 {
            return;
        }
        let path = request_line.split(' ').nth(1).unwrap_or_default().to_owned();
        let (mut length, mut content_type, mut signature) = (0, String::new(), String::new());
        loop {
            let mut line = String::new();
            tcp.read_line(&mut line).await.unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').unwrap();
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse().unwrap(),
                "content-type" => content_type = value.trim().to_owned(),
                "x-chat-signature" => signature = value.trim().to_owned(),
                _ => {}
            }
        }
        let mut body = vec![0; length];
        tcp.read_exact(&mut body).await.unwrap();
        let received = Received { path, content_type, signature, body };
        let first = {
            let mut seen = seen.lock().unwrap();
            let id = received.json()["id"].clone();
            let first = !seen.iter().any(|earlier| earlier.json()["id"] == id);
            seen.push(received);
            first
        };
        tokio::time::sleep(delay).await;
        let answer: &[u8] = if fail_first && first {
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n"
        } else {
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
        };
        if tcp.get_mut().write_all(answer).await.is_err() {
            return;
        }
    }
}

/// Checks `X-Chat-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`
/// as a receiver would, with a 5-minute tolerance on `t`.
fn verify(received: &Received, secret: &str) -> Result<(), String> {
    let mut t = None;
    let mut v1 = None;
    for part in received.signature.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => t = value.parse::<i64>().ok(),
            Some(("v1", value)) => v1 = Some(value.to_owned()),
            _ => {}
        }
    }
    let (t, v1) = t.zip(v1).ok_or_else(|| format!("no t or v1 in {:?}", received.signature))?;
    if (chrono::Utc::now().timestamp() - t).abs() > 300 {
        return Err(format!("t={t} is stale"));
    }
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(&received.body);
    let expected: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    if expected == v1 { Ok(()) } else { Err(format!("v1 {v1} is not {expected}")) }
}

/// The stack's /metrics text.
async fn scrape(stack: &Stack) -> String {
    http_get(&host_of(&stack.ws_url), "/metrics").await
}

/// One sample of a scrape (0 when absent), e.g. `chat_webhook_dropped_total{reason="queue_full"}`.
fn sample(scrape: &str, name: &str) -> f64 {
    scrape
        .lines()
        .find_map(|line| line.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .map_or(0.0, |value| value.trim().parse().unwrap())
}

#[tokio::test]
async fn a_scripted_session_reaches_the_receiver_once_per_event_in_log_order_and_signed() {
    let _serial = SERIAL.lock().await;
    let receiver = Receiver::start(Duration::ZERO).await;
    let dir = scratch("webhooks-session");
    let db = dir.join("chat.db");
    let stack = Stack::start(&db, &["--webhook", &receiver.url, "--webhook-secret", SECRET]).await;
    let room_url = format!("{}?room=ops", stack.ws_url);

    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(Client::connect(&room_url).await);
    }
    for i in 0..10 {
        let text = format!("line {i}");
        clients[i % 3].say(&text).await;
        // Every member has it before the next line: the log order is the script's.
        for client in &mut clients {
            client.chat(&text).await;
        }
    }
    for mut client in clients {
        client.socket.close(None).await.ok();
        drop(client);
    }
    let expected = 1 + 3 + 10 + 3 + 1;
    eventually(|| receiver.received().len() >= expected, "every event at the receiver").await;
    // Nothing more comes: the stack's queue is empty and both mappings caught up.
    eventually(|| receiver.received().len() == expected, "no extra event").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let received = receiver.received();
    assert_eq!(received.len(), expected, "exactly once each");

    for request in &received {
        assert_eq!(request.path, "/events");
        assert_eq!(request.content_type, "application/json");
        verify(request, SECRET).unwrap_or_else(|error| panic!("{error}: {}", String::from_utf8_lossy(&request.body)));
        let mut forged = request.clone();
        forged.body.extend_from_slice(b" ");
        assert!(verify(&forged, SECRET).is_err(), "a changed body fails");
        assert!(verify(request, "another-secret").is_err(), "another secret fails");
    }
    let events: Vec<Value> = received.iter().map(Received::json).collect();
    let kinds: Vec<&str> = events.iter().map(|e| e["detail-type"].as_str().unwrap()).collect();
    let count = |kind: &str| kinds.iter().filter(|k| **k == kind).count();
    assert_eq!(
        ["chat.room.occupied", "chat.member.joined", "chat.message.created", "chat.member.left", "chat.room.vacated"]
            .map(count),
        [1, 3, 10, 3, 1],
        "{kinds:?}"
    );
    assert!(events.iter().all(|e| e["source"] == "websocket-chat" && e["detail"]["room"] == "ops"), "{events:?}");
    let ids: Vec<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    let mut unique = ids.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "every id once");

    // In order per room: the log's events arrive in the log's order...
    let logged: Vec<String> = {
        let db = rusqlite::Connection::open(&db).unwrap();
        let mut query = db
            .prepare("SELECT message_id FROM message_history WHERE room = 'ops' AND kind IN ('chat','join','leave') ORDER BY seq")
            .unwrap();
        query.query_map([], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap()
    };
    let from_log: Vec<&str> =
        events.iter().filter(|e| e["detail"]["messageId"].is_string()).map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(from_log, logged, "the log's order");
    let texts: Vec<&str> = events.iter().filter_map(|e| e["detail"]["message"].as_str()).collect();
    assert_eq!(texts, (0..10).map(|i| format!("line {i}")).collect::<Vec<_>>());
    // ...and the counter's events in the counter's: occupied (0 → 1) before vacated (1 → 0).
    let position = |kind: &str| kinds.iter().position(|k| *k == kind).unwrap();
    assert!(position("chat.room.occupied") < position("chat.room.vacated"));
    assert_eq!(events[position("chat.room.occupied")]["detail"]["members"], 1);
    assert_eq!(events[position("chat.room.vacated")]["detail"]["members"], 0);

    let metrics = scrape(&stack).await;
    assert_eq!(sample(&metrics, "chat_webhook_delivered_total"), expected as f64);
    assert_eq!(sample(&metrics, "chat_webhook_retried_total"), 0.0);
    for reason in ["queue_full", "gave_up", "refused"] {
        let name = format!("chat_webhook_dropped_total{{reason=\"{reason}\"}} 0");
        assert!(metrics.lines().any(|line| line == name), "{name} is shown, at 0");
    }
    stack.stop().await;
}

#[tokio::test]
async fn a_failed_delivery_is_retried_before_the_rooms_next_event() {
    let _serial = SERIAL.lock().await;
    let receiver = Receiver::start_with(Duration::ZERO, true).await;
    let dir = scratch("webhooks-retry");
    let stack = Stack::start(&dir.join("chat.db"), &["--webhook", &receiver.url, "--webhook-secret", SECRET]).await;
    let mut client = Client::connect(&format!("{}?room=retry", stack.ws_url)).await;
    for i in 0..3 {
        client.say(&format!("line {i}")).await;
        client.chat(&format!("line {i}")).await;
    }
    client.socket.close(None).await.ok();
    drop(client);
    // occupied, joined, 3 lines, left, vacated: each refused once (503), then accepted.
    let expected = 7;
    eventually(|| receiver.received().len() >= 2 * expected, "every event twice at the receiver").await;
    let received = receiver.received();
    assert_eq!(received.len(), 2 * expected, "no third attempt");
    let ids: Vec<String> = received.iter().map(|r| r.json()["id"].as_str().unwrap().to_owned()).collect();
    for pair in ids.chunks(2) {
        assert_eq!(pair[0], pair[1], "the retry comes before the room's next event: {ids:?}");
    }
    for request in &received {
        verify(request, SECRET).unwrap();
    }
    let texts: Vec<String> =
        received.iter().step_by(2).filter_map(|r| r.json()["detail"]["message"].as_str().map(str::to_owned)).collect();
    assert_eq!(texts, ["line 0", "line 1", "line 2"]);
    let metrics = scrape(&stack).await;
    assert_eq!(sample(&metrics, "chat_webhook_delivered_total"), expected as f64);
    assert_eq!(sample(&metrics, "chat_webhook_retried_total"), expected as f64);
    stack.stop().await;
}

/// Lines sent before the timed ones, so both runs are measured warm.
const WARM_UP: usize = 20;

/// The send → receive time of each of `lines` chat lines from one client to
/// another (after [`WARM_UP`] untimed ones), and the two clients, still connected.
async fn send_to_receive(ws_url: &str, lines: usize) -> (Vec<Duration>, [Client; 2]) {
    let mut sender = Client::connect(ws_url).await;
    let mut reader = Client::connect(ws_url).await;
    let mut times = Vec::with_capacity(lines);
    for i in 0..WARM_UP + lines {
        let text = format!("timed {i}");
        let sent = Instant::now();
        sender.say(&text).await;
        reader.chat(&text).await;
        if i >= WARM_UP {
            times.push(sent.elapsed());
        }
    }
    (times, [sender, reader])
}

fn p99(mut times: Vec<Duration>) -> Duration {
    times.sort_unstable();
    times[(times.len() * 99).div_ceil(100) - 1]
}

#[tokio::test]
async fn a_receiver_that_takes_5_s_per_call_does_not_slow_the_chat_and_the_full_queue_drops_and_counts() {
    const LINES: usize = 200;
    const QUEUE: usize = 8;
    let _serial = SERIAL.lock().await;
    let dir = scratch("webhooks-slow");
    // Lines as fast as they are answered: no per-user rate limit.
    let plain = Stack::start(&dir.join("plain.db"), &["--send-rate", "off"]).await;
    let without = p99(send_to_receive(&plain.ws_url, LINES).await.0);
    plain.stop().await;

    let receiver = Receiver::start(Duration::from_secs(5)).await;
    let queue = QUEUE.to_string();
    let args =
        ["--send-rate", "off", "--webhook", &receiver.url, "--webhook-secret", SECRET, "--webhook-queue", &queue];
    let stack = Stack::start(&dir.join("hooked.db"), &args).await;
    let (times, _connected) = send_to_receive(&stack.ws_url, LINES).await;
    let with = p99(times);
    let bound = without * 2 + Duration::from_millis(20);
    eprintln!("send → receive p99 over {LINES} lines: {without:?} without webhooks, {with:?} with a 5 s receiver");
    assert!(with <= bound, "p99 {with:?} with a slow receiver, over {bound:?} (2 × {without:?} + 20 ms)");

    // 1 occupied + 2 joins + 220 lines (the clients stay), into a queue of 8 that drains one per 5 s.
    let events = (3 + WARM_UP + LINES) as f64;
    let dropped = "chat_webhook_dropped_total{reason=\"queue_full\"}";
    let mut metrics = scrape(&stack).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while sample(&metrics, dropped) < events - QUEUE as f64 - 2.0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        metrics = scrape(&stack).await;
    }
    // One scrape: the three add up at one moment.
    let counted = sample(&metrics, dropped);
    let queued = sample(&metrics, "chat_webhook_queued");
    let delivered = sample(&metrics, "chat_webhook_delivered_total");
    eprintln!("dropped {counted}, queued {queued}, delivered {delivered} of {events} events");
    assert!(queued <= QUEUE as f64, "the queue stays within its bound: {queued}");
    assert_eq!(counted + queued + delivered, events, "every event is delivered, waiting or counted as dropped");
    assert!(counted >= events - QUEUE as f64 - 2.0, "dropped {counted}");
    assert!(receiver.received().len() <= 2, "at most one call in flight per room and the first done");
    stack.stop().await;
}

/// DynamoDB mode (moto): the events function reads MessageHistory's real
/// stream with a reader of its own (LATEST), and Memberships' (the room
/// counters, kept in the same transaction as each membership) for occupied.
#[tokio::test]
async fn dynamodb_mode_posts_the_message_streams_events_from_a_second_reader() {
    let _serial = SERIAL.lock().await;
    let moto = Moto::start().await;
    let receiver = Receiver::start(Duration::ZERO).await;
    let dir = scratch("webhooks-dynamodb");
    let args =
        ["--dynamodb-endpoint", &moto.url, "--create-tables", "--webhook", &receiver.url, "--webhook-secret", SECRET];
    let stack = Stack::start(&dir.join("unused.db"), &args).await;
    let mut client = Client::connect(&format!("{}?room=moto", stack.ws_url)).await;
    client.say("through moto").await;
    // The broadcaster's reader still gets every record: the line is delivered.
    client.chat("through moto").await;
    eventually(|| receiver.received().len() >= 3, "the room occupied, the join and the line at the receiver").await;
    let events: Vec<Value> = receiver.received().iter().map(Received::json).collect();
    let kinds: Vec<&str> = events.iter().map(|e| e["detail-type"].as_str().unwrap()).collect();
    // Two streams: each in its order, the two interleaved as they come.
    let logged: Vec<&str> = kinds.iter().copied().filter(|k| *k != "chat.room.occupied").collect();
    assert_eq!(logged, ["chat.member.joined", "chat.message.created"], "{kinds:?}");
    assert_eq!(kinds.iter().filter(|k| **k == "chat.room.occupied").count(), 1, "{kinds:?}");
    let line = events.iter().position(|e| e["detail-type"] == "chat.message.created").unwrap();
    assert_eq!(events[line]["detail"]["message"], "through moto");
    for received in receiver.received() {
        verify(&received, SECRET).unwrap();
    }
    stack.stop().await;
}
