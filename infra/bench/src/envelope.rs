//! The deployed design's envelope: for each room size and message rate, the
//! @connections calls per second it needs against the account's shared budget,
//! how long an event takes to reach everyone, whether one broadcaster keeps up,
//! and the price per million chat lines delivered — one frame per event, and
//! coalesced at several batching windows. Events per invocation come from the
//! local stack's stream emulator at that rate and window (measured, not assumed);
//! post times from the fan-out simulation; prices from the cost model.

use serde::Serialize;

use crate::cost::{self, Assumptions, coalesced_frames};
use crate::fanout::CaseReport;
use crate::load::{self, LoadConfig};
use crate::target::{Binaries, Kind, Server};

/// API Gateway's default account-level limit, shared by inbound messages and
/// @connections calls (requests per second, per Region; raised on request).
pub const ACCOUNT_BUDGET_PER_S: f64 = 10_000.0;

/// Events per broadcaster invocation at one rate and window, from the stack.
#[derive(Clone, Debug, Serialize)]
pub struct Batching {
    pub rate: f64,
    pub window_ms: u64,
    pub lines: u64,
    /// Coalesced frames one client received that carried those lines (one per invocation).
    pub frames: f64,
    pub events_per_invocation: f64,
}

/// Measures [`Batching`] on the local stack: one sender at `rate` lines/s and
/// one more client, both coalescing, with the stream's batching window set; each
/// invocation sends each client one frame (the lines are small), so lines per
/// frame is events per invocation.
pub async fn measure_batching(
    binaries: &Binaries,
    rate: f64,
    window_ms: u64,
    seconds: f64,
    progress: bool,
) -> anyhow::Result<Batching> {
    let args = [format!("--batching-window-ms={window_ms}")];
    let server = Server::start_with(Kind::Stack, binaries, "warn", &args).await?;
    let config = LoadConfig {
        clients: 2,
        senders: 1,
        messages: ((rate * seconds).ceil() as usize).max(10),
        rate: Some(rate),
        window: 1,
        connect_concurrency: 2,
        idle_timeout: std::time::Duration::from_secs(10),
        setup_timeout: std::time::Duration::from_secs(60),
        progress,
        coalescing: true,
    };
    let report = load::run("batching", &server.url, Some(server.pid), &config).await;
    server.stop().await?;
    let report = report?;
    let frames = report.frames_with_deliveries as f64 / config.clients as f64;
    Ok(Batching {
        rate,
        window_ms,
        lines: report.messages_sent,
        frames,
        events_per_invocation: report.messages_sent as f64 / frames.max(1.0),
    })
}

/// One room size at one rate, delivered one way.
#[derive(Clone, Debug, Serialize)]
pub struct Cell {
    pub room: usize,
    pub rate: f64,
    /// `None`: one frame per event (no coalescing), window 0.
    pub window_ms: Option<u64>,
    pub events_per_invocation: f64,
    pub invocations_per_s: f64,
    /// @connections posts per second plus the inbound messages, against [`ACCOUNT_BUDGET_PER_S`].
    pub calls_per_s: f64,
    pub budget_share: f64,
    /// One broadcaster invocation: its posts at the fan-out concurrency (simulated).
    pub invocation_ms: f64,
    /// Share of the time one broadcaster (one shard) is busy; above 1 it falls behind.
    pub broadcaster_busy: f64,
    /// Mean time from the event's append to its last post: the wait for the
    /// window and for earlier events of the batch, plus its own fan-out.
    pub delivery_ms: f64,
    pub usd_per_million_deliveries: f64,
}

impl Cell {
    /// Within the account budget and one broadcaster keeps up.
    pub fn served(&self) -> bool {
        self.calls_per_s <= ACCOUNT_BUDGET_PER_S && self.broadcaster_busy <= 1.0
    }
}

