//! `loadgen flood`: does one flooding client hurt everyone else? `users` clients
//! in one room each send a line every `line_every` (a normal pace, far under
//! the per-user limit) for `phase` and every client times each line's delivery
//! to all of them; then the same again while one more client (in the room for
//! both phases) sends as fast as the server answers it — a window of unanswered
//! lines, each answered by an ack or `Rate limited`. Same process, same stack,
//! the stack's default settings (its per-user limits included): the table puts
//! the two p99s side by side with the flooder's accepted and refused counts.
//!
//! Line texts are `flood-bench:<phase>:<user>:<seq>:<nanos since start>`, so
//! every delivery is attributed and timed with this process's monotonic clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::stream::SplitSink;
use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::{Mutex, Semaphore};
use tokio_tungstenite::tungstenite::Message;

use crate::load::{Socket, connect_all, tag_numbers, wait_for_deliveries};
use crate::stats::{Percentiles, micros_histogram, record_nanos};

const PREFIX: &str = "flood-bench:";

/// What to run.
#[derive(Clone, Debug, Serialize)]
pub struct FloodConfig {
    /// Clients in the room that each send at a normal pace.
    pub users: usize,
    /// Each user's time between two lines.
    pub line_every: Duration,
    /// Length of each phase (without, then with, the flooder).
    pub phase: Duration,
    /// The flooder's unanswered lines at most: it sends whenever an answer frees a slot.
    pub flooder_window: usize,
    pub connect_concurrency: usize,
    /// How long deliveries may stall after a phase before the rest count as lost.
    pub drain_timeout: Duration,
    pub progress: bool,
}

/// One phase, measured at the users.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PhaseReport {
    pub flooder: bool,
    /// Lines the users sent, and deliveries of them expected (each to every user).
    pub lines_sent: u64,
    pub expected_deliveries: u64,
    pub delivered: u64,
    pub lost: u64,
    /// Send → delivery, over every delivery of every user's line to every user.
    pub latency_ms: Percentiles,
    /// `Rate limited` answers the users got (a normal pace should get none).
    pub users_refused: u64,
    /// The flooder's lines sent, acked (stored) and refused (`Rate limited`).
    pub flooder_sent: u64,
    pub flooder_accepted: u64,
    pub flooder_refused: u64,
    /// The flooder's accepted lines per second of the phase.
    pub flooder_accepted_per_s: f64,
    /// The longest `retryAfterMs` the flooder was told.
    pub flooder_max_retry_after_ms: u64,
}

/// Both phases.
#[derive(Clone, Debug, Serialize)]
pub struct FloodReport {
    pub config: FloodConfig,
    pub without_flooder: PhaseReport,
    pub with_flooder: PhaseReport,
    /// p99 with the flooder ÷ p99 without.
    pub p99_ratio: f64,
}

/// Counters shared by the readers.
struct Shared {
    started: Instant,
    users: usize,
    /// Per phase: deliveries and latencies.
    delivered: [AtomicU64; 2],
    latencies: [std::sync::Mutex<Histogram<u64>>; 2],
    /// `Rate limited` answers to users, both phases.
    users_refused: AtomicU64,
    /// The sync line's deliveries.
    synced: AtomicU64,
    flooder_accepted: AtomicU64,
    flooder_refused: AtomicU64,
    flooder_max_retry: AtomicU64,
}

impl Shared {
    fn now_ns(&self) -> u64 {
        self.started.elapsed().as_nanos() as u64
    }

