//! What the deployed design costs per million chat messages at a given room
//! size, from public list prices (`shared/spec/aws-behaviour.md`, us-east-1) and
//! the handler runtimes measured here (the fan-out simulation for the
//! broadcaster, the real handler for `send_message`) plus stated assumptions.

use std::time::{Duration, Instant};

use chat_core::handlers::{MessageRequest, send_message};
use chat_core::memory::{MemoryConnections, MemoryLog};
use chat_core::ports::ConnectionStore;
use chat_core::protocol::event_frame;
use chat_core::rate::{Limit, RateLimiter, RateLimits};
use chat_core::{Connection, LogEvent};
use serde::Serialize;

use crate::fanout::{CaseReport, PosterModel, run_case};

/// List prices, USD.
pub mod price {
    /// API Gateway WebSocket, per message (per 32 KB unit).
    pub const APIGW_MESSAGE: f64 = 1.00 / 1e6;
    pub const APIGW_CONNECTION_MINUTE: f64 = 0.25 / 1e6;
    pub const LAMBDA_REQUEST: f64 = 0.20 / 1e6;
    /// arm64.
    pub const LAMBDA_GB_SECOND: f64 = 0.000_013_333_4;
    /// DynamoDB on-demand.
    pub const DYNAMODB_WRITE_UNIT: f64 = 0.625 / 1e6;
    pub const DYNAMODB_READ_UNIT: f64 = 0.125 / 1e6;
}

/// API Gateway bills messages in 32 KB units.
pub const APIGW_UNIT_BYTES: usize = 32 * 1024;

/// The assumptions, each a command-line option.
#[derive(Clone, Debug, Serialize)]
pub struct Assumptions {
    pub messages: f64,
    pub text_bytes: usize,
    /// How many chat messages the whole room sends per minute: sets how long the
    /// room is connected for a million messages, hence its connection-minutes.
    pub room_messages_per_minute: f64,
    /// The seed page pings every 30 s; each ping is an inbound message, a pong
    /// and a `send_message` invocation. 0 leaves heartbeats out.
    pub heartbeat_secs: f64,
    pub lambda_memory_mb: f64,
    /// Stream records per broadcaster invocation (1 at low rates: ~4 polls/s/shard).
    pub stream_batch: f64,
    /// One DynamoDB call (PutItem, a Query page) as the Lambda waits for it.
    pub dynamodb_call_ms: f64,
    /// The fan-out simulation's @connections model and concurrency bound.
    pub poster: PosterModel,
    pub fanout_concurrency: usize,
    /// Every connection coalesces (`?batch=1`): per invocation it gets its
    /// `stream_batch` events in as few ≤ 32 KB frames as fit, one post each.
    pub coalesced: bool,
}

/// One room size's bill for `messages` chat messages.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RoomCost {
    pub connections: usize,
    pub apigw_messages: f64,
    pub apigw_connection_minutes: f64,
    pub lambda_requests: f64,
    pub lambda_gb_seconds: f64,
    pub dynamodb_write_units: f64,
    pub dynamodb_read_units: f64,
    /// Measured: broadcaster wall time per message (fan-out simulation).
    pub broadcaster_ms_per_message: f64,
    pub usd_apigw_messages: f64,
    pub usd_apigw_connection_minutes: f64,
    pub usd_lambda_requests: f64,
    pub usd_lambda_duration: f64,
    pub usd_dynamodb: f64,
    pub usd_total: f64,
    /// `usd_total / (messages × connections)`, per million deliveries.
    pub usd_per_million_deliveries: f64,
}

/// The whole model's output.
#[derive(Clone, Debug, Serialize)]
pub struct CostReport {
    pub assumptions: Assumptions,
    /// Outbound chat frame size for `text_bytes` of text.
    pub frame_bytes: usize,
    pub message_item_bytes: usize,
    pub member_item_bytes: usize,
    /// Measured: CPU time of the `send_message` handler per message (in memory, without the PutItem wait).
    pub send_handler_cpu_ms: f64,
    pub rooms: Vec<RoomCost>,
}

/// DynamoDB's item size: attribute names plus values (strings as UTF-8 bytes,
/// numbers as about one byte per two significant digits plus one).
/// A 10-digit epoch-seconds number as DynamoDB sizes it (digits / 2 + 1).
const EPOCH_SECONDS_BYTES: usize = 6;

pub fn item_bytes(item: &serde_json::Value) -> usize {
    let Some(fields) = item.as_object() else { return 0 };
    fields
        .iter()
        .map(|(name, value)| {
            name.len()
                + match value {
                    serde_json::Value::String(s) => s.len(),
                    serde_json::Value::Number(n) => n.to_string().trim_start_matches('-').len().div_ceil(2) + 1,
                    serde_json::Value::Bool(_) | serde_json::Value::Null => 1,
                    other => other.to_string().len(),
                }
        })
        .sum()
}

/// Lambda bills duration in 1 ms steps.
fn billed_seconds(ms: f64) -> f64 {
    ms.max(1.0).ceil() / 1e3
}

