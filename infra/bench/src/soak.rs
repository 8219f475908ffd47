//! The soak (`loadgen soak`): many clients churn against one server for a long
//! time — connect into one of a few rooms, chat, leave (half with a close frame,
//! half by dropping the TCP connection), come back — while the server's RSS and
//! open descriptors are sampled. A leak shows as a slope; a lost line as an ack
//! without its row in the log, or an own line that never came back.
//!
//! Every line is `soak:<run>:<client>:<seq>` and carries a fresh
//! `clientMessageId`, so the server acks it once it is in the log. At the end the
//! log itself (the stack's SQLite file) is read: every acked line must be stored
//! exactly once, and joins must equal leaves once everyone has left.
//!
//! A line counts as lost if it was acked but not stored exactly once, or if it
//! was sent at least [`SoakConfig::settle`] before its client left and either its
//! ack or its own echo never came. Lines sent closer to leaving may legitimately
//! be cut off by the leave itself; they are counted (`in_flight_at_leave`) but
//! not judged.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use rusqlite::OpenFlags;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;

use crate::procstat::{self, machine_percent, machine_ticks};
use crate::stats::{Percentiles, micros_histogram, record_nanos, slope_per_hour};

/// How long a connection attempt or a clean close may take.
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);
const CLOSE_LIMIT: Duration = Duration::from_secs(2);
/// After the run, the log is read once leaves have caught up with joins or it
/// stopped changing for this long ($disconnect runs after the socket is gone).
const LOG_QUIET: Duration = Duration::from_secs(3);
const LOG_LIMIT: Duration = Duration::from_secs(30);

/// What the soak does.
#[derive(Clone, Debug, Serialize)]
pub struct SoakConfig {
    /// Clients, each one connection at a time.
    pub clients: usize,
    /// How long clients keep coming back.
    pub duration: Duration,
    /// Client `i` joins room `soak-{i % rooms}`.
    pub rooms: usize,
    /// Mean gap between a client's lines (each gap is 0.5–1.5× this).
    pub line_every: Duration,
    /// A connection lives a uniform random time in this range, then leaves.
    pub min_lifetime: Duration,
    pub max_lifetime: Duration,
    /// How often the server's RSS and descriptors are read.
    pub sample_every: Duration,
    /// Samples before this are left out of the slopes (allocator and caches warming up).
    pub warmup: Duration,
    /// Lines sent at least this long before their client left must have been acked and echoed.
    pub settle: Duration,
    /// Progress lines on stderr.
    pub progress: bool,
}

/// The server under soak.
#[derive(Clone, Debug)]
pub struct SoakTarget {
    pub url: String,
    /// Its process, for RSS and descriptors (local servers only).
    pub pid: Option<u32>,
    /// Its SQLite database, for the end-to-end check of the log.
    pub database: Option<PathBuf>,
}

/// One reading, every [`SoakConfig::sample_every`].
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SoakSample {
    /// Seconds since the first client started.
    pub t_s: f64,
    pub rss_mib: f64,
    pub fds: u64,
    /// Of `fds`, sockets (the listener, clients, SQLite has none).
    pub sockets: u64,
    /// The server's CPU time so far.
    pub cpu_s: f64,
    /// Clients connected now, as the load generator sees it.
    pub clients_connected: u64,
    /// Rows in the stack's `active_connections` table.
    pub active_connections: Option<u64>,
    pub lines_sent: u64,
    pub lines_acked: u64,
}

/// Start, end, peak and drift of one sampled quantity.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Trend {
    /// Before the first client.
    pub idle: f64,
    /// The first sample after the warm-up.
    pub after_warmup: f64,
    /// The last sample while clients were still churning.
    pub end: f64,
    pub max: f64,
    /// Once every client had left and the log was quiet.
    pub after_drain: f64,
    /// Least-squares slope per hour over the samples after the warm-up.
    pub slope_per_hour: Option<f64>,
}

