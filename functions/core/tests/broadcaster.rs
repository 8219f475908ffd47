//! The broadcaster's fan-out policy against in-memory ports.

mod common;

use std::sync::Arc;
use std::time::Duration;

use chat_core::broadcaster::{Broadcaster, FanoutConfig, RetryPolicy, SequencedEvent};
use chat_core::memory::{FixedClock, MemoryArchive, MemoryConnections, MemoryLog, MemorySessions, RecordingPoster};
use chat_core::occupancy::PresenceConfig;
use chat_core::ports::{ConnectionStore, PostError, SessionLog};
use chat_core::time::parse_iso;
use chat_core::{Connection, LogEvent, Session, archive};
use common::fast;

struct Fixture {
    connections: Arc<MemoryConnections>,
    sessions: Arc<MemorySessions>,
    log: Arc<MemoryLog>,
    poster: Arc<RecordingPoster>,
    archive: Arc<MemoryArchive>,
}

const T0: &str = "2026-11-24T10:15:30Z";

impl Fixture {
    async fn with_connections(n: usize) -> Self {
        Self::build(n, RecordingPoster::default(), 7).await
    }

    async fn build(n: usize, poster: RecordingPoster, page_size: usize) -> Self {
        let fixture = Self {
            connections: Arc::new(MemoryConnections::with_page_size(page_size)),
            sessions: Arc::new(MemorySessions::default()),
            log: Arc::new(MemoryLog::default()),
            poster: Arc::new(poster),
            archive: Arc::new(MemoryArchive::default()),
        };
        for i in 0..n {
            let connection = Connection::new(&id(i), "198.51.100.1", parse_iso(T0).unwrap());
            fixture.connections.put(&connection).await.unwrap();
            fixture.sessions.open(&Session::opened(&connection)).await.unwrap();
        }
        fixture
    }

    fn broadcaster(&self, config: FanoutConfig, archived: bool) -> Broadcaster {
        Broadcaster {
            connections: self.connections.clone(),
            sessions: self.sessions.clone(),
            log: self.log.clone(),
            poster: self.poster.clone(),
            archive: archived.then(|| self.archive.clone() as Arc<dyn chat_core::Archive>),
            clock: Arc::new(FixedClock::at(parse_iso("2026-11-24T10:20:00Z").unwrap())),
            config,
            occupancy: Default::default(),
        }
    }
}

fn id(i: usize) -> String {
    format!("conn{i:05}=")
}

fn record(seq: u64, event: LogEvent) -> SequencedEvent {
    SequencedEvent { sequence_number: format!("{seq:028}"), event }
}

fn chat(from: usize, text: &str) -> LogEvent {
    LogEvent::chat(&id(from), text, parse_iso(T0).unwrap())
}

#[tokio::test]
async fn every_connection_gets_every_event_once_sender_included() {
    let f = Fixture::with_connections(50).await;
    let batch = [record(1, chat(0, "first")), record(2, chat(3, "second"))];
    let report = f.broadcaster(fast(), false).broadcast(&batch).await;

    assert!(report.failed.is_empty());
    assert_eq!(report.delivered, 100);
    for i in 0..50 {
        let texts: Vec<_> = f.poster.frames_to(&id(i)).iter().map(|f| f["text"].clone()).collect();
        assert_eq!(texts, ["first", "second"], "connection {i} gets both, in order");
    }
}

