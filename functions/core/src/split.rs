//! A large room's fan-out split across parallel workers.
//!
//! One broadcaster invocation posts at most [`FanoutConfig::max_in_flight`]
//! frames at a time, so a room of N members takes about `N / 256 × 20 ms`:
//! 0.8 s for 10 000, 8 s for 100 000, while the stream shard waits and one
//! throttled member's retries hold the whole batch. Above [`Split::above`]
//! recipients the broadcaster instead hands the room to a [`FanoutQueue`] in
//! chunks ([`FanoutJob`], at most [`Split::chunk`] members each), counts the
//! record done once they are enqueued, and moves on; workers
//! ([`crate::entrypoints::fanout::on_sqs`]) post the chunks in parallel, each
//! with the broadcaster's own bounded concurrency, retries and 410 pruning.
//!
//! Why a queue (SQS when deployed) rather than invoking a worker function
//! asynchronously: a chunk that fails is retried by the queue (visibility
//! timeout, then redrive to a dead-letter queue), never by the stream batch;
//! `SendMessageBatch` hands over ten chunks per request; the worker reports
//! partial batch failures per chunk; and a member still throttled after a short
//! in-invocation retry goes back to the queue as a smaller job with a delay
//! (`DelaySeconds`), so it holds back neither the others nor a worker.
//!
//! Delivery stays at least once: a job redelivered after a worker failed
//! midway posts again to members that already got the frame; clients dedupe by
//! message id, as they do after any stream retry.
//!
//! Cost per split event of N members (SQS requests are billed per 64 KB of
//! payload): `ceil(N / chunk)` jobs, sent `≤ 10` per `SendMessageBatch` call
//! (fewer when their bytes pass 256 KB), one worker invocation per job at the
//! default batch size of 1 and its receive and delete, plus the N posts that
//! were always there — which dominate (N × $1 per million).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::broadcaster::{Broadcaster, Delivery, FanoutConfig, is_own_join};
use crate::model::{Connection, LogEvent};
use crate::ports::{Bytes, PostError, StoreError};

/// SQS's message size limit (256 KiB; newer queues take 1 MiB, but 256 KiB
/// also bounds one `SendMessageBatch` request's total, so it is the budget
/// for one job's body).
pub const MAX_JOB_BYTES: usize = 256 * 1024;

/// The largest frame API Gateway accepts (128 KiB, larger ones are 413s): a
/// larger one is not split (each post would fail at once anyway).
pub const MAX_FRAME_BYTES: usize = 128 * 1024;

/// Default [`Split::above`]: rooms of more recipients are split. At 20 ms per
/// post and 256 in flight, 1 000 members take ~80 ms in one invocation, about
/// a queue hand-off: below it, splitting only adds latency and requests.
pub const DEFAULT_SPLIT_ABOVE: usize = 1_000;

/// Default [`Split::chunk`]: 500 members a job is two waves of 256 posts,
/// ~45 ms at 20 ms per post, and ~60 KB of members (plus the frame, base64)
/// inside one SQS message; 10 000 members are 20 jobs, two batch calls.
pub const DEFAULT_CHUNK: usize = 500;

/// Tries of one post within a worker invocation (the first included): a member
/// still throttled after them is re-enqueued with a delay rather than retried
/// in place, so one slow connection does not keep a worker busy.
pub const WORKER_TRIES: u32 = 2;

/// How often a job's throttled members are re-enqueued before they are given
/// up (logged as undeliverable): after ~2 + 4 + 8 s of delays.
pub const MAX_JOB_ATTEMPTS: u32 = 4;

/// Where and when a room is split. Kept in [`FanoutConfig::split`]: `None`
/// (the default, and locally, where one process holds every socket) leaves
/// the broadcaster as it was.
#[derive(Clone)]
pub struct Split {
    pub queue: Arc<dyn FanoutQueue>,
    /// Rooms with more recipients than this (non-coalescing, the joiner of
    /// its own join excluded) are split; at most this many are posted directly.
    pub above: usize,
    /// Members per job at most; fewer when the frame is large (see [`jobs`]).
    pub chunk: usize,
}

impl Split {
    /// A split onto `queue` at the default threshold and chunk size.
    pub fn new(queue: Arc<dyn FanoutQueue>) -> Self {
        Self { queue, above: DEFAULT_SPLIT_ABOVE, chunk: DEFAULT_CHUNK }
    }