/// The largest room one configuration serves.
#[derive(Clone, Debug, Serialize)]
pub struct Largest {
    pub rate: f64,
    pub window_ms: Option<u64>,
    pub by_budget: f64,
    pub by_broadcaster: f64,
    pub room: f64,
}

/// Everything `loadgen envelope` reports.
#[derive(Clone, Debug, Serialize)]
pub struct Envelope {
    pub assumptions: Assumptions,
    pub batching: Vec<Batching>,
    pub simulations: Vec<CaseReport>,
    pub cells: Vec<Cell>,
    pub largest: Vec<Largest>,
}

/// Ties the measurements together. `sims` holds one fan-out simulation per room
/// size (one message to the whole room); `batching` one measurement per rate and window.
pub async fn envelope(base: Assumptions, sims: Vec<CaseReport>, batching: Vec<Batching>, rates: &[f64]) -> Envelope {
    let frame_bytes = {
        let text = "x".repeat(base.text_bytes);
        chat_core::protocol::event_frame(&chat_core::LogEvent::chat("CXzQ2cJjoAMCJ6g=", &text, chrono::Utc::now()))
            .len()
    };
    // Time per recipient of one fan-out, from the largest simulated room (the bound dominates there).
    let per_connection_ms =
        sims.iter().max_by_key(|s| s.connections).map_or(0.0, |s| s.mean_ms_per_message / s.connections as f64);
    let mut windows: Vec<Option<u64>> = vec![None];
    windows.extend(batching.iter().map(|b| Some(b.window_ms)).collect::<std::collections::BTreeSet<_>>());
    let events_at = |rate: f64, window: Option<u64>| -> f64 {
        let window = window.unwrap_or(0);
        batching.iter().find(|b| b.rate == rate && b.window_ms == window).map_or(1.0, |b| b.events_per_invocation)
    };
    let mut cells = Vec::new();
    let mut largest = Vec::new();
    for &rate in rates {
        for &window in &windows {
            let k = events_at(rate, window).max(1.0);
            let invocations_per_s = rate / k;
            let fanouts_per_invocation = if window.is_some() { coalesced_frames(k, frame_bytes) } else { k };
            let assumptions = Assumptions {
                room_messages_per_minute: rate * 60.0,
                stream_batch: k,
                coalesced: window.is_some(),
                ..base.clone()
            };
            let priced = cost::price(assumptions, &sims).await;
            for (sim, room) in sims.iter().zip(&priced.rooms) {
                let n = sim.connections as f64;
                let posts_per_s = invocations_per_s * fanouts_per_invocation * n;
                let invocation_ms = fanouts_per_invocation * sim.mean_ms_per_message;
                // An event waits on average half the window, then for the fan-outs before its own in the batch.
                let wait_ms = window.map_or(0.0, |w| w as f64 / 2.0);
                let delivery_ms =
                    if window.is_some() { wait_ms + invocation_ms } else { (k + 1.0) / 2.0 * sim.mean_ms_per_message };
                cells.push(Cell {
                    room: sim.connections,
                    rate,
                    window_ms: window,
                    events_per_invocation: k,
                    invocations_per_s,
                    calls_per_s: posts_per_s + rate,
                    budget_share: (posts_per_s + rate) / ACCOUNT_BUDGET_PER_S,
                    invocation_ms,
                    broadcaster_busy: invocations_per_s * invocation_ms / 1e3,
                    delivery_ms,
                    usd_per_million_deliveries: room.usd_per_million_deliveries,
                });
            }
            let by_budget = ((ACCOUNT_BUDGET_PER_S - rate) / (invocations_per_s * fanouts_per_invocation)).floor();
            let by_broadcaster =
                (1e3 / (invocations_per_s * fanouts_per_invocation * per_connection_ms.max(1e-9))).floor();
            largest.push(Largest {
                rate,
                window_ms: window,
                by_budget,
                by_broadcaster,
                room: by_budget.min(by_broadcaster),
            });
        }
    }
    Envelope { assumptions: base, batching, simulations: sims, cells, largest }
}