#[tokio::test]
async fn each_event_reaches_exactly_its_room() {
    // Connections 0..10 in the lobby, 10..16 in "ops" (pages of 7 straddle both).
    let f = Fixture::with_connections(10).await;
    for i in 10..16 {
        f.connections
            .put(&Connection::new(&id(i), "198.51.100.1", parse_iso(T0).unwrap()).in_room("ops"))
            .await
            .unwrap();
    }
    let batch = [
        record(1, chat(0, "lobby-1")),
        record(2, chat(10, "ops-1").in_room("ops")),
        record(3, chat(1, "lobby-2")),
        record(4, chat(11, "nowhere").in_room("empty-room")),
    ];
    let report = f.broadcaster(fast(), false).broadcast(&batch).await;

    assert!(report.failed.is_empty());
    assert_eq!(report.delivered, 2 * 10 + 6);
    for i in 0..16 {
        let texts: Vec<_> = f.poster.frames_to(&id(i)).iter().map(|f| f["text"].clone()).collect();
        let frames = f.poster.frames_to(&id(i));
        if i < 10 {
            assert_eq!(texts, ["lobby-1", "lobby-2"], "lobby connection {i}");
            assert!(frames.iter().all(|f| f["room"] == "lobby"));
        } else {
            assert_eq!(texts, ["ops-1"], "ops connection {i}");
            assert_eq!(frames[0]["room"], "ops");
        }
    }
}

#[tokio::test]
async fn a_join_is_announced_to_everyone_but_the_joiner() {
    let f = Fixture::with_connections(3).await;
    let join = LogEvent::join(&id(1), parse_iso(T0).unwrap());
    f.broadcaster(fast(), false).broadcast(&[record(1, join)]).await;

    assert!(f.poster.frames_to(&id(1)).is_empty());
    for other in [0, 2] {
        let frames = f.poster.frames_to(&id(other));
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0]["message"], format!("A new user has joined the chat - {}", id(1)));
    }
}

#[tokio::test]
async fn gone_connections_are_pruned_exactly_and_their_sessions_closed() {
    let f = Fixture::with_connections(10).await;
    f.poster.mark_gone(&id(2));
    f.poster.mark_gone(&id(7));
    let batch = [record(1, chat(0, "a")), record(2, chat(0, "b"))];
    let report = f.broadcaster(fast(), false).broadcast(&batch).await;

    assert!(report.failed.is_empty());
    assert_eq!(report.pruned, 2);
    let remaining = f.connections.ids();
    assert_eq!(remaining.len(), 8);
    assert!(!remaining.contains(&id(2)) && !remaining.contains(&id(7)));
    for gone in [2, 7] {
        let session = f.sessions.get(&id(gone)).unwrap();
        assert_eq!(session.disconnected_at, parse_iso("2026-11-24T10:20:00Z"));
        assert_eq!(session.duration_seconds, Some(270));
    }
    assert!(f.sessions.get(&id(3)).unwrap().disconnected_at.is_none());
    // Pruned after the first event, so the second is not even tried on them.
    assert_eq!(f.poster.attempts(), 10 + 8);
    // Each departure is announced, once, in the room the connection was in.
    let leaves: Vec<(String, String)> =
        f.log.events().iter().map(|e| (e.connection_id.clone(), e.room.clone())).collect();
    assert_eq!(leaves, [(id(2), "lobby".to_owned()), (id(7), "lobby".to_owned())]);
    assert!(f.log.events().iter().all(|e| e.kind == chat_core::EventKind::Leave));
}

#[tokio::test]
async fn a_connection_that_may_still_be_in_its_connect_is_not_pruned_on_a_410() {
    // The clock reads 10:20:00; API Gateway answers 410 until `$connect` returns.
    let f = Fixture::with_connections(0).await;
    for (i, connected) in [(1, "2026-11-24T10:19:31Z"), (2, "2026-11-24T10:19:30Z")] {
        let connection = Connection::new(&id(i), "198.51.100.1", parse_iso(connected).unwrap());
        f.connections.put(&connection).await.unwrap();
        f.sessions.open(&Session::opened(&connection)).await.unwrap();
        f.poster.mark_gone(&id(i));
    }
    f.broadcaster(fast(), false).broadcast(&[record(1, chat(0, "a"))]).await;
    assert_eq!(f.connections.ids(), [id(1)], "29 s old: kept; 30 s: pruned");
    assert_eq!(f.connections.memberships(), [("lobby".to_owned(), id(1))]);
    let leaves: Vec<String> = f.log.events().iter().map(|e| e.connection_id.clone()).collect();
    assert_eq!(leaves, [id(2)]);
    assert!(f.sessions.get(&id(1)).unwrap().disconnected_at.is_none());
}

