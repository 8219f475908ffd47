//! A large room's fan-out split across workers ([`chat_core::split`]): the
//! broadcaster's hand-off and the worker's entry point, against in-memory ports.

mod common;

use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::sqs::{SqsEvent, SqsMessage};
use chat_core::broadcaster::{Broadcaster, FanoutConfig, SequencedEvent};
use chat_core::entrypoints::fanout::on_sqs;
use chat_core::memory::{FixedClock, MemoryConnections, MemoryFanoutQueue, MemoryLog, MemorySessions, RecordingPoster};
use chat_core::ports::{ConnectionStore, PostError, SessionLog};
use chat_core::protocol::event_frame;
use chat_core::split::{FanoutJob, MAX_JOB_ATTEMPTS, Split, worker_config};
use chat_core::time::parse_iso;
use chat_core::{Connection, EventKind, LogEvent, Session};
use common::fast;

const T0: &str = "2026-11-24T10:15:30Z";

/// A room of members, a recording poster and a queue; `above` and `chunk` as the split's.
struct Room {
    connections: Arc<MemoryConnections>,
    sessions: Arc<MemorySessions>,
    log: Arc<MemoryLog>,
    poster: Arc<RecordingPoster>,
    queue: Arc<MemoryFanoutQueue>,
    split: Split,
}

impl Room {
    async fn of(members: usize, above: usize, chunk: usize) -> Self {
        let queue = Arc::new(MemoryFanoutQueue::default());
        let room = Self {
            connections: Arc::new(MemoryConnections::default()),
            sessions: Arc::new(MemorySessions::default()),
            log: Arc::new(MemoryLog::default()),
            poster: Arc::new(RecordingPoster::default()),
            split: Split { queue: queue.clone(), above, chunk },
            queue,
        };
        for i in 0..members {
            room.add(&Connection::new(&id(i), "198.51.100.1", parse_iso(T0).unwrap())).await;
        }
        room
    }

    async fn add(&self, connection: &Connection) {
        self.connections.put(connection).await.unwrap();
        self.sessions.open(&Session::opened(connection)).await.unwrap();
    }

    /// The stream's broadcaster (`split`: whether it hands large rooms off) or,
    /// with [`worker_config`], a worker.
    fn broadcaster(&self, config: FanoutConfig) -> Broadcaster {
        Broadcaster {
            connections: self.connections.clone(),
            sessions: self.sessions.clone(),
            log: self.log.clone(),
            poster: self.poster.clone(),
            archive: None,
            clock: Arc::new(FixedClock::at(parse_iso("2026-11-24T10:20:00Z").unwrap())),
            occupancy: Default::default(),
            config,
        }
    }

    fn splitting(&self) -> Broadcaster {
        self.broadcaster(FanoutConfig { split: Some(self.split.clone()), ..fast() })
    }

    fn worker(&self) -> Broadcaster {
        self.broadcaster(worker_config(FanoutConfig { split: Some(self.split.clone()), ..fast() }))
    }

    /// How many frames each connection got, by id.
    fn received(&self) -> std::collections::BTreeMap<String, usize> {
        let mut counts = std::collections::BTreeMap::new();
        for (to, _) in self.poster.delivered() {
            *counts.entry(to).or_default() += 1;
        }
        counts
    }
}

fn id(i: usize) -> String {
    format!("conn{i:05}=")
}

fn record(seq: u64, event: LogEvent) -> SequencedEvent {
    SequencedEvent { sequence_number: format!("{seq:028}"), event }
}

fn line(text: &str) -> SequencedEvent {
    record(1, LogEvent::chat(&id(0), text, parse_iso(T0).unwrap()))
}

/// The queue's jobs as the SQS event a worker gets, message ids `m0`, `m1`, ...
fn sqs_event(jobs: &[FanoutJob]) -> SqsEvent {
    let mut event = SqsEvent::default();
    event.records = jobs
        .iter()
        .enumerate()
        .map(|(i, job)| {
            let mut message = SqsMessage::default();
            message.message_id = Some(format!("m{i}"));
            message.body = Some(job.to_body());
            message
        })
        .collect();
    event
}

#[tokio::test]
async fn a_room_at_the_threshold_is_posted_directly_and_one_above_is_handed_off() {
    let room = Room::of(10, 10, 4).await;
    let report = room.splitting().broadcast(&[line("at the threshold")]).await;
    assert_eq!((report.delivered, report.handed_off), (10, 0));
    assert!(room.queue.take().is_empty());

    room.add(&Connection::new(&id(10), "198.51.100.1", parse_iso(T0).unwrap())).await;
    let report = room.splitting().broadcast(&[line("one above")]).await;
    assert!(report.failed.is_empty());
    assert_eq!((report.delivered, report.handed_off), (0, 11), "nobody is posted by the broadcaster");
    assert_eq!(room.poster.delivered().len(), 10, "only the first line was posted");
    let sizes: Vec<usize> = room.queue.take().iter().map(|j| j.members.len()).collect();
    assert_eq!(sizes, [4, 4, 3]);
}

