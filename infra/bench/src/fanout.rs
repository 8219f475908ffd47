//! The broadcaster alone at scale: `chat_core`'s real [`Broadcaster`] over
//! [`MemoryConnections`] holding 1k–100k connections, posting through a
//! simulated @connections API with API Gateway's latency and its 410s and 429s.
//! Measures the time to fan one message out against the concurrency bound.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chat_core::broadcaster::{Broadcaster, FanoutConfig, SequencedEvent};
use chat_core::memory::{MemoryConnections, MemorySessions};
use chat_core::ports::{Bytes, ConnectionStore, PostError, SocketPoster, SystemClock, list_all_connections};
use chat_core::{Connection, LogEvent};
use serde::{Deserialize, Serialize};

/// How the simulated @connections API answers.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PosterModel {
    /// Mean time one post takes.
    pub latency_ms: f64,
    /// Each post takes `latency ± jitter`, uniformly.
    pub jitter_ms: f64,
    /// Share of posts answered 410 Gone.
    pub gone: f64,
    /// Share of posts answered 429 (retried by the broadcaster with backoff).
    pub throttled: f64,
}

/// A [`SocketPoster`] that waits like the network and fails like API Gateway,
/// and remembers who it declared gone so the simulation can reconnect them.
pub struct SimPoster {
    model: PosterModel,
    gone: Mutex<Vec<String>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    posts: AtomicUsize,
    /// Connections that answer every post 429 (a throttled or stuck client).
    stuck: HashSet<String>,
    /// The frame being timed and when each post of it succeeded.
    timed: Mutex<Option<(Bytes, Vec<Instant>)>>,
}

impl SimPoster {
    pub fn new(model: PosterModel) -> Self {
        Self {
            model,
            gone: Mutex::default(),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            posts: AtomicUsize::new(0),
            stuck: HashSet::new(),
            timed: Mutex::default(),
        }
    }

    /// A poster whose `stuck` connections answer every post 429.
    pub fn with_stuck(model: PosterModel, stuck: HashSet<String>) -> Self {
        Self { stuck, ..Self::new(model) }
    }

    /// From now on, notes when each post of `frame` succeeds (see [`take_timed`](Self::take_timed)).
    pub fn time(&self, frame: Bytes) {
        *self.timed.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some((frame, Vec::new()));
    }

    /// When each successful post of the timed frame returned, in order; stops timing.
    pub fn take_timed(&self) -> Vec<Instant> {
        let timed = self.timed.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
        timed.map(|(_, times)| times).unwrap_or_default()
    }

    pub fn posts(&self) -> usize {
        self.posts.load(Ordering::Relaxed)
    }

    pub fn take_gone(&self) -> Vec<String> {
        std::mem::take(&mut *self.gone.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }
}

#[async_trait]
impl SocketPoster for SimPoster {
    async fn post(&self, connection_id: &str, frame: &Bytes) -> Result<(), PostError> {
        self.posts.fetch_add(1, Ordering::Relaxed);
        let now = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        self.max_in_flight.fetch_max(now, Ordering::Relaxed);
        let jitter = (fastrand::f64() * 2.0 - 1.0) * self.model.jitter_ms;
        let wait = (self.model.latency_ms + jitter).max(0.0);
        if wait > 0.0 {
            tokio::time::sleep(Duration::from_secs_f64(wait / 1e3)).await;
        }
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        if self.stuck.contains(connection_id) {
            return Err(PostError::Throttled);
        }
        let roll = fastrand::f64();
        if roll < self.model.gone {
            self.gone.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(connection_id.to_owned());
            Err(PostError::Gone)
        } else if roll < self.model.gone + self.model.throttled {
            Err(PostError::Throttled)
        } else {
            if let Some((timed, times)) = self.timed.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).as_mut()
                && timed == frame
            {
                times.push(Instant::now());
            }
            Ok(())
        }
    }

    /// The simulated fan-out never closes sockets.
    async fn close(&self, _connection_id: &str) -> Result<(), PostError> {
        Ok(())
    }
}

/// One measured configuration.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CaseReport {
    pub connections: usize,
    pub concurrency: usize,
    pub poster: PosterModel,
    pub messages: usize,
    /// Wall time of `Broadcaster::broadcast` for one single-message batch.
    pub mean_ms_per_message: f64,
    pub max_ms_per_message: f64,
    /// Of that: listing every connection from the store (done once per batch).
    pub list_ms: f64,
    /// `ceil(connections / concurrency) × latency`: what the bound alone allows.
    pub ideal_ms: f64,
    /// Posts per message, retries included.
    pub posts_per_message: f64,
    pub pruned_per_message: f64,
    pub undeliverable: usize,
    pub max_in_flight: usize,
    /// `VmHWM` of the process that ran the case (run one case per process to attribute it).
    pub peak_rss_mib: f64,
}