#[tokio::test]
async fn a_pruned_connection_s_leave_names_its_account() {
    let f = Fixture::with_connections(2).await;
    let ada = chat_core::Identity::verified("Ada", "https://id.example|ada");
    let verified = Connection::new(&id(5), "198.51.100.1", parse_iso(T0).unwrap()).of(Some(&ada));
    f.connections.put(&verified).await.unwrap();
    f.sessions.open(&Session::opened(&verified)).await.unwrap();
    f.poster.mark_gone(&id(5));
    f.broadcaster(fast(), false).broadcast(&[record(1, chat(0, "a"))]).await;
    let leaves = f.log.events();
    assert_eq!(leaves.len(), 1);
    assert_eq!(leaves[0].identity(), Some(ada), "taken from the stored session, account included");
}

#[tokio::test]
async fn a_departure_seen_by_both_the_pruner_and_disconnect_is_announced_once() {
    use chat_core::handlers::{DisconnectRequest, disconnect};
    for pruner_first in [true, false] {
        let f = Fixture::with_connections(3).await;
        f.poster.mark_gone(&id(1));
        let bye = DisconnectRequest {
            connection_id: id(1),
            connected_at: parse_iso(T0).unwrap(),
            disconnected_at: parse_iso("2026-11-24T10:19:00Z").unwrap(),
        };
        let broadcaster = f.broadcaster(fast(), false);
        let (connections, sessions, log) = (f.connections.as_ref(), f.sessions.as_ref(), f.log.as_ref());
        if pruner_first {
            broadcaster.broadcast(&[record(1, chat(0, "hi"))]).await;
            disconnect(&bye, connections, sessions, log).await.unwrap();
        } else {
            disconnect(&bye, connections, sessions, log).await.unwrap();
            // The row is gone already, so nothing is posted or pruned.
            broadcaster.broadcast(&[record(1, chat(0, "hi"))]).await;
        }
        let leaves = f.log.events().iter().filter(|e| e.kind == chat_core::EventKind::Leave).count();
        assert_eq!(leaves, 1, "pruner first: {pruner_first}");
    }
}

#[tokio::test]
async fn a_connection_in_three_rooms_gets_each_rooms_lines_once_and_nothing_else() {
    let f = Fixture::with_connections(4).await;
    let t = parse_iso(T0).unwrap();
    let everywhere = Connection::new(&id(9), "198.51.100.1", t).in_room("a").also_in(["b", "c"]);
    f.connections.put(&everywhere).await.unwrap();
    f.sessions.open(&Session::opened(&everywhere)).await.unwrap();
    let batch = [
        record(1, chat(0, "in a").in_room("a")),
        record(2, chat(0, "in lobby")),
        record(3, chat(0, "in b").in_room("b")),
        record(4, chat(0, "in d").in_room("d")),
        record(5, chat(0, "in c").in_room("c")),
    ];
    let report = f.broadcaster(fast(), false).broadcast(&batch).await;
    assert!(report.failed.is_empty());
    let texts: Vec<_> = f.poster.frames_to(&id(9)).iter().map(|f| f["text"].clone()).collect();
    assert_eq!(texts, ["in a", "in b", "in c"]);

    // Gone: it leaves each of its rooms, once, wherever the 410 was noticed.
    f.poster.mark_gone(&id(9));
    f.broadcaster(fast(), false).broadcast(&[record(6, chat(0, "again").in_room("b"))]).await;
    f.broadcaster(fast(), false).broadcast(&[record(7, chat(0, "again").in_room("c"))]).await;
    let mut left: Vec<String> = f.log.events().iter().map(|e| e.room.clone()).collect();
    left.sort();
    assert_eq!(left, ["a", "b", "c"]);
    assert!(f.connections.memberships().iter().all(|(_, connection)| connection != &id(9)));
}

