//! The fan-out policy: deliver each new log event to every active connection of
//! its room, concurrently but bounded, pruning connections API Gateway reports
//! gone, and say which stream records must be retried (partial batch failure).
//! In rooms above the presence limit, joins and leaves become occupancy frames
//! ([`crate::occupancy`]).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::archive;
use crate::bounded::for_each_bounded;
use crate::coalesce::{CoalescedFrame, coalesce};
use crate::handlers::depart;
use crate::model::{Connection, EventKind, LogEvent, SessionEnd};
use crate::occupancy::{Occupancy, PresenceConfig};
use crate::ports::{
    Archive, Bytes, Clock, ConnectionStore, MessageLog, PostError, SessionLog, SocketPoster, list_all_connections,
};
use crate::protocol::{event_frame, occupancy_frame};
use crate::split::Split;

/// How hard to push and when to give up.
#[derive(Clone, Debug)]
pub struct FanoutConfig {
    /// Posts in flight at once for one event.
    pub max_in_flight: usize,
    pub retry: RetryPolicy,
    /// Above this share of recipients failing (after retries), the record is
    /// reported for retry. Below it, a few broken sockets do not make everyone
    /// receive the message again.
    pub max_failed_share: f64,
    /// When joins and leaves give way to occupancy frames.
    pub presence: PresenceConfig,
    /// Large rooms handed to parallel workers instead of posted here
    /// ([`crate::split`]); `None`: every room is posted by this invocation.
    pub split: Option<Split>,
}

impl Default for FanoutConfig {
    fn default() -> Self {
        // 256 posts in flight fan one message out to 10 000 connections in under a
        // second at 20 ms per post (BENCHMARKS.md, fan-out simulation).
        Self {
            max_in_flight: 256,
            retry: RetryPolicy::default(),
            max_failed_share: 0.5,
            presence: PresenceConfig::default(),
            split: None,
        }
    }
}

/// Capped exponential backoff with full jitter, for throttling and transient errors.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Tries per post, the first included.
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { max_attempts: 5, base_delay: Duration::from_millis(50), max_delay: Duration::from_secs(2) }
    }
}

impl RetryPolicy {
    /// The pause before try `attempt + 1`: uniform in `0..=min(max, base * 2^attempt)`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self.base_delay.saturating_mul(1 << attempt.min(16)).min(self.max_delay);
        ceiling.mul_f64(fastrand::f64())
    }
}

/// A decoded stream record: the log event and the sequence number that
/// identifies it in a partial batch failure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SequencedEvent {
    pub sequence_number: String,
    pub event: LogEvent,
}

/// What one batch did. `failed` holds the sequence numbers to report in
/// `batchItemFailures`: the first record that could not be delivered and every
/// record after it (the stream retries from the lowest one anyway).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BatchReport {
    pub failed: Vec<String>,
    pub delivered: usize,
    pub pruned: usize,
    pub undeliverable: usize,
    /// Occupancy frames posted (one per member told; a coalescing member's may
    /// share a post with its events).
    pub occupancy: usize,
    /// Recipients handed to fan-out workers ([`crate::split`]).
    pub handed_off: usize,
}

impl BatchReport {
    /// Counts what a round of occupancy frames did.
    fn add_occupancy(&mut self, told: &FanoutOutcome) {
        self.occupancy += told.occupancy;
        self.pruned += told.gone.len();
    }
}

/// Outcome of one post after retries.
pub(crate) enum Delivery {
    Delivered,
    Gone,
    Failed(PostError),
}

/// The broadcaster's ports and policy. Built once per Lambda cold start.
pub struct Broadcaster {
    pub connections: Arc<dyn ConnectionStore>,
    pub sessions: Arc<dyn SessionLog>,
    /// Where the leave of a pruned connection is announced.
    pub log: Arc<dyn MessageLog>,
    pub poster: Arc<dyn SocketPoster>,
    pub archive: Option<Arc<dyn Archive>>,
    pub clock: Arc<dyn Clock>,
    pub config: FanoutConfig,
    /// What rooms above the presence limit have not been told yet.
    pub occupancy: Occupancy,
}

