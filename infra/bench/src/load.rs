//! The load generator: N WebSocket clients join a chat, M of them send K chat
//! messages each (at a total rate, or as fast as a window of unanswered
//! messages allows), and every client measures each message's send → deliver
//! latency. Messages carry `bench:<run>:<sender>:<seq>:<nanos>` as their text,
//! so each delivery is attributed, timed and deduplicated without any clock
//! other than this process's monotonic one.
//!
//! Phases: connect all clients (timed), check that `ping` gets a pong, send one
//! sync message and wait until every client has it (this flushes the join
//! notices still being fanned out, so the measurement starts from a quiet
//! server), then measure.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async_with_config};

use crate::counters::Counters;
use crate::procstat::{Monitor, ProcessReport, machine_percent, machine_ticks};
use crate::stats::{Percentiles, cdf, micros_histogram, record_nanos};

pub(crate) type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;
type Sink = SplitSink<Socket, Message>;

/// What load to put on the target.
#[derive(Clone, Debug, Serialize)]
pub struct LoadConfig {
    /// Connected clients; every one receives every message.
    pub clients: usize,
    /// Clients that send (the first `senders` of them).
    pub senders: usize,
    /// Messages each sender sends.
    pub messages: usize,
    /// Total messages per second over all senders; `None` saturates.
    pub rate: Option<f64>,
    /// Saturating only: a sender's own messages sent but not yet delivered back to it.
    pub window: usize,
    /// Connection attempts in flight at once.
    pub connect_concurrency: usize,
    /// The run ends this long after the last delivery or send if messages are still missing.
    pub idle_timeout: Duration,
    /// How long the connect, ping and sync phases may take.
    pub setup_timeout: Duration,
    /// Progress lines on stderr.
    pub progress: bool,
    /// Every client connects with `?batch=1` (coalesced delivery) and unpacks `{"events":[…]}`.
    pub coalescing: bool,
}

/// Everything one run measured.
#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    pub label: String,
    pub url: String,
    pub config: LoadConfig,
    /// Time to open each WebSocket (TCP + upgrade, including `$connect` on the stack).
    pub connect_ms: Percentiles,
    /// Send → deliver, one sample per unique delivery.
    pub latency_ms: Percentiles,
    /// `(quantile, ms)` points of the latency distribution, for plots.
    pub latency_cdf: Vec<(f64, f64)>,
    pub messages_sent: u64,
    /// `messages_sent × clients`.
    pub expected_deliveries: u64,
    /// Unique deliveries.
    pub delivered: u64,
    pub lost: u64,
    /// Deliveries of a message a client already had.
    pub duplicated: u64,
    /// Frames received that carried at least one new delivery (a coalesced frame carries several).
    pub frames_with_deliveries: u64,
    /// Error frames received during the measured phase.
    pub error_frames: u64,
    /// Clients whose socket the server closed (or that broke) before the end.
    pub clients_closed: u64,
    /// First send to last delivery.
    pub duration_s: f64,
    pub deliveries_per_s: f64,
    /// Messages sent per second over the sending time.
    pub send_rate: f64,
    /// Rate mode: the most a send fell behind its schedule (the load generator's own limit).
    pub max_send_lag_ms: f64,
    /// The target server, when it is a local process.
    pub target: Option<ProcessReport>,
    /// The load generator itself: it shares the machine's cores with the target.
    pub loadgen: ProcessReport,
    /// Every process on the machine during the measured phase, % of one core.
    pub machine_cpu_percent: f64,
    /// Of that, neither the target nor the load generator (other programs skew the run).
    pub others_cpu_percent: f64,
    pub cores: usize,
    /// The stack's own counters over the measured phase (frames written, API Gateway
    /// messages billed), when it serves them.
    pub counters: Option<Counters>,
}

struct Shared {
    origin: Instant,
    run: u32,
    senders: usize,
    messages: usize,
    delivered: AtomicU64,
    sent: AtomicU64,
    last_send_ns: AtomicU64,
    last_delivery_ns: AtomicU64,
    synced: AtomicUsize,
    pongs: AtomicUsize,
    /// Saturating mode: permits for each sender's unanswered messages.
    windows: Vec<Semaphore>,
}

impl Shared {
    fn now_ns(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }

    fn prefix(&self) -> String {
        format!("bench:{}:", self.run)
    }

    fn sync_text(&self) -> String {
        format!("benchsync:{}", self.run)
    }
}

/// The fields of an outbound frame the load generator looks at; a coalesced
/// frame carries the event frames in `events`.
#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(borrow, default)]
    events: Option<Vec<Frame<'a>>>,
    #[serde(borrow, default)]
    message: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    error: Option<Cow<'a, str>>,
}

/// What one client saw.
struct Reader {
    index: usize,
    latency: Histogram<u64>,
    seen: Vec<bool>,
    unique: u64,
    duplicated: u64,
    frames_with_deliveries: u64,
    errors: u64,
    closed: bool,
    synced: bool,
}

impl Reader {
    fn handle(&mut self, shared: &Shared, prefix: &str, sync: &str, body: &str) {
        let Ok(frame) = serde_json::from_str::<Frame<'_>>(body) else { return };
        let before = self.unique;
        self.handle_frame(shared, prefix, sync, frame);
        self.frames_with_deliveries += u64::from(self.unique > before);
    }

    fn handle_frame(&mut self, shared: &Shared, prefix: &str, sync: &str, mut frame: Frame<'_>) {
        if let Some(events) = frame.events.take() {
            for event in events {
                self.handle_frame(shared, prefix, sync, event);
            }
            return;
        }
        if frame.error.is_some() {
            self.errors += 1;
            return;
        }
        match (frame.kind.as_deref(), frame.text.as_deref()) {
            (Some("chat"), Some(text)) if text == sync && !self.synced => {
                self.synced = true;
                shared.synced.fetch_add(1, Ordering::Relaxed);
            }
            (Some("chat"), Some(text)) if text == sync => {}
            (Some("chat"), Some(text)) => {
                if let Some(tag) = text.strip_prefix(prefix) {
                    self.delivery(shared, tag);
                }
            }
            (None, None) if frame.message.as_deref() == Some("pong") => {
                shared.pongs.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }

    /// `tag` is `<sender>:<seq>:<nanos>`.
    fn delivery(&mut self, shared: &Shared, tag: &str) {
        let now = shared.now_ns();
        let Some([sender, seq, sent]) = tag_numbers(tag) else { return };
        let (sender, seq) = (sender as usize, seq as usize);
        if sender >= shared.senders || seq >= shared.messages {
            return;
        }
        let slot = &mut self.seen[sender * shared.messages + seq];
        if std::mem::replace(slot, true) {
            self.duplicated += 1;
            return;
        }
        self.unique += 1;
        record_nanos(&mut self.latency, now.saturating_sub(sent));
        shared.delivered.fetch_add(1, Ordering::Relaxed);
        shared.last_delivery_ns.fetch_max(now, Ordering::Relaxed);
        if sender == self.index
            && let Some(window) = shared.windows.get(sender)
        {
            window.add_permits(1);
        }
    }
}

async fn read(
    index: usize,
    mut source: SplitStream<Socket>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> Reader {
    let mut reader = Reader {
        index,
        latency: micros_histogram(),
        seen: vec![false; shared.senders * shared.messages],
        unique: 0,
        duplicated: 0,
        frames_with_deliveries: 0,
        errors: 0,
        closed: false,
        synced: false,
    };
    let (prefix, sync) = (shared.prefix(), shared.sync_text());
    reader.closed = read_texts(&mut source, &mut stop, |body| reader.handle(&shared, &prefix, &sync, body)).await;
    reader
}

/// The `:`-separated numbers of a line's tag (`<a>:<b>:<c>`), if it has `N` of them first.
pub(crate) fn tag_numbers<const N: usize>(tag: &str) -> Option<[u64; N]> {
    let mut parts = tag.split(':');
    let mut numbers = [0; N];
    for number in &mut numbers {
        *number = parts.next()?.parse().ok()?;
    }
    Some(numbers)
}

/// Hands each text frame of `source` to `text` until `stop` changes; `true` if
/// the socket closed (or broke) first.
pub(crate) async fn read_texts(
    source: &mut SplitStream<Socket>,
    stop: &mut watch::Receiver<bool>,
    mut text: impl FnMut(&str),
) -> bool {
    loop {
        let next = tokio::select! {
            biased;
            _ = stop.changed() => return false,
            next = source.next() => next,
        };
        match next {
            Some(Ok(Message::Text(body))) => text(body.as_str()),
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return true,
            Some(Ok(_)) => {}
        }
    }
}

fn chat(text: &str) -> Message {
    Message::text(format!(r#"{{"action":"sendmessage","message":"{text}"}}"#))
}

/// One sender's messages; returns its socket half, how many it sent and its worst lag behind schedule.
async fn send(
    index: usize,
    mut sink: Sink,
    shared: Arc<Shared>,
    rate: Option<f64>,
    start: Instant,
) -> (Sink, u64, u64) {
    let prefix = shared.prefix();
    let (mut sent, mut max_lag_ns) = (0u64, 0u64);
    for seq in 0..shared.messages {
        match rate {
            Some(rate) => {
                let slot = (seq * shared.senders + index) as f64;
                let due = start + Duration::from_secs_f64(slot / rate);
                tokio::time::sleep_until(due.into()).await;
                max_lag_ns = max_lag_ns.max(Instant::now().saturating_duration_since(due).as_nanos() as u64);
            }
            None => match shared.windows[index].acquire().await {
                Ok(permit) => permit.forget(),
                Err(_) => break,
            },
        }
        let text = format!("{prefix}{index}:{seq}:{}", shared.now_ns());
        if sink.send(chat(&text)).await.is_err() {
            break;
        }
        sent += 1;
        shared.sent.fetch_add(1, Ordering::Relaxed);
        shared.last_send_ns.fetch_max(shared.now_ns(), Ordering::Relaxed);
    }
    (sink, sent, max_lag_ns)
}

/// Waits until `done` holds, printing `what` every second; fails after `limit`.
pub(crate) async fn wait_for(
    what: &str,
    limit: Duration,
    progress: bool,
    done: impl Fn() -> (bool, String),
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut last_print = Instant::now();
    loop {
        let (ok, status) = done();
        if ok {
            return Ok(());
        }
        if started.elapsed() > limit {
            bail!("{what}: not done after {limit:?} ({status})");
        }
        if progress && last_print.elapsed() >= Duration::from_secs(1) {
            eprintln!("  {what}: {status}");
            last_print = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Opens `clients` WebSockets to `url`, `concurrency` handshakes at a time,
/// handing each `(index, socket)` to `connected` as it opens; returns the
/// handshake times (TCP + upgrade, including `$connect` on the stack). Fails on
/// the first client that cannot connect, or after `limit`.
pub(crate) async fn connect_all(
    label: &str,
    url: &str,
    clients: usize,
    concurrency: usize,
    limit: Duration,
    progress: bool,
    mut connected: impl FnMut(usize, Socket),
) -> anyhow::Result<Histogram<u64>> {
    let mut connect_times = micros_histogram();
    let mut attempts = futures::stream::iter(0..clients)
        .map(|index| async move {
            let started = Instant::now();
            let result = connect_async_with_config(url, None, true).await;
            (index, started.elapsed(), result)
        })
        .buffer_unordered(concurrency.max(1));
    let connecting = async {
        let mut count = 0;
        while let Some((index, took, result)) = attempts.next().await {
            let (socket, _) = result.with_context(|| format!("client {index} could not connect to {url}"))?;
            record_nanos(&mut connect_times, took.as_nanos() as u64);
            connected(index, socket);
            count += 1;
            if progress && count % 250 == 0 {
                eprintln!("[{label}]   {count} connected");
            }
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(limit, connecting).await.context("connecting took too long")??;
    Ok(connect_times)
}

/// Waits until `counts()` — `(lines sent, deliveries)` — reaches `expected`'s
/// deliveries, or until neither changed for `idle_timeout` (lines are missing:
/// the report counts them lost). Prints both every second with `progress`.
pub(crate) async fn wait_for_deliveries(
    label: &str,
    expected: (u64, u64),
    idle_timeout: Duration,
    progress: bool,
    counts: impl Fn() -> (u64, u64),
) {
    let (lines, deliveries) = expected;
    let (mut last_seen, mut last_change, mut last_print) = ((0, 0), Instant::now(), Instant::now());
    loop {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let now = counts();
        if now.1 >= deliveries {
            return;
        }
        if now != last_seen {
            (last_seen, last_change) = (now, Instant::now());
        } else if last_change.elapsed() > idle_timeout {
            if progress {
                eprintln!("[{label}] nothing happened for {idle_timeout:?}; ending the run");
            }
            return;
        }
        if progress && last_print.elapsed() >= Duration::from_secs(1) {
            let percent = 100.0 * now.1 as f64 / deliveries.max(1) as f64;
            eprintln!("[{label}]   sent {}/{lines}  delivered {}/{deliveries} ({percent:.0}%)", now.0, now.1);
            last_print = Instant::now();
        }
    }
}

/// Runs the load against `url`. `pid` is the target's process, if local, for RSS and CPU.
pub async fn run(label: &str, url: &str, pid: Option<u32>, config: &LoadConfig) -> anyhow::Result<RunReport> {
    run_with_counters(label, url, pid, None, config).await
}

/// [`run`], also reading the target's counters from `counters_url` (its `/metrics`)
/// at the start and the end of the measured phase. Unreadable counters are
/// reported as `None` (with a warning), not as a failed run.
pub async fn run_with_counters(
    label: &str,
    url: &str,
    pid: Option<u32>,
    counters_url: Option<&str>,
    config: &LoadConfig,
) -> anyhow::Result<RunReport> {
    let url = &if config.coalescing {
        format!("{url}{}batch=1", if url.contains('?') { '&' } else { '?' })
    } else {
        url.to_owned()
    };
    let read_counters = || async move {
        let url = counters_url?;
        match crate::counters::scrape(url).await {
            Ok(counters) => Some(counters),
            Err(error) => {
                eprintln!("[{label}] cannot read the counters at {url}: {error:#}");
                None
            }
        }
    };
    if config.clients == 0 || config.senders == 0 || config.senders > config.clients {
        bail!("need 1 ≤ senders ≤ clients (got {} senders, {} clients)", config.senders, config.clients);
    }
    if config.rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
        bail!("the rate must be a positive number of messages per second");
    }
    let window = if config.rate.is_some() { 0 } else { config.window.max(1) };
    let shared = Arc::new(Shared {
        origin: Instant::now(),
        run: fastrand::u32(..),
        senders: config.senders,
        messages: config.messages,
        delivered: AtomicU64::new(0),
        sent: AtomicU64::new(0),
        last_send_ns: AtomicU64::new(0),
        last_delivery_ns: AtomicU64::new(0),
        synced: AtomicUsize::new(0),
        pongs: AtomicUsize::new(0),
        windows: (0..config.senders).map(|_| Semaphore::new(window)).collect(),
    });
    let mut target = pid.map(Monitor::start);
    let mut me = Monitor::start(std::process::id());
    let (stop, stopped) = watch::channel(false);
    let say = |line: String| {
        if config.progress {
            eprintln!("[{label}] {line}");
        }
    };

    // Connect.
    say(format!("connecting {} clients to {url}", config.clients));
    let mut sinks: Vec<Option<Sink>> = (0..config.clients).map(|_| None).collect();
    let mut readers = Vec::with_capacity(config.clients);
    let connect_times = connect_all(
        label,
        url,
        config.clients,
        config.connect_concurrency,
        config.setup_timeout,
        config.progress,
        |index, socket| {
            let (sink, source) = socket.split();
            sinks[index] = Some(sink);
            readers.push(tokio::spawn(read(index, source, shared.clone(), stopped.clone())));
        },
    )
    .await?;
    let mut sinks: Vec<Sink> = sinks.into_iter().flatten().collect();

    // The protocol works: a pong for a ping.
    sinks[0].send(chat(chat_core::protocol::PING)).await.context("sending a ping")?;
    wait_for("pong", config.setup_timeout, config.progress, || {
        (shared.pongs.load(Ordering::Relaxed) > 0, "waiting".into())
    })
    .await?;
    // Everyone is in the room and the join notices are through.
    say("sync: every client must receive one message".into());
    sinks[0].send(chat(&shared.sync_text())).await.context("sending the sync message")?;
    wait_for("sync", config.setup_timeout, config.progress, || {
        let synced = shared.synced.load(Ordering::Relaxed);
        (synced >= config.clients, format!("{synced}/{} clients have it", config.clients))
    })
    .await?;

    // Measure.
    say(format!(
        "measuring: {} senders × {} messages, {}",
        config.senders,
        config.messages,
        config.rate.map_or(format!("saturating (window {window})"), |r| format!("{r} msg/s in total"))
    ));
    let counters_at_start = read_counters().await;
    if let Some(target) = &mut target {
        target.mark_measure_start();
    }
    me.mark_measure_start();
    let machine_start = machine_ticks();
    let start = Instant::now();
    let start_ns = shared.now_ns();
    let senders: Vec<_> = sinks
        .drain(..config.senders)
        .enumerate()
        .map(|(index, sink)| tokio::spawn(send(index, sink, shared.clone(), config.rate, start)))
        .collect();
    let lines = (config.senders * config.messages) as u64;
    let expected_total = lines * config.clients as u64;
    wait_for_deliveries(label, (lines, expected_total), config.idle_timeout, config.progress, || {
        (shared.sent.load(Ordering::Relaxed), shared.delivered.load(Ordering::Relaxed))
    })
    .await;
    let target = target.map(Monitor::finish);
    let loadgen = me.finish();
    let counters = match (counters_at_start, read_counters().await) {
        (Some(start), Some(end)) => Some(end.since(start)),
        _ => None,
    };
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let machine_cpu_percent = match (machine_start, machine_ticks()) {
        (Some(start), Some(end)) => machine_percent(start, end, cores),
        _ => 0.0,
    };
    let others_cpu_percent =
        (machine_cpu_percent - loadgen.cpu_percent_measure - target.as_ref().map_or(0.0, |t| t.cpu_percent_measure))
            .max(0.0);
    stop.send(true).ok();

    let mut messages_sent = 0;
    let mut max_lag_ns = 0;
    for sender in senders {
        if sender.is_finished() {
            let (sink, sent, lag) = sender.await?;
            messages_sent += sent;
            max_lag_ns = max_lag_ns.max(lag);
            sinks.push(sink);
        } else {
            // Stalled (saturating, its own messages never came back): its count is in `shared.sent`.
            sender.abort();
        }
    }
    messages_sent = messages_sent.max(shared.sent.load(Ordering::Relaxed));
    let mut latency = micros_histogram();
    let (mut delivered, mut duplicated, mut errors, mut closed, mut frames_with_deliveries) = (0, 0, 0, 0, 0);
    for reader in readers {
        let reader = reader.await?;
        latency.add(&reader.latency).ok();
        delivered += reader.unique;
        duplicated += reader.duplicated;
        frames_with_deliveries += reader.frames_with_deliveries;
        errors += reader.errors;
        closed += u64::from(reader.closed);
    }
    // Close politely, but do not wait long for the server's answers.
    let closing = sinks.iter_mut().map(|sink| tokio::time::timeout(Duration::from_secs(2), sink.close()));
    futures::future::join_all(closing).await;

    let expected_deliveries = messages_sent * config.clients as u64;
    let end_ns = shared.last_delivery_ns.load(Ordering::Relaxed).max(start_ns);
    let duration_s = (end_ns - start_ns) as f64 / 1e9;
    Ok(RunReport {
        label: label.to_owned(),
        url: url.to_owned(),
        config: config.clone(),
        connect_ms: Percentiles::of(&connect_times),
        latency_ms: Percentiles::of(&latency),
        latency_cdf: cdf(&latency),
        messages_sent,
        expected_deliveries,
        delivered,
        lost: expected_deliveries.saturating_sub(delivered),
        duplicated,
        frames_with_deliveries,
        error_frames: errors,
        clients_closed: closed,
        duration_s,
        deliveries_per_s: if duration_s > 0.0 { delivered as f64 / duration_s } else { 0.0 },
        send_rate: {
            let sending = shared.last_send_ns.load(Ordering::Relaxed).saturating_sub(start_ns) as f64 / 1e9;
            if sending > 0.0 { messages_sent as f64 / sending } else { 0.0 }
        },
        max_send_lag_ms: max_lag_ns as f64 / 1e6,
        target,
        loadgen,
        machine_cpu_percent,
        others_cpu_percent,
        cores,
        counters,
    })
}