#[tokio::test]
async fn throttled_posts_are_retried_then_delivered() {
    let f = Fixture::with_connections(4).await;
    f.poster.fail_next(&id(1), [PostError::Throttled, PostError::Throttled]);
    f.poster.fail_next(&id(2), [PostError::Other("502".into())]);
    let report = f.broadcaster(fast(), false).broadcast(&[record(1, chat(0, "hi"))]).await;

    assert!(report.failed.is_empty());
    assert_eq!(report.delivered, 4);
    assert_eq!(f.poster.attempts(), 4 + 3);
    assert_eq!(f.poster.frames_to(&id(1)).len(), 1);
}

#[tokio::test]
async fn a_store_outage_reports_every_record_for_retry() {
    let f = Fixture::with_connections(3).await;
    f.connections.outage.set(true);
    let batch = [record(11, chat(0, "a")), record(12, chat(0, "b")), record(13, chat(0, "c"))];
    let report = f.broadcaster(fast(), false).broadcast(&batch).await;

    assert_eq!(report.failed, [format!("{:028}", 11), format!("{:028}", 12), format!("{:028}", 13)]);
    assert!(f.poster.delivered().is_empty());
}

#[tokio::test]
async fn mass_post_failure_reports_that_record_and_the_rest() {
    let f = Fixture::with_connections(4).await;
    f.poster.refuse_frames_containing("doomed", PostError::Other("500".into()));
    let batch = [record(1, chat(0, "fine")), record(2, chat(0, "doomed")), record(3, chat(0, "later"))];
    let report = f.broadcaster(fast(), false).broadcast(&batch).await;

    assert_eq!(report.failed, [format!("{:028}", 2), format!("{:028}", 3)]);
    let texts: Vec<_> = f.poster.frames_to(&id(1)).iter().map(|f| f["text"].clone()).collect();
    assert_eq!(texts, ["fine"], "records after the failed one are left for the retry");
    assert_eq!(f.poster.attempts(), 4 + 4 * 4, "the doomed posts were each tried max_attempts times");
}

#[tokio::test]
async fn a_few_broken_sockets_do_not_fail_the_record() {
    let f = Fixture::with_connections(10).await;
    f.poster.fail_next(&id(4), std::iter::repeat_n(PostError::Other("500".into()), 4));
    f.poster.fail_next(&id(5), [PostError::PayloadTooLarge]);
    let report = f.broadcaster(fast(), false).broadcast(&[record(1, chat(0, "hi"))]).await;

    assert!(report.failed.is_empty());
    assert_eq!((report.delivered, report.undeliverable), (8, 2));
    assert_eq!(f.connections.ids().len(), 10, "failures are not gone: nothing pruned");
}

#[tokio::test]
async fn concurrency_stays_within_the_bound_and_reaches_it() {
    let f = Fixture::build(200, RecordingPoster::with_latency(Duration::from_millis(3)), 1000).await;
    let config = FanoutConfig { max_in_flight: 8, ..fast() };
    let report = f.broadcaster(config, false).broadcast(&[record(1, chat(0, "hi"))]).await;

    assert_eq!(report.delivered, 200);
    assert_eq!(f.poster.max_in_flight(), 8);
}

#[tokio::test]
async fn the_batch_is_archived_under_a_deterministic_key() {
    let f = Fixture::with_connections(2).await;
    let batch = [record(1, chat(0, "a")), record(2, chat(1, "b"))];
    let broadcaster = f.broadcaster(fast(), true);
    broadcaster.broadcast(&batch).await;
    broadcaster.broadcast(&batch).await;

    let objects = f.archive.objects();
    assert_eq!(objects.len(), 1, "a retried batch overwrites its object");
    let events: Vec<_> = batch.iter().map(|r| r.event.clone()).collect();
    let (key, body) = objects.into_iter().next().unwrap();
    assert_eq!(Some(key), archive::batch_key(&events));
    assert_eq!(archive::from_jsonl(&body).unwrap(), events);
}

