//! The fan-out of one event split across parallel workers (`loadgen fanout
//! --split`), against the broadcaster posting alone: `chat_core`'s real
//! [`Broadcaster`] hands the room to an in-process [`FanoutQueue`] that runs
//! each job on its own task — its own worker — after a modelled SQS → Lambda
//! hand-off, through [`Broadcaster::fan_out_job`], the worker's real code.
//! The same simulated @connections API answers both ([`SimPoster`]).
//!
//! Modelled, not measured: a `SendMessageBatch` call takes `send_ms` (all of an
//! event's batches go at once); a job reaches a warm worker `handoff_ms ±
//! jitter` after it is sent (the event source mapping's long poll returns a
//! message within tens of ms, a warm invoke adds ~10 ms: 40 ± 10 ms); each
//! page of the room's listing takes `list_page_ms` (a DynamoDB Query of 1 000
//! members, as the cost model's 5 ms per call). The workers are assumed warm
//! and as many as the jobs: the event source scales its pollers up over
//! minutes, so a cold burst of 200 jobs waits longer than this shows.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chat_core::broadcaster::{Broadcaster, FanoutConfig, SequencedEvent};
use chat_core::memory::{MemoryConnections, MemoryLog, MemorySessions};
use chat_core::ports::{Bytes, ConnectionStore, Page, StoreError, Subscribed, SystemClock};
use chat_core::protocol::event_frame;
use chat_core::split::{FanoutJob, FanoutQueue, Split, worker_config};
use chat_core::{Connection, LogEvent};
use serde::{Deserialize, Serialize};

use crate::fanout::{PosterModel, SimPoster, connection_id};

/// The deployment around the broadcaster: the queue, the workers, the table.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SplitModel {
    /// Hand rooms above this many recipients to workers; `None`: the broadcaster posts alone.
    pub above: Option<usize>,
    /// Members per job.
    pub chunk: usize,
    /// One `SendMessageBatch` call.
    pub send_ms: f64,
    /// From a job's send to its worker starting on it.
    pub handoff_ms: f64,
    pub handoff_jitter_ms: f64,
    /// One page (1 000 members) of the room's listing.
    pub list_page_ms: f64,
    /// Connections that answer every post 429.
    pub stuck: usize,
}

/// One measured room.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SplitCaseReport {
    pub connections: usize,
    pub concurrency: usize,
    pub poster: PosterModel,
    pub model: SplitModel,
    pub messages: usize,
    /// The broadcaster's time per event: what the stream shard waits (listing,
    /// then posting everyone, or handing the jobs off).
    pub shard_ms: f64,
    /// From the broadcast's start to the median / 99th percentile / last
    /// successful post of the event (the first generation of jobs; members
    /// re-enqueued with a delay are counted in `requeued`), mean over messages.
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub last_ms: f64,
    /// The largest `last_ms` of any message.
    pub last_ms_max: f64,
    pub jobs_per_message: f64,
    /// Workers running at once, at most.
    pub max_workers: usize,
    pub posts_per_message: f64,
    /// Members sent back to the queue with a delay, per message.
    pub requeued_per_message: f64,
}

/// Counts a worker's jobs; shared with the tasks that run them.
#[derive(Default)]
struct Workers {
    /// Jobs the broadcaster enqueued (not re-enqueued ones).
    jobs: AtomicUsize,
    /// First-generation jobs not yet done.
    pending: AtomicUsize,
    running: AtomicUsize,
    max_running: AtomicUsize,
    requeued: AtomicUsize,
}

/// A [`FanoutQueue`] that gives each job to a worker task of its own after the
/// modelled hand-off.
struct SimQueue {
    model: SplitModel,
    worker: OnceLock<Weak<Broadcaster>>,
    workers: Arc<Workers>,
}

