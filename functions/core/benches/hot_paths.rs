//! `cargo bench -p chat-core`: the per-message hot paths of the handlers and
//! the broadcaster, without any I/O.
//!
//! - protocol: parsing an inbound frame, rendering the broadcast frame
//! - stream: decoding a MessageHistory stream record (the Lambda event fixture)
//! - fanout: one message to N connections through a poster that answers at once,
//!   i.e. the broadcaster's own scheduling and bookkeeping cost per recipient

use std::hint::black_box;
use std::sync::Arc;

use async_trait::async_trait;
use aws_lambda_events::dynamodb::Event;
use chat_core::broadcaster::{Broadcaster, FanoutConfig, SequencedEvent};
use chat_core::entrypoints::stream::decode;
use chat_core::memory::{MemoryConnections, MemorySessions};
use chat_core::ports::{Bytes, ConnectionStore, PostError, SocketPoster, SystemClock};
use chat_core::protocol::{event_frame, parse_command};
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
}

fn fanout(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("a runtime");
    let at = parse_iso("2026-11-24T10:15:30Z").expect("valid time");
    let mut group = c.benchmark_group("fanout");
    for connections in [100usize, 1_000, 10_000] {
        let store = Arc::new(MemoryConnections::default());
        runtime.block_on(async {
            for i in 0..connections {
                store.put(&Connection::new(&format!("c{i:014}="), "198.51.100.7", at)).await.ok();
            }
        });
        let broadcaster = Broadcaster {
            connections: store,
            sessions: Arc::new(MemorySessions::default()),
            log: Arc::new(chat_core::memory::MemoryLog::default()),
            poster: Arc::new(InstantPoster),
            archive: None,
            clock: Arc::new(SystemClock),
            config: FanoutConfig::default(),
        };
        let batch = [SequencedEvent {
            sequence_number: "1".into(),
            event: LogEvent::chat("CXzQ2cJjoAMCJ6g=", "hello, this is a chat line of ordinary length", at),
        }];
        group.throughput(Throughput::Elements(connections as u64));
        group.bench_with_input(BenchmarkId::new("one message", connections), &batch, |b, batch| {
            b.iter(|| runtime.block_on(broadcaster.broadcast(batch)))
        });
    }
    group.finish();
}

criterion_group!(benches, protocol, stream, fanout);
criterion_main!(benches);