#[tokio::test]
async fn an_archive_outage_retries_the_batch_before_anyone_is_posted() {
    let f = Fixture::with_connections(2).await;
    f.archive.outage.set(true);
    let report = f.broadcaster(fast(), true).broadcast(&[record(5, chat(0, "a"))]).await;
    assert_eq!(report.failed, [format!("{:028}", 5)]);
    assert!(f.poster.delivered().is_empty());
}

#[test]
fn backoff_grows_and_stays_capped() {
    let policy =
        RetryPolicy { max_attempts: 10, base_delay: Duration::from_millis(10), max_delay: Duration::from_millis(100) };
    for attempt in 0..20 {
        let ceiling = Duration::from_millis(10 * (1u64 << attempt.min(16))).min(Duration::from_millis(100));
        for _ in 0..20 {
            assert!(policy.delay(attempt) <= ceiling);
        }
    }
}

// Coalesced delivery (`?batch=1`).

/// Adds connection `i` to the lobby as a coalescing one.
async fn add_coalescing(f: &Fixture, i: usize) {
    let connection = Connection::new(&id(i), "198.51.100.1", parse_iso(T0).unwrap()).coalescing(true);
    f.connections.put(&connection).await.unwrap();
    f.sessions.open(&Session::opened(&connection)).await.unwrap();
}

/// The event frames a connection got, unpacking `{"events":[…]}`; and how many frames carried them.
fn events_to(f: &Fixture, i: usize) -> (Vec<serde_json::Value>, usize) {
    let frames = f.poster.frames_to(&id(i));
    let count = frames.len();
    let events = frames
        .into_iter()
        .flat_map(|frame| match frame.get("events") {
            Some(events) => events.as_array().expect("events is an array").clone(),
            None => vec![frame],
        })
        .collect();
    (events, count)
}

#[tokio::test]
async fn a_coalescing_and_a_seed_client_in_one_room_both_get_every_event_once_in_order() {
    let f = Fixture::with_connections(3).await;
    add_coalescing(&f, 3).await;
    add_coalescing(&f, 4).await;
    let batch = [
        record(1, chat(0, "one")),
        record(2, LogEvent::join(&id(4), parse_iso(T0).unwrap())),
        record(3, chat(1, "elsewhere").in_room("ops")),
        record(4, chat(3, "two")),
        record(5, chat(4, "three")),
    ];
    let report = f.broadcaster(fast(), false).broadcast(&batch).await;
    assert!(report.failed.is_empty());

    let kinds_and_texts = |events: &[serde_json::Value]| -> Vec<String> {
        events.iter().map(|e| e["text"].as_str().map_or(format!("{}", e["kind"]), str::to_owned)).collect()
    };
    for seed in 0..3 {
        let frames = f.poster.frames_to(&id(seed));
        assert_eq!(kinds_and_texts(&frames), ["one", "\"join\"", "two", "three"], "seed client {seed}");
        assert!(frames.iter().all(|frame| frame.get("events").is_none()), "one plain frame per event");
    }
    let (events, frames) = events_to(&f, 3);
    assert_eq!(frames, 1, "the whole invocation in one frame");
    assert_eq!(kinds_and_texts(&events), ["one", "\"join\"", "two", "three"]);
    let (events, frames) = events_to(&f, 4);
    assert_eq!(
        (kinds_and_texts(&events), frames),
        (vec!["one".into(), "two".into(), "three".into()], 1),
        "not its own join"
    );
    // Each coalesced event is exactly the frame a seed client got.
    assert_eq!(events_to(&f, 3).0, f.poster.frames_to(&id(0)));
    assert_eq!(report.delivered, 3 * 4 + 4 + 3);
}