impl Broadcaster {
    /// Archives the batch (if configured), then delivers its events in order,
    /// each to its own room. A room's connections are listed once per batch.
    /// Connections that coalesce ([`Connection::batch`]) get the events they
    /// would have got one by one, after the others, in `{"events":[…]}` frames.
    ///
    /// In a room of more members than the presence limit (as listed for this
    /// batch), joins and leaves are not posted one by one: after its events the
    /// room gets one occupancy frame, if its previous one went an interval ago.
    /// What that holds back is announced when the interval ends, by this
    /// invocation, which waits for it (at most an interval, only while such a
    /// room has something pending) — unless the batch is full: more records are
    /// then waiting and the next invocation, following at once, announces it.
    pub async fn broadcast(&self, batch: &[SequencedEvent]) -> BatchReport {
        let mut report = BatchReport::default();
        if batch.is_empty() {
            return report;
        }
        let from = |index: usize| batch[index..].iter().map(|r| r.sequence_number.clone()).collect();

        if let Err(error) = self.archive_batch(batch).await {
            tracing::error!(%error, "archiving the batch failed; the whole batch will be retried");
            report.failed = from(0);
            return report;
        }
        let mut rooms: HashMap<String, Vec<Connection>> = HashMap::new();
        // Per event: its frame (rendered once, shared by every post; `None` for a
        // join or leave left to an occupancy frame) and its tally so far.
        let mut frames: Vec<Option<Bytes>> = Vec::with_capacity(batch.len());
        let mut tallies: Vec<Tally> = Vec::with_capacity(batch.len());

        for (index, record) in batch.iter().enumerate() {
            let room = record.event.room.as_str();
            if !rooms.contains_key(room) {
                match list_all_connections(self.connections.as_ref(), room).await {
                    Ok(connections) => rooms.insert(room.to_owned(), connections),
                    Err(error) => {
                        tracing::error!(%error, room, "listing the room failed; this record and the rest will be retried");
                        report.failed = from(index);
                        break;
                    }
                };
            }
            let recipients = rooms.get_mut(room).expect("listed above");
            if is_presence(&record.event) && self.config.presence.aggregates(recipients.len()) {
                self.occupancy.note(&record.event);
                frames.push(None);
                tallies.push(Tally::default());
                continue;
            }
            let frame = Bytes::from(event_frame(&record.event));
            if let Some(split) = &self.config.split {
                match split.hand_off(&record.event, &frame, recipients).await {
                    Ok(None) => {}
                    Ok(Some(handed_off)) => {
                        report.handed_off += handed_off;
                        frames.push(Some(frame));
                        tallies.push(Tally::default());
                        continue;
                    }
                    Err(error) => {
                        tracing::error!(%error, room, "handing the room to fan-out workers failed; this record and the rest will be retried");
                        report.failed = from(index);
                        break;
                    }
                }
            }
            let outcome = self.deliver(&record.event, &frame, recipients.iter().filter(|c| !c.batch)).await;
            report.delivered += outcome.delivered;
            report.undeliverable += outcome.failed;
            if !outcome.gone.is_empty() {
                report.pruned += outcome.gone.len();
                forget(recipients, &outcome.gone);
                self.prune_answered_gone(&outcome.gone).await;
            }
            let tally = Tally { attempted: outcome.attempted, failed: outcome.failed };
            if tally.too_many_failed(self.config.max_failed_share) {
                tracing::warn!(
                    message_id = %record.event.message_id,
                    failed = outcome.failed,
                    attempted = outcome.attempted,
                    "too many deliveries failed; this record and the rest of the batch will be retried"
                );
                report.failed = from(index);
                break;
            }
            frames.push(Some(frame));
            tallies.push(tally);
        }

        // Occupancy due now goes to the plain connections after the room's events,
        // and to the coalescing ones as the last event of their frames.
        let (now, later) = self.occupancy_due(batch.len(), &mut rooms).await;
        let plain = now.iter().flat_map(|(room, frame)| {
            rooms.get(room).into_iter().flatten().filter(|c| !c.batch).map(move |c| (c, frame))
        });
        let told = self.tell(plain.collect()).await;
        report.add_occupancy(&told);
        for connections in rooms.values_mut() {
            forget(connections, &told.gone);
        }

        // The events every other connection got (up to a failed record) now go to
        // the coalescing ones; a failed coalesced post counts against its events.
        let reached = &batch[..frames.len()];
        let coalesced = self.deliver_coalesced(reached, &frames, &rooms, &now, &mut tallies).await;
        report.delivered += coalesced.delivered;
        report.undeliverable += coalesced.failed;
        report.occupancy += coalesced.occupancy;
        if !coalesced.gone.is_empty() {
            report.pruned += coalesced.gone.len();
            self.prune_answered_gone(&coalesced.gone).await;
            for connections in rooms.values_mut() {
                forget(connections, &coalesced.gone);
            }
        }
        if let Some(index) = tallies.iter().position(|t| t.too_many_failed(self.config.max_failed_share)) {
            tracing::warn!(
                message_id = %batch[index].event.message_id,
                "too many coalesced deliveries failed; this record and the rest of the batch will be retried"
            );
            report.failed = from(index);
        }

        for (room, at) in later {
            tokio::time::sleep_until(at).await;
            let told = self.tell_held_back(&room, rooms.get(&room).map_or(&[][..], Vec::as_slice)).await;
            report.add_occupancy(&told);
        }
        report
    }