#[tokio::test]
async fn the_joiner_of_its_own_join_does_not_count_toward_the_threshold() {
    let room = Room::of(11, 10, 4).await;
    let join = LogEvent::join(&id(3), parse_iso(T0).unwrap());
    assert_eq!(join.kind, EventKind::Join);
    let report = room.splitting().broadcast(&[record(1, join)]).await;
    assert_eq!((report.delivered, report.handed_off), (10, 0), "10 recipients: not above 10");
    assert!(!room.received().contains_key(&id(3)));
}

#[tokio::test]
async fn the_jobs_reach_every_recipient_exactly_once_and_coalescing_members_still_get_theirs() {
    let room = Room::of(2_345, 1_000, 500).await;
    room.add(&Connection::new("batched", "198.51.100.1", parse_iso(T0).unwrap()).coalescing(true)).await;
    let line = line("to a big room");
    let report = room.splitting().broadcast(std::slice::from_ref(&line)).await;
    assert!(report.failed.is_empty());
    assert_eq!(report.handed_off, 2_345);
    assert_eq!(room.received(), [("batched".to_owned(), 1)].into(), "the coalescing member is the broadcaster's");

    let jobs = room.queue.take();
    assert_eq!(jobs.iter().map(|j| j.members.len()).collect::<Vec<_>>(), [500, 500, 500, 500, 345]);
    assert!(jobs.iter().all(|j| j.attempt == 0 && j.delay().is_zero()));
    let response = on_sqs(&sqs_event(&jobs), &room.worker()).await;
    assert!(response.batch_item_failures.is_empty());
    let received = room.received();
    assert_eq!(received.len(), 2_346);
    assert!(received.values().all(|&n| n == 1), "every member exactly once");
    let frame = event_frame(&line.event);
    assert!(
        room.poster.delivered().iter().all(|(to, got)| to == "batched" || *got == frame),
        "the frame, as posted directly"
    );
}

#[tokio::test]
async fn a_queue_that_refuses_the_jobs_has_the_record_retried_before_anyone_is_posted() {
    let room = Room::of(20, 10, 4).await;
    room.queue.outage.set(true);
    let batch = [line("first"), record(2, LogEvent::chat(&id(1), "second", parse_iso(T0).unwrap()))];
    let report = room.splitting().broadcast(&batch).await;
    assert_eq!(report.failed, [batch[0].sequence_number.clone(), batch[1].sequence_number.clone()]);
    assert!(room.poster.delivered().is_empty());

    room.queue.outage.set(false);
    let report = room.splitting().broadcast(&batch).await;
    assert!(report.failed.is_empty());
    assert_eq!(report.handed_off, 40);
}

#[tokio::test]
async fn the_worker_prunes_the_gone_and_re_enqueues_the_throttled_with_a_delay() {
    let room = Room::of(12, 10, 100).await;
    room.splitting().broadcast(&[line("hello")]).await;
    let jobs = room.queue.take();
    room.poster.mark_gone(&id(4));
    room.poster.fail_next(&id(7), std::iter::repeat_n(PostError::Throttled, 20));
    room.poster.fail_next(&id(8), [PostError::Throttled]);

    let response = on_sqs(&sqs_event(&jobs), &room.worker()).await;
    assert!(response.batch_item_failures.is_empty(), "a throttled member is not the job's failure");
    let received = room.received();
    assert_eq!(received.len(), 10, "all but the gone and the still-throttled: {received:?}");
    assert!(received.contains_key(&id(8)), "retried once within the invocation");
    assert!(room.connections.get(&id(4)).is_none(), "the gone one is pruned");
    let leaves: Vec<String> =
        room.log.events().into_iter().filter(|e| e.kind == EventKind::Leave).map(|e| e.connection_id).collect();
    assert_eq!(leaves, [id(4)], "and its leave announced, as the broadcaster does");
    assert!(room.sessions.get(&id(4)).unwrap().disconnected_at.is_some());

    let mut again = room.queue.take();
    assert_eq!(again.len(), 1);
    let retry = again.pop().unwrap();
    assert_eq!(retry.members.iter().map(|c| c.connection_id.clone()).collect::<Vec<_>>(), [id(7)]);
    assert_eq!((retry.attempt, retry.delay()), (1, Duration::from_secs(2)));

    // At the last attempt a member still throttled is given up, not re-enqueued.
    let last = FanoutJob { attempt: MAX_JOB_ATTEMPTS - 1, ..retry.clone() };
    let report = room.worker().fan_out_job(&last).await.unwrap();
    assert_eq!((report.delivered, report.undeliverable, report.requeued), (0, 1, 0));
    assert!(room.queue.take().is_empty());
}

#[tokio::test]
async fn a_malformed_job_or_a_failed_re_enqueue_is_reported_for_the_queue_to_retry() {
    let room = Room::of(12, 10, 100).await;
    room.splitting().broadcast(&[line("hello")]).await;
    let jobs = room.queue.take();
    room.poster.fail_next(&id(5), std::iter::repeat_n(PostError::Throttled, 20));
    let mut event = sqs_event(&jobs);
    let mut bad = SqsMessage::default();
    bad.message_id = Some("bad".into());
    bad.body = Some("{\"not\":\"a job\"}".into());
    event.records.push(bad);
    room.queue.outage.set(true);
    let response = on_sqs(&event, &room.worker()).await;
    let failed: Vec<&str> = response.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect();
    assert_eq!(failed, ["m0", "bad"]);
}
