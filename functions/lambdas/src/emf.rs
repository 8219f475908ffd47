//! The broadcaster's counters as CloudWatch Embedded Metric Format: one JSON
//! line per invocation on stdout, which CloudWatch Logs turns into metrics
//! (no `cloudwatch:PutMetricData` call, no permission, no latency).
//! The same counters the local stack serves at `/metrics`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chat_core::broadcaster::BatchReport;
use chat_core::ports::{Bytes, PostError, SocketPoster, post_outcome};
use serde_json::{Map, Value, json};

/// Where the metrics appear in CloudWatch; the template's alarms and dashboard use it.
pub const NAMESPACE: &str = "WebsocketChat";

/// Posts by outcome since the last [`PostCounts::take`].
#[derive(Debug, Default)]
pub struct PostCounts {
    ok: AtomicU64,
    gone: AtomicU64,
    throttled: AtomicU64,
    failed: AtomicU64,
}

/// One invocation's posts by outcome.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PostTally {
    pub ok: u64,
    pub gone: u64,
    pub throttled: u64,
    pub failed: u64,
}

impl PostCounts {
    fn add(&self, result: &Result<(), PostError>) {
        let counter = match post_outcome(result) {
            "ok" => &self.ok,
            "gone" => &self.gone,
            "throttled" => &self.throttled,
            _ => &self.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The counts so far, starting again from zero: a Lambda instance runs one
    /// invocation at a time, so this is the invocation's own tally.
    pub fn take(&self) -> PostTally {
        PostTally {
            ok: self.ok.swap(0, Ordering::Relaxed),
            gone: self.gone.swap(0, Ordering::Relaxed),
            throttled: self.throttled.swap(0, Ordering::Relaxed),
            failed: self.failed.swap(0, Ordering::Relaxed),
        }
    }
}

/// A [`SocketPoster`] that counts every attempt by its outcome (throttled
/// retries included, which the broadcaster's report does not show).
pub struct CountingPoster<P> {
    pub inner: P,
    pub counts: Arc<PostCounts>,
}

#[async_trait]
impl<P: SocketPoster> SocketPoster for CountingPoster<P> {
    async fn post(&self, connection_id: &str, frame: &Bytes) -> Result<(), PostError> {
        let result = self.inner.post(connection_id, frame).await;
        self.counts.add(&result);
        result
    }

    /// Not a post: not counted.
    async fn close(&self, connection_id: &str) -> Result<(), PostError> {
        self.inner.close(connection_id).await
    }
}

/// What one broadcaster invocation did.
#[derive(Clone, Debug, Default)]
pub struct BroadcastMetrics {
    pub records: usize,
    pub report: BatchReport,
    pub posts: PostTally,
    pub fanout: Duration,
    /// Age of the batch's newest record when the broadcast ended.
    pub lag: Option<Duration>,
}

/// The EMF document for one invocation, dimensioned by the function's name.
pub fn document(function_name: &str, metrics: &BroadcastMetrics, timestamp_ms: i64) -> Value {
    let report = &metrics.report;
    let mut values: Vec<(&str, &str, Value)> = vec![
        ("StreamRecords", "Count", metrics.records.into()),
        ("Deliveries", "Count", report.delivered.into()),
        ("PostsOk", "Count", metrics.posts.ok.into()),
        ("PostsGone", "Count", metrics.posts.gone.into()),
        ("PostsThrottled", "Count", metrics.posts.throttled.into()),
        ("PostsFailed", "Count", metrics.posts.failed.into()),
        ("Pruned", "Count", report.pruned.into()),
        ("Undeliverable", "Count", report.undeliverable.into()),
        ("RecordsToRetry", "Count", report.failed.len().into()),
        ("BatchesRetried", "Count", u64::from(!report.failed.is_empty()).into()),
        ("FanoutDuration", "Milliseconds", (metrics.fanout.as_secs_f64() * 1000.0).into()),
    ];
    if let Some(lag) = metrics.lag {
        values.push(("StreamLag", "Seconds", lag.as_secs_f64().into()));
    }
    let definitions: Vec<Value> = values.iter().map(|(name, unit, _)| json!({ "Name": name, "Unit": unit })).collect();
    let mut root = Map::new();
    root.insert(
        "_aws".into(),
        json!({
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [["FunctionName"]],
                "Metrics": definitions,
            }],
        }),
    );
    root.insert("FunctionName".into(), function_name.into());
    for (name, _, value) in values {
        root.insert(name.into(), value);
    }
    Value::Object(root)
}
