//! Channels at scale (`loadgen channels`, issue #23): one local stack, started
//! with its default settings, and one set of clients, measured twice —
//!
//! - (a) every client in one room (its home room, `?room=`), M chat lines said there;
//! - (b) the same clients each subscribed to `rooms` rooms (the home room plus
//!   `rooms − 1` `subscribe`s: clients × rooms memberships), the same M lines
//!   spread over them, line `seq` in room `seq mod rooms`;
//!
//! and between the two, every `subscribe`'s round trip: the client's send of
//! `{"action":"subscribe","room":R}` → its `{"kind":"subscribed","room":R}`.
//!
//! Every client hears every room of a phase, so each phase expects M lines ×
//! clients deliveries, the same in both: the ratio of the two deliveries/s is
//! what a line costs more when the stack holds several rooms per connection.
//! A line's text is `bench:<run>:<phase>:<seq>:<send time ns>`; each client
//! checks that every line reaches it exactly once and labelled with the room it
//! was said in (lost, duplicated and misrouted are counted apart).
//!
//! Senders saturate, as `loadgen run --rate 0` does: each keeps at most
//! `window` of its own lines undelivered back to itself.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, oneshot, watch};
use tokio_tungstenite::connect_async_with_config;
use tokio_tungstenite::tungstenite::Message;

use crate::load::{Socket, connect_all, read_texts, tag_numbers, wait_for, wait_for_deliveries};
use crate::procstat::{Monitor, ProcessReport, machine_percent, machine_ticks, sample};
use crate::stats::{Percentiles, micros_histogram, record_nanos};

type Sink = SplitSink<Socket, Message>;

/// The target: (b) delivers at least this share of (a)'s deliveries/s.
pub const TARGET_RATIO: f64 = 0.8;

/// The two measured phases, in the order they run.
const SINGLE: usize = 0;
const MULTI: usize = 1;

/// What to measure.
#[derive(Clone, Debug, Serialize)]
pub struct ChannelsConfig {
    pub clients: usize,
    /// Rooms each client is in during (b), its home room included.
    pub rooms: usize,
    /// Chat lines per phase.
    pub messages: usize,
    /// Clients that send (the first `senders`), line `seq` by sender `seq mod senders`.
    pub senders: usize,
    /// A sender's own lines sent but not yet delivered back to it.
    pub window: usize,
    /// Connection attempts in flight at once.
    pub connect_concurrency: usize,
    /// Subscribes in flight at once (over all clients).
    pub subscribe_concurrency: usize,
    /// A phase ends this long after the last delivery or send if lines are still missing.
    pub idle_timeout: Duration,
    /// How long connecting, one subscribe, or a sync may take.
    pub setup_timeout: Duration,
    pub progress: bool,
}

/// One phase's fan-out.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PhaseReport {
    /// Rooms the lines were spread over.
    pub rooms: usize,
    /// Memberships the stack held: clients × rooms each client was in.
    pub memberships: usize,
    pub messages_sent: u64,
    /// `messages_sent × clients`: every client hears every room of the phase.
    pub expected_deliveries: u64,
    /// Unique deliveries, labelled with the right room.
    pub delivered: u64,
    pub lost: u64,
    /// Deliveries of a line a client already had.
    pub duplicated: u64,
    /// Deliveries labelled with another room than the line was said in.
    pub misrouted: u64,
    /// Clients that missed at least one line.
    pub clients_incomplete: u64,
    /// Every client got every line of the phase exactly once, in its room.
    pub complete: bool,
    /// First send → last delivery.
    pub duration_s: f64,
    pub deliveries_per_s: f64,
    /// Send → deliver, one sample per unique delivery.
    pub latency_ms: Percentiles,
    /// The stack's CPU over the phase, % of one core.
    pub server_cpu_percent: f64,
    /// The stack's CPU time per unique delivery, µs: what a delivery costs the
    /// stack, which other programs on the cores skew far less than deliveries/s.
    pub server_cpu_us_per_delivery: f64,
    pub loadgen_cpu_percent: f64,
    /// Neither the stack nor the load generator, % of one core (out of 100 × cores).
    pub others_cpu_percent: f64,
}