    /// A frame a user received.
    fn user_frame(&self, text: &str) {
        let Ok(frame) = serde_json::from_str::<serde_json::Value>(text) else { return };
        if frame["error"] == "Rate limited" {
            self.users_refused.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let Some(tag) = frame["text"].as_str().and_then(|t| t.strip_prefix(PREFIX)) else { return };
        if tag == "sync" {
            self.synced.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let Some([phase, _user, _seq, sent]) = tag_numbers::<4>(tag) else { return };
        let phase = (phase as usize).min(1);
        let mut latencies = self.latencies[phase].lock().unwrap_or_else(|p| p.into_inner());
        record_nanos(&mut latencies, self.now_ns().saturating_sub(sent));
        self.delivered[phase].fetch_add(1, Ordering::Relaxed);
    }

    /// A frame the flooder received; whether it answered one of its lines.
    fn flooder_frame(&self, text: &str) -> bool {
        let Ok(frame) = serde_json::from_str::<serde_json::Value>(text) else { return false };
        if frame.get("ack").is_some() {
            self.flooder_accepted.fetch_add(1, Ordering::Relaxed);
            true
        } else if frame["error"] == "Rate limited" {
            self.flooder_refused.fetch_add(1, Ordering::Relaxed);
            let wait = frame["retryAfterMs"].as_u64().unwrap_or(0);
            self.flooder_max_retry.fetch_max(wait, Ordering::Relaxed);
            true
        } else {
            false
        }
    }
}

type Sink = Arc<Mutex<SplitSink<Socket, Message>>>;

fn line(text: &str) -> Message {
    Message::text(serde_json::json!({"action": "sendmessage", "message": text}).to_string())
}

/// Runs both phases against the stack at `url`.
pub async fn run(url: &str, config: &FloodConfig) -> anyhow::Result<FloodReport> {
    let shared = Arc::new(Shared {
        started: Instant::now(),
        users: config.users,
        delivered: Default::default(),
        latencies: [std::sync::Mutex::new(micros_histogram()), std::sync::Mutex::new(micros_histogram())],
        users_refused: AtomicU64::new(0),
        synced: AtomicU64::new(0),
        flooder_accepted: AtomicU64::new(0),
        flooder_refused: AtomicU64::new(0),
        flooder_max_retry: AtomicU64::new(0),
    });
    let mut sinks: Vec<Option<Sink>> = vec![None; config.users];
    let setup = Duration::from_secs(60);
    connect_all("flood", url, config.users, config.connect_concurrency, setup, config.progress, |index, socket| {
        let (sink, mut stream) = socket.split();
        sinks[index] = Some(Arc::new(Mutex::new(sink)));
        let shared = shared.clone();
        tokio::spawn(async move {
            while let Some(Ok(message)) = stream.next().await {
                if let Message::Text(text) = message {
                    shared.user_frame(&text);
                }
            }
        });
    })
    .await?;
    let sinks: Vec<Sink> = sinks.into_iter().map(|s| s.expect("every user connected")).collect();

    // The flooder is in the room for both phases, so both measure the same room.
    let (flooder, _) =
        tokio_tungstenite::connect_async_with_config(url, None, true).await.context("the flooder could not connect")?;
    let (flooder_sink, mut flooder_stream) = flooder.split();
    let answered = Arc::new(Semaphore::new(0));
    {
        let (shared, answered) = (shared.clone(), answered.clone());
        tokio::spawn(async move {
            while let Some(Ok(message)) = flooder_stream.next().await {
                if let Message::Text(text) = message
                    && shared.flooder_frame(&text)
                {
                    answered.add_permits(1);
                }
            }
        });
    }

    // Every join has been fanned out once every user hears a line sent after them.
    sinks[0].lock().await.send(line(&format!("{PREFIX}sync"))).await?;
    let users = config.users as u64;
    let deadline = Instant::now() + setup;
    while shared.synced.load(Ordering::Relaxed) < users {
        anyhow::ensure!(Instant::now() < deadline, "the sync line did not reach every user");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let without_flooder = phase(0, &sinks, None, &shared, config).await?;
    let flooder = Flooder { sink: Arc::new(Mutex::new(flooder_sink)), answered };
    let with_flooder = phase(1, &sinks, Some(&flooder), &shared, config).await?;
    for sink in sinks.iter().chain([&flooder.sink]) {
        sink.lock().await.close().await.ok();
    }
    let p99_ratio = with_flooder.latency_ms.p99 / without_flooder.latency_ms.p99.max(f64::MIN_POSITIVE);
    Ok(FloodReport { config: config.clone(), without_flooder, with_flooder, p99_ratio })
}

struct Flooder {
    sink: Sink,
    /// A permit per answered line (ack or refusal).
    answered: Arc<Semaphore>,
}

/// One phase: every user sends at its pace for `config.phase` (staggered over one
/// interval), with the flooder flooding when given; then the deliveries drain.
async fn phase(
    number: usize,
    sinks: &[Sink],
    flooder: Option<&Flooder>,
    shared: &Arc<Shared>,
    config: &FloodConfig,
) -> anyhow::Result<PhaseReport> {
    let label = if flooder.is_some() { "with flooder" } else { "without flooder" };
    if config.progress {
        eprintln!(
            "[flood] {label}: {} users, a line each every {:?}, for {:?}",
            config.users, config.line_every, config.phase
        );
    }
    let (accepted_before, refused_before) =
        (shared.flooder_accepted.load(Ordering::Relaxed), shared.flooder_refused.load(Ordering::Relaxed));
    let refused_users_before = shared.users_refused.load(Ordering::Relaxed);
    let started = Instant::now();
    let end = started + config.phase;
    let sent = Arc::new(AtomicU64::new(0));
    let mut senders = Vec::new();
    for (user, sink) in sinks.iter().enumerate() {
        let (sink, shared, sent) = (sink.clone(), shared.clone(), sent.clone());
        let offset = config.line_every.mul_f64(user as f64 / config.users as f64);
        let every = config.line_every;
        senders.push(tokio::spawn(async move {
            let mut ticks = tokio::time::interval_at((started + offset).into(), every);
            for seq in 0.. {
                ticks.tick().await;
                if Instant::now() >= end {
                    break;
                }
                let text = format!("{PREFIX}{number}:{user}:{seq}:{}", shared.now_ns());
                if sink.lock().await.send(line(&text)).await.is_err() {
                    break;
                }
                sent.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let flooding = flooder.map(|flooder| {
        let (sink, answered, window) = (flooder.sink.clone(), flooder.answered.clone(), config.flooder_window.max(1));
        tokio::spawn(async move {
            let mut in_flight = 0usize;
            let mut sent = 0u64;
            while Instant::now() < end {
                if in_flight >= window {
                    let Ok(Ok(permit)) = tokio::time::timeout_at(end.into(), answered.acquire()).await else { break };
                    permit.forget();
                    in_flight -= 1;
                    continue;
                }
                let id = uuid::Builder::from_random_bytes(fastrand::u128(..).to_le_bytes()).into_uuid();
                let body = serde_json::json!({"action":"sendmessage","message":format!("flood {sent}"),"clientMessageId":id.to_string()});
                if sink.lock().await.send(Message::text(body.to_string())).await.is_err() {
                    break;
                }
                (in_flight, sent) = (in_flight + 1, sent + 1);
            }
            // The answers still owed, so the counts below are complete.
            let owed = u32::try_from(in_flight).unwrap_or(u32::MAX);
            let _ = tokio::time::timeout(Duration::from_secs(10), answered.acquire_many(owed)).await;
            sent
        })
    });
    for sender in senders {
        sender.await?;
    }
    let flooder_sent = match flooding {
        Some(task) => task.await?,
        None => 0,
    };
    let lines_sent = sent.load(Ordering::Relaxed);
    let expected = lines_sent * shared.users as u64;
    let delivered = || shared.delivered[number].load(Ordering::Relaxed);
    wait_for_deliveries("flood", (lines_sent, expected), config.drain_timeout, config.progress, || {
        (lines_sent, delivered())
    })
    .await;
    let seconds = config.phase.as_secs_f64();
    let flooder_accepted = shared.flooder_accepted.load(Ordering::Relaxed) - accepted_before;
    let latency_ms = Percentiles::of(&shared.latencies[number].lock().unwrap_or_else(|p| p.into_inner()));
    Ok(PhaseReport {
        flooder: flooder.is_some(),
        lines_sent,
        expected_deliveries: expected,
        delivered: delivered(),
        lost: expected.saturating_sub(delivered()),
        latency_ms,
        users_refused: shared.users_refused.load(Ordering::Relaxed) - refused_users_before,
        flooder_sent,
        flooder_accepted,
        flooder_refused: shared.flooder_refused.load(Ordering::Relaxed) - refused_before,
        flooder_accepted_per_s: flooder_accepted as f64 / seconds,
        flooder_max_retry_after_ms: if flooder.is_some() {
            shared.flooder_max_retry.load(Ordering::Relaxed)
        } else {
            0
        },
    })
}

/// The two phases side by side.
pub fn flood_table(report: &FloodReport) -> String {
    let (a, b) = (&report.without_flooder, &report.with_flooder);
    let c = &report.config;
    let mut out = format!(
        "{} users in one room, a line each every {} ms, {} s per phase; flooder window {}\n\n",
        c.users,
        c.line_every.as_millis(),
        c.phase.as_secs_f64(),
        c.flooder_window
    );
    out.push_str("| | without flooder | with flooder |\n|---|---|---|\n");
    let row = |name: &str, x: String, y: String| format!("| {name} | {x} | {y} |\n");
    out.push_str(&row("users' lines sent", a.lines_sent.to_string(), b.lines_sent.to_string()));
    out.push_str(&row(
        "deliveries (expected)",
        format!("{} ({})", a.delivered, a.expected_deliveries),
        format!("{} ({})", b.delivered, b.expected_deliveries),
    ));
    out.push_str(&row("lost", a.lost.to_string(), b.lost.to_string()));
    out.push_str(&row("latency p50 ms", format!("{:.2}", a.latency_ms.p50), format!("{:.2}", b.latency_ms.p50)));
    out.push_str(&row(
        "**latency p99 ms**",
        format!("**{:.2}**", a.latency_ms.p99),
        format!("**{:.2}**", b.latency_ms.p99),
    ));
    out.push_str(&row("latency max ms", format!("{:.2}", a.latency_ms.max), format!("{:.2}", b.latency_ms.max)));
    out.push_str(&row("users refused", a.users_refused.to_string(), b.users_refused.to_string()));
    out.push_str(&row("flooder lines sent", "–".into(), b.flooder_sent.to_string()));
    out.push_str(&row(
        "flooder accepted",
        "–".into(),
        format!("{} ({:.1}/s)", b.flooder_accepted, b.flooder_accepted_per_s),
    ));
    out.push_str(&row("flooder refused (Rate limited)", "–".into(), b.flooder_refused.to_string()));
    out.push_str(&row("flooder max retryAfterMs", "–".into(), b.flooder_max_retry_after_ms.to_string()));
    out.push_str(&format!("\np99 with ÷ without the flooder: {:.2}\n", report.p99_ratio));
    out
}
