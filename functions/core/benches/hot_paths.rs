//! `cargo bench -p chat-core`: the per-message hot paths of the handlers and
//! the broadcaster, without any I/O.
//!
//! - protocol: parsing an inbound frame, rendering the broadcast frame
//! - stream: decoding a MessageHistory stream record (the Lambda event fixture)
//! - fanout: one message to N connections through a poster that answers at once,
//!   i.e. the broadcaster's own scheduling and bookkeeping cost per recipient
//! - channels: the same to a room of 1 000 whose members are each in 5 rooms
//!   (5 000 memberships), next to the single-room case; and a batch of 5 lines
//!   in one room against 5 lines in 5 rooms (one listing per room of a batch)

use std::hint::black_box;
use std::sync::Arc;

use async_trait::async_trait;
use aws_lambda_events::dynamodb::Event;
use chat_core::broadcaster::{Broadcaster, FanoutConfig, SequencedEvent};
use chat_core::entrypoints::stream::decode;
use chat_core::memory::{MemoryConnections, MemorySessions};
use chat_core::ports::{Bytes, ConnectionStore, PostError, SocketPoster, SystemClock};
use chat_core::protocol::{event_frame, parse_command};
use chat_core::room::DEFAULT_ROOM;
use chat_core::time::parse_iso;
use chat_core::{Connection, LogEvent};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

fn protocol(c: &mut Criterion) {
    let mut group = c.benchmark_group("protocol");
    let send = r#"{"action":"sendmessage","message":"hello, this is a chat line of ordinary length"}"#;
    group.bench_function("parse sendmessage", |b| b.iter(|| parse_command(black_box(send))));
    let ping = r#"{"action":"sendmessage","message":"ping"}"#;
    group.bench_function("parse ping", |b| b.iter(|| parse_command(black_box(ping))));
    let at = parse_iso("2026-11-24T10:15:30Z").expect("valid time");
    let event = LogEvent::chat("CXzQ2cJjoAMCJ6g=", "hello, this is a chat line of ordinary length", at);
    group.bench_function("render chat frame", |b| b.iter(|| event_frame(black_box(&event))));
    group.finish();
}

fn stream(c: &mut Criterion) {
    let fixture = include_str!("../tests/fixtures/stream-insert.json");
    let event: Event = serde_json::from_str(fixture).expect("the fixture is a stream event");
    let record = &event.records[0];
    let mut group = c.benchmark_group("stream");
    group.bench_function("decode INSERT record", |b| b.iter(|| decode(black_box(record))));
    group.bench_function("parse event JSON + decode", |b| {
        b.iter(|| {
            let event: Event = serde_json::from_str(black_box(fixture)).expect("fixture parses");
            decode(&event.records[0]).map(|decoded| decoded.map(|d| d.event.message_id.len()))
        })
    });
    group.finish();
}

/// Answers every post at once: what is left is the broadcaster's own cost.
struct InstantPoster;

#[async_trait]
impl SocketPoster for InstantPoster {
    async fn post(&self, _connection_id: &str, frame: &Bytes) -> Result<(), PostError> {
        black_box(frame);
        Ok(())
    }

    async fn close(&self, _connection_id: &str) -> Result<(), PostError> {
        Ok(())
    }
}

/// A broadcaster over `connections` members of the default room, each also in `also_in`.
fn broadcaster(runtime: &tokio::runtime::Runtime, connections: usize, also_in: &[&str]) -> Broadcaster {
    let at = parse_iso("2026-11-24T10:15:30Z").expect("valid time");
    let store = Arc::new(MemoryConnections::default());
    runtime.block_on(async {
        for i in 0..connections {
            let connection =
                Connection::new(&format!("c{i:014}="), "198.51.100.7", at).also_in(also_in.iter().copied());
            store.put(&connection).await.ok();
        }
    });
    Broadcaster {
        connections: store,
        sessions: Arc::new(MemorySessions::default()),
        log: Arc::new(chat_core::memory::MemoryLog::default()),
        poster: Arc::new(InstantPoster),
        archive: None,
        clock: Arc::new(SystemClock),
        config: FanoutConfig::default(),
        occupancy: Default::default(),
    }
}

/// `lines` chat lines, line `i` in `rooms[i mod rooms.len()]`.
fn lines(rooms: &[&str], lines: usize) -> Vec<SequencedEvent> {
    let at = parse_iso("2026-11-24T10:15:30Z").expect("valid time");
    (0..lines)
        .map(|i| {
            let event = LogEvent::chat("CXzQ2cJjoAMCJ6g=", "hello, this is a chat line of ordinary length", at)
                .in_room(rooms[i % rooms.len()]);
            SequencedEvent { sequence_number: (i + 1).to_string(), event }
        })
        .collect()
}

fn fanout(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("a runtime");
    let mut group = c.benchmark_group("fanout");
    for connections in [100usize, 1_000, 10_000] {
        let broadcaster = broadcaster(&runtime, connections, &[]);
        let batch = lines(&[DEFAULT_ROOM], 1);
        group.throughput(Throughput::Elements(connections as u64));
        group.bench_with_input(BenchmarkId::new("one message", connections), &batch, |b, batch| {
            b.iter(|| runtime.block_on(broadcaster.broadcast(batch)))
        });
    }
    group.finish();
}

/// Issue #23: what holding several rooms per connection costs a fan-out. The
/// members of a room of 1 000 are each in 5 rooms (5 000 memberships); one
/// line to that room should cost what it costs when they are in one.
fn channels(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("a runtime");
    let mut group = c.benchmark_group("channels");
    let rooms = [DEFAULT_ROOM, "r1", "r2", "r3", "r4"];
    let single = broadcaster(&runtime, 1_000, &[]);
    let multi = broadcaster(&runtime, 1_000, &rooms[1..]);
    let one = lines(&[DEFAULT_ROOM], 1);
    group.throughput(Throughput::Elements(1_000));
    group.bench_function("one message to 1000, members in 1 room", |b| {
        b.iter(|| runtime.block_on(single.broadcast(black_box(&one))))
    });
    group.bench_function("one message to 1000, members in 5 rooms", |b| {
        b.iter(|| runtime.block_on(multi.broadcast(black_box(&one))))
    });
    // A batch of 5 lines: all in one room (one listing), or one per room (five).
    let (same_room, spread) = (lines(&[DEFAULT_ROOM], 5), lines(&rooms, 5));
    group.throughput(Throughput::Elements(5_000));
    group.bench_function("5 messages to 1000 each, all in 1 room", |b| {
        b.iter(|| runtime.block_on(multi.broadcast(black_box(&same_room))))
    });
    group.bench_function("5 messages to 1000 each, over 5 rooms", |b| {
        b.iter(|| runtime.block_on(multi.broadcast(black_box(&spread))))
    });
    group.finish();
}

criterion_group!(benches, protocol, stream, fanout, channels);
criterion_main!(benches);