/// Everything one run measured.
#[derive(Clone, Debug, Serialize)]
pub struct ChannelsReport {
    pub url: String,
    pub config: ChannelsConfig,
    pub connect_ms: Percentiles,
    /// (a): every client in one room.
    pub single_room: PhaseReport,
    /// (b): every client in `config.rooms` rooms.
    pub multi_room: PhaseReport,
    /// (b) deliveries/s over (a)'s.
    pub ratio: f64,
    /// `ratio ≥ TARGET_RATIO`.
    pub target_met: bool,
    /// (a)'s stack CPU per delivery over (b)'s: (b)'s deliveries per CPU-second
    /// of the stack against (a)'s, the same question asked of the stack's work
    /// alone (below 1: a delivery costs more with several rooms).
    pub cpu_ratio: f64,
    /// Subscribe → subscribed, one sample per subscribe.
    pub subscribe_ms: Percentiles,
    pub subscribes: u64,
    /// The control client, outside the figures.
    pub observer: ObserverReport,
    /// Error frames outside subscribes (none expected).
    pub error_frames: u64,
    /// Clients whose socket the server closed (or that broke) before the end.
    pub clients_closed: u64,
    /// The stack over the whole run (peak RSS).
    pub server: Option<ProcessReport>,
    pub cores: usize,
}

/// The control client: in one room of (b) only (and a room of its own), it
/// shows that lines reach members alone.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ObserverReport {
    /// The room of (b) it is subscribed to.
    pub room: String,
    /// Lines of that room in (b) that reached some member.
    pub expected: u64,
    pub delivered: u64,
    /// Of `expected`, not delivered to it.
    pub missing: u64,
    pub duplicated: u64,
    /// Lines of rooms it is not in, in either phase.
    pub stray: u64,
    pub misrouted: u64,
    /// It got every line of its room exactly once, and nothing else.
    pub complete: bool,
}

/// A subscribe waiting for its answer.
struct Pending {
    sent: Instant,
    answer: oneshot::Sender<Result<Duration, String>>,
}

/// One client: its sending half (senders and subscribes take turns) and its
/// subscribes waiting for an answer, by room.
struct Client {
    sink: tokio::sync::Mutex<Sink>,
    pending: std::sync::Mutex<HashMap<String, Pending>>,
}

impl Client {
    async fn send(&self, frame: String) -> anyhow::Result<()> {
        self.sink.lock().await.send(Message::text(frame)).await.context("sending a frame")
    }

    /// Subscribes to `room` and waits for the answer: the round trip, or why it failed.
    async fn subscribe(&self, room: &str, limit: Duration) -> anyhow::Result<Duration> {
        let (answer, answered) = oneshot::channel();
        let frame = serde_json::json!({ "action": "subscribe", "room": room }).to_string();
        {
            let mut sink = self.sink.lock().await;
            self.pending
                .lock()
                .expect("not poisoned")
                .insert(room.to_owned(), Pending { sent: Instant::now(), answer });
            sink.send(Message::text(frame)).await.context("sending the subscribe")?;
        }
        match tokio::time::timeout(limit, answered).await {
            Ok(Ok(Ok(took))) => Ok(took),
            Ok(Ok(Err(refusal))) => bail!("subscribing to {room} was refused: {refusal}"),
            Ok(Err(_)) => bail!("the socket closed before {room}'s subscribe was answered"),
            Err(_) => bail!("no answer to the subscribe to {room} within {limit:?}"),
        }
    }

    /// The subscribe to `room` waiting for its answer, if any; with `room`
    /// `None`, every waiting subscribe (for an error frame that names no room).
    fn take(&self, room: Option<&str>) -> Vec<Pending> {
        let mut pending = self.pending.lock().expect("not poisoned");
        match room {
            Some(room) => pending.remove(room).into_iter().collect(),
            None => pending.drain().map(|(_, p)| p).collect(),
        }
    }
}

/// One phase's running tallies, shared by every client.
struct PhaseCounters {
    delivered: AtomicU64,
    sent: AtomicU64,
    last_send_ns: AtomicU64,
    last_delivery_ns: AtomicU64,
    /// Per sender: permits for its undelivered lines.
    windows: Vec<Semaphore>,
}

struct Shared {
    origin: Instant,
    run: u32,
    rooms: Vec<String>,
    messages: usize,
    senders: usize,
    phases: [PhaseCounters; 2],
    /// Sync lines received, each counted once per client.
    synced: AtomicUsize,
}

