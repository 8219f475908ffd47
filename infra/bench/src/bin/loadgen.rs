//! `loadgen`: load, latency and cost benchmarks of the chat. See `BENCHMARKS.md`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use chat_bench::channels::{self, ChannelsConfig};
use chat_bench::coalescing;
use chat_bench::coldstart;
use chat_bench::cost::{self, Assumptions};
use chat_bench::envelope;
use chat_bench::fanout::{self, CaseReport, PosterModel};
use chat_bench::flood::{self, FloodConfig};
use chat_bench::idle::{self, IdleConfig};
use chat_bench::load::{self, LoadConfig};
use chat_bench::presence;
use chat_bench::report::{self, Comparison};
use chat_bench::soak::{self, SoakConfig, SoakTarget};
use chat_bench::target::{Binaries, Kind, Server, UNLIMITED_SENDERS};
use clap::{Args, Parser, Subcommand};

/// Benchmarks of the chat: WebSocket load against the local stack and the
/// in-memory reference, the broadcaster's fan-out at scale, and a cost model.
///
/// Tables go to stdout (Markdown), progress to stderr, everything measured to
/// the `--json` file.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Load one server: a running one at --url, or one this command starts (--spawn).
    Run {
        /// WebSocket URL of a running server, e.g. ws://127.0.0.1:8080/dev.
        #[arg(long, required_unless_present = "spawn", conflicts_with = "spawn")]
        url: Option<String>,
        /// PID of that server, to report its memory and CPU (local processes only).
        #[arg(long, requires = "url")]
        pid: Option<u32>,
        /// Start this server on a free port instead, and stop it afterwards.
        #[arg(long, value_enum)]
        spawn: Option<Kind>,
        #[command(flatten)]
        load: LoadArgs,
        #[command(flatten)]
        servers: ServerArgs,
    },
    /// Start the local stack and the reference one after the other, put the same
    /// load on each, and report both with their ratio.
    Compare {
        #[command(flatten)]
        load: LoadArgs,
        #[command(flatten)]
        servers: ServerArgs,
        /// Draw both latency distributions (CDF) here as SVG.
        #[arg(long)]
        svg: Option<PathBuf>,
    },
    /// Many clients churning (connect, chat, leave, come back) for a long time
    /// against the local stack, sampling its RSS and open descriptors: slopes per
    /// hour, lines acked but not stored, joins against leaves. Starts the release
    /// stack with a fresh database unless --url is given.
    Soak {
        /// WebSocket URL of a running server instead (its log is checked only with --db).
        #[arg(long)]
        url: Option<String>,
        /// PID of that server, for its RSS and descriptors.
        #[arg(long, requires = "url")]
        pid: Option<u32>,
        /// SQLite database of that server, to check the log at the end.
        #[arg(long, requires = "url")]
        db: Option<PathBuf>,
        #[command(flatten)]
        soak: SoakArgs,
        #[command(flatten)]
        servers: ServerArgs,
    },
    /// Memory per idle connection: start the local stack with its default
    /// settings, open N connections (each in a room of its own) and report the
    /// stack's RSS at rest and with all of them open once it has settled, per
    /// connection, and the connect rate.
    Idle {
        /// Connections to open (each is a descriptor here and in the stack;
        /// both raise their soft open-files limit to the hard limit).
        #[arg(long, default_value_t = 1000)]
        connections: usize,
        /// Handshakes in flight at once.
        #[arg(long, default_value_t = 64)]
        connect_concurrency: usize,
        /// Each client first says one line of this many bytes in its room and
        /// reads its broadcast back (a frame of twice the size), then idles: what
        /// a connection keeps after one large frame each way (0: no line).
        #[arg(long, default_value_t = 0)]
        line_bytes: usize,
        /// How long connecting, or the RSS settling, may take.
        #[arg(long, default_value_t = 300)]
        timeout_secs: u64,
        /// No progress lines on stderr.
        #[arg(long)]
        quiet: bool,
        /// Write the results here as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
        #[command(flatten)]
        servers: ServerArgs,
    },
    /// `users` clients in one room each send a line every --line-every-ms while
    /// every client times each line's delivery; then again while one more client
    /// floods as fast as the stack answers it. The stack runs with its defaults
    /// (per-user limits included): prints both p99s and the flooder's accepted
    /// and refused lines.
    Flood {
        #[arg(long, default_value_t = 50)]
        users: usize,
        #[arg(long, default_value_t = 1000)]
        line_every_ms: u64,
        /// Seconds of each phase.
        #[arg(long, default_value_t = 20.0)]
        phase_secs: f64,
        /// The flooder's unanswered lines at most.
        #[arg(long, default_value_t = 32)]
        window: usize,
        #[command(flatten)]
        setup: SetupArgs,
        #[command(flatten)]
        servers: ServerArgs,
    },
    /// Channels (issue #23): start the local stack with its default settings,
    /// connect the clients to one room and measure fan-out deliveries/s with
    /// every line there (a); subscribe each client to the other rooms (the
    /// subscribe round trips are timed) and measure again with the same number
    /// of lines spread over all the rooms (b). Prints (b)/(a) against the
    /// target of 0.8, and checks that every client got every line exactly once.
    Channels {
        /// Clients; each is in every room of a phase.
        #[arg(long, default_value_t = 1000)]
        clients: usize,
        /// Rooms of each client in (b), its home room included.
        #[arg(long, default_value_t = 5)]
        rooms: usize,
        /// Chat lines per phase.
        #[arg(long, default_value_t = 10000)]
        messages: usize,
        /// Clients that send.
        #[arg(long, default_value_t = 10)]
        senders: usize,
        /// A sender's own lines not yet delivered back to it.
        #[arg(long, default_value_t = 16)]
        window: usize,
        /// Subscribes in flight at once, over all clients.
        #[arg(long, default_value_t = 32)]
        subscribe_concurrency: usize,
        #[command(flatten)]
        setup: SetupArgs,
        #[command(flatten)]
        servers: ServerArgs,
    },
    /// Simulate the broadcaster alone: time per message against room size and
    /// concurrency bound, with a simulated @connections API. Each case runs in its
    /// own process so that its peak RSS is its own.
    Fanout {
        /// Room sizes (connections in ActiveConnections).
        #[arg(long, value_delimiter = ',', default_value = "1000,10000,100000")]
        connections: Vec<usize>,
        /// Posts in flight at once (FANOUT_CONCURRENCY).
        #[arg(long, value_delimiter = ',', default_value = "16,64,256,1024")]
        concurrency: Vec<usize>,
        #[command(flatten)]
        poster: PosterArgs,
        /// Messages to time per case (fewer for slow cases, see --budget-secs).
        #[arg(long, default_value_t = 5)]
        messages: usize,
        /// Time one case may take, roughly: slow cases time fewer messages (at least one).
        #[arg(long, default_value_t = 20)]
        budget_secs: u64,
        /// Run the cases in this process (peak RSS is then the largest so far).
        #[arg(long)]
        in_process: bool,
        /// Write the results here as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Time each room split across workers (and posted by the broadcaster alone, to compare).
        #[command(flatten)]
        split: SplitArgs,
    },
    /// One fan-out case; prints its JSON report (used by `fanout`).
    #[command(hide = true)]
    FanoutCase {
        #[arg(long)]
        connections: usize,
        #[arg(long)]
        concurrency: usize,
        #[command(flatten)]
        poster: PosterArgs,
        #[arg(long)]
        messages: usize,
    },
    /// Coalesced delivery on the local stack: the same load with every client
    /// served one frame per event, then coalescing at each batching window;
    /// frames and API Gateway messages per 1000 chat lines from the stack's own
    /// counters (`/metrics`).
    Coalescing {
        #[command(flatten)]
        load: LoadArgs,
        /// Batching windows of the stream event source, ms.
        #[arg(long, value_delimiter = ',', default_value = "0,100,500")]
        windows_ms: Vec<u64>,
        #[command(flatten)]
        servers: ServerArgs,
    },
    /// Cold start of each Lambda binary: process start → its first
    /// `/2018-06-01/runtime/invocation/next` on a Runtime API emulator.
    Coldstart {
        /// Where the release binaries are (cargo build --release -p chat-lambdas).
        #[arg(long)]
        bin_dir: PathBuf,
        /// The functions to start.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "authorizer,broadcaster,connect,default,disconnect,reaper,send_message"
        )]
        functions: Vec<String>,
        /// Starts per binary (the median is reported).
        #[arg(long, default_value_t = 20)]
        runs: usize,
        /// Write the results here as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// The deployed design's envelope: @connections calls/s against the account
    /// budget, delivery time and $ per million deliveries for room sizes × rates,
    /// one frame per event and coalesced at each window (events per invocation
    /// measured on the local stack's stream emulator).
    Envelope {
        #[arg(long, value_delimiter = ',', default_value = "100,1000,10000,50000")]
        room_sizes: Vec<usize>,
        /// Chat lines per second said in the room.
        #[arg(long, value_delimiter = ',', default_value = "1,10,100")]
        rates: Vec<f64>,
        /// Batching windows of the stream, ms (coalesced delivery).
        #[arg(long, value_delimiter = ',', default_value = "0,100,500")]
        windows_ms: Vec<u64>,
        /// How long to measure each rate and window on the stack (at least 10 lines).
        #[arg(long, default_value_t = 5.0)]
        measure_secs: f64,
        #[command(flatten)]
        broadcaster: BroadcasterArgs,
        /// Write the results here as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Draw calls/s against room size here as SVG.
        #[arg(long)]
        svg: Option<PathBuf>,
        #[command(flatten)]
        servers: ServerArgs,
    },
    /// What join presence costs as a room fills to 1 000 / 10 000 / 50 000
    /// members: the seed's notices against occupancy frames (deliveries, $, seconds
    /// of the account's 10 000 calls/s).
    PresenceCost {
        /// Rooms with more members than this get occupancy frames (the stack's default).
        #[arg(long, default_value_t = chat_core::occupancy::DEFAULT_PRESENCE_LIMIT as u64)]
        presence_limit: u64,
        /// Write the results here as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Price a million messages of the deployed design at several room sizes.
    Cost {
        /// Room sizes (connections receiving every message).
        #[arg(long, value_delimiter = ',', default_value = "10,100,1000")]
        room_sizes: Vec<usize>,
        /// Chat messages priced.
        #[arg(long, default_value_t = 1e6)]
        messages: f64,
        /// Bytes of text per message.
        #[arg(long, default_value_t = 100)]
        text_bytes: usize,
        /// Messages the whole room sends per minute (sets connection-minutes).
        #[arg(long, default_value_t = 60.0)]
        room_messages_per_minute: f64,
        /// Heartbeat period of the seed page (0: leave pings out).
        #[arg(long, default_value_t = 30.0)]
        heartbeat_secs: f64,
        /// Lambda memory size.
        #[arg(long, default_value_t = 128.0)]
        lambda_memory_mb: f64,
        /// Stream records per broadcaster invocation.
        #[arg(long, default_value_t = 1.0)]
        stream_batch: f64,
        /// Time the Lambda waits for one DynamoDB call.
        #[arg(long, default_value_t = 5.0)]
        dynamodb_call_ms: f64,
        #[command(flatten)]
        broadcaster: BroadcasterArgs,
        /// Write the results here as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
    },
}