#[tokio::test]
async fn coalesced_frames_never_exceed_32_kb_and_keep_the_order() {
    use chat_core::coalesce::COALESCED_FRAME_BYTES;
    let f = Fixture::with_connections(1).await;
    add_coalescing(&f, 1).await;
    let big = "x".repeat(5_000);
    let huge = "y".repeat(40 * 1024);
    let mut batch: Vec<_> = (0..20).map(|n| record(n + 1, chat(0, &format!("{n}:{big}")))).collect();
    batch.insert(10, record(100, chat(0, &format!("huge:{huge}"))));
    let report = f.broadcaster(fast(), false).broadcast(&batch).await;
    assert!(report.failed.is_empty());

    let frames: Vec<Vec<u8>> =
        f.poster.delivered().into_iter().filter(|(to, _)| *to == id(1)).map(|(_, frame)| frame).collect();
    for frame in &frames {
        let oversize_event_alone = frame.len() > COALESCED_FRAME_BYTES && !frame.starts_with(br#"{"events""#);
        assert!(frame.len() <= COALESCED_FRAME_BYTES || oversize_event_alone, "{} bytes", frame.len());
    }
    // 20 events of ~5 KB: six to a frame, so at least 4 frames, plus the 40 KB one alone.
    assert!(frames.len() >= 5 && frames.len() < 21, "{} frames", frames.len());
    let texts: Vec<String> = events_to(&f, 1).0.iter().map(|e| e["text"].as_str().unwrap().to_owned()).collect();
    let expected: Vec<String> = batch.iter().map(|r| r.event.message.clone()).collect();
    assert_eq!(texts, expected, "every event once, in log order");
}

#[tokio::test]
async fn a_gone_coalescing_connection_is_pruned_and_its_leave_announced() {
    let f = Fixture::with_connections(2).await;
    add_coalescing(&f, 2).await;
    f.poster.mark_gone(&id(2));
    let batch = [record(1, chat(0, "a")), record(2, chat(1, "b"))];
    let report = f.broadcaster(fast(), false).broadcast(&batch).await;

    assert!(report.failed.is_empty(), "gone is not a failure");
    assert_eq!((report.pruned, report.delivered), (1, 4));
    assert!(!f.connections.ids().contains(&id(2)));
    assert!(f.sessions.get(&id(2)).unwrap().disconnected_at.is_some());
    let leaves: Vec<_> = f.log.events().iter().map(|e| (e.kind, e.connection_id.clone())).collect();
    assert_eq!(leaves, [(chat_core::EventKind::Leave, id(2))]);
    assert_eq!(f.poster.attempts(), 2 * 2 + 1, "one coalesced post for the two events");
}

#[tokio::test]
async fn failed_coalesced_posts_report_their_records_for_retry() {
    // Only coalescing clients: their one frame fails, so every record failed.
    let f = Fixture::with_connections(0).await;
    for i in 0..3 {
        add_coalescing(&f, i).await;
    }
    f.poster.refuse_frames_containing("doomed", PostError::Other("500".into()));
    let batch = [record(1, chat(0, "fine")), record(2, chat(0, "doomed")), record(3, chat(0, "later"))];
    let report = f.broadcaster(fast(), false).broadcast(&batch).await;
    assert_eq!(report.failed, [format!("{:028}", 1), format!("{:028}", 2), format!("{:028}", 3)]);
    assert_eq!(report.undeliverable, 9);
    assert_eq!(f.connections.ids().len(), 3, "failures are not gone: nothing pruned");

    // A seed record failing stops the batch there; coalescing clients get what came before it.
    let f = Fixture::with_connections(2).await;
    add_coalescing(&f, 2).await;
    f.poster.refuse_frames_containing("doomed", PostError::Other("500".into()));
    let report = f.broadcaster(fast(), false).broadcast(&batch).await;
    assert_eq!(report.failed, [format!("{:028}", 2), format!("{:028}", 3)]);
    let texts: Vec<_> = events_to(&f, 2).0.iter().map(|e| e["text"].clone()).collect();
    assert_eq!(texts, ["fine"]);
}

#[tokio::test]
async fn a_few_failing_coalescing_clients_do_not_fail_the_record() {
    let f = Fixture::with_connections(8).await;
    add_coalescing(&f, 8).await;
    f.poster.fail_next(&id(8), std::iter::repeat_n(PostError::Other("500".into()), 4));
    let report = f.broadcaster(fast(), false).broadcast(&[record(1, chat(0, "a")), record(2, chat(0, "b"))]).await;
    assert!(report.failed.is_empty());
    assert_eq!((report.delivered, report.undeliverable), (16, 2));
}

// Presence that scales: occupancy frames above the presence limit.

/// Limit 5, a short interval, always waiting out a held-back tail.
fn presence(limit: usize, interval_ms: u64) -> FanoutConfig {
    let presence =
        PresenceConfig { limit: Some(limit), interval: Duration::from_millis(interval_ms), full_batch: None };
    FanoutConfig { presence, ..fast() }
}

fn join(i: usize) -> LogEvent {
    LogEvent::join(&id(i), parse_iso(T0).unwrap())
}

fn leave(i: usize) -> LogEvent {
    LogEvent::leave(&id(i), parse_iso(T0).unwrap())
}

/// The kinds of what connection `i` got, with each occupancy frame as `occupancy:count:joined:left`.
fn seen(f: &Fixture, i: usize) -> Vec<String> {
    events_to(f, i)
        .0
        .iter()
        .map(|e| match e["kind"].as_str() {
            Some("occupancy") => format!("occupancy:{}:{}:{}", e["count"], e["joined"], e["left"]),
            Some(kind) => e["text"].as_str().unwrap_or(kind).to_owned(),
            None => "?".into(),
        })
        .collect()
}

#[tokio::test]
async fn at_the_limit_the_seed_notices_above_it_one_occupancy_frame() {
    // 5 members (the joiner listed already: its membership is written before its join).
    let f = Fixture::with_connections(5).await;
    let report = f.broadcaster(presence(5, 100), false).broadcast(&[record(1, join(4))]).await;
    assert_eq!((report.delivered, report.occupancy), (4, 0));
    for i in 0..4 {
        let frames = f.poster.frames_to(&id(i));
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0]["message"], format!("A new user has joined the chat - {}", id(4)), "the seed's text");
    }

    // A sixth member: more than the limit, so everyone (the joiner too) gets the count instead.
    let f = Fixture::with_connections(6).await;
    let report = f.broadcaster(presence(5, 100), false).broadcast(&[record(1, join(5))]).await;
    assert_eq!((report.delivered, report.occupancy), (0, 6));
    for i in 0..6 {
        assert_eq!(seen(&f, i), ["occupancy:6:1:0"], "connection {i}");
    }
    let frame = &f.poster.frames_to(&id(0))[0];
    assert_eq!(frame["recent"], serde_json::json!([{ "connectionId": id(5) }]));
    assert_eq!(frame["message"], "6 here in lobby: 1 joined, 0 left");

    // `off`: notices at any size.
    let f = Fixture::with_connections(6).await;
    let off = FanoutConfig { presence: PresenceConfig { limit: None, ..PresenceConfig::default() }, ..fast() };
    let report = f.broadcaster(off, false).broadcast(&[record(1, join(5))]).await;
    assert_eq!((report.delivered, report.occupancy), (5, 0));
}