impl Shared {
    fn now_ns(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }

    /// Rooms the lines of `phase` are spread over.
    fn rooms_in(&self, phase: usize) -> usize {
        if phase == SINGLE { 1 } else { self.rooms.len() }
    }

    /// The room line `seq` of `phase` is said in.
    fn room_of(&self, phase: usize, seq: usize) -> &str {
        &self.rooms[seq % self.rooms_in(phase)]
    }

    fn prefix(&self) -> String {
        format!("bench:{}:", self.run)
    }

    fn sync_prefix(&self) -> String {
        format!("benchsync:{}:", self.run)
    }
}

/// The fields of an outbound frame looked at here.
#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    room: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    error: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    message: Option<Cow<'a, str>>,
}

/// Who a client is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// Client `index`: in every room of each phase; the first `senders` send.
    Member(usize),
    /// The control: at home in a room of its own, subscribed to `rooms[OBSERVED]`
    /// alone before (b). It must get that room's lines of (b), and nothing else.
    Observer,
}

/// The room of (b) the observer hears.
const OBSERVED: usize = 1;

/// What one client saw, per phase.
struct Reader {
    role: Role,
    seen: [Vec<bool>; 2],
    unique: [u64; 2],
    duplicated: [u64; 2],
    misrouted: [u64; 2],
    /// Lines of a room this client does not hear (only the observer has such rooms).
    stray: [u64; 2],
    latency: [Histogram<u64>; 2],
    subscribe: Histogram<u64>,
    syncs: HashSet<String>,
    errors: u64,
    closed: bool,
}

impl Reader {
    fn handle(&mut self, shared: &Shared, client: &Client, prefixes: &(String, String), body: &str) {
        let Ok(frame) = serde_json::from_str::<Frame<'_>>(body) else { return };
        if let Some(error) = frame.error.as_deref() {
            let refused = client.take(frame.room.as_deref());
            if refused.is_empty() {
                self.errors += 1;
            }
            for waiting in refused {
                let detail = format!("{error}: {}", frame.message.as_deref().unwrap_or_default());
                waiting.answer.send(Err(detail)).ok();
            }
            return;
        }
        match (frame.kind.as_deref(), frame.text.as_deref()) {
            (Some("subscribed"), _) => {
                for waiting in frame.room.as_deref().map(|room| client.take(Some(room))).unwrap_or_default() {
                    let took = waiting.sent.elapsed();
                    record_nanos(&mut self.subscribe, took.as_nanos() as u64);
                    waiting.answer.send(Ok(took)).ok();
                }
            }
            (Some("chat"), Some(text)) => {
                if text.starts_with(&prefixes.1) {
                    if self.syncs.insert(text.to_owned()) && self.role != Role::Observer {
                        shared.synced.fetch_add(1, Ordering::Relaxed);
                    }
                } else if let Some(tag) = text.strip_prefix(&prefixes.0) {
                    self.delivery(shared, tag, frame.room.as_deref().unwrap_or_default());
                }
            }
            _ => {}
        }
    }

    /// `tag` is `<phase>:<seq>:<nanos>`, delivered labelled `room`.
    fn delivery(&mut self, shared: &Shared, tag: &str, room: &str) {
        let now = shared.now_ns();
        let Some([phase, seq, sent]) = tag_numbers(tag) else { return };
        let (phase, seq) = (phase as usize, seq as usize);
        if phase > MULTI || seq >= shared.messages {
            return;
        }
        if room != shared.room_of(phase, seq) {
            self.misrouted[phase] += 1;
            return;
        }
        if !self.hears(shared, phase, seq) {
            self.stray[phase] += 1;
            return;
        }
        if std::mem::replace(&mut self.seen[phase][seq], true) {
            self.duplicated[phase] += 1;
            return;
        }
        self.unique[phase] += 1;
        record_nanos(&mut self.latency[phase], now.saturating_sub(sent));
        let Role::Member(index) = self.role else { return };
        let counters = &shared.phases[phase];
        counters.delivered.fetch_add(1, Ordering::Relaxed);
        counters.last_delivery_ns.fetch_max(now, Ordering::Relaxed);
        if seq % shared.senders == index
            && let Some(window) = counters.windows.get(index)
        {
            window.add_permits(1);
        }
    }