/// The deployed broadcaster the cost model and the envelope simulate.
#[derive(Args, Debug, Clone)]
struct BroadcasterArgs {
    /// The broadcaster's FANOUT_CONCURRENCY.
    #[arg(long, default_value_t = chat_core::broadcaster::FanoutConfig::default().max_in_flight)]
    concurrency: usize,
    /// @connections post latency for the simulated broadcaster time.
    #[arg(long, default_value_t = 20.0)]
    latency_ms: f64,
    #[arg(long, default_value_t = 5.0)]
    jitter_ms: f64,
}

impl BroadcasterArgs {
    /// Posts that always succeed, after the latency.
    fn poster(&self) -> PosterModel {
        PosterModel { latency_ms: self.latency_ms, jitter_ms: self.jitter_ms, gone: 0.0, throttled: 0.0 }
    }
}

/// `loadgen fanout --split`: the deployment around the broadcaster (see `chat_bench::split`).
#[derive(Args, Debug, Clone)]
struct SplitArgs {
    /// Split rooms across fan-out workers, each case also timed without the split.
    #[arg(long)]
    split: bool,
    /// FANOUT_SPLIT_ABOVE: rooms of more recipients are split.
    #[arg(long, default_value_t = chat_core::split::DEFAULT_SPLIT_ABOVE)]
    split_above: usize,
    /// Members per job.
    #[arg(long, default_value_t = chat_core::split::DEFAULT_CHUNK)]
    chunk: usize,
    /// One SendMessageBatch call.
    #[arg(long, default_value_t = 15.0)]
    send_ms: f64,
    /// From a job's send to a warm worker starting on it.
    #[arg(long, default_value_t = 40.0)]
    handoff_ms: f64,
    #[arg(long, default_value_t = 10.0)]
    handoff_jitter_ms: f64,
    /// One page (1 000 members) of the room's listing.
    #[arg(long, default_value_t = 5.0)]
    list_page_ms: f64,
    /// Members that answer every post 429.
    #[arg(long, default_value_t = 0)]
    stuck: usize,
}