impl Trend {
    fn of(samples: &[SoakSample], drained: &SoakSample, warmup_s: f64, value: impl Fn(&SoakSample) -> f64) -> Self {
        let steady: Vec<(f64, f64)> = samples.iter().filter(|s| s.t_s >= warmup_s).map(|s| (s.t_s, value(s))).collect();
        Self {
            idle: samples.first().map_or(0.0, &value),
            after_warmup: steady.first().map_or(0.0, |p| p.1),
            end: samples.last().map_or(0.0, &value),
            max: samples.iter().map(&value).fold(0.0, f64::max),
            after_drain: value(drained),
            slope_per_hour: slope_per_hour(&steady),
        }
    }
}

/// What happened to the lines.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LineCounts {
    pub sent: u64,
    pub acked: u64,
    /// Own lines that came back to their sender.
    pub echoed: u64,
    /// Own lines that came back more than once.
    pub echo_duplicates: u64,
    /// Sent less than `settle` before the client left: not judged.
    pub in_flight_at_leave: u64,
    /// Sent at least `settle` before leaving, never acked.
    pub unacked: u64,
    /// Sent at least `settle` before leaving, never echoed to the sender.
    pub unechoed: u64,
    /// Acked lines found in the log (`None`: the log was not read).
    pub acked_stored: Option<u64>,
    /// Acked lines not in the log.
    pub acked_missing: Option<u64>,
    /// Acked lines stored more than once.
    pub acked_duplicated: Option<u64>,
    /// Lines of this run in the log that were never acked (cut off by a leave, or lost acks).
    pub stored_unacked: Option<u64>,
    /// Distinct lines failing any check above.
    pub lost: u64,
}

/// How the clients came and went.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SessionCounts {
    pub connects: u64,
    pub connect_errors: u64,
    /// Left with a close frame.
    pub clean_leaves: u64,
    /// Left by dropping the TCP connection.
    pub dropped_leaves: u64,
    /// Closed by the server (or broken) before the client meant to leave.
    pub closed_by_server: u64,
    pub error_frames: u64,
}

/// The stack's log after everyone left.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LogCounts {
    pub joins: u64,
    pub leaves: u64,
    /// Chat rows of this run.
    pub chat_rows: u64,
    /// `active_connections` rows left.
    pub active_connections: u64,
    /// Time from the last client leaving until the log was read.
    pub drain_s: f64,
}

/// Everything a soak measured.
#[derive(Clone, Debug, Serialize)]
pub struct SoakReport {
    pub url: String,
    pub config: SoakConfig,
    /// First client start to last client gone.
    pub duration_s: f64,
    pub samples: Vec<SoakSample>,
    /// The reading after every client left and the log was quiet.
    pub drained: SoakSample,
    pub rss_mib: Trend,
    pub fds: Trend,
    pub lines: LineCounts,
    pub sessions: SessionCounts,
    pub log: Option<LogCounts>,
    /// Send → ack, and send → own echo.
    pub ack_ms: Percentiles,
    pub echo_ms: Percentiles,
    /// The server's CPU over the run, % of one core.
    pub server_cpu_percent: f64,
    /// The load generator's.
    pub loadgen_cpu_percent: f64,
    /// Neither, on the same machine (other programs skew the run).
    pub others_cpu_percent: f64,
    pub cores: usize,
}

/// Counters every client updates.
struct Shared {
    origin: Instant,
    run: u32,
    sent: AtomicU64,
    acked: AtomicU64,
    connected: AtomicU64,
    connects: AtomicU64,
    connect_errors: AtomicU64,
    clean_leaves: AtomicU64,
    dropped_leaves: AtomicU64,
    closed_by_server: AtomicU64,
    error_frames: AtomicU64,
}

impl Shared {
    fn new(run: u32) -> Self {
        let zero = || AtomicU64::new(0);
        Self {
            origin: Instant::now(),
            run,
            sent: zero(),
            acked: zero(),
            connected: zero(),
            connects: zero(),
            connect_errors: zero(),
            clean_leaves: zero(),
            dropped_leaves: zero(),
            closed_by_server: zero(),
            error_frames: zero(),
        }
    }