    /// Whether this client is in the room line `seq` of `phase` is said in.
    fn hears(&self, shared: &Shared, phase: usize, seq: usize) -> bool {
        match self.role {
            Role::Member(_) => true,
            Role::Observer => phase == MULTI && seq % shared.rooms_in(phase) == OBSERVED,
        }
    }

    fn new(role: Role, shared: &Shared) -> Self {
        Self {
            role,
            seen: [vec![false; shared.messages], vec![false; shared.messages]],
            unique: [0; 2],
            duplicated: [0; 2],
            misrouted: [0; 2],
            stray: [0; 2],
            latency: [micros_histogram(), micros_histogram()],
            subscribe: micros_histogram(),
            syncs: HashSet::new(),
            errors: 0,
            closed: false,
        }
    }
}

async fn read(
    role: Role,
    mut source: SplitStream<Socket>,
    client: Arc<Client>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> Reader {
    let mut reader = Reader::new(role, &shared);
    let prefixes = (shared.prefix(), shared.sync_prefix());
    reader.closed = read_texts(&mut source, &mut stop, |body| reader.handle(&shared, &client, &prefixes, body)).await;
    if reader.closed {
        // Whoever waits for an answer on this socket learns it will not come.
        client.pending.lock().expect("not poisoned").clear();
    }
    reader
}

/// Splits a connected socket: the client's sending half, and its reader's task.
fn start_client(
    socket: Socket,
    role: Role,
    shared: &Arc<Shared>,
    stopped: &watch::Receiver<bool>,
) -> (Arc<Client>, tokio::task::JoinHandle<Reader>) {
    let (sink, source) = socket.split();
    let client = Arc::new(Client { sink: tokio::sync::Mutex::new(sink), pending: std::sync::Mutex::default() });
    let reader = tokio::spawn(read(role, source, client.clone(), shared.clone(), stopped.clone()));
    (client, reader)
}

/// A chat line in `room`.
fn line(text: &str, room: &str) -> String {
    serde_json::json!({ "action": "sendmessage", "message": text, "room": room }).to_string()
}

/// One sender's lines of `phase`: every `senders`-th from its index on.
async fn send(index: usize, client: Arc<Client>, shared: Arc<Shared>, phase: usize) {
    let counters = &shared.phases[phase];
    let prefix = shared.prefix();
    for seq in (index..shared.messages).step_by(shared.senders) {
        match counters.windows[index].acquire().await {
            Ok(permit) => permit.forget(),
            Err(_) => break,
        }
        let text = format!("{prefix}{phase}:{seq}:{}", shared.now_ns());
        if client.send(line(&text, shared.room_of(phase, seq))).await.is_err() {
            break;
        }
        counters.sent.fetch_add(1, Ordering::Relaxed);
        counters.last_send_ns.fetch_max(shared.now_ns(), Ordering::Relaxed);
    }
}

/// CPU readings at a phase's start or end.
struct CpuMark {
    server: f64,
    loadgen: f64,
    machine: Option<(u64, u64)>,
    at: Instant,
}

impl CpuMark {
    fn server_seconds_until(&self, end: &CpuMark) -> f64 {
        end.server - self.server
    }

    fn now(pid: Option<u32>) -> Self {
        let cpu = |pid: u32| sample(pid).map_or(0.0, |s| s.cpu_seconds);
        Self {
            server: pid.map_or(0.0, cpu),
            loadgen: cpu(std::process::id()),
            machine: machine_ticks(),
            at: Instant::now(),
        }
    }

    /// (server, loadgen, others) % of one core from `self` to `end`.
    fn percent_until(&self, end: &CpuMark, cores: usize) -> (f64, f64, f64) {
        let wall = end.at.duration_since(self.at).as_secs_f64().max(1e-9);
        let server = 100.0 * self.server_seconds_until(end) / wall;
        let loadgen = 100.0 * (end.loadgen - self.loadgen) / wall;
        let machine = match (self.machine, end.machine) {
            (Some(start), Some(end)) => machine_percent(start, end, cores),
            _ => 0.0,
        };
        (server, loadgen, (machine - server - loadgen).max(0.0))
    }
}

/// Runs both phases against the stack at `url` (PID `pid`, for its CPU and memory).
pub async fn run(url: &str, pid: Option<u32>, config: &ChannelsConfig) -> anyhow::Result<ChannelsReport> {
    if config.clients == 0 || config.senders == 0 || config.senders > config.clients {
        bail!("need 1 ≤ senders ≤ clients (got {} senders, {} clients)", config.senders, config.clients);
    }
    if config.rooms < 2 || config.messages == 0 {
        bail!("need at least 2 rooms and 1 message (got {} rooms, {} messages)", config.rooms, config.messages);
    }
    let window = config.window.max(1);
    let phase = || PhaseCounters {
        delivered: AtomicU64::new(0),
        sent: AtomicU64::new(0),
        last_send_ns: AtomicU64::new(0),
        last_delivery_ns: AtomicU64::new(0),
        windows: (0..config.senders).map(|_| Semaphore::new(window)).collect(),
    };
    let shared = Arc::new(Shared {
        origin: Instant::now(),
        run: fastrand::u32(..),
        rooms: (0..config.rooms).map(|k| format!("bench-{k}")).collect(),
        messages: config.messages,
        senders: config.senders,
        phases: [phase(), phase()],
        synced: AtomicUsize::new(0),
    });
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let server = pid.map(Monitor::start);
    let say = |line: String| {
        if config.progress {
            eprintln!("[channels] {line}");
        }
    };

    // Connect, everyone to the first room.
    let home = format!("{url}{}room={}", if url.contains('?') { '&' } else { '?' }, shared.rooms[0]);
    say(format!("connecting {} clients to {home}", config.clients));
    let (stop, stopped) = watch::channel(false);
    let mut clients: Vec<Option<Arc<Client>>> = (0..config.clients).map(|_| None).collect();
    let mut readers = Vec::with_capacity(config.clients);
    let (n, concurrency, limit) = (config.clients, config.connect_concurrency, config.setup_timeout);
    let connect_times = connect_all("channels", &home, n, concurrency, limit, config.progress, |index, socket| {
        let (client, reader) = start_client(socket, Role::Member(index), &shared, &stopped);
        readers.push(reader);
        clients[index] = Some(client);
    })
    .await?;
    let clients: Vec<Arc<Client>> = clients.into_iter().flatten().collect();
    let observed = format!("{url}{}room=bench-observer", if url.contains('?') { '&' } else { '?' });
    let (socket, _) = tokio::time::timeout(config.setup_timeout, connect_async_with_config(&observed, None, true))
        .await
        .context("connecting the observer took too long")?
        .context("the observer could not connect")?;
    let (observer, observer_reader) = start_client(socket, Role::Observer, &shared, &stopped);

    let sync = |rooms: &'static str, count: usize| {
        let (shared, clients, config) = (&shared, &clients, config);
        async move {
            let expected = shared.synced.load(Ordering::Relaxed) + config.clients * count;
            for room in &shared.rooms[..count] {
                let text = format!("{}{}", shared.sync_prefix(), fastrand::u64(..));
                clients[0].send(line(&text, room)).await?;
            }
            wait_for(&format!("sync ({rooms})"), config.setup_timeout, config.progress, || {
                let synced = shared.synced.load(Ordering::Relaxed);
                (synced >= expected, format!("{synced}/{expected} sync lines received"))
            })
            .await
        }
    };
    // The join notices are through: every client has a line said after them.
    say("sync: every client must receive one line".into());
    sync("one room", 1).await?;

    let measure = |phase: usize| {
        let (shared, clients, config) = (&shared, &clients, config);
        async move {
            say(format!(
                "measuring ({}): {} lines over {} room(s), {} senders saturating (window {window})",
                if phase == SINGLE { "a" } else { "b" },
                config.messages,
                shared.rooms_in(phase),
                config.senders
            ));
            let counters = &shared.phases[phase];
            let begin = CpuMark::now(pid);
            let start_ns = shared.now_ns();
            let senders: Vec<_> = (0..config.senders)
                .map(|index| tokio::spawn(send(index, clients[index].clone(), shared.clone(), phase)))
                .collect();
            let expected = (config.messages as u64, (config.messages * config.clients) as u64);
            wait_for_deliveries("channels", expected, config.idle_timeout, config.progress, || {
                (counters.sent.load(Ordering::Relaxed), counters.delivered.load(Ordering::Relaxed))
            })
            .await;
            let end = CpuMark::now(pid);
            for sender in senders {
                // A stalled sender (its own lines never came back) is stopped; its count is in `sent`.
                sender.abort();
            }
            let (server_cpu_percent, loadgen_cpu_percent, others_cpu_percent) = begin.percent_until(&end, cores);
            let server_cpu_seconds = begin.server_seconds_until(&end);
            let messages_sent = counters.sent.load(Ordering::Relaxed);
            let duration_s = counters.last_delivery_ns.load(Ordering::Relaxed).saturating_sub(start_ns) as f64 / 1e9;
            PhaseReport {
                rooms: shared.rooms_in(phase),
                memberships: config.clients * shared.rooms_in(phase),
                messages_sent,
                expected_deliveries: messages_sent * config.clients as u64,
                duration_s,
                server_cpu_percent,
                // Per delivery once the deliveries are counted, below.
                server_cpu_us_per_delivery: server_cpu_seconds * 1e6,
                loadgen_cpu_percent,
                others_cpu_percent,
                ..PhaseReport::default()
            }
        }
    };
    let single_room = measure(SINGLE).await;

    // Everyone subscribes to the other rooms, a room at a time.
    let subscribes = config.clients * (config.rooms - 1);
    say(format!("{subscribes} subscribes, {} in flight at once", config.subscribe_concurrency));
    let jobs = (1..config.rooms).flat_map(|room| (0..config.clients).map(move |client| (client, room)));
    let mut answers = futures::stream::iter(jobs)
        .map(|(client, room)| {
            let (clients, shared) = (&clients, &shared);
            async move {
                clients[client]
                    .subscribe(&shared.rooms[room], config.setup_timeout)
                    .await
                    .with_context(|| format!("client {client}"))
            }
        })
        .buffer_unordered(config.subscribe_concurrency.max(1));
    let mut answered = 0;
    while let Some(answer) = answers.next().await {
        answer?;
        answered += 1;
        if config.progress && answered % 1000 == 0 {
            eprintln!("[channels]   {answered}/{subscribes} subscribed");
        }
    }
    drop(answers);
    observer.subscribe(&shared.rooms[OBSERVED], config.setup_timeout).await.context("the observer")?;
    say(format!("sync: every client must receive one line in each of the {} rooms", config.rooms));
    sync("every room", config.rooms).await?;
    let multi_room = measure(MULTI).await;

    stop.send(true).ok();
    let server = server.map(Monitor::finish);
    let mut subscribe = micros_histogram();
    let (mut error_frames, mut clients_closed) = (0, 0);
    let mut latency = [micros_histogram(), micros_histogram()];
    let mut phases = [single_room, multi_room];
    // Lines of (b) that reached some member: said, so the observer's if in its room.
    let mut said = vec![false; config.messages];
    for reader in readers {
        let reader = reader.await?;
        said.iter_mut().zip(&reader.seen[MULTI]).for_each(|(said, seen)| *said |= seen);
        subscribe.add(&reader.subscribe).ok();
        error_frames += reader.errors;
        clients_closed += u64::from(reader.closed);
        for (phase, report) in phases.iter_mut().enumerate() {
            latency[phase].add(&reader.latency[phase]).ok();
            report.delivered += reader.unique[phase];
            report.duplicated += reader.duplicated[phase];
            report.misrouted += reader.misrouted[phase];
            report.clients_incomplete += u64::from(reader.unique[phase] < report.messages_sent);
        }
    }
    for (report, latency) in phases.iter_mut().zip(&latency) {
        report.lost = report.expected_deliveries.saturating_sub(report.delivered);
        report.complete = report.lost == 0 && report.duplicated == 0 && report.misrouted == 0;
        report.latency_ms = Percentiles::of(latency);
        report.deliveries_per_s =
            if report.duration_s > 0.0 { report.delivered as f64 / report.duration_s } else { 0.0 };
        report.server_cpu_us_per_delivery /= report.delivered.max(1) as f64;
    }
    let [single_room, multi_room] = phases;
    let observer_reader = observer_reader.await?;
    let heard = |seq: &usize| observer_reader.hears(&shared, MULTI, *seq);
    let expected = (0..config.messages).filter(heard).filter(|&seq| said[seq]).count() as u64;
    let missing = (0..config.messages).filter(heard).filter(|&seq| said[seq] && !observer_reader.seen[MULTI][seq]);
    let mut observer_report = ObserverReport {
        room: shared.rooms[OBSERVED].clone(),
        expected,
        delivered: observer_reader.unique[MULTI],
        missing: missing.count() as u64,
        duplicated: observer_reader.duplicated.iter().sum(),
        stray: observer_reader.stray.iter().sum(),
        misrouted: observer_reader.misrouted.iter().sum(),
        complete: false,
    };
    let o = &observer_report;
    observer_report.complete = o.missing == 0 && o.duplicated == 0 && o.stray == 0 && o.misrouted == 0;
    error_frames += observer_reader.errors;
    clients_closed += u64::from(observer_reader.closed);
    // Close politely, but do not wait long for the server's answers.
    let closing = clients.iter().chain([&observer]).map(|client| async move {
        tokio::time::timeout(Duration::from_secs(2), async { client.sink.lock().await.close().await }).await
    });
    futures::future::join_all(closing).await;

    let ratio = if single_room.deliveries_per_s > 0.0 {
        multi_room.deliveries_per_s / single_room.deliveries_per_s
    } else {
        f64::NAN
    };
    let cpu_ratio = if multi_room.server_cpu_us_per_delivery > 0.0 {
        single_room.server_cpu_us_per_delivery / multi_room.server_cpu_us_per_delivery
    } else {
        f64::NAN
    };
    Ok(ChannelsReport {
        url: url.to_owned(),
        config: config.clone(),
        connect_ms: Percentiles::of(&connect_times),
        single_room,
        multi_room,
        ratio,
        target_met: ratio >= TARGET_RATIO,
        cpu_ratio,
        subscribe_ms: Percentiles::of(&subscribe),
        subscribes: subscribe.len(),
        observer: observer_report,
        error_frames,
        clients_closed,
        server,
        cores,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(rooms: usize, messages: usize, senders: usize) -> Shared {
        let phase = || PhaseCounters {
            delivered: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            last_send_ns: AtomicU64::new(0),
            last_delivery_ns: AtomicU64::new(0),
            windows: (0..senders).map(|_| Semaphore::new(0)).collect(),
        };
        Shared {
            origin: Instant::now(),
            run: 7,
            rooms: (0..rooms).map(|k| format!("bench-{k}")).collect(),
            messages,
            senders,
            phases: [phase(), phase()],
            synced: AtomicUsize::new(0),
        }
    }

    #[test]
    fn a_member_counts_each_line_once_in_its_own_room() {
        let shared = shared(3, 6, 2);
        let mut member = Reader::new(Role::Member(1), &shared);
        // Line 4 of (b) is said in room 4 mod 3 = 1.
        member.delivery(&shared, "1:4:0", "bench-1");
        member.delivery(&shared, "1:4:0", "bench-1");
        member.delivery(&shared, "1:5:0", "bench-0");
        member.delivery(&shared, "0:5:0", "bench-0");
        member.delivery(&shared, "1:9:0", "bench-0");
        assert_eq!((member.unique, member.duplicated, member.misrouted), ([1, 1], [0, 1], [0, 1]));
        assert_eq!(shared.phases[MULTI].delivered.load(Ordering::Relaxed), 1);
        assert_eq!(shared.phases[SINGLE].delivered.load(Ordering::Relaxed), 1);
        // Line 5 is sender 5 mod 2 = 1's own: its window gets the permit back.
        assert_eq!(shared.phases[SINGLE].windows[1].available_permits(), 1);
        assert_eq!(shared.phases[MULTI].windows[1].available_permits(), 0, "line 4 is sender 0's");
    }

    #[test]
    fn the_observer_hears_its_room_of_b_and_counts_anything_else_as_stray() {
        let shared = shared(3, 6, 2);
        let mut observer = Reader::new(Role::Observer, &shared);
        observer.delivery(&shared, "0:1:0", "bench-0");
        observer.delivery(&shared, "1:1:0", "bench-1");
        observer.delivery(&shared, "1:2:0", "bench-2");
        assert_eq!((observer.unique, observer.stray), ([0, 1], [1, 1]));
        assert_eq!(shared.phases[MULTI].delivered.load(Ordering::Relaxed), 0, "not in the members' figures");
    }
}