#[tokio::test]
async fn a_batch_s_joins_and_leaves_become_one_frame_after_its_lines() {
    let f = Fixture::with_connections(10).await;
    let batch = [
        record(1, join(7)),
        record(2, chat(0, "one")),
        record(3, join(8)),
        record(4, leave(42)),
        record(5, join(9)),
        record(6, chat(1, "two")),
    ];
    let report = f.broadcaster(presence(5, 100), false).broadcast(&batch).await;
    assert!(report.failed.is_empty());
    assert_eq!((report.delivered, report.occupancy), (20, 10));
    for i in 0..10 {
        assert_eq!(seen(&f, i), ["one", "two", "occupancy:10:3:1"], "connection {i}");
    }
    let recent: Vec<_> =
        f.poster.frames_to(&id(0))[2]["recent"].as_array().unwrap().iter().map(|j| j["connectionId"].clone()).collect();
    assert_eq!(recent, [id(7), id(8), id(9)]);
    assert!(f.log.events().is_empty(), "the broadcaster writes nothing: the joins stay as they were logged");
}

#[tokio::test]
async fn one_frame_per_interval_and_a_held_back_tail_is_announced_when_it_ends() {
    let f = Fixture::with_connections(8).await;
    let broadcaster = f.broadcaster(presence(5, 300), false);
    let started = std::time::Instant::now();
    broadcaster.broadcast(&[record(1, join(5))]).await;
    assert!(started.elapsed() < Duration::from_millis(250), "the first frame goes at once");
    // Within the interval: held back, and the batch waits until the interval is over.
    let report = broadcaster.broadcast(&[record(2, join(6)), record(3, leave(42)), record(4, chat(0, "hi"))]).await;
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(300) && waited < Duration::from_secs(2), "{waited:?}");
    assert_eq!((report.delivered, report.occupancy), (8, 8), "the tail went before the batch returned");
    for i in 0..8 {
        assert_eq!(seen(&f, i), ["occupancy:8:1:0", "hi", "occupancy:8:1:1"], "connection {i}");
    }
    // A quiet room is not told again.
    tokio::time::sleep(Duration::from_millis(350)).await;
    broadcaster.broadcast(&[record(5, chat(0, "later"))]).await;
    assert_eq!(seen(&f, 0).last().map(String::as_str), Some("later"));
}