#[async_trait]
impl FanoutQueue for SimQueue {
    async fn enqueue(&self, jobs: &[FanoutJob]) -> Result<(), StoreError> {
        sleep_ms(self.model.send_ms).await;
        let worker = self.worker.get().and_then(Weak::upgrade).ok_or(StoreError::Unavailable("no worker".into()))?;
        for job in jobs {
            let (worker, workers, job) = (worker.clone(), self.workers.clone(), job.clone());
            match job.attempt {
                0 => {
                    workers.jobs.fetch_add(1, Ordering::SeqCst);
                    workers.pending.fetch_add(1, Ordering::SeqCst);
                }
                // The first generation's members sent back (later ones come seconds later).
                1 => _ = workers.requeued.fetch_add(job.members.len(), Ordering::SeqCst),
                _ => {}
            }
            let jitter = (fastrand::f64() * 2.0 - 1.0) * self.model.handoff_jitter_ms;
            let handoff = self.model.handoff_ms + jitter + job.delay().as_secs_f64() * 1e3;
            tokio::spawn(async move {
                sleep_ms(handoff).await;
                let now = workers.running.fetch_add(1, Ordering::SeqCst) + 1;
                workers.max_running.fetch_max(now, Ordering::SeqCst);
                if let Err(error) = worker.fan_out_job(&job).await {
                    eprintln!("simulated worker: {error}");
                }
                workers.running.fetch_sub(1, Ordering::SeqCst);
                if job.attempt == 0 {
                    workers.pending.fetch_sub(1, Ordering::SeqCst);
                }
            });
        }
        Ok(())
    }
}

async fn sleep_ms(ms: f64) {
    if ms > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(ms / 1e3)).await;
    }
}

/// [`MemoryConnections`] whose listing takes `page_ms` per page, as DynamoDB's.
struct PagedStore {
    inner: MemoryConnections,
    page_ms: f64,
}

#[async_trait]
impl ConnectionStore for PagedStore {
    async fn put(&self, connection: &Connection) -> Result<(), StoreError> {
        self.inner.put(connection).await
    }
    async fn get(&self, connection_id: &str) -> Result<Option<Connection>, StoreError> {
        ConnectionStore::get(&self.inner, connection_id).await
    }
    async fn delete(&self, connection_id: &str) -> Result<Option<Connection>, StoreError> {
        self.inner.delete(connection_id).await
    }
    async fn subscribe(
        &self,
        connection: &Connection,
        room: &str,
        max_rooms: usize,
        join: &LogEvent,
    ) -> Result<Subscribed, StoreError> {
        self.inner.subscribe(connection, room, max_rooms, join).await
    }
    async fn mark_leaving(
        &self,
        connection_id: &str,
        room: &str,
        leave: &LogEvent,
    ) -> Result<Option<Connection>, StoreError> {
        self.inner.mark_leaving(connection_id, room, leave).await
    }
    async fn unsubscribe(&self, connection_id: &str, room: &str) -> Result<Option<Connection>, StoreError> {
        self.inner.unsubscribe(connection_id, room).await
    }
    async fn end_membership(&self, connection_id: &str, room: &str) -> Result<Option<Connection>, StoreError> {
        self.inner.end_membership(connection_id, room).await
    }
    async fn list(&self, room: &str, after: Option<String>, limit: usize) -> Result<Page<Connection>, StoreError> {
        sleep_ms(self.page_ms).await;
        self.inner.list(room, after, limit).await
    }
    async fn count(&self, room: &str) -> Result<usize, StoreError> {
        self.inner.count(room).await
    }
}