    /// Which rooms get an occupancy frame now (with it, rendered) and which are
    /// to be told later in this invocation (with when), listing those this batch
    /// did not; a room that cannot be listed stays pending.
    async fn occupancy_due(
        &self,
        batch_len: usize,
        rooms: &mut HashMap<String, Vec<Connection>>,
    ) -> (HashMap<String, Bytes>, Vec<(String, Instant)>) {
        let presence = &self.config.presence;
        let now = Instant::now();
        let may_wait = presence.full_batch.is_none_or(|full| batch_len < full);
        let (mut due_now, mut later) = (HashMap::new(), Vec::new());
        for (room, at) in self.occupancy.due(now, presence.interval) {
            if at > now && !may_wait {
                continue;
            }
            if !rooms.contains_key(&room) {
                match list_all_connections(self.connections.as_ref(), &room).await {
                    Ok(connections) => rooms.insert(room.clone(), connections),
                    Err(error) => {
                        tracing::warn!(%error, room, "listing the room failed; its occupancy stays pending");
                        continue;
                    }
                };
            }
            if at > now {
                later.push((room, at));
            } else if let Some(changes) = self.occupancy.take(&room, now, presence.interval) {
                let frame = Bytes::from(occupancy_frame(&room, rooms[&room].len(), &changes));
                due_now.insert(room, frame);
            }
        }
        (due_now, later)
    }

    /// Tells `members` of `room` what was held back for it, now that its
    /// interval is over: plain connections the frame, coalescing ones the frame
    /// in `{"events":[…]}`.
    async fn tell_held_back(&self, room: &str, members: &[Connection]) -> FanoutOutcome {
        let Some(changes) = self.occupancy.take(room, Instant::now(), self.config.presence.interval) else {
            return FanoutOutcome::default();
        };
        let frame = Bytes::from(occupancy_frame(room, members.len(), &changes));
        let wrapped = coalesce(std::slice::from_ref(&frame)).remove(0).bytes;
        let posts = members.iter().map(|c| (c, if c.batch { &wrapped } else { &frame })).collect();
        self.tell(posts).await
    }

    /// Posts occupancy frames. They announce no record, so a failure is logged
    /// and never retried: the room's next frame carries the count again.
    async fn tell(&self, posts: Vec<(&Connection, &Bytes)>) -> FanoutOutcome {
        let mut outcome = FanoutOutcome::default();
        if posts.is_empty() {
            return outcome;
        }
        for ((connection, _), delivery) in posts.iter().zip(self.post_all(&posts).await) {
            match delivery {
                Delivery::Delivered => outcome.occupancy += 1,
                Delivery::Gone => outcome.gone.push((*connection).clone()),
                Delivery::Failed(error) => {
                    tracing::warn!(connection_id = %connection.connection_id, %error, "occupancy frame not delivered");
                }
            }
        }
        if !outcome.gone.is_empty() {
            self.prune_answered_gone(&outcome.gone).await;
        }
        outcome
    }