    fn now_ns(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }

    fn text(&self, client: usize, seq: usize) -> String {
        format!("soak:{}:{client}:{seq}", self.run)
    }
}

/// One line's fate, indexed by its sequence number within its client.
#[derive(Clone, Copy, Default)]
struct Line {
    sent_ns: u64,
    acked: bool,
    echoes: u32,
    /// Sent at least `settle` before its client left.
    settled: bool,
}

/// What one client saw over all its sessions.
struct ClientLog {
    lines: Vec<Line>,
    ack_latency: Histogram<u64>,
    echo_latency: Histogram<u64>,
}

/// The fields of an inbound frame the soak looks at.
#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(borrow, default)]
    ack: Option<Cow<'a, str>>,
    #[serde(borrow, default, rename = "clientMessageId")]
    client_message_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    error: Option<Cow<'a, str>>,
}

fn uniform(min: Duration, max: Duration) -> Duration {
    if max <= min { min } else { min + (max - min).mul_f64(fastrand::f64()) }
}

fn room_url(url: &str, room: usize) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}room=soak-{room}")
}

/// A v4 UUID from `fastrand` (the ids only need to be unique within the run).
fn client_message_id() -> String {
    uuid::Builder::from_random_bytes(fastrand::u128(..).to_le_bytes()).into_uuid().to_string()
}

impl ClientLog {
    /// Notes one inbound frame: an ack of a pending line, or an own line coming back.
    fn handle(&mut self, shared: &Shared, own: &str, pending: &mut HashMap<String, usize>, body: &str) {
        let Ok(frame) = serde_json::from_str::<Frame<'_>>(body) else { return };
        let now = shared.now_ns();
        if frame.error.is_some() {
            shared.error_frames.fetch_add(1, Ordering::Relaxed);
        } else if let (Some(_), Some(id)) = (frame.ack, frame.client_message_id) {
            if let Some(line) = pending.remove(id.as_ref()).and_then(|seq| self.lines.get_mut(seq)) {
                line.acked = true;
                record_nanos(&mut self.ack_latency, now.saturating_sub(line.sent_ns));
                shared.acked.fetch_add(1, Ordering::Relaxed);
            }
        } else if frame.kind.as_deref() == Some("chat")
            && let Some(seq) =
                frame.text.as_deref().and_then(|t| t.strip_prefix(own)).and_then(|s| s.parse::<usize>().ok())
            && let Some(line) = self.lines.get_mut(seq)
        {
            line.echoes += 1;
            if line.echoes == 1 {
                record_nanos(&mut self.echo_latency, now.saturating_sub(line.sent_ns));
            }
        }
    }
}

