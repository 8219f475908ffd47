//! Webhooks: the local stand-in for the events function's EventBridge bus
//! (`--webhook URL`). Each event is POSTed on its own, signed, retried with a
//! capped back-off, in order within its room; rooms are independent.
//!
//! The chat never waits on the receiver: [`Webhook::enqueue`] only puts the
//! event on a bounded in-memory queue and returns. Past `--webhook-queue`
//! events waiting, new ones are dropped, counted
//! (`chat_webhook_dropped_total{reason="queue_full"}`) and logged, so a slow or
//! down receiver costs the chat nothing. Delivery is at least once while the
//! process runs: what is still queued when it stops is lost (the stream
//! checkpoint moved when it was queued), and a receiver dedupes by the event's `id`.
//!
//! The signature is Stripe's scheme: `X-Chat-Signature: t=<unix seconds>,v1=<hex
//! HMAC-SHA256(secret, "<t>.<body>")>`, over the exact bytes sent, signed anew
//! for every attempt; a receiver recomputes it and refuses stale `t`s (replays).

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use chat_aws::http_client::{HttpClient, http_client};
use chat_core::broadcaster::RetryPolicy;
use chat_core::outbound::{EventSink, OutboundEvent, SinkError};
use hmac::{Hmac, KeyInit, Mac};
use http_body_util::Full;
use tokio::sync::Semaphore;

use crate::metrics;

/// The header that carries the signature.
pub const SIGNATURE_HEADER: &str = "x-chat-signature";

/// Events waiting for delivery, all rooms together, before new ones are dropped.
pub const DEFAULT_QUEUE: u32 = 1000;
/// One attempt's limit, connect included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests in flight at once, all rooms together (one per room at most).
const MAX_IN_FLIGHT: usize = 16;
/// Attempts of one event before it is given up: back-off with full jitter under
/// a ceiling of 400 ms doubling to 10 s (at most ~38 s of waiting in all, plus
/// the attempts' own time).
const RETRY: RetryPolicy =
    RetryPolicy { max_attempts: 8, base_delay: Duration::from_millis(200), max_delay: Duration::from_secs(10) };

/// A webhook signing secret: never printed, not even by `{:?}`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Refuses an empty secret: it would sign nothing anyone could not forge.
    pub fn new(secret: &str) -> Result<Self, String> {
        if secret.is_empty() {
            return Err("--webhook-secret is empty: give the secret the receiver verifies signatures with".into());
        }
        Ok(Self(secret.to_owned()))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(redacted)")
    }
}

/// Everything `--webhook*` says.
#[derive(Clone, Debug)]
pub struct WebhookSettings {
    pub url: http::Uri,
    pub secret: Secret,
    /// Events waiting, all rooms together, before new ones are dropped.
    pub queue: usize,
    /// One attempt's limit.
    pub timeout: Duration,
}

