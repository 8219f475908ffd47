//! The fan-out queue of large rooms on SQS (moto): the adapter's
//! `SendMessageBatch` calls round-trip every job, and the worker's entry point
//! consumes them as Lambda delivers them, sending a throttled member back.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::sqs::{SqsEvent, SqsMessage};
use chat_aws::SqsFanoutQueue;
use chat_core::broadcaster::{Broadcaster, FanoutConfig};
use chat_core::entrypoints::fanout::on_sqs;
use chat_core::memory::{MemoryConnections, MemoryLog, MemorySessions, RecordingPoster};
use chat_core::ports::{Bytes, PostError, SystemClock};
use chat_core::split::{FanoutJob, FanoutQueue, MAX_FRAME_BYTES, Split, jobs, worker_config};
use chat_core::{Connection, LogEvent};
use common::Moto;

/// Receives up to `count` messages, waiting at most `patience` for them.
async fn receive(sqs: &aws_sdk_sqs::Client, url: &str, count: usize, patience: Duration) -> Vec<SqsMessage> {
    let deadline = tokio::time::Instant::now() + patience;
    let mut messages = Vec::new();
    while messages.len() < count && tokio::time::Instant::now() < deadline {
        let output =
            sqs.receive_message().queue_url(url).max_number_of_messages(10).wait_time_seconds(1).send().await.unwrap();
        for received in output.messages() {
            // As the event source mapping hands it to the function.
            let mut message = SqsMessage::default();
            message.message_id = received.message_id().map(str::to_owned);
            message.receipt_handle = received.receipt_handle().map(str::to_owned);
            message.body = received.body().map(str::to_owned);
            messages.push(message);
        }
    }
    messages
}

fn members(from: usize, n: usize) -> Vec<Connection> {
    // Whole seconds: a connection's time is stored (and serialized) to the second.
    let at = chrono::SubsecRound::trunc_subsecs(chrono::Utc::now(), 0);
    (from..from + n).map(|i| Connection::new(&format!("c{i:014}="), "", at).as_member_of("big")).collect()
}

#[tokio::test]
async fn jobs_round_trip_through_sqs_batches_and_the_worker_consumes_them() {
    let moto = Moto::start().await;
    let sdk = moto.sdk_config().await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let url = sqs.create_queue().queue_name("fanout").send().await.unwrap().queue_url().unwrap().to_owned();
    let queue = SqsFanoutQueue::new(&sdk, &url);

    // 23 small jobs (three batches of ≤ 10) and two with the largest frame
    // (~171 KiB of body each: one per call, under SQS's 256 KiB per request).
    let event = LogEvent::chat("CXzQ2cJjoAMCJ6g=", "to a big room", chrono::Utc::now()).in_room("big");
    let frame = Bytes::from(chat_core::protocol::event_frame(&event));
    let all = members(0, 23 * 40);
    let mut sent = jobs("big", &event.message_id, &frame, &all.iter().collect::<Vec<_>>(), 40);
    let large = Bytes::from(vec![b'x'; MAX_FRAME_BYTES]);
    let more = members(10_000, 200);
    sent.extend(jobs("big", "large", &large, &more.iter().collect::<Vec<_>>(), 100));
    assert_eq!(sent.len(), 25);
    queue.enqueue(&sent).await.expect("every batch is accepted");

    let messages = receive(&sqs, &url, sent.len(), Duration::from_secs(20)).await;
    let mut got: Vec<FanoutJob> =
        messages.iter().map(|m| FanoutJob::from_body(m.body.as_deref().unwrap()).unwrap()).collect();
    let key = |job: &FanoutJob| job.members[0].connection_id.clone();
    got.sort_by_key(key);
    sent.sort_by_key(key);
    assert_eq!(got, sent, "every job arrives once, as sent");

    // The worker: everyone but one member that stays throttled gets the frame;
    // that member goes back to the queue as a job of its own, delayed.
    let poster = Arc::new(RecordingPoster::default());
    poster.fail_next("c00000000000007=", std::iter::repeat_n(PostError::Throttled, 10));
    let worker = Broadcaster {
        connections: Arc::new(MemoryConnections::default()),
        sessions: Arc::new(MemorySessions::default()),
        log: Arc::new(MemoryLog::default()),
        poster: poster.clone(),
        archive: None,
        clock: Arc::new(SystemClock),
        occupancy: Default::default(),
        config: worker_config(FanoutConfig { split: Some(Split::new(Arc::new(queue))), ..FanoutConfig::default() }),
    };
    let mut event = SqsEvent::default();
    event.records = messages;
    let response = on_sqs(&event, &worker).await;
    assert!(response.batch_item_failures.is_empty(), "{response:?}");
    assert_eq!(poster.delivered().len(), 23 * 40 + 200 - 1);

    let again = receive(&sqs, &url, 1, Duration::from_secs(10)).await;
    assert_eq!(again.len(), 1, "the throttled member's job, after its delay");
    let retry = FanoutJob::from_body(again[0].body.as_deref().unwrap()).unwrap();
    assert_eq!((retry.attempt, retry.members.len()), (1, 1));
    assert_eq!(retry.members[0].connection_id, "c00000000000007=");
}