/// One connection: connect, chat until its lifetime (or the run) ends, leave.
async fn session(
    shared: &Shared,
    config: &SoakConfig,
    index: usize,
    url: &str,
    deadline: Instant,
    log: &mut ClientLog,
) {
    let socket = match tokio::time::timeout(HANDSHAKE_LIMIT, connect_async(url)).await {
        Ok(Ok((socket, _))) => socket,
        _ => {
            shared.connect_errors.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_secs(1)).await;
            return;
        }
    };
    shared.connects.fetch_add(1, Ordering::Relaxed);
    shared.connected.fetch_add(1, Ordering::Relaxed);
    let (mut sink, mut source) = socket.split();
    let own = format!("soak:{}:{index}:", shared.run);
    let first = log.lines.len();
    let mut pending: HashMap<String, usize> = HashMap::new();
    let leave_at = (Instant::now() + uniform(config.min_lifetime, config.max_lifetime)).min(deadline);
    let gap = || uniform(config.line_every / 2, config.line_every * 3 / 2);
    let mut next_line = Instant::now() + uniform(Duration::ZERO, config.line_every);
    let planned = loop {
        tokio::select! {
            _ = tokio::time::sleep_until(leave_at.into()) => break true,
            _ = tokio::time::sleep_until(next_line.into()) => {
                let seq = log.lines.len();
                let id = client_message_id();
                let body = serde_json::json!({
                    "action": "sendmessage",
                    "message": shared.text(index, seq),
                    "clientMessageId": id,
                });
                log.lines.push(Line { sent_ns: shared.now_ns(), ..Line::default() });
                pending.insert(id, seq);
                shared.sent.fetch_add(1, Ordering::Relaxed);
                if sink.send(Message::text(body.to_string())).await.is_err() {
                    break false;
                }
                next_line += gap();
            }
            frame = source.next() => match frame {
                Some(Ok(Message::Text(body))) => log.handle(shared, &own, &mut pending, body.as_str()),
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break false,
                Some(Ok(_)) => {}
            },
        }
    };
    let left_ns = shared.now_ns();
    if !planned {
        shared.closed_by_server.fetch_add(1, Ordering::Relaxed);
    } else if fastrand::bool() {
        // Clean: a close frame, then whatever the server still says until its close.
        let closing = async {
            sink.send(Message::Close(None)).await.ok();
            while let Some(Ok(message)) = source.next().await {
                if let Message::Text(body) = message {
                    log.handle(shared, &own, &mut pending, body.as_str());
                }
            }
        };
        tokio::time::timeout(CLOSE_LIMIT, closing).await.ok();
        shared.clean_leaves.fetch_add(1, Ordering::Relaxed);
    } else {
        // Dropping both halves closes the TCP socket with no close frame: the server sees 1006.
        shared.dropped_leaves.fetch_add(1, Ordering::Relaxed);
    }
    drop((sink, source));
    shared.connected.fetch_sub(1, Ordering::Relaxed);
    let settle = config.settle.as_nanos() as u64;
    for line in &mut log.lines[first..] {
        line.settled = line.sent_ns + settle <= left_ns;
    }
}

/// One client: sessions back to back (a short random pause between) until the deadline.
async fn client(
    shared: Arc<Shared>,
    config: Arc<SoakConfig>,
    index: usize,
    url: String,
    deadline: Instant,
) -> ClientLog {
    let mut log = ClientLog { lines: Vec::new(), ack_latency: micros_histogram(), echo_latency: micros_histogram() };
    // Spread the first connects so the run does not start with a thundering herd.
    tokio::time::sleep(uniform(Duration::ZERO, config.min_lifetime.min(Duration::from_secs(5)))).await;
    while Instant::now() < deadline {
        session(&shared, &config, index, &url, deadline, &mut log).await;
        tokio::time::sleep(uniform(Duration::ZERO, Duration::from_millis(500))).await;
    }
    log
}

/// Reads the stack's tables; the stack keeps writing, so WAL lets this read alongside.
fn open_log(path: &Path) -> anyhow::Result<rusqlite::Connection> {
    let db = rusqlite::Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .with_context(|| format!("opening the stack's database {}", path.display()))?;
    db.busy_timeout(Duration::from_secs(5))?;
    Ok(db)
}

fn count(db: &rusqlite::Connection, sql: &str, params: impl rusqlite::Params) -> anyhow::Result<u64> {
    let n: i64 = db.query_row(sql, params, |row| row.get(0))?;
    Ok(n.max(0) as u64)
}

fn active_connections(db: &rusqlite::Connection) -> anyhow::Result<u64> {
    count(db, "SELECT COUNT(*) FROM active_connections", [])
}

fn joins_and_leaves(db: &rusqlite::Connection) -> anyhow::Result<(u64, u64)> {
    let joins = count(db, "SELECT COUNT(*) FROM message_history WHERE kind = 'join'", [])?;
    let leaves = count(db, "SELECT COUNT(*) FROM message_history WHERE kind = 'leave'", [])?;
    Ok((joins, leaves))
}