#[tokio::test]
async fn a_full_batch_leaves_its_tail_to_the_next_invocation_even_one_of_another_room() {
    let f = Fixture::with_connections(8).await;
    f.connections.put(&Connection::new(&id(99), "198.51.100.1", parse_iso(T0).unwrap()).in_room("ops")).await.unwrap();
    let mut config = presence(5, 200);
    config.presence.full_batch = Some(2);
    let broadcaster = f.broadcaster(config, false);
    broadcaster.broadcast(&[record(1, join(5))]).await;
    let started = std::time::Instant::now();
    broadcaster.broadcast(&[record(2, join(6)), record(3, join(7))]).await;
    assert!(started.elapsed() < Duration::from_millis(150), "a full batch does not wait");
    assert_eq!(seen(&f, 0), ["occupancy:8:1:0"]);
    // The next invocation, about another room, announces the lobby's tail once its interval is over.
    broadcaster.broadcast(&[record(4, chat(99, "ops line").in_room("ops"))]).await;
    assert!(started.elapsed() >= Duration::from_millis(190));
    assert_eq!(seen(&f, 0), ["occupancy:8:1:0", "occupancy:8:2:0"]);
    assert_eq!(seen(&f, 99), ["ops line"]);
}

#[tokio::test]
async fn coalescing_connections_get_the_occupancy_frame_last_in_their_events() {
    let f = Fixture::with_connections(6).await;
    add_coalescing(&f, 6).await;
    add_coalescing(&f, 7).await;
    let broadcaster = f.broadcaster(presence(5, 200), false);
    let batch = [record(1, chat(0, "one")), record(2, join(7)), record(3, chat(1, "two"))];
    let report = broadcaster.broadcast(&batch).await;
    assert!(report.failed.is_empty());
    assert_eq!((report.delivered, report.occupancy), (6 * 2 + 2 * 2, 8));
    for i in 0..8 {
        assert_eq!(seen(&f, i), ["one", "two", "occupancy:8:1:0"], "connection {i}");
    }
    for i in [6, 7] {
        let frames = f.poster.frames_to(&id(i));
        assert_eq!(frames.len(), 1, "lines and count in one post");
        assert!(frames[0].get("events").is_some());
    }
    // A held-back tail reaches them wrapped too: {"events":[occupancy]}.
    broadcaster.broadcast(&[record(4, leave(42))]).await;
    for i in [6, 7] {
        let frames = f.poster.frames_to(&id(i));
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[1]["events"][0]["kind"], "occupancy");
        assert_eq!(
            (frames[1]["events"][0]["count"].as_u64(), frames[1]["events"][0]["left"].as_u64()),
            (Some(8), Some(1))
        );
    }
    assert_eq!(seen(&f, 0).last().unwrap(), "occupancy:8:0:1");
}
