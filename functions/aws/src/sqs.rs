//! The fan-out queue of large rooms on SQS ([`chat_core::split`]).

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use chat_core::StoreError;
use chat_core::split::{FanoutJob, FanoutQueue, MAX_JOB_BYTES};

use crate::unavailable;

/// Entries per `SendMessageBatch` call: SQS's limit.
pub const MAX_BATCH_ENTRIES: usize = 10;

/// Sends of one batch's failed entries (the first included) before giving up:
/// SQS reports entries it could not take one by one, in a successful answer.
const BATCH_SENDS: usize = 3;

/// A [`FanoutQueue`] on one SQS queue (its URL, as `Ref` gives it).
#[derive(Clone, Debug)]
pub struct SqsFanoutQueue {
    client: Client,
    queue_url: String,
}

impl SqsFanoutQueue {
    pub fn new(sdk: &aws_config::SdkConfig, queue_url: impl Into<String>) -> Self {
        Self { client: Client::new(sdk), queue_url: queue_url.into() }
    }

    /// One `SendMessageBatch`, then again with the entries SQS refused until
    /// none are left or [`BATCH_SENDS`] calls; a refusal that is the sender's
    /// fault (too large, malformed) is not retried.
    async fn send_batch(&self, mut entries: Vec<SendMessageBatchRequestEntry>) -> Result<(), StoreError> {
        for _ in 0..BATCH_SENDS {
            let output = self
                .client
                .send_message_batch()
                .queue_url(&self.queue_url)
                .set_entries(Some(entries.clone()))
                .send()
                .await
                .map_err(unavailable)?;
            let failed = output.failed();
            if failed.is_empty() {
                return Ok(());
            }
            if let Some(fault) = failed.iter().find(|f| f.sender_fault()) {
                let message = fault.message().unwrap_or_default();
                return Err(StoreError::Malformed(format!("SQS refused a fan-out job: {} {message}", fault.code())));
            }
            tracing::warn!(failed = failed.len(), "SQS did not take every fan-out job; sending those again");
            entries.retain(|entry| failed.iter().any(|f| f.id() == entry.id()));
        }
        Err(StoreError::Unavailable(format!("SQS did not take {} fan-out job(s)", entries.len())))
    }
}

/// `jobs` as `SendMessageBatch` calls: at most [`MAX_BATCH_ENTRIES`] entries
/// and [`MAX_JOB_BYTES`] of bodies each (SQS's limit on one request's total);
/// each entry's id is its index in `jobs`.
pub fn batches(jobs: &[FanoutJob]) -> Result<Vec<Vec<SendMessageBatchRequestEntry>>, StoreError> {
    let mut batches: Vec<Vec<SendMessageBatchRequestEntry>> = Vec::new();
    let mut bytes = 0;
    for (i, job) in jobs.iter().enumerate() {
        let body = job.to_body();
        let full = batches.last().is_none_or(|b| b.len() >= MAX_BATCH_ENTRIES || bytes + body.len() > MAX_JOB_BYTES);
        if full {
            batches.push(Vec::new());
            bytes = 0;
        }
        bytes += body.len();
        let entry = SendMessageBatchRequestEntry::builder()
            .id(i.to_string())
            .message_body(body)
            .delay_seconds(job.delay().as_secs().min(900) as i32)
            .build()
            .map_err(|e| StoreError::Malformed(e.to_string()))?;
        batches.last_mut().expect("pushed above").push(entry);
    }
    Ok(batches)
}

#[async_trait]
impl FanoutQueue for SqsFanoutQueue {
    /// Every batch at once: a 10 000-member room is 20 jobs, two calls.
    async fn enqueue(&self, jobs: &[FanoutJob]) -> Result<(), StoreError> {
        let sends = batches(jobs)?.into_iter().map(|entries| self.send_batch(entries));
        futures::future::try_join_all(sends).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chat_core::ports::Bytes;

    fn job(frame_len: usize, attempt: u32) -> FanoutJob {
        FanoutJob {
            room: "big".into(),
            message_id: "m".into(),
            frame: Bytes::from(vec![b'x'; frame_len]),
            members: Vec::new(),
            attempt,
        }
    }

    #[test]
    fn batches_hold_ten_entries_and_256_kib_at_most_and_carry_each_jobs_delay() {
        let jobs: Vec<FanoutJob> =
            (0..23).map(|_| job(100, 0)).chain([job(120_000, 0), job(120_000, 2), job(100, 3)]).collect();
        let batches = batches(&jobs).unwrap();
        let sizes: Vec<usize> = batches.iter().map(Vec::len).collect();
        assert_eq!(sizes, [10, 10, 4, 2], "the two large bodies (160 KB each) cannot share a call");
        for batch in &batches {
            assert!(batch.iter().map(|e| e.message_body().len()).sum::<usize>() <= MAX_JOB_BYTES);
        }
        let ids: Vec<String> = batches.iter().flatten().map(|e| e.id().to_owned()).collect();
        assert_eq!(ids, (0..26).map(|i| i.to_string()).collect::<Vec<_>>());
        let delays: Vec<Option<i32>> = batches.iter().flatten().skip(23).map(|e| e.delay_seconds()).collect();
        assert_eq!(delays, [Some(0), Some(4), Some(8)]);
    }
}
