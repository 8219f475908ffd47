//! Memory per idle connection (`loadgen idle`): N clients connect, each to a room
//! of its own (so no join notice reaches anyone else), and then stay silent,
//! reading; the server's RSS at rest and with all of them open,
//! once it has settled, gives the cost of one idle connection.

use std::time::{Duration, Instant};

use anyhow::Context;
use futures::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::sync::watch;
use tokio_tungstenite::connect_async_with_config;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::procstat;

/// What to measure.
#[derive(Clone, Debug)]
pub struct IdleConfig {
    pub connections: usize,
    /// Handshakes in flight at once.
    pub connect_concurrency: usize,
    /// Each client first says a line of this many bytes and reads its broadcast
    /// back, then idles (0: none): what a connection keeps after a large frame.
    pub line_bytes: usize,
    /// How long connecting, or settling, may take before the run fails.
    pub setup_timeout: Duration,
    pub progress: bool,
}

/// What one run measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct IdleReport {
    pub connections: usize,
    /// The line each client said first, in bytes (0: none).
    pub line_bytes: usize,
    /// The server's RSS once started and settled, before any client.
    pub rest_rss_kib: u64,
    /// Its RSS with every client connected, once settled.
    pub open_rss_kib: u64,
    /// `(open - rest) / connections`.
    pub kib_per_connection: f64,
    /// Handshakes completed per second while connecting.
    pub connects_per_s: f64,
    pub connect_secs: f64,
    /// Sockets the server held with every client connected.
    pub server_sockets: u64,
    /// The server's RSS after every client closed, once settled.
    pub closed_rss_kib: u64,
    /// The load generator's own RSS with every client connected (its clients are
    /// small: a 4 KiB read buffer each).
    pub loadgen_rss_kib: u64,
}

/// How often the RSS is read while waiting for it to settle.
const SETTLE_POLL: Duration = Duration::from_millis(250);
/// Readings in a row that must agree for the RSS to count as settled.
const SETTLE_READINGS: usize = 8;

/// Waits until the process's RSS has stopped changing: [`SETTLE_READINGS`]
/// readings in a row within 0.5 % (at least 1 MiB) of each other (the stack
/// finishes its `$connect` work after the handshakes). Returns the last reading.
async fn settled_rss(pid: u32, timeout: Duration) -> anyhow::Result<u64> {
    let deadline = Instant::now() + timeout;
    let mut readings: Vec<u64> = Vec::new();
    loop {
        let rss = procstat::sample(pid).context("the server is gone")?.rss_kib;
        readings.push(rss);
        if let Some(recent) = readings.rchunks(SETTLE_READINGS).next().filter(|r| r.len() == SETTLE_READINGS) {
            let (low, high) = (recent.iter().min().copied().unwrap_or(0), recent.iter().max().copied().unwrap_or(0));
            if high - low <= (high / 200).max(1024) {
                return Ok(rss);
            }
        }
        anyhow::ensure!(Instant::now() < deadline, "RSS of {pid} did not settle within {timeout:?}: {readings:?}");
        tokio::time::sleep(SETTLE_POLL).await;
    }
}

/// Connects `config.connections` idle clients to the server at `url` (PID `pid`)
/// and measures its RSS before, with them, and after they closed.
pub async fn run(url: &str, pid: u32, config: &IdleConfig) -> anyhow::Result<IdleReport> {
    let say = |line: String| {
        if config.progress {
            eprintln!("[idle] {line}");
        }
    };
    if let Some(limit) = procstat::raise_open_files_limit() {
        say(format!("open files limit of this process: {limit}"));
    }
    let mut report =
        IdleReport { connections: config.connections, line_bytes: config.line_bytes, ..IdleReport::default() };
    report.rest_rss_kib = settled_rss(pid, config.setup_timeout).await?;
    say(format!("server at rest: {} KiB; connecting {} clients to {url}", report.rest_rss_kib, config.connections));

    // The clients' own buffers small too: the load generator holds all of them.
    let client = WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0);
    let (stop, stopped) = watch::channel(false);
    let started = Instant::now();
    let line = (config.line_bytes > 0).then(|| "x".repeat(config.line_bytes));
    let mut attempts = futures::stream::iter(0..config.connections)
        .map(|index| {
            let url = format!("{url}?room=idle-{index}");
            let line = line.as_deref();
            async move {
                let connected = async {
                    let (mut socket, _) = connect_async_with_config(url, Some(client), false).await?;
                    if let Some(line) = line {
                        say_and_hear(&mut socket, line).await?;
                    }
                    anyhow::Ok(socket)
                };
                (index, connected.await)
            }
        })
        .buffer_unordered(config.connect_concurrency.max(1));
    let mut clients = Vec::with_capacity(config.connections);
    let connecting = async {
        while let Some((index, result)) = attempts.next().await {
            let socket = result.with_context(|| format!("client {index} could not connect"))?;
            clients.push(tokio::spawn(idle_client(socket, stopped.clone())));
            if config.progress && clients.len() % 1000 == 0 {
                eprintln!("[idle]   {} connected", clients.len());
            }
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(config.setup_timeout, connecting).await.context("connecting took too long")??;
    report.connect_secs = started.elapsed().as_secs_f64();
    report.connects_per_s = config.connections as f64 / report.connect_secs.max(1e-9);
    say(format!("{} connected in {:.1} s; waiting for the RSS to settle", config.connections, report.connect_secs));

    report.open_rss_kib = settled_rss(pid, config.setup_timeout).await?;
    report.server_sockets = procstat::open_fds(pid).map_or(0, |(_, sockets)| sockets);
    report.loadgen_rss_kib = procstat::sample(std::process::id()).map_or(0, |s| s.rss_kib);
    report.kib_per_connection =
        report.open_rss_kib.saturating_sub(report.rest_rss_kib) as f64 / config.connections.max(1) as f64;
    say(format!("open: {} KiB, {:.1} KiB per connection; closing", report.open_rss_kib, report.kib_per_connection));

    stop.send(true).ok();
    let closing = futures::future::join_all(clients);
    tokio::time::timeout(config.setup_timeout, closing).await.context("closing took too long")?;
    report.closed_rss_kib = settled_rss(pid, config.setup_timeout).await?;
    Ok(report)
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Says `line` in the client's room and reads until its broadcast comes back.
async fn say_and_hear(socket: &mut Socket, line: &str) -> anyhow::Result<()> {
    let frame = serde_json::json!({"action": "sendmessage", "message": line}).to_string();
    socket.send(Message::text(frame)).await?;
    let heard = async {
        while let Some(frame) = socket.next().await {
            if let Message::Text(text) = frame?
                && text.contains(r#""kind":"chat""#)
            {
                return anyhow::Ok(());
            }
        }
        anyhow::bail!("closed before the line came back")
    };
    tokio::time::timeout(Duration::from_secs(60), heard).await.context("the line did not come back")?
}

/// One idle client: reads (whatever comes) until told to stop, then closes.
async fn idle_client(socket: Socket, mut stopped: watch::Receiver<bool>) {
    let (mut sink, mut source) = socket.split();
    loop {
        tokio::select! {
            _ = stopped.wait_for(|stop| *stop) => break,
            frame = source.next() => if !matches!(frame, Some(Ok(_))) {
                return;
            },
        }
    }
    sink.close().await.ok();
    // The server's close frame, then the end of the stream.
    while let Ok(Some(Ok(_))) = tokio::time::timeout(Duration::from_secs(5), source.next()).await {}
}