    /// Hands `event`'s non-coalescing recipients among `members` to the queue
    /// as jobs when there are more than [`above`](Self::above) of them and the
    /// frame fits a job: `Ok(Some(recipients handed off))`. `Ok(None)`: not
    /// split, deliver directly. `Err`: the queue refused; retry the record.
    pub async fn hand_off(
        &self,
        event: &LogEvent,
        frame: &Bytes,
        members: &[Connection],
    ) -> Result<Option<usize>, StoreError> {
        let recipients: Vec<&Connection> = members.iter().filter(|c| !c.batch && !is_own_join(event, c)).collect();
        if recipients.len() <= self.above || frame.len() > MAX_FRAME_BYTES {
            return Ok(None);
        }
        let jobs = jobs(&event.room, &event.message_id, frame, &recipients, self.chunk);
        self.queue.enqueue(&jobs).await?;
        tracing::info!(
            message_id = %event.message_id,
            room = %event.room,
            recipients = recipients.len(),
            jobs = jobs.len(),
            "fan-out split across workers"
        );
        Ok(Some(recipients.len()))
    }
}

impl std::fmt::Debug for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Split").field("above", &self.above).field("chunk", &self.chunk).finish_non_exhaustive()
    }
}

/// One chunk of a room's fan-out: the frame and who gets it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FanoutJob {
    pub room: String,
    /// The event's id, for logs.
    pub message_id: String,
    /// The rendered event frame, as each recipient gets it; base64 in the
    /// body, so its size there is bounded (4/3) whatever the text holds.
    #[serde(with = "base64_bytes")]
    pub frame: Bytes,
    /// The members as the room's listing gave them (not bare ids): pruning a
    /// 410 announces the leave under the member's identity and closes its
    /// session with its connection time, exactly as the broadcaster does.
    pub members: Vec<Connection>,
    /// 0 when the broadcaster handed it off; n on the n-th re-enqueue of
    /// members still throttled.
    #[serde(default)]
    pub attempt: u32,
}

impl FanoutJob {
    /// How long the queue holds the job back before a worker gets it: none at
    /// first, then 2, 4, 8 s (SQS allows up to 900).
    pub fn delay(&self) -> Duration {
        if self.attempt == 0 { Duration::ZERO } else { Duration::from_secs(1 << self.attempt.min(9)) }
    }

    /// The queue message body (JSON).
    pub fn to_body(&self) -> String {
        serde_json::to_string(self).expect("a job serializes")
    }

    pub fn from_body(body: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(body)
    }
}

/// `members` in jobs of at most `chunk` members and [`MAX_JOB_BYTES`] of
/// body each, in order, every member in exactly one job. A large frame
/// leaves room for fewer: a 128 KiB frame (171 KiB as base64) leaves ~85 KiB,
/// ~700 anonymous members or ~200 with long verified identities.
pub fn jobs(room: &str, message_id: &str, frame: &Bytes, members: &[&Connection], chunk: usize) -> Vec<FanoutJob> {
    let empty = |members: Vec<Connection>| FanoutJob {
        room: room.to_owned(),
        message_id: message_id.to_owned(),
        frame: frame.clone(),
        members,
        attempt: 0,
    };
    let base = empty(Vec::new()).to_body().len();
    let mut jobs = Vec::new();
    let mut current: Vec<Connection> = Vec::new();
    let mut bytes = base;
    for member in members {
        // Its JSON and a comma.
        let size = serde_json::to_vec(member).map_or(0, |v| v.len()) + 1;
        if !current.is_empty() && (current.len() >= chunk.max(1) || bytes + size > MAX_JOB_BYTES) {
            jobs.push(empty(std::mem::take(&mut current)));
            bytes = base;
        }
        current.push((*member).clone());
        bytes += size;
    }
    if !current.is_empty() {
        jobs.push(empty(current));
    }
    jobs
}

/// Where a split room's jobs wait for a worker (SQS when deployed).
#[async_trait]
pub trait FanoutQueue: Send + Sync {
    /// Enqueues every job, each held back its [`FanoutJob::delay`]; `Err` when
    /// any could not be (some may have been: a job is delivered at least once).
    async fn enqueue(&self, jobs: &[FanoutJob]) -> Result<(), StoreError>;
}

/// What a worker did with one job.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JobReport {
    pub delivered: usize,
    pub pruned: usize,
    /// Members re-enqueued (throttled or a transient error after [`WORKER_TRIES`]).
    pub requeued: usize,
    /// Members given up: a frame too large, or still failing after [`MAX_JOB_ATTEMPTS`].
    pub undeliverable: usize,
}

/// Caps the retry policy at [`WORKER_TRIES`] tries per post: the worker's
/// configuration, from the broadcaster's.
pub fn worker_config(mut config: FanoutConfig) -> FanoutConfig {
    config.retry.max_attempts = config.retry.max_attempts.clamp(1, WORKER_TRIES);
    config
}