/// Fans `messages` events out to a room of `connections`, one at a time, split
/// as `model` says, and times each event's deliveries.
pub async fn run_split_case(
    connections: usize,
    concurrency: usize,
    poster: PosterModel,
    model: SplitModel,
    messages: usize,
) -> SplitCaseReport {
    // Open for an hour, past `CONNECTING_GRACE`: a 410 prunes them, as deployed.
    let at = chrono::Utc::now() - chrono::Duration::hours(1);
    let store = Arc::new(PagedStore { inner: MemoryConnections::default(), page_ms: model.list_page_ms });
    for i in 0..connections {
        store.put(&Connection::new(&connection_id(i), "198.51.100.7", at)).await.ok();
    }
    let stuck: HashSet<String> = (0..model.stuck.min(connections)).map(connection_id).collect();
    let sim = Arc::new(SimPoster::with_stuck(poster.clone(), stuck));
    let workers = Arc::new(Workers::default());
    let queue = Arc::new(SimQueue { model: model.clone(), worker: OnceLock::new(), workers: workers.clone() });
    let config = FanoutConfig { max_in_flight: concurrency, ..FanoutConfig::default() };
    let broadcaster = |config: FanoutConfig| Broadcaster {
        connections: store.clone(),
        sessions: Arc::new(MemorySessions::default()),
        log: Arc::new(MemoryLog::default()),
        poster: sim.clone(),
        archive: None,
        clock: Arc::new(SystemClock),
        occupancy: Default::default(),
        config,
    };
    let split = model.above.map(|above| Split { queue: queue.clone(), above, chunk: model.chunk });
    let worker = Arc::new(broadcaster(worker_config(FanoutConfig { split: split.clone(), ..config.clone() })));
    queue.worker.set(Arc::downgrade(&worker)).ok();
    let broadcaster = broadcaster(FanoutConfig { split, ..config });

    let (mut shard, mut p50, mut p99, mut last, mut last_max) = (0.0, 0.0, 0.0, 0.0, 0.0_f64);
    let messages = messages.max(1);
    let (jobs_before, posts_before) = (workers.jobs.load(Ordering::SeqCst), sim.posts());
    for seq in 0..messages {
        let event =
            LogEvent::chat("CXzQ2cJjoAMCJ6g=", &format!("line {seq}: about sixty bytes of an ordinary chat"), at);
        sim.time(Bytes::from(event_frame(&event)));
        let batch = [SequencedEvent { sequence_number: format!("{seq:028}"), event }];
        let started = Instant::now();
        let report = broadcaster.broadcast(&batch).await;
        shard += ms(started.elapsed());
        assert!(report.failed.is_empty(), "the simulated broadcast failed: {report:?}");
        while workers.pending.load(Ordering::SeqCst) > 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let mut times: Vec<f64> = sim.take_timed().into_iter().map(|t| ms(t.duration_since(started))).collect();
        times.sort_by(f64::total_cmp);
        let at_share = |q: f64| times.get(((times.len() as f64 * q).ceil() as usize).saturating_sub(1)).copied();
        p50 += at_share(0.5).unwrap_or_default();
        p99 += at_share(0.99).unwrap_or_default();
        let end = times.last().copied().unwrap_or_default();
        last += end;
        last_max = last_max.max(end);
        // Pruned members come back, so every event meets the full room.
        for id in sim.take_gone() {
            store.put(&Connection::new(&id, "198.51.100.7", at)).await.ok();
        }
    }
    let n = messages as f64;
    SplitCaseReport {
        connections,
        concurrency,
        poster,
        model,
        messages,
        shard_ms: shard / n,
        p50_ms: p50 / n,
        p99_ms: p99 / n,
        last_ms: last / n,
        last_ms_max: last_max,
        jobs_per_message: (workers.jobs.load(Ordering::SeqCst) - jobs_before) as f64 / n,
        max_workers: workers.max_running.load(Ordering::SeqCst),
        posts_per_message: (sim.posts() - posts_before) as f64 / n,
        requeued_per_message: workers.requeued.load(Ordering::SeqCst) as f64 / n,
    }
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(above: Option<usize>, stuck: usize) -> SplitModel {
        SplitModel { above, chunk: 50, send_ms: 1.0, handoff_ms: 2.0, handoff_jitter_ms: 1.0, list_page_ms: 0.0, stuck }
    }

    #[tokio::test]
    async fn a_split_room_is_reached_by_parallel_workers_and_a_stuck_member_holds_nobody() {
        let poster = PosterModel { latency_ms: 5.0, jitter_ms: 1.0, gone: 0.0, throttled: 0.0 };
        let split = run_split_case(400, 16, poster.clone(), model(Some(100), 1), 2).await;
        assert_eq!(split.jobs_per_message, 8.0, "{split:?}");
        assert!(split.max_workers > 1, "{split:?}");
        assert_eq!(split.requeued_per_message, 1.0, "the stuck member goes back to the queue");
        let direct = run_split_case(400, 16, poster, model(None, 1), 1).await;
        assert_eq!(direct.jobs_per_message, 0.0);
        // 400 / 16 = 25 waves of 5 ms alone; the split room is 50 / 16 = 4 waves after the hand-off.
        assert!(split.last_ms < direct.last_ms, "split {split:?}\ndirect {direct:?}");
        assert!(split.shard_ms < direct.shard_ms, "the shard waits for the hand-off only");
    }
}