/// How many times each line of run `run` is stored.
fn stored_lines(db: &rusqlite::Connection, run: u32) -> anyhow::Result<HashMap<String, u64>> {
    let mut statement = db.prepare(
        "SELECT message, COUNT(*) FROM message_history WHERE kind = 'chat' AND message LIKE ?1 GROUP BY message",
    )?;
    let rows = statement.query_map([format!("soak:{run}:%")], |row| Ok((row.get(0)?, row.get::<_, i64>(1)?)))?;
    rows.map(|row| row.map(|(text, n)| (text, n.max(0) as u64)).map_err(Into::into)).collect()
}

fn sample(shared: &Shared, pid: Option<u32>, db: Option<&rusqlite::Connection>) -> SoakSample {
    let process = pid.and_then(procstat::sample).unwrap_or_default();
    let (fds, sockets) = pid.and_then(procstat::open_fds).unwrap_or_default();
    SoakSample {
        t_s: shared.origin.elapsed().as_secs_f64(),
        rss_mib: process.rss_kib as f64 / 1024.0,
        fds,
        sockets,
        cpu_s: process.cpu_seconds,
        clients_connected: shared.connected.load(Ordering::Relaxed),
        // A busy database only costs this one reading its count.
        active_connections: db.and_then(|db| active_connections(db).ok()),
        lines_sent: shared.sent.load(Ordering::Relaxed),
        lines_acked: shared.acked.load(Ordering::Relaxed),
    }
}

/// Samples every `every` until told to stop; returns the samples.
async fn sampler(
    shared: Arc<Shared>,
    target: SoakTarget,
    every: Duration,
    progress: bool,
    mut stop: watch::Receiver<bool>,
) -> Vec<SoakSample> {
    let db = target.database.as_deref().and_then(|path| open_log(path).ok());
    let mut samples = Vec::new();
    let mut ticks = tokio::time::interval(every);
    let mut last_print = Instant::now();
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            _ = ticks.tick() => {}
        }
        // /proc and a COUNT(*) are quick, so reading them in place keeps the timing honest.
        let s = tokio::task::block_in_place(|| sample(&shared, target.pid, db.as_ref()));
        if progress && (samples.is_empty() || last_print.elapsed() >= Duration::from_secs(30)) {
            eprintln!(
                "[soak] {:>5.0} s  RSS {:.1} MiB  fds {} ({} sockets)  connected {}  sent {}  acked {}",
                s.t_s, s.rss_mib, s.fds, s.sockets, s.clients_connected, s.lines_sent, s.lines_acked
            );
            last_print = Instant::now();
        }
        samples.push(s);
    }
    samples
}

/// Waits until `$disconnect` has logged every leave (or the log stops changing), then counts.
async fn drain_log(path: &Path, run: u32) -> anyhow::Result<(LogCounts, HashMap<String, u64>)> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        let db = open_log(&path)?;
        let started = Instant::now();
        let mut last = joins_and_leaves(&db)?;
        let mut last_change = Instant::now();
        while last.0 != last.1 && last_change.elapsed() < LOG_QUIET && started.elapsed() < LOG_LIMIT {
            std::thread::sleep(Duration::from_millis(250));
            let now = joins_and_leaves(&db)?;
            if now != last {
                last = now;
                last_change = Instant::now();
            }
        }
        let stored = stored_lines(&db, run)?;
        let counts = LogCounts {
            joins: last.0,
            leaves: last.1,
            chat_rows: stored.values().sum(),
            active_connections: active_connections(&db)?,
            drain_s: started.elapsed().as_secs_f64(),
        };
        Ok((counts, stored))
    })
    .await?
}

