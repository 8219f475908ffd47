//! Fan-out jobs from a queue (SQS) in, partial batch failures out: the
//! worker side of [`crate::split`].

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};

use crate::broadcaster::Broadcaster;
use crate::split::{FanoutJob, JobReport};

/// Why a queue message was not handled (the queue retries it, then moves it
/// to its dead-letter queue).
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("message has no body")]
    NoBody,
    #[error("body is not a fan-out job: {0}")]
    BadBody(#[from] serde_json::Error),
    #[error("re-enqueueing throttled members failed: {0}")]
    Requeue(#[from] crate::ports::StoreError),
}

/// Runs every job of the batch at once, each with `broadcaster`'s bounded
/// concurrency (build it with [`crate::split::worker_config`]). Only jobs that
/// could not be handled at all are reported as failures: a malformed body
/// (kept for inspection in the dead-letter queue after the redrive's
/// receives) or a failed re-enqueue. A member that stays throttled is not a
/// failure: it went back to the queue as its own job.
pub async fn on_sqs(event: &SqsEvent, broadcaster: &Broadcaster) -> SqsBatchResponse {
    let work = event.records.iter().map(|message| async move { (message, handle(message, broadcaster).await) });
    let mut response = SqsBatchResponse::default();
    for (message, result) in futures::future::join_all(work).await {
        let Err(error) = result else { continue };
        let id = message.message_id.clone().unwrap_or_default();
        tracing::error!(message_id = %id, %error, "fan-out job failed; the queue will retry it");
        response.add_failure(id);
    }
    response
}

async fn handle(message: &SqsMessage, broadcaster: &Broadcaster) -> Result<JobReport, JobError> {
    let job = FanoutJob::from_body(message.body.as_deref().ok_or(JobError::NoBody)?)?;
    Ok(broadcaster.fan_out_job(&job).await?)
}