/// `--webhook`: an absolute `http://` or `https://` URL with a host, and no
/// credentials in it (the secret signs; the URL is logged and printed).
pub fn parse_url(text: &str) -> Result<http::Uri, String> {
    let fix = "give the receiver's full address, e.g. http://127.0.0.1:9000/events";
    let uri: http::Uri = text.parse().map_err(|_| format!("{text:?} is not a URL: {fix}"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none_or(str::is_empty) {
        return Err(format!("{text:?} is not an http:// or https:// URL with a host: {fix}"));
    }
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(format!("{text:?} has credentials in it: drop them; requests are signed with --webhook-secret"));
    }
    Ok(uri)
}

/// The `X-Chat-Signature` value for `body` sent at `t` (unix seconds).
pub fn signature(secret: &Secret, t: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.0.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("t={t},v1={hex}")
}

/// One event to deliver: its body, and what it is known by in the logs.
struct Job {
    id: String,
    body: Bytes,
}

/// The rooms with events waiting; a room is present exactly while its worker runs.
#[derive(Default)]
struct Queues {
    /// Events waiting or being delivered, all rooms together.
    queued: usize,
    rooms: HashMap<String, VecDeque<Job>>,
    /// Drops not logged yet, and when the last were: a down receiver under load
    /// drops thousands a second, logged once a second.
    unlogged_drops: u64,
    last_drop_log: Option<Instant>,
}

struct Inner {
    settings: WebhookSettings,
    client: HttpClient<Full<Bytes>>,
    queues: Mutex<Queues>,
    in_flight: Semaphore,
}

/// The delivery side of `--webhook`. Cheap to clone.
#[derive(Clone)]
pub struct Webhook(Arc<Inner>);

/// How one attempt ended.
enum Attempt {
    Delivered,
    /// The receiver refused it for good (a 4xx other than 408 and 429).
    Refused(http::StatusCode),
    /// Worth another try: a connection error, a timeout, a 5xx, 408 or 429.
    Failed(String),
}

impl Webhook {
    /// Trusts the system's root certificates for `https://` receivers.
    pub fn new(settings: WebhookSettings) -> std::io::Result<Self> {
        metrics::register_webhook();
        Ok(Self(Arc::new(Inner {
            settings,
            client: http_client()?,
            queues: Mutex::default(),
            in_flight: Semaphore::new(MAX_IN_FLIGHT),
        })))
    }

    pub fn settings(&self) -> &WebhookSettings {
        &self.0.settings
    }

    /// Queues `body` (the event `id`'s JSON) behind `room`'s earlier events and
    /// returns at once; `false` if the queue is full and it was dropped.
    pub fn enqueue(&self, room: &str, id: &str, body: Vec<u8>) -> bool {
        let mut queues = self.0.queues.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if queues.queued >= self.0.settings.queue {
            metrics::record_webhook_dropped("queue_full");
            queues.unlogged_drops += 1;
            if queues.last_drop_log.is_none_or(|last| last.elapsed() >= Duration::from_secs(1)) {
                let dropped = std::mem::take(&mut queues.unlogged_drops);
                queues.last_drop_log = Some(Instant::now());
                drop(queues);
                tracing::warn!(
                    room,
                    id,
                    dropped,
                    queue = self.0.settings.queue,
                    "webhook: queue full, events dropped (this one and those since the last such line)"
                );
            }
            return false;
        }
        queues.queued += 1;
        metrics::set_webhook_queued(queues.queued);
        let job = Job { id: id.to_owned(), body: body.into() };
        match queues.rooms.get_mut(room) {
            Some(waiting) => waiting.push_back(job),
            None => {
                queues.rooms.insert(room.to_owned(), VecDeque::from([job]));
                tokio::spawn(self.clone().work(room.to_owned()));
            }
        }
        true
    }

    /// Delivers `room`'s events one after another until none is left.
    async fn work(self, room: String) {
        loop {
            let job = {
                let mut queues = self.0.queues.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                match queues.rooms.get_mut(&room).and_then(VecDeque::pop_front) {
                    Some(job) => job,
                    None => {
                        queues.rooms.remove(&room);
                        return;
                    }
                }
            };
            self.deliver(&room, &job).await;
            let mut queues = self.0.queues.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            queues.queued -= 1;
            metrics::set_webhook_queued(queues.queued);
        }
    }

    /// Tries `job` until it is delivered, refused or out of attempts.
    async fn deliver(&self, room: &str, job: &Job) {
        for attempt in 1..=RETRY.max_attempts {
            let outcome = {
                let _permit = self.0.in_flight.acquire().await.expect("the semaphore is never closed");
                self.attempt(job).await
            };
            match outcome {
                Attempt::Delivered => {
                    metrics::record_webhook_delivered();
                    return;
                }
                Attempt::Refused(status) => {
                    tracing::warn!(room, id = job.id, %status, "webhook: the receiver refused the event; not retried");
                    metrics::record_webhook_dropped("refused");
                    return;
                }
                Attempt::Failed(error) if attempt < RETRY.max_attempts => {
                    let delay = RETRY.delay(attempt);
                    tracing::info!(room, id = job.id, attempt, %error, ?delay, "webhook: retrying");
                    metrics::record_webhook_retried();
                    tokio::time::sleep(delay).await;
                }
                Attempt::Failed(error) => {
                    tracing::error!(room, id = job.id, attempt, %error, "webhook: event given up after its attempts");
                    metrics::record_webhook_dropped("gave_up");
                }
            }
        }
    }

    async fn attempt(&self, job: &Job) -> Attempt {
        let settings = &self.0.settings;
        let t = chrono::Utc::now().timestamp();
        let request = http::Request::post(settings.url.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::USER_AGENT, concat!("chat-local/", env!("CARGO_PKG_VERSION")))
            .header(SIGNATURE_HEADER, signature(&settings.secret, t, &job.body))
            .body(Full::new(job.body.clone()));
        let request = match request {
            Ok(request) => request,
            Err(error) => return Attempt::Failed(format!("cannot build the request: {error}")),
        };
        let exchange = async {
            let response = self.0.client.request(request).await.map_err(|e| format!("request failed: {e}"))?;
            let status = response.status();
            // Read the (small) answer so the connection can be reused.
            http_body_util::BodyExt::collect(http_body_util::Limited::new(response.into_body(), 64 * 1024)).await.ok();
            Ok::<_, String>(status)
        };
        match tokio::time::timeout(settings.timeout, exchange).await {
            Err(_) => Attempt::Failed(format!("no answer within {:?}", settings.timeout)),
            Ok(Err(error)) => Attempt::Failed(error),
            Ok(Ok(status)) if status.is_success() => Attempt::Delivered,
            Ok(Ok(status)) if status.is_client_error() && !matches!(status.as_u16(), 408 | 429) => {
                Attempt::Refused(status)
            }
            Ok(Ok(status)) => Attempt::Failed(format!("HTTP {status}")),
        }
    }
}

/// The events function's sink: each event queued for its own POST. Never
/// fails: what the full queue cannot take is dropped and counted, not retried
/// through the stream (which would stall the mapping on a down receiver).
#[async_trait]
impl EventSink for Webhook {
    async fn put(&self, events: &[OutboundEvent]) -> Result<(), SinkError> {
        for event in events {
            self.enqueue(&event.detail.room, &event.id, event.to_json().into_bytes());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_the_time_a_dot_and_the_body_in_hex() {
        // Independently computed: printf '1733400000.{"id":"1"}' | openssl dgst -sha256 -hmac whsec_test
        let secret = Secret::new("whsec_test").unwrap();
        assert_eq!(
            signature(&secret, 1_733_400_000, br#"{"id":"1"}"#),
            "t=1733400000,v1=16dd8595fc6b4bfa510a31d977fdb29e03f119dc4c5ee389bdaaf61d5ace9fdc"
        );
    }

    #[tokio::test]
    async fn a_full_queue_drops_at_once_while_the_receiver_hangs() {
        // A receiver that accepts connections and never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = parse_url(&format!("http://{}/events", listener.local_addr().unwrap())).unwrap();
        let hanging = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((tcp, _)) = listener.accept().await {
                held.push(tcp);
            }
        });
        let secret = Secret::new("s").unwrap();
        let webhook =
            Webhook::new(WebhookSettings { url, secret, queue: 3, timeout: Duration::from_secs(60) }).unwrap();
        let started = Instant::now();
        let taken: Vec<bool> =
            (0..8).map(|i| webhook.enqueue(["a", "b"][i % 2], &i.to_string(), b"{}".to_vec())).collect();
        assert_eq!(taken, [true, true, true, false, false, false, false, false]);
        tokio::task::yield_now().await;
        let event = chat_core::outbound::OutboundEvent::of_room_count("c", 0, 1, chrono::Utc::now(), "1").unwrap();
        assert!(webhook.put(&[event]).await.is_ok(), "a put never fails: the drop is counted");
        assert!(
            started.elapsed() < Duration::from_millis(200),
            "nothing waited on the receiver: {:?}",
            started.elapsed()
        );
        hanging.abort();
    }

    #[test]
    fn secrets_never_print() {
        let settings = WebhookSettings {
            url: parse_url("http://127.0.0.1:9/x").unwrap(),
            secret: Secret::new("hunter2-hunter2").unwrap(),
            queue: 1,
            timeout: DEFAULT_TIMEOUT,
        };
        assert!(!format!("{settings:?}").contains("hunter2"));
        assert!(Secret::new("").is_err());
    }

    #[test]
    fn webhook_urls_are_absolute_http_or_https_with_a_host_and_no_credentials() {
        for good in ["http://127.0.0.1:9000/events", "https://hooks.example.com/chat?x=1", "http://localhost/"] {
            assert!(parse_url(good).is_ok(), "{good}");
        }
        for bad in ["", "127.0.0.1:9000", "/events", "ftp://example.com/", "http://", "https://u:p@example.com/"] {
            let error = parse_url(bad).unwrap_err();
            assert_eq!(error.lines().count(), 1, "{error}");
            assert!(error.contains("e.g. http://") || error.contains("credentials"), "{bad}: {error}");
        }
    }
}