impl Broadcaster {
    /// A worker's part: posts `job`'s frame to its members with this
    /// broadcaster's bounded concurrency and retries, prunes the gone ones as
    /// [`Broadcaster::prune_answered_gone`] does, and re-enqueues those that still failed
    /// (throttled, transient) as a smaller job with the next delay, until
    /// [`MAX_JOB_ATTEMPTS`]. `Err` only when that re-enqueue failed: the
    /// queue then redelivers the whole job.
    pub async fn fan_out_job(&self, job: &FanoutJob) -> Result<JobReport, StoreError> {
        let posts: Vec<(&Connection, &Bytes)> = job.members.iter().map(|c| (c, &job.frame)).collect();
        let mut report = JobReport::default();
        let (mut gone, mut again) = (Vec::new(), Vec::new());
        for (member, delivery) in job.members.iter().zip(self.post_all(&posts).await) {
            match delivery {
                Delivery::Delivered => report.delivered += 1,
                Delivery::Gone => gone.push(member.clone()),
                Delivery::Failed(PostError::PayloadTooLarge) => report.undeliverable += 1,
                Delivery::Failed(error) => {
                    tracing::debug!(connection_id = %member.connection_id, %error, "post failed; re-enqueueing");
                    again.push(member.clone());
                }
            }
        }
        report.pruned = gone.len();
        self.prune_answered_gone(&gone).await;
        if !again.is_empty() {
            let queue = self.config.split.as_ref().map(|s| &s.queue);
            match queue.filter(|_| job.attempt + 1 < MAX_JOB_ATTEMPTS) {
                Some(queue) => {
                    report.requeued = again.len();
                    let retry = FanoutJob { members: again, attempt: job.attempt + 1, ..job.clone() };
                    queue.enqueue(std::slice::from_ref(&retry)).await?;
                }
                None => {
                    tracing::warn!(message_id = %job.message_id, members = again.len(), "giving up on throttled members");
                    report.undeliverable += again.len();
                }
            }
        }
        tracing::info!(
            message_id = %job.message_id,
            room = %job.room,
            attempt = job.attempt,
            delivered = report.delivered,
            pruned = report.pruned,
            requeued = report.requeued,
            undeliverable = report.undeliverable,
            "fan-out job done"
        );
        Ok(report)
    }
}

/// `Bytes` as a base64 string.
mod base64_bytes {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::ports::Bytes;

    pub fn serialize<S: Serializer>(bytes: &Bytes, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Bytes, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        STANDARD.decode(text.as_bytes()).map(Bytes::from).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Identity;
    use crate::time::parse_iso;

    /// `n` listed members; `account` gives each a long verified identity (~430 bytes of JSON).
    fn members(n: usize, account: bool) -> Vec<Connection> {
        let at = parse_iso("2026-11-24T10:15:30Z").unwrap();
        let identity = Identity::verified(&"n".repeat(64), &format!("https://issuer.example/{}|sub", "x".repeat(200)));
        (0..n)
            .map(|i| {
                Connection::new(&format!("c{i:014}="), "", at).of(account.then_some(&identity)).as_member_of("big")
            })
            .collect()
    }

    #[test]
    fn jobs_cover_every_member_once_within_the_size_limit() {
        for (frame_len, account, sizes) in [
            (60, false, vec![500, 500, 234]),
            // The frame's base64 (171 KiB) leaves room for 191 such members.
            (MAX_FRAME_BYTES, true, vec![191, 191, 191, 191, 191, 191, 88]),
        ] {
            let all = members(1_234, account);
            let refs: Vec<&Connection> = all.iter().collect();
            let frame = Bytes::from(vec![b'"'; frame_len]);
            let jobs = jobs("big", "m1", &frame, &refs, DEFAULT_CHUNK);
            let ids: Vec<&str> = jobs.iter().flat_map(|j| &j.members).map(|c| c.connection_id.as_str()).collect();
            assert_eq!(ids, all.iter().map(|c| c.connection_id.as_str()).collect::<Vec<_>>(), "{frame_len}");
            for job in &jobs {
                assert!(job.to_body().len() <= MAX_JOB_BYTES, "{frame_len}: {}", job.to_body().len());
                assert_eq!(FanoutJob::from_body(&job.to_body()).unwrap(), *job);
            }
            assert_eq!(jobs.iter().map(|j| j.members.len()).collect::<Vec<_>>(), sizes, "{frame_len}");
        }
    }

    #[test]
    fn re_enqueued_jobs_wait_longer_each_time() {
        let job = |attempt| FanoutJob {
            room: "r".into(),
            message_id: "m".into(),
            frame: Bytes::new(),
            members: Vec::new(),
            attempt,
        };
        let delays: Vec<u64> = (0..MAX_JOB_ATTEMPTS).map(|a| job(a).delay().as_secs()).collect();
        assert_eq!(delays, [0, 2, 4, 8]);
    }
}