    async fn archive_batch(&self, batch: &[SequencedEvent]) -> Result<(), crate::ports::StoreError> {
        let Some(archive) = &self.archive else { return Ok(()) };
        let events: Vec<LogEvent> = batch.iter().map(|r| r.event.clone()).collect();
        let Some(key) = archive::batch_key(&events) else { return Ok(()) };
        archive.put(&key, archive::to_jsonl(&events)).await?;
        tracing::info!(%key, events = events.len(), "batch archived");
        Ok(())
    }

    /// Posts one event's `frame` to every recipient. A join is announced to
    /// everyone but the joiner.
    async fn deliver<'c>(
        &self,
        event: &LogEvent,
        frame: &Bytes,
        recipients: impl Iterator<Item = &'c Connection>,
    ) -> FanoutOutcome {
        let started = Instant::now();
        let posts: Vec<(&Connection, &Bytes)> =
            recipients.filter(|c| !is_own_join(event, c)).map(|c| (c, frame)).collect();
        let mut outcome = FanoutOutcome::default();
        for ((connection, _), delivery) in posts.iter().zip(self.post_all(&posts).await) {
            outcome.attempted += 1;
            match delivery {
                Delivery::Delivered => outcome.delivered += 1,
                Delivery::Gone => outcome.gone.push((*connection).clone()),
                Delivery::Failed(error) => {
                    tracing::warn!(connection_id = %connection.connection_id, %error, "delivery failed");
                    outcome.failed += 1;
                }
            }
        }
        tracing::info!(
            message_id = %event.message_id,
            kind = ?event.kind,
            room = %event.room,
            delivered = outcome.delivered,
            gone = outcome.gone.len(),
            failed = outcome.failed,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "event fanned out"
        );
        outcome
    }

    /// Sends every coalescing connection of `rooms` its events of `batch` (those of
    /// its room, but its own join; not those left to occupancy frames) and then
    /// its room's occupancy frame of `occupancy`, if any, packed by [`coalesce`]
    /// once per distinct list and shared. Frames go out in waves — every
    /// connection's first frame, then every second one — so each connection's
    /// frames stay in order. A frame that fails counts as failed for each of its
    /// events and every later one of that connection, whose later frames are then
    /// not sent.
    async fn deliver_coalesced(
        &self,
        batch: &[SequencedEvent],
        frames: &[Option<Bytes>],
        rooms: &HashMap<String, Vec<Connection>>,
        occupancy: &HashMap<String, Bytes>,
        tallies: &mut [Tally],
    ) -> FanoutOutcome {
        let mut outcome = FanoutOutcome::default();
        let mut room_events: HashMap<&str, Vec<usize>> = occupancy.keys().map(|room| (room.as_str(), vec![])).collect();
        for (index, record) in batch.iter().enumerate() {
            if frames[index].is_some() {
                room_events.entry(record.event.room.as_str()).or_default().push(index);
            }
        }
        // A plan per (room, own join in this batch): everyone else in the room shares one.
        let mut plans: HashMap<(&str, Option<usize>), Arc<Plan>> = HashMap::new();
        let mut work: Vec<(&Connection, Arc<Plan>)> = Vec::new();
        for (&room, events) in &room_events {
            let Some(connections) = rooms.get(room) else { continue };
            let told = occupancy.get(room);
            for connection in connections.iter().filter(|c| c.batch) {
                let own_join = events.iter().copied().find(|&i| is_own_join(&batch[i].event, connection));
                let plan = plans.entry((room, own_join)).or_insert_with(|| {
                    let events: Vec<usize> = events.iter().copied().filter(|&i| Some(i) != own_join).collect();
                    let mut items: Vec<Bytes> = events.iter().filter_map(|&i| frames[i].clone()).collect();
                    items.extend(told.cloned());
                    Arc::new(Plan { events, frames: coalesce(&items), occupancy: told.is_some() })
                });
                if !plan.frames.is_empty() {
                    outcome.attempted += plan.events.len();
                    for &index in &plan.events {
                        tallies[index].attempted += 1;
                    }
                    work.push((connection, plan.clone()));
                }
            }
        }
        // Per connection of `work`: items (events, then the occupancy frame)
        // delivered so far, or `None` once it stopped.
        let mut sent: Vec<Option<usize>> = vec![Some(0); work.len()];
        for wave in 0.. {
            let (indexes, posts): (Vec<usize>, Vec<(&Connection, &Bytes)>) = work
                .iter()
                .enumerate()
                .filter(|(i, (_, plan))| sent[*i].is_some() && wave < plan.frames.len())
                .map(|(i, (connection, plan))| (i, (*connection, &plan.frames[wave].bytes)))
                .unzip();
            if posts.is_empty() {
                break;
            }
            for (i, delivery) in indexes.into_iter().zip(self.post_all(&posts).await) {
                let (connection, plan) = &work[i];
                let done = sent[i].unwrap_or_default();
                let events = plan.events.len();
                match delivery {
                    Delivery::Delivered => {
                        let now_done = done + plan.frames[wave].events;
                        outcome.delivered += now_done.min(events) - done.min(events);
                        if plan.occupancy && now_done > events {
                            outcome.occupancy += 1;
                        }
                        sent[i] = Some(now_done);
                    }
                    Delivery::Gone => {
                        outcome.gone.push((*connection).clone());
                        sent[i] = None;
                    }
                    Delivery::Failed(error) => {
                        tracing::warn!(connection_id = %connection.connection_id, %error, "coalesced delivery failed");
                        outcome.failed += events - done.min(events);
                        for &index in &plan.events[done.min(events)..] {
                            tallies[index].failed += 1;
                        }
                        sent[i] = None;
                    }
                }
            }
        }
        outcome
    }

    /// Makes every post once in one [`SocketPoster::post_each`] call, then retries
    /// the throttled and transient failures with backoff, at most `max_in_flight`
    /// at a time. What became of each post, in order.
    pub(crate) async fn post_all(&self, posts: &[(&Connection, &Bytes)]) -> Vec<Delivery> {
        let ids: Vec<(&str, &Bytes)> = posts.iter().map(|(c, frame)| (c.connection_id.as_str(), *frame)).collect();
        let answers = self.poster.post_each(&ids, self.config.max_in_flight).await;
        let mut to_retry = Vec::new();
        let mut deliveries: Vec<Delivery> = answers
            .into_iter()
            .enumerate()
            .map(|(i, answer)| {
                self.settle(answer, 0).unwrap_or_else(|error| {
                    to_retry.push(i);
                    Delivery::Failed(error)
                })
            })
            .collect();
        let retries = to_retry.into_iter().map(|i| {
            let (id, frame) = ids[i];
            async move { (i, self.post_with_retry(id, frame, 1).await) }
        });
        for_each_bounded(retries, self.config.max_in_flight, |(i, delivery)| deliveries[i] = delivery).await;
        deliveries
    }

    /// Posts from try `attempt` (0: the first) until delivered, gone, or out of
    /// tries; before try `n > 0` it waits [`RetryPolicy::delay`]`(n - 1)`.
    async fn post_with_retry(&self, connection_id: &str, frame: &Bytes, mut attempt: u32) -> Delivery {
        loop {
            if attempt > 0 {
                tokio::time::sleep(self.config.retry.delay(attempt - 1)).await;
            }
            match self.settle(self.poster.post(connection_id, frame).await, attempt) {
                Ok(delivery) => return delivery,
                Err(_) => attempt += 1,
            }
        }
    }

    /// What the answer to try `attempt` of a post settles: its delivery, or
    /// (`Err`) a throttled or transient failure worth another try.
    fn settle(&self, answer: Result<(), PostError>, attempt: u32) -> Result<Delivery, PostError> {
        match answer {
            Ok(()) => Ok(Delivery::Delivered),
            Err(PostError::Gone) => Ok(Delivery::Gone),
            Err(error @ PostError::PayloadTooLarge) => Ok(Delivery::Failed(error)),
            Err(error) if attempt + 1 >= self.config.retry.max_attempts => Ok(Delivery::Failed(error)),
            Err(error) => Err(error),
        }
    }

    /// Prunes the connections that answered 410 ([`prune`](Self::prune)),
    /// except those younger than [`CONNECTING_GRACE`]: their 410 may only mean
    /// their `$connect` has not returned yet.
    pub async fn prune_answered_gone(&self, gone: &[Connection]) {
        let now = self.clock.now();
        let (connecting, gone): (Vec<Connection>, Vec<Connection>) =
            gone.iter().cloned().partition(|connection| may_be_connecting(connection, now));
        for connection in &connecting {
            tracing::info!(connection_id = %connection.connection_id, "410 from a connection this young: not pruned");
        }
        self.prune(&gone).await;
    }

    /// Forgets connections known to be closed — their rows and every
    /// membership (the room they were listed in, and each their row lists) —
    /// completes their sessions and announces each departure from each room
    /// (once, see [`depart`]). Failures are logged only: the TTL removes the
    /// rows eventually.
    pub async fn prune(&self, gone: &[Connection]) {
        let now = self.clock.now();
        let prunes = gone.iter().map(|connection| self.prune_one(connection, now));
        for_each_bounded(prunes, self.config.max_in_flight, |()| {}).await;
    }

    async fn prune_one(&self, connection: &Connection, now: chrono::DateTime<chrono::Utc>) {
        let id = &connection.connection_id;
        let end = SessionEnd::new(id, connection.connected_at, now);
        let (connections, sessions, log) = (self.connections.as_ref(), self.sessions.as_ref(), self.log.as_ref());
        match depart(&end, Some(connection), connections, sessions, log).await {
            Ok(left) => tracing::info!(connection_id = %id, rooms_left = left, "pruned gone connection"),
            Err(error) => tracing::warn!(connection_id = %id, %error, "could not end a gone connection's session"),
        }
    }
}