pub fn connection_id(i: usize) -> String {
    // 16 characters ending in '=', like API Gateway's.
    format!("c{i:014}=")
}

/// Fans `messages` single-message batches out to `connections` connections.
/// Connections pruned as gone are put back before the next message, so every
/// message sees the full room.
pub async fn run_case(connections: usize, concurrency: usize, model: PosterModel, messages: usize) -> CaseReport {
    let store = Arc::new(MemoryConnections::default());
    // Open for an hour, past `CONNECTING_GRACE`: a 410 prunes them, as deployed.
    let at = chrono::Utc::now() - chrono::Duration::hours(1);
    for i in 0..connections {
        store.put(&Connection::new(&connection_id(i), "198.51.100.7", at)).await.ok();
    }
    let poster = Arc::new(SimPoster::new(model.clone()));
    let broadcaster = Broadcaster {
        connections: store.clone(),
        sessions: Arc::new(MemorySessions::default()),
        log: Arc::new(chat_core::memory::MemoryLog::default()),
        poster: poster.clone(),
        archive: None,
        clock: Arc::new(SystemClock),
        config: FanoutConfig { max_in_flight: concurrency, ..FanoutConfig::default() },
        occupancy: Default::default(),
    };

    let listed = Instant::now();
    let _ = list_all_connections(store.as_ref(), chat_core::room::DEFAULT_ROOM).await;
    let list_ms = listed.elapsed().as_secs_f64() * 1e3;

    let mut times = Vec::with_capacity(messages);
    let (mut pruned, mut undeliverable) = (0, 0);
    for seq in 0..messages.max(1) {
        let event = LogEvent::chat("CXzQ2cJjoAMCJ6g=", "a chat line of ordinary length, about sixty bytes long", at);
        let batch = [SequencedEvent { sequence_number: format!("{seq:028}"), event }];
        let started = Instant::now();
        let report = broadcaster.broadcast(&batch).await;
        times.push(started.elapsed().as_secs_f64() * 1e3);
        pruned += report.pruned;
        undeliverable += report.undeliverable;
        for id in poster.take_gone() {
            store.put(&Connection::new(&id, "198.51.100.7", at)).await.ok();
        }
    }
    let count = times.len() as f64;
    CaseReport {
        connections,
        concurrency,
        poster: model.clone(),
        messages: times.len(),
        mean_ms_per_message: times.iter().sum::<f64>() / count,
        max_ms_per_message: times.iter().copied().fold(0.0, f64::max),
        list_ms,
        ideal_ms: connections.div_ceil(concurrency.max(1)) as f64 * model.latency_ms,
        posts_per_message: poster.posts.load(Ordering::Relaxed) as f64 / count,
        pruned_per_message: pruned as f64 / count,
        undeliverable,
        max_in_flight: poster.max_in_flight.load(Ordering::Relaxed),
        peak_rss_mib: crate::procstat::sample(std::process::id()).map_or(0.0, |s| s.hwm_kib as f64 / 1024.0),
    }
}

/// How many messages to time for a case, so that slow cases stay within `budget`.
pub fn messages_within(
    budget: Duration,
    wanted: usize,
    connections: usize,
    concurrency: usize,
    latency_ms: f64,
) -> usize {
    let estimate_ms = connections.div_ceil(concurrency.max(1)) as f64 * latency_ms.max(0.001);
    ((budget.as_secs_f64() * 1e3 / estimate_ms) as usize).clamp(1, wanted.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn simulates_a_room_with_gone_and_throttled_posts() {
        let model = PosterModel { latency_ms: 1.0, jitter_ms: 0.5, gone: 0.05, throttled: 0.05 };
        let report = run_case(200, 16, model, 2).await;
        assert_eq!(report.messages, 2);
        assert!(report.max_in_flight <= 16);
        assert!(report.posts_per_message >= 200.0);
        assert!(report.mean_ms_per_message >= report.ideal_ms * 0.5, "{report:?}");
    }

    #[test]
    fn slow_cases_get_fewer_messages() {
        assert_eq!(messages_within(Duration::from_secs(10), 5, 100_000, 16, 20.0), 1);
        assert_eq!(messages_within(Duration::from_secs(10), 5, 1_000, 1024, 20.0), 5);
    }
}