/// Runs the soak against `target`.
pub async fn run(target: &SoakTarget, config: &SoakConfig) -> anyhow::Result<SoakReport> {
    anyhow::ensure!(config.clients > 0 && config.rooms > 0, "need at least one client and one room");
    anyhow::ensure!(!config.line_every.is_zero() && !config.sample_every.is_zero(), "intervals must be positive");
    anyhow::ensure!(config.min_lifetime <= config.max_lifetime, "min lifetime above max lifetime");
    let shared = Arc::new(Shared::new(fastrand::u32(..)));
    if config.progress {
        eprintln!(
            "[soak] {} clients in {} rooms for {:?} against {} (run {})",
            config.clients, config.rooms, config.duration, target.url, shared.run
        );
    }
    let (stop, stopped) = watch::channel(false);
    let sampling = tokio::spawn(sampler(shared.clone(), target.clone(), config.sample_every, config.progress, stopped));
    let (machine_start, me_start) = (machine_ticks(), procstat::sample(std::process::id()));
    let server_start = target.pid.and_then(procstat::sample);

    let deadline = shared.origin + config.duration;
    let shared_config = Arc::new(config.clone());
    let clients: Vec<_> = (0..config.clients)
        .map(|i| {
            let url = room_url(&target.url, i % config.rooms);
            tokio::spawn(client(shared.clone(), shared_config.clone(), i, url, deadline))
        })
        .collect();
    let mut logs = Vec::with_capacity(clients.len());
    for handle in clients {
        logs.push(handle.await?);
    }
    let duration_s = shared.origin.elapsed().as_secs_f64();
    stop.send(true).ok();
    let samples = sampling.await?;
    let server_cpu_s = target.pid.and_then(procstat::sample).map(|s| s.cpu_seconds);
    let me_end = procstat::sample(std::process::id());
    let machine_end = machine_ticks();
    if config.progress {
        eprintln!("[soak] every client has left; reading the log");
    }

    let (log, stored) = match &target.database {
        Some(path) => {
            let (counts, stored) = drain_log(path, shared.run).await?;
            (Some(counts), Some(stored))
        }
        None => (None, None),
    };
    let drained = {
        let db = target.database.as_deref().and_then(|path| open_log(path).ok());
        sample(&shared, target.pid, db.as_ref())
    };

    let mut lines = LineCounts::default();
    let (mut ack_latency, mut echo_latency) = (micros_histogram(), micros_histogram());
    let mut acked_found = 0;
    for (index, log) in logs.iter().enumerate() {
        ack_latency.add(&log.ack_latency).ok();
        echo_latency.add(&log.echo_latency).ok();
        for (seq, line) in log.lines.iter().enumerate() {
            lines.sent += 1;
            lines.acked += u64::from(line.acked);
            lines.echoed += u64::from(line.echoes > 0);
            lines.echo_duplicates += u64::from(line.echoes > 1);
            lines.in_flight_at_leave += u64::from(!line.settled);
            let unacked = line.settled && !line.acked;
            let unechoed = line.settled && line.echoes == 0;
            lines.unacked += u64::from(unacked);
            lines.unechoed += u64::from(unechoed);
            let times_stored = stored.as_ref().map(|s| s.get(&shared.text(index, seq)).copied().unwrap_or(0));
            let badly_stored = line.acked && times_stored.is_some_and(|n| n != 1);
            if line.acked && times_stored.is_some_and(|n| n > 0) {
                acked_found += 1;
            }
            if let Some(n) = times_stored {
                let missing = lines.acked_missing.get_or_insert(0);
                *missing += u64::from(line.acked && n == 0);
                let twice = lines.acked_duplicated.get_or_insert(0);
                *twice += u64::from(line.acked && n > 1);
                let unacked_stored = lines.stored_unacked.get_or_insert(0);
                *unacked_stored += u64::from(!line.acked && n > 0);
            }
            lines.lost += u64::from(unacked || unechoed || badly_stored);
        }
    }
    if stored.is_some() {
        lines.acked_stored = Some(acked_found);
    }

    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let percent = |seconds: f64| 100.0 * seconds / duration_s.max(f64::EPSILON);
    let server_cpu_percent = match (server_start, server_cpu_s) {
        (Some(start), Some(end)) => percent(end - start.cpu_seconds),
        _ => 0.0,
    };
    let loadgen_cpu_percent = match (me_start, me_end) {
        (Some(start), Some(end)) => percent(end.cpu_seconds - start.cpu_seconds),
        _ => 0.0,
    };
    let machine_cpu_percent = match (machine_start, machine_end) {
        (Some(start), Some(end)) => machine_percent(start, end, cores),
        _ => 0.0,
    };
    let warmup_s = config.warmup.as_secs_f64();
    Ok(SoakReport {
        url: target.url.clone(),
        config: config.clone(),
        duration_s,
        rss_mib: Trend::of(&samples, &drained, warmup_s, |s| s.rss_mib),
        fds: Trend::of(&samples, &drained, warmup_s, |s| s.fds as f64),
        samples,
        drained,
        lines,
        sessions: SessionCounts {
            connects: shared.connects.load(Ordering::Relaxed),
            connect_errors: shared.connect_errors.load(Ordering::Relaxed),
            clean_leaves: shared.clean_leaves.load(Ordering::Relaxed),
            dropped_leaves: shared.dropped_leaves.load(Ordering::Relaxed),
            closed_by_server: shared.closed_by_server.load(Ordering::Relaxed),
            error_frames: shared.error_frames.load(Ordering::Relaxed),
        },
        log,
        ack_ms: Percentiles::of(&ack_latency),
        echo_ms: Percentiles::of(&echo_latency),
        server_cpu_percent,
        loadgen_cpu_percent,
        others_cpu_percent: (machine_cpu_percent - server_cpu_percent - loadgen_cpu_percent).max(0.0),
        cores,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_are_query_parameters() {
        assert_eq!(room_url("ws://h:1/dev", 3), "ws://h:1/dev?room=soak-3");
        assert_eq!(room_url("ws://h:1/dev?token=x", 0), "ws://h:1/dev?token=x&room=soak-0");
    }

    #[test]
    fn client_message_ids_are_v4_uuids() {
        let id = uuid::Uuid::parse_str(&client_message_id()).unwrap();
        assert_eq!(id.get_version_num(), 4);
        assert_ne!(client_message_id(), client_message_id());
    }

    #[test]
    fn trends_leave_out_the_warmup() {
        let at = |t_s: f64, rss_mib: f64| SoakSample { t_s, rss_mib, ..SoakSample::default() };
        // A spike while warming up, then flat.
        let samples = [at(0.0, 10.0), at(30.0, 90.0), at(60.0, 50.0), at(1800.0, 50.0), at(3600.0, 50.0)];
        let trend = Trend::of(&samples, &at(3700.0, 40.0), 60.0, |s| s.rss_mib);
        assert_eq!((trend.idle, trend.after_warmup, trend.end, trend.max), (10.0, 50.0, 50.0, 90.0));
        assert_eq!(trend.after_drain, 40.0);
        assert_eq!(trend.slope_per_hour, Some(0.0));
    }

    #[test]
    fn a_frame_acks_or_echoes_a_pending_line() {
        let shared = Shared::new(7);
        let mut log = ClientLog {
            lines: vec![Line::default(), Line::default()],
            ack_latency: micros_histogram(),
            echo_latency: micros_histogram(),
        };
        let mut pending = HashMap::from([("c1".to_owned(), 1)]);
        log.handle(&shared, "soak:7:0:", &mut pending, r#"{"ack":"m1","clientMessageId":"c1"}"#);
        log.handle(&shared, "soak:7:0:", &mut pending, r#"{"kind":"chat","text":"soak:7:0:1"}"#);
        log.handle(&shared, "soak:7:0:", &mut pending, r#"{"kind":"chat","text":"soak:7:1:0"}"#);
        log.handle(&shared, "soak:7:0:", &mut pending, r#"{"error":"nope"}"#);
        assert!(pending.is_empty() && log.lines[1].acked && log.lines[1].echoes == 1);
        assert!(!log.lines[0].acked && log.lines[0].echoes == 0, "another client's line is not ours");
        assert_eq!(shared.error_frames.load(Ordering::Relaxed), 1);
    }
}