/// How long after it connected a connection that answers 410 is not pruned.
/// API Gateway answers 410 to a connection whose `$connect` has not returned
/// yet, and `$connect` writes its row and memberships first, so a broadcast can
/// list it before it is open; `$connect` may take up to the integration's 29 s
/// (`connected_at` is in whole seconds: 30). Pruning it would delete the row of
/// a connection about to open. One that is really gone is ended by its
/// `$disconnect`, or by a 410 after this.
pub const CONNECTING_GRACE: chrono::Duration = chrono::Duration::seconds(30);

fn may_be_connecting(connection: &Connection, now: chrono::DateTime<chrono::Utc>) -> bool {
    now - connection.connected_at < CONNECTING_GRACE
}

/// A join is announced to everyone but the joiner.
pub(crate) fn is_own_join(event: &LogEvent, connection: &Connection) -> bool {
    event.kind == EventKind::Join && event.connection_id == connection.connection_id
}

/// Joins and leaves are what occupancy frames stand for.
fn is_presence(event: &LogEvent) -> bool {
    matches!(event.kind, EventKind::Join | EventKind::Leave)
}

/// Drops the `gone` from a room's listing, so later posts of the batch skip them.
fn forget(connections: &mut Vec<Connection>, gone: &[Connection]) {
    if !gone.is_empty() {
        let gone: HashSet<&str> = gone.iter().map(|g| g.connection_id.as_str()).collect();
        connections.retain(|c| !gone.contains(c.connection_id.as_str()));
    }
}

/// What one coalescing connection is sent: indexes into the batch, and their
/// frames, the room's occupancy frame last when `occupancy`.
struct Plan {
    events: Vec<usize>,
    frames: Vec<CoalescedFrame>,
    occupancy: bool,
}

/// One event's posts so far, coalesced or not.
#[derive(Clone, Copy, Debug, Default)]
struct Tally {
    attempted: usize,
    failed: usize,
}

impl Tally {
    /// Above this share failing, the record is retried; below it, a few broken
    /// sockets do not make everyone receive the message again.
    fn too_many_failed(&self, max_failed_share: f64) -> bool {
        self.failed > 0 && self.failed as f64 / self.attempted.max(1) as f64 > max_failed_share
    }
}

#[derive(Default)]
struct FanoutOutcome {
    attempted: usize,
    delivered: usize,
    failed: usize,
    /// Occupancy frames delivered.
    occupancy: usize,
    gone: Vec<Connection>,
}