async fn send_handler_cpu_ms(text: &str) -> f64 {
    let (connections, log) = (MemoryConnections::default(), MemoryLog::default());
    let sender = "CXzQ2cJjoAMCJ6g=";
    connections.put(&Connection::new(sender, "198.51.100.7", chrono::Utc::now())).await.ok();
    let body = serde_json::json!({"action": "sendmessage", "message": text}).to_string();
    let request = MessageRequest {
        connection_id: sender.into(),
        body,
        received_at: chrono::Utc::now(),
        rights: chat_core::rights::Rights::default(),
        account: None,
    };
    // The limiter's check is part of the work; a bucket that never runs dry keeps every round a stored line.
    let never_dry = Limit { rate: 1e6, burst: 100_000 };
    let limiter = RateLimiter::new(RateLimits { send: Some(never_dry), read: None });
    let rounds = 2_000;
    let started = Instant::now();
    for _ in 0..rounds {
        send_message(&request, &limiter, &connections, &log).await.ok();
    }
    started.elapsed().as_secs_f64() * 1e3 / rounds as f64
}

/// Runs the fan-out simulation for each room size and prices everything.
pub async fn model(assumptions: Assumptions, room_sizes: &[usize], sim_messages: usize) -> CostReport {
    let cases = simulate_rooms(&assumptions, room_sizes, sim_messages).await;
    price(assumptions, &cases).await
}

/// The fan-out simulation of one message to each room size, within ~10 s each.
pub async fn simulate_rooms(a: &Assumptions, room_sizes: &[usize], sim_messages: usize) -> Vec<CaseReport> {
    let mut cases = Vec::new();
    for &n in room_sizes {
        let budget = Duration::from_secs(10);
        let runs = crate::fanout::messages_within(budget, sim_messages, n, a.fanout_concurrency, a.poster.latency_ms);
        cases.push(run_case(n, a.fanout_concurrency, a.poster.clone(), runs).await);
    }
    cases
}

/// Coalesced frames (≤ 32 KB each) that carry `events` frames of `frame_bytes`.
pub fn coalesced_frames(events: f64, frame_bytes: usize) -> f64 {
    // `{"events":[` + frames joined by commas + `]}` within 32 KB.
    let per_frame = ((APIGW_UNIT_BYTES - 13 + 1) / (frame_bytes + 1)).max(1) as f64;
    (events / per_frame).ceil().max(1.0)
}