impl SplitArgs {
    fn model(&self, split: bool) -> chat_bench::split::SplitModel {
        chat_bench::split::SplitModel {
            above: split.then_some(self.split_above),
            chunk: self.chunk,
            send_ms: self.send_ms,
            handoff_ms: self.handoff_ms,
            handoff_jitter_ms: self.handoff_jitter_ms,
            list_page_ms: self.list_page_ms,
            stuck: self.stuck,
        }
    }
}

#[derive(Args, Debug, Clone)]
struct LoadArgs {
    /// Clients connected; each receives every message.
    #[arg(long, default_value_t = 100)]
    clients: usize,
    /// Clients that send.
    #[arg(long, default_value_t = 10)]
    senders: usize,
    /// Messages per sender.
    #[arg(long, default_value_t = 30)]
    messages: usize,
    /// Total messages per second over all senders; 0 saturates (see --window).
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    /// When saturating: a sender's messages not yet delivered back to it.
    #[arg(long, default_value_t = 16)]
    window: usize,
    #[command(flatten)]
    setup: SetupArgs,
    /// Every client connects with `?batch=1` (coalesced delivery).
    #[arg(long)]
    coalescing: bool,
}

/// Connecting, timeouts and output, shared by the commands that load the stack.
#[derive(Args, Debug, Clone)]
struct SetupArgs {
    /// Connection attempts in flight at once.
    #[arg(long, default_value_t = 32)]
    connect_concurrency: usize,
    /// End the run (a phase of `channels`) when nothing was sent or delivered for this long.
    #[arg(long, default_value_t = 10)]
    idle_timeout_secs: u64,
    /// Limit for each step before the measurement: connecting, the pong, a subscribe, a sync line.
    #[arg(long, default_value_t = 180)]
    setup_timeout_secs: u64,
    /// No progress lines on stderr.
    #[arg(long)]
    quiet: bool,
    /// Write the results here as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

impl LoadArgs {
    fn config(&self) -> LoadConfig {
        LoadConfig {
            clients: self.clients,
            senders: self.senders,
            messages: self.messages,
            rate: (self.rate > 0.0).then_some(self.rate),
            window: self.window,
            connect_concurrency: self.setup.connect_concurrency,
            idle_timeout: Duration::from_secs(self.setup.idle_timeout_secs),
            setup_timeout: Duration::from_secs(self.setup.setup_timeout_secs),
            progress: !self.setup.quiet,
            coalescing: self.coalescing,
        }
    }
}

#[derive(Args, Debug, Clone)]
struct SoakArgs {
    /// Clients, each one connection at a time.
    #[arg(long, default_value_t = 200)]
    clients: usize,
    /// How long clients keep coming back.
    #[arg(long, default_value_t = 900)]
    duration_secs: u64,
    /// Client i joins room soak-(i mod rooms).
    #[arg(long, default_value_t = 4)]
    rooms: usize,
    /// Mean gap between a client's lines, ms (each gap 0.5–1.5× this).
    #[arg(long, default_value_t = 2000)]
    line_every_ms: u64,
    /// Shortest connection lifetime, s.
    #[arg(long, default_value_t = 5.0)]
    min_lifetime_secs: f64,
    /// Longest connection lifetime, s.
    #[arg(long, default_value_t = 60.0)]
    max_lifetime_secs: f64,
    /// Seconds between samples of the server's RSS and descriptors.
    #[arg(long, default_value_t = 5.0)]
    sample_every_secs: f64,
    /// Samples before this are left out of the slopes.
    #[arg(long, default_value_t = 60.0)]
    warmup_secs: f64,
    /// Lines sent at least this long before their client left must be acked and echoed, ms.
    #[arg(long, default_value_t = 2000)]
    settle_ms: u64,
    /// Rows of the printed sample table, one per this many seconds.
    #[arg(long, default_value_t = 60.0)]
    table_every_secs: f64,
    /// No progress lines on stderr.
    #[arg(long)]
    quiet: bool,
    /// Write the results (every sample included) here as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Draw RSS and descriptors over time here as SVG.
    #[arg(long)]
    svg: Option<PathBuf>,
}

impl SoakArgs {
    fn config(&self) -> anyhow::Result<SoakConfig> {
        let secs = |what: &str, s: f64| {
            Duration::try_from_secs_f64(s).with_context(|| format!("{what} must be a non-negative number of seconds"))
        };
        Ok(SoakConfig {
            clients: self.clients,
            duration: Duration::from_secs(self.duration_secs),
            rooms: self.rooms,
            line_every: Duration::from_millis(self.line_every_ms),
            min_lifetime: secs("--min-lifetime-secs", self.min_lifetime_secs)?,
            max_lifetime: secs("--max-lifetime-secs", self.max_lifetime_secs)?,
            sample_every: secs("--sample-every-secs", self.sample_every_secs)?,
            warmup: secs("--warmup-secs", self.warmup_secs)?,
            settle: Duration::from_millis(self.settle_ms),
            progress: !self.quiet,
        })
    }
}

#[derive(Args, Debug, Clone)]
struct ServerArgs {
    /// The chat-local binary (default: beside this one; build with cargo build --release -p chat-local).
    #[arg(long)]
    stack_bin: Option<PathBuf>,
    /// The reference binary (default: beside this one).
    #[arg(long)]
    reference_bin: Option<PathBuf>,
    /// RUST_LOG for the servers started (their logs go to a scratch file).
    #[arg(long, default_value = "warn")]
    server_log: String,
}

impl ServerArgs {
    fn binaries(&self) -> Binaries {
        let beside = Binaries::beside_this_executable();
        Binaries {
            stack: self.stack_bin.clone().unwrap_or(beside.stack),
            reference: self.reference_bin.clone().unwrap_or(beside.reference),
        }
    }
}

#[derive(Args, Debug, Clone)]
struct PosterArgs {
    /// Mean @connections post latency.
    #[arg(long, default_value_t = 20.0)]
    latency_ms: f64,
    /// Each post takes latency ± jitter.
    #[arg(long, default_value_t = 5.0)]
    jitter_ms: f64,
    /// Share of posts answered 410 Gone.
    #[arg(long, default_value_t = 0.01)]
    gone: f64,
    /// Share of posts answered 429 (retried).
    #[arg(long, default_value_t = 0.01)]
    throttled: f64,
}

impl PosterArgs {
    fn model(&self) -> PosterModel {
        PosterModel {
            latency_ms: self.latency_ms,
            jitter_ms: self.jitter_ms,
            gone: self.gone,
            throttled: self.throttled,
        }
    }

