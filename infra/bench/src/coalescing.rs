//! Coalesced delivery measured on the local stack: the same load served one
//! frame per event, then to `?batch=1` clients at several batching windows, with
//! frames written and API Gateway messages billed read from the stack's own
//! counters (`loadgen coalescing`).

use anyhow::bail;
use serde::Serialize;

use crate::load::RunReport;

/// One configuration's result.
#[derive(Clone, Debug, Serialize)]
pub struct Run {
    /// The stream's batching window; `None`: clients not coalescing (one frame per event).
    pub window_ms: Option<u64>,
    pub chat_lines: u64,
    pub frames_sent: f64,
    pub apigw_messages: f64,
    pub frames_per_1000_lines: f64,
    pub apigw_messages_per_1000_lines: f64,
    /// Unique deliveries per frame written.
    pub events_per_frame: f64,
    pub report: RunReport,
}

impl Run {
    /// Fails when the run's counters could not be read: the table needs the stack's own.
    pub fn new(window_ms: Option<u64>, report: RunReport) -> anyhow::Result<Self> {
        let Some(counters) = report.counters else {
            bail!("the local stack's counters (GET /metrics) could not be read; the table needs them");
        };
        let lines = report.messages_sent.max(1) as f64;
        Ok(Self {
            window_ms,
            chat_lines: report.messages_sent,
            frames_sent: counters.frames_sent,
            apigw_messages: counters.apigw_messages,
            frames_per_1000_lines: counters.frames_sent / lines * 1e3,
            apigw_messages_per_1000_lines: counters.apigw_messages / lines * 1e3,
            events_per_frame: report.delivered as f64 / counters.frames_sent.max(1.0),
            report,
        })
    }
}