/// Prices every simulated room (`cases`, one per room size) under `assumptions`.
pub async fn price(assumptions: Assumptions, cases: &[CaseReport]) -> CostReport {
    let a = &assumptions;
    let at = chrono::Utc::now();
    let text = "x".repeat(a.text_bytes);
    let event = LogEvent::chat("CXzQ2cJjoAMCJ6g=", &text, at);
    let frame_bytes = event_frame(&event).len();
    let inbound_bytes = serde_json::json!({"action": "sendmessage", "message": text}).to_string().len();
    let message_item_bytes = serde_json::to_value(&event).map_or(0, |v| item_bytes(&v));
    // What a room's listing reads: its Memberships items (the adapter adds `purge_at`).
    let member = Connection::new("CXzQ2cJjoAMCJ6g=", "203.0.113.7", at).as_member_of("lobby");
    let member_item_bytes =
        serde_json::to_value(&member).map_or(0, |v| item_bytes(&v)) + "purge_at".len() + EPOCH_SECONDS_BYTES;
    let send_cpu_ms = send_handler_cpu_ms(&text).await;
    let memory_gb = a.lambda_memory_mb / 1024.0;
    let units = |bytes: usize| bytes.div_ceil(APIGW_UNIT_BYTES).max(1) as f64;

    let mut rooms = Vec::new();
    for case in cases {
        let n = case.connections;
        let m = a.messages;
        let invocations = m / a.stream_batch.max(1.0);
        let minutes = m / a.room_messages_per_minute.max(1e-9);
        let connection_minutes = n as f64 * minutes;
        let pings = if a.heartbeat_secs > 0.0 { connection_minutes * 60.0 / a.heartbeat_secs } else { 0.0 };
        // The room's Memberships, one consistent Query page per MB; the items
        // read, rounded up to 4 KB, a whole read unit each (strongly consistent).
        let listing_bytes = n * member_item_bytes;
        let listing_pages = listing_bytes.div_ceil(1024 * 1024).max(1) as f64;
        let listing_read_units = listing_bytes.div_ceil(4096).max(1) as f64;

        // One post per recipient per event, or per recipient per invocation's frame when coalesced.
        let posts_per_invocation =
            if a.coalesced { coalesced_frames(a.stream_batch.max(1.0), frame_bytes) } else { 0.0 };
        let broadcast_messages =
            if a.coalesced { invocations * n as f64 * posts_per_invocation } else { m * n as f64 * units(frame_bytes) };
        let apigw_messages = m * units(inbound_bytes) + broadcast_messages + pings * 2.0;
        let lambda_requests = m + pings + invocations;
        let send_s = billed_seconds(a.dynamodb_call_ms + send_cpu_ms);
        let ping_s = billed_seconds(send_cpu_ms);
        let fanouts_per_invocation = if a.coalesced { posts_per_invocation } else { a.stream_batch.max(1.0) };
        let broadcaster_ms = listing_pages * a.dynamodb_call_ms + fanouts_per_invocation * case.mean_ms_per_message;
        let gb_seconds = memory_gb * (m * send_s + pings * ping_s + invocations * billed_seconds(broadcaster_ms));
        let write_units = m * message_item_bytes.div_ceil(1024).max(1) as f64;
        let read_units = invocations * listing_read_units;

        let mut room = RoomCost {
            connections: n,
            apigw_messages,
            apigw_connection_minutes: connection_minutes,
            lambda_requests,
            lambda_gb_seconds: gb_seconds,
            dynamodb_write_units: write_units,
            dynamodb_read_units: read_units,
            broadcaster_ms_per_message: case.mean_ms_per_message,
            usd_apigw_messages: apigw_messages * price::APIGW_MESSAGE,
            usd_apigw_connection_minutes: connection_minutes * price::APIGW_CONNECTION_MINUTE,
            usd_lambda_requests: lambda_requests * price::LAMBDA_REQUEST,
            usd_lambda_duration: gb_seconds * price::LAMBDA_GB_SECOND,
            usd_dynamodb: write_units * price::DYNAMODB_WRITE_UNIT + read_units * price::DYNAMODB_READ_UNIT,
            ..RoomCost::default()
        };
        room.usd_total = room.usd_apigw_messages
            + room.usd_apigw_connection_minutes
            + room.usd_lambda_requests
            + room.usd_lambda_duration
            + room.usd_dynamodb;
        room.usd_per_million_deliveries = room.usd_total / (m * n as f64) * 1e6;
        rooms.push(room);
    }
    CostReport {
        assumptions,
        frame_bytes,
        message_item_bytes,
        member_item_bytes,
        send_handler_cpu_ms: send_cpu_ms,
        rooms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_size_follows_dynamodb_rules() {
        let item = serde_json::json!({"connection_id": "CXzQ2cJjoAMCJ6g=", "expires_at": 1795515332});
        // 13 + 16 for the string; 10 + (10 digits / 2 + 1) for the number.
        assert_eq!(item_bytes(&item), 13 + 16 + 10 + 6);
    }

    #[tokio::test]
    async fn api_gateway_messages_dominate_large_rooms() {
        let assumptions = Assumptions {
            messages: 1e6,
            text_bytes: 100,
            room_messages_per_minute: 60.0,
            heartbeat_secs: 0.0,
            lambda_memory_mb: 128.0,
            stream_batch: 1.0,
            dynamodb_call_ms: 5.0,
            poster: PosterModel { latency_ms: 0.0, jitter_ms: 0.0, gone: 0.0, throttled: 0.0 },
            fanout_concurrency: 64,
            coalesced: false,
        };
        let report = model(assumptions, &[10, 100], 1).await;
        let big = &report.rooms[1];
        // One inbound message plus one post per recipient, each under 32 KB.
        assert_eq!(big.apigw_messages, 1e6 * 101.0);
        assert!(big.usd_apigw_messages > big.usd_total / 2.0);
        assert_eq!(big.dynamodb_write_units, 1e6);
    }
}

#[cfg(test)]
mod coalescing_tests {
    use super::*;

    #[test]
    fn coalesced_frames_fill_32_kb() {
        // 402-byte frames: 81 fit one coalesced frame.
        assert_eq!(coalesced_frames(1.0, 402), 1.0);
        assert_eq!(coalesced_frames(81.0, 402), 1.0);
        assert_eq!(coalesced_frames(82.0, 402), 2.0);
        // Cross-check with the real packer.
        let frame = chat_core::ports::Bytes::from(vec![b'x'; 402]);
        assert_eq!(chat_core::coalesce::coalesce(&vec![frame.clone(); 81]).len(), 1);
        assert_eq!(chat_core::coalesce::coalesce(&vec![frame; 82]).len(), 2);
    }

    #[tokio::test]
    async fn coalescing_divides_the_broadcast_messages_by_the_events_per_invocation() {
        let assumptions = |coalesced| Assumptions {
            messages: 1e6,
            text_bytes: 100,
            room_messages_per_minute: 600.0,
            heartbeat_secs: 0.0,
            lambda_memory_mb: 128.0,
            stream_batch: 10.0,
            dynamodb_call_ms: 5.0,
            poster: PosterModel { latency_ms: 0.0, jitter_ms: 0.0, gone: 0.0, throttled: 0.0 },
            fanout_concurrency: 64,
            coalesced,
        };
        let cases = simulate_rooms(&assumptions(false), &[100], 1).await;
        let plain = price(assumptions(false), &cases).await;
        let coalesced = price(assumptions(true), &cases).await;
        assert_eq!(plain.rooms[0].apigw_messages, 1e6 + 1e6 * 100.0);
        assert_eq!(coalesced.rooms[0].apigw_messages, 1e6 + 1e5 * 100.0);
    }
}