    fn to_args(&self) -> Vec<String> {
        vec![
            format!("--latency-ms={}", self.latency_ms),
            format!("--jitter-ms={}", self.jitter_ms),
            format!("--gone={}", self.gone),
            format!("--throttled={}", self.throttled),
        ]
    }
}

/// Says which stack a command started, and where its log is.
fn announce(label: &str, server: &Server) {
    eprintln!("[{label}] chat-local pid {} at {} (log: {})", server.pid, server.url, server.log_path().display());
}

fn write_json(path: Option<&Path>, value: &impl serde::Serialize) -> anyhow::Result<()> {
    if let Some(path) = path {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, serde_json::to_vec_pretty(value)?)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// Starts `kind`, loads it, stops it (always, even if the load failed). The
/// stack's own counters are read over the measured phase.
async fn load_spawned(
    kind: Kind,
    binaries: &Binaries,
    log: &str,
    config: &LoadConfig,
    server_args: &[String],
) -> anyhow::Result<load::RunReport> {
    let server = Server::start_with(kind, binaries, log, server_args).await?;
    if config.progress {
        eprintln!("[{}] pid {} at {} (log: {})", kind.name(), server.pid, server.url, server.log_path().display());
    }
    let counters = (kind == Kind::Stack).then(|| server.metrics_url());
    let result = load::run_with_counters(kind.name(), &server.url, Some(server.pid), counters.as_deref(), config).await;
    server.stop().await?;
    result
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Run { url, pid, spawn, load, servers } => {
            let config = load.config();
            let report = match (url, spawn) {
                (Some(url), _) => load::run("target", &url, pid, &config).await?,
                (None, Some(kind)) => {
                    load_spawned(kind, &servers.binaries(), &servers.server_log, &config, &[]).await?
                }
                (None, None) => bail!("give --url or --spawn"),
            };
            print!("{}", report::run_table(&report));
            write_json(load.setup.json.as_deref(), &report)?;
        }
        Command::Compare { load, servers, svg } => {
            let config = load.config();
            let binaries = servers.binaries();
            let reference = load_spawned(Kind::Reference, &binaries, &servers.server_log, &config, &[]).await?;
            let stack = load_spawned(Kind::Stack, &binaries, &servers.server_log, &config, &[]).await?;
            let comparison = Comparison::new(stack, reference);
            print!("{}", report::comparison_table(&comparison));
            write_json(load.setup.json.as_deref(), &comparison)?;
            if let Some(path) = &svg {
                chat_bench::chart::latency_cdf_svg(&comparison, path)
                    .with_context(|| format!("drawing {}", path.display()))?;
                eprintln!("wrote {}", path.display());
            }
        }
        Command::Coalescing { load, windows_ms, servers } => {
            let binaries = servers.binaries();
            let mut runs = Vec::new();
            let plain = LoadConfig { coalescing: false, ..load.config() };
            let report = load_spawned(Kind::Stack, &binaries, &servers.server_log, &plain, &[]).await?;
            runs.push(coalescing::Run::new(None, report)?);
            for window in windows_ms {
                let config = LoadConfig { coalescing: true, ..load.config() };
                let args = [format!("--batching-window-ms={window}")];
                let report = load_spawned(Kind::Stack, &binaries, &servers.server_log, &config, &args).await?;
                runs.push(coalescing::Run::new(Some(window), report)?);
            }
            print!("{}", report::coalescing_table(&runs));
            write_json(load.setup.json.as_deref(), &runs)?;
        }
        Command::Envelope { room_sizes, rates, windows_ms, measure_secs, broadcaster, json, svg, servers } => {
            let binaries = servers.binaries();
            let mut batching = Vec::new();
            for &rate in &rates {
                for &window in &windows_ms {
                    eprintln!("envelope: events per invocation at {rate} msg/s, window {window} ms");
                    batching.push(envelope::measure_batching(&binaries, rate, window, measure_secs, false).await?);
                }
            }
            let assumptions = Assumptions {
                messages: 1e6,
                text_bytes: 100,
                room_messages_per_minute: 60.0,
                heartbeat_secs: 30.0,
                lambda_memory_mb: 128.0,
                stream_batch: 1.0,
                dynamodb_call_ms: 5.0,
                poster: broadcaster.poster(),
                fanout_concurrency: broadcaster.concurrency,
                coalesced: false,
            };
            eprintln!("envelope: fan-out simulation of {room_sizes:?} connections");
            let sims = cost::simulate_rooms(&assumptions, &room_sizes, 3).await;
            let result = envelope::envelope(assumptions, sims, batching, &rates).await;
            print!("{}", report::envelope_tables(&result));
            write_json(json.as_deref(), &result)?;
            if let Some(path) = &svg {
                chat_bench::chart::envelope_svg(&result, path)
                    .with_context(|| format!("drawing {}", path.display()))?;
                eprintln!("wrote {}", path.display());
            }
        }
        Command::Coldstart { bin_dir, functions, runs, json } => {
            let mut starts = Vec::new();
            for name in &functions {
                eprintln!("cold start: {name} × {runs}");
                starts.push(coldstart::measure(name, &bin_dir.join(name), runs).await?);
            }
            print!("{}", report::coldstart_table(&starts));
            write_json(json.as_deref(), &starts)?;
        }
        Command::Idle { connections, connect_concurrency, line_bytes, timeout_secs, quiet, json, servers } => {
            let config = IdleConfig {
                connections,
                connect_concurrency,
                line_bytes,
                setup_timeout: Duration::from_secs(timeout_secs),
                progress: !quiet,
            };
            // Before the stack starts, which inherits it (a stack that does not raise its own limit too).
            chat_bench::procstat::raise_open_files_limit();
            let server = Server::start_default(Kind::Stack, &servers.binaries(), &servers.server_log).await?;
            if config.progress {
                announce("idle", &server);
            }
            let result = idle::run(&server.url, server.pid, &config).await;
            server.stop().await?;
            let report = result?;
            print!("{}", report::idle_table(&report));
            write_json(json.as_deref(), &report)?;
        }
        Command::Channels { clients, rooms, messages, senders, window, subscribe_concurrency, setup, servers } => {
            let config = ChannelsConfig {
                clients,
                rooms,
                messages,
                senders,
                window,
                connect_concurrency: setup.connect_concurrency,
                subscribe_concurrency,
                idle_timeout: Duration::from_secs(setup.idle_timeout_secs),
                setup_timeout: Duration::from_secs(setup.setup_timeout_secs),
                progress: !setup.quiet,
            };
            chat_bench::procstat::raise_open_files_limit();
            // Default settings: what is measured is what a user runs, except that its
            // few senders stand for many users (no per-user send limit).
            let unlimited = UNLIMITED_SENDERS.map(str::to_owned);
            let server =
                Server::start_default_with(Kind::Stack, &servers.binaries(), &servers.server_log, &unlimited).await?;
            if config.progress {
                announce("channels", &server);
            }
            let result = channels::run(&server.url, Some(server.pid), &config).await;
            server.stop().await?;
            let report = result?;
            print!("{}", report::channels_table(&report));
            write_json(setup.json.as_deref(), &report)?;
        }
        Command::Flood { users, line_every_ms, phase_secs, window, setup, servers } => {
            let config = FloodConfig {
                users,
                line_every: Duration::from_millis(line_every_ms),
                phase: Duration::from_secs_f64(phase_secs),
                flooder_window: window,
                connect_concurrency: setup.connect_concurrency,
                drain_timeout: Duration::from_secs(setup.idle_timeout_secs),
                progress: !setup.quiet,
            };
            chat_bench::procstat::raise_open_files_limit();
            // Default settings, per-user limits included: what is measured is what a user runs.
            let server = Server::start_default(Kind::Stack, &servers.binaries(), &servers.server_log).await?;
            if config.progress {
                announce("flood", &server);
            }
            let result = flood::run(&server.url, &config).await;
            server.stop().await?;
            let report = result?;
            print!("{}", flood::flood_table(&report));
            write_json(setup.json.as_deref(), &report)?;
        }
        Command::Soak { url, pid, db, soak: args, servers } => {
            let config = args.config()?;
            let report = match url {
                Some(url) => soak::run(&SoakTarget { url, pid, database: db }, &config).await?,
                None => {
                    let server = Server::start(Kind::Stack, &servers.binaries(), &servers.server_log).await?;
                    if config.progress {
                        announce("soak", &server);
                    }
                    let target =
                        SoakTarget { url: server.url.clone(), pid: Some(server.pid), database: server.database() };
                    let result = soak::run(&target, &config).await;
                    server.stop().await?;
                    result?
                }
            };
            print!(
                "{}\n{}",
                report::soak_table(&report),
                report::soak_samples_table(&report.samples, args.table_every_secs)
            );
            write_json(args.json.as_deref(), &report)?;
            if let Some(path) = &args.svg {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)?;
                }
                chat_bench::chart::soak_svg(&report, path).with_context(|| format!("drawing {}", path.display()))?;
                eprintln!("wrote {}", path.display());
            }
        }
        Command::Fanout { connections, concurrency, poster, messages, json, split, .. } if split.split => {
            let mut cases = Vec::new();
            for &n in &connections {
                for &c in &concurrency {
                    for split_on in [true, false] {
                        eprintln!("fan-out: {n} connections, concurrency {c}, split {split_on}, {messages} message(s)");
                        let model = split.model(split_on);
                        cases.push(chat_bench::split::run_split_case(n, c, poster.model(), model, messages).await);
                    }
                }
            }
            print!("{}", report::split_table(&cases));
            write_json(json.as_deref(), &cases)?;
        }
        Command::Fanout { connections, concurrency, poster, messages, budget_secs, in_process, json, .. } => {
            let mut cases: Vec<CaseReport> = Vec::new();
            for &n in &connections {
                for &c in &concurrency {
                    let runs =
                        fanout::messages_within(Duration::from_secs(budget_secs), messages, n, c, poster.latency_ms);
                    eprintln!("fan-out: {n} connections, concurrency {c}, {runs} message(s)");
                    let case = if in_process {
                        fanout::run_case(n, c, poster.model(), runs).await
                    } else {
                        run_case_process(n, c, &poster, runs).await?
                    };
                    cases.push(case);
                }
            }
            print!("{}", report::fanout_table(&cases));
            write_json(json.as_deref(), &cases)?;
        }
        Command::FanoutCase { connections, concurrency, poster, messages } => {
            let case = fanout::run_case(connections, concurrency, poster.model(), messages).await;
            println!("{}", serde_json::to_string(&case)?);
        }
        Command::PresenceCost { presence_limit, json } => {
            let rows = presence::filling_rooms(presence_limit);
            print!("{}", presence::table(presence_limit, &rows));
            write_json(json.as_deref(), &rows)?;
        }
        Command::Cost {
            room_sizes,
            messages,
            text_bytes,
            room_messages_per_minute,
            heartbeat_secs,
            lambda_memory_mb,
            stream_batch,
            dynamodb_call_ms,
            broadcaster,
            json,
        } => {
            let assumptions = Assumptions {
                messages,
                text_bytes,
                room_messages_per_minute,
                heartbeat_secs,
                lambda_memory_mb,
                stream_batch,
                dynamodb_call_ms,
                poster: broadcaster.poster(),
                fanout_concurrency: broadcaster.concurrency,
                coalesced: false,
            };
            let report = cost::model(assumptions, &room_sizes, 3).await;
            print!("{}", report::cost_table(&report));
            write_json(json.as_deref(), &report)?;
        }
    }
    Ok(())
}

/// Runs one fan-out case in a child process of this binary, for its own peak RSS.
async fn run_case_process(n: usize, c: usize, poster: &PosterArgs, messages: usize) -> anyhow::Result<CaseReport> {
    let exe = std::env::current_exe()?;
    let output = tokio::process::Command::new(exe)
        .arg("fanout-case")
        .arg(format!("--connections={n}"))
        .arg(format!("--concurrency={c}"))
        .arg(format!("--messages={messages}"))
        .args(poster.to_args())
        .kill_on_drop(true)
        .output()
        .await?;
    if !output.status.success() {
        bail!("fan-out case {n}/{c} failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    serde_json::from_slice(&output.stdout).context("reading the fan-out case's report")
}
