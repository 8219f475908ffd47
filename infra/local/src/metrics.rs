//! The local stack's metrics, served as Prometheus text at `GET /metrics`.
//!
//! Recorded through the `metrics` facade and rendered by
//! `metrics-exporter-prometheus` (no listener of its own: the stack's axum router
//! serves the text on its one port). Everything is counted at the edges — the
//! function table, the event-source loop, the posters and the message log
//! adapter — so the pure core stays free of metrics.

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chat_core::LogEvent;
use chat_core::broadcaster::BatchReport;
use chat_core::handlers::HandlerError;
use chat_core::ports::{LogQuery, MessageLog, PostError, StoreError, post_outcome};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Open WebSocket connections (gauge). Not by room: room names are whatever
/// users typed, and a scrape must not list every room ever joined.
pub const CONNECTIONS_OPEN: &str = "chat_connections_open";
/// `$connect` invocations, by the HTTP `status` they answered (200 opens the socket).
pub const CONNECTS: &str = "chat_connects_total";
/// Upgrades refused before `$connect` ran, by `status`: 400 a bad handshake, 401/403
/// the authorizer, 403 also another site's page or host name, 429 the new-connections limit.
pub const UPGRADES_REFUSED: &str = "chat_upgrades_refused_total";
/// `$disconnect` invocations, by the close `code` they report.
pub const DISCONNECTS: &str = "chat_disconnects_total";
/// Events appended to MessageHistory, by `kind` (chat, join, leave).
pub const MESSAGES_APPENDED: &str = "chat_messages_appended_total";
/// Frames the broadcaster delivered (one per recipient of an event).
pub const DELIVERIES: &str = "chat_deliveries_total";
/// @connections posts (in-process and over HTTP), by `outcome`: ok, gone, throttled, failed.
pub const POSTS: &str = "chat_posts_total";
/// Seconds one broadcaster invocation took to fan its batch out (histogram).
pub const FANOUT_DURATION: &str = "chat_fanout_duration_seconds";
/// Stream records handed to the broadcaster.
pub const STREAM_RECORDS: &str = "chat_stream_records_total";
/// Seconds from the newest record of the last batch being logged to its broadcast (gauge).
pub const STREAM_LAG_SECONDS: &str = "chat_stream_lag_seconds";
/// Records logged but not yet broadcast, after the last batch (gauge).
pub const STREAM_LAG_RECORDS: &str = "chat_stream_lag_records";
/// Batches the event source retried from a failed record.
pub const BATCHES_RETRIED: &str = "chat_stream_batches_retried_total";
/// Batches whose failing record was given up after the retries (on-failure destination).
pub const BATCHES_GIVEN_UP: &str = "chat_stream_batches_given_up_total";
/// Webhook events the receiver accepted (2xx), once each (`--webhook`).
pub const WEBHOOK_DELIVERED: &str = "chat_webhook_delivered_total";
/// Webhook attempts that failed and were tried again (errors, timeouts, 5xx, 408, 429).
pub const WEBHOOK_RETRIED: &str = "chat_webhook_retried_total";
/// Webhook events not delivered, by `reason`: queue_full (the bounded queue was
/// full when the event came), gave_up (out of attempts), refused (a 4xx).
pub const WEBHOOK_DROPPED: &str = "chat_webhook_dropped_total";
/// Webhook events waiting or being delivered (gauge).
pub const WEBHOOK_QUEUED: &str = "chat_webhook_queued";
/// Batches the events function's mappings retried from a failed record.
pub const EVENTS_BATCHES_RETRIED: &str = "chat_events_batches_retried_total";
/// Batches whose failing record the events function's mappings gave up.
pub const EVENTS_BATCHES_GIVEN_UP: &str = "chat_events_batches_given_up_total";
/// Function invocations that failed (API Gateway's "Internal server error"), by `route`.
pub const HANDLER_ERRORS: &str = "chat_handler_errors_total";

/// Fan-out durations from a lone socket (sub-millisecond) to a large room.
const FANOUT_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// The process's recorder, installed on first use. The `metrics` macros record
/// into one global recorder, so one process has one set of metrics.
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(FANOUT_DURATION.into()), FANOUT_BUCKETS)
            .expect("the fan-out buckets are not empty");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("another metrics recorder is installed; /metrics will stay empty");
        }
        describe();
        handle
    })
}

/// `HELP` lines for the metrics this module records.
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(CONNECTIONS_OPEN, "Open WebSocket connections.");
    describe_counter!(CONNECTS, "$connect invocations, by the HTTP status they answered.");
    describe_counter!(UPGRADES_REFUSED, "Upgrades refused before $connect ran, by HTTP status.");
    describe_counter!(DISCONNECTS, "$disconnect invocations, by close code.");
    describe_counter!(MESSAGES_APPENDED, "Events appended to MessageHistory, by kind.");
    describe_counter!(DELIVERIES, "Frames the broadcaster delivered.");
    describe_counter!(POSTS, "@connections posts, by outcome.");
    describe_histogram!(FANOUT_DURATION, metrics::Unit::Seconds, "Broadcaster invocation time.");
    describe_counter!(STREAM_RECORDS, "Stream records handed to the broadcaster.");
    describe_gauge!(STREAM_LAG_SECONDS, metrics::Unit::Seconds, "Newest broadcast record's age when broadcast.");
    describe_gauge!(STREAM_LAG_RECORDS, "Records logged but not yet broadcast.");
    describe_counter!(BATCHES_RETRIED, "Stream batches retried from a failed record.");
    describe_counter!(BATCHES_GIVEN_UP, "Stream batches whose failing record was given up.");
    describe_counter!(HANDLER_ERRORS, "Function invocations that failed, by route.");
    describe_counter!(WEBHOOK_DELIVERED, "Webhook events the receiver accepted.");
    describe_counter!(WEBHOOK_RETRIED, "Webhook attempts that failed and were tried again.");
    describe_counter!(WEBHOOK_DROPPED, "Webhook events not delivered, by reason (queue_full, gave_up, refused).");
    describe_gauge!(WEBHOOK_QUEUED, "Webhook events waiting or being delivered.");
    describe_counter!(EVENTS_BATCHES_RETRIED, "Events function batches retried from a failed record.");
    describe_counter!(EVENTS_BATCHES_GIVEN_UP, "Events function batches whose failing record was given up.");
    describe_counter!(crate::sockets::FRAMES_SENT, "Text frames written to clients' sockets.");
    describe_counter!(
        crate::sockets::APIGW_MESSAGES,
        "API Gateway messages billed for frames posted via @connections (one per started 32 KB)."
    );
}

/// Drains histogram samples into their buckets now and then, so memory stays
/// flat between scrapes. Runs until the process ends.
pub fn spawn_upkeep() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        tokio::spawn(async {
            let mut every = tokio::time::interval(Duration::from_secs(5));
            loop {
                every.tick().await;
                handle().run_upkeep();
            }
        });
    });
}

/// `GET /metrics`: the Prometheus text exposition format, version 0.0.4, for a
/// peer that [`MetricsPeers`] allows; any other gets 403 and a one-line reason.
pub fn serve(peer: IpAddr, allowed: &MetricsPeers) -> Response {
    if !allowed.allows(peer) {
        tracing::info!(%peer, "metrics refused to a peer --metrics-host does not allow");
        let reason = "/metrics is served to loopback peers only; allow others with --metrics-host\n";
        return (StatusCode::FORBIDDEN, reason).into_response();
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], handle().render()).into_response()
}

/// Who may scrape `/metrics`: loopback peers always, plus what `--metrics-host`
/// names (repeatable): `any`, an address (`10.0.0.5`, `::1`) or a block
/// (`10.0.0.0/8`, `fd00::/8`). The counters tell how busy the chat is and how
/// it fails, so by default only this machine may read them. A proxy on this
/// machine is a loopback peer: it decides for the clients behind it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetricsPeers(pub Vec<PeerRule>);

/// One `--metrics-host` value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerRule {
    /// Every peer.
    Any,
    /// Peers whose address shares the first `prefix` bits with `network`.
    Block { network: IpAddr, prefix: u8 },
}

/// A `--metrics-host` value that is none of the forms it takes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not `any`, an IP address or an address block such as 10.0.0.0/8")]
pub struct BadPeerRule(String);

impl std::str::FromStr for PeerRule {
    type Err = BadPeerRule;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || BadPeerRule(text.to_owned());
        if text.eq_ignore_ascii_case("any") {
            return Ok(PeerRule::Any);
        }
        let (address, prefix) = text.split_once('/').map_or((text, None), |(a, p)| (a, Some(p)));
        let network: IpAddr = address.parse().map_err(|_| bad())?;
        let network = network.to_canonical();
        let bits = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => bits,
            Some(prefix) => prefix.parse::<u8>().ok().filter(|&p| p <= bits).ok_or_else(bad)?,
        };
        Ok(PeerRule::Block { network, prefix })
    }
}

impl PeerRule {
    fn allows(&self, peer: IpAddr) -> bool {
        let PeerRule::Block { network, prefix } = *self else { return true };
        match (network, peer) {
            (IpAddr::V4(network), IpAddr::V4(peer)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                u32::from(network) & mask == u32::from(peer) & mask
            }
            (IpAddr::V6(network), IpAddr::V6(peer)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                u128::from(network) & mask == u128::from(peer) & mask
            }
            _ => false,
        }
    }
}

impl MetricsPeers {
    /// Whether `peer` may scrape: a loopback address, or one a rule names.
    pub fn allows(&self, peer: IpAddr) -> bool {
        // An IPv4 client of a dual-stack listener shows up as ::ffff:a.b.c.d.
        let peer = peer.to_canonical();
        peer.is_loopback() || self.0.iter().any(|rule| rule.allows(peer))
    }
}

/// Counts function invocations as API Gateway's own metrics would see them, and
/// keeps the open-connections gauge (every `$disconnect` follows a `$connect`
/// that opened its socket).
#[derive(Clone, Default)]
pub struct Invocations;

impl Invocations {
    /// Records one invocation of `route` and its result.
    pub fn record(
        &self,
        route: &str,
        event: &ApiGatewayWebsocketProxyRequest,
        result: &Result<ApiGatewayProxyResponse, HandlerError>,
    ) {
        match route {
            "$connect" => {
                let status = result.as_ref().map_or(502, |response| response.status_code);
                metrics::counter!(CONNECTS, "status" => status.to_string()).increment(1);
                if (200..300).contains(&status) {
                    metrics::gauge!(CONNECTIONS_OPEN).increment(1.0);
                }
            }
            "$disconnect" => {
                let code = event.request_context.disconnect_status_code.unwrap_or_default();
                metrics::counter!(DISCONNECTS, "code" => code.to_string()).increment(1);
                metrics::gauge!(CONNECTIONS_OPEN).decrement(1.0);
            }
            _ => {}
        }
        if result.is_err() {
            metrics::counter!(HANDLER_ERRORS, "route" => route.to_owned()).increment(1);
        }
    }
}

/// Counts one @connections post by its outcome.
pub fn record_post(result: &Result<(), PostError>) {
    record_posts(std::slice::from_ref(result));
}

/// Counts @connections posts by outcome, one counter update per outcome (a
/// broadcast makes thousands of posts; a lookup each would cost more than the post).
pub fn record_posts(results: &[Result<(), PostError>]) {
    let mut counts = [("ok", 0u64), ("gone", 0), ("throttled", 0), ("failed", 0)];
    for result in results {
        let outcome = post_outcome(result);
        if let Some((_, count)) = counts.iter_mut().find(|(name, _)| *name == outcome) {
            *count += 1;
        }
    }
    for (outcome, count) in counts {
        if count > 0 {
            metrics::counter!(POSTS, "outcome" => outcome).increment(count);
        }
    }
}

/// What one broadcaster invocation did, as the event-source loop saw it.
pub struct Invocation<'a> {
    pub records: usize,
    pub report: &'a BatchReport,
    pub took: Duration,
    /// Age of the batch's newest record when the broadcast ended.
    pub lag: Option<Duration>,
    /// Records still waiting in the stream, where the source can tell.
    pub backlog: Option<u64>,
}

/// Records one broadcaster invocation.
pub fn record_broadcast(invocation: &Invocation) {
    metrics::counter!(STREAM_RECORDS).increment(invocation.records as u64);
    metrics::counter!(DELIVERIES).increment(invocation.report.delivered as u64);
    metrics::histogram!(FANOUT_DURATION).record(invocation.took.as_secs_f64());
    if let Some(lag) = invocation.lag {
        metrics::gauge!(STREAM_LAG_SECONDS).set(lag.as_secs_f64());
    }
    if let Some(backlog) = invocation.backlog {
        metrics::gauge!(STREAM_LAG_RECORDS).set(backlog as f64);
    }
}

/// Counts an upgrade refused before `$connect` ran.
pub fn record_refused_upgrade(status: axum::http::StatusCode) {
    metrics::counter!(UPGRADES_REFUSED, "status" => status.as_u16().to_string()).increment(1);
}

/// Counts a batch retried from a failed record.
pub fn record_retry() {
    metrics::counter!(BATCHES_RETRIED).increment(1);
}

/// Counts a batch whose failing record was given up.
pub fn record_given_up() {
    metrics::counter!(BATCHES_GIVEN_UP).increment(1);
}

/// Shows every webhook series at 0 from the start (when `--webhook` is on), so
/// a dashboard or an alert on drops sees them before the first event.
pub fn register_webhook() {
    metrics::counter!(WEBHOOK_DELIVERED).absolute(0);
    metrics::counter!(WEBHOOK_RETRIED).absolute(0);
    for reason in ["queue_full", "gave_up", "refused"] {
        metrics::counter!(WEBHOOK_DROPPED, "reason" => reason).absolute(0);
    }
    metrics::gauge!(WEBHOOK_QUEUED).set(0.0);
}

/// Counts a webhook event the receiver accepted.
pub fn record_webhook_delivered() {
    metrics::counter!(WEBHOOK_DELIVERED).increment(1);
}

/// Counts a failed webhook attempt that will be tried again.
pub fn record_webhook_retried() {
    metrics::counter!(WEBHOOK_RETRIED).increment(1);
}

/// Counts a webhook event not delivered, and why.
pub fn record_webhook_dropped(reason: &'static str) {
    metrics::counter!(WEBHOOK_DROPPED, "reason" => reason).increment(1);
}

/// Sets how many webhook events are waiting or being delivered.
pub fn set_webhook_queued(queued: usize) {
    metrics::gauge!(WEBHOOK_QUEUED).set(queued as f64);
}

/// Counts a batch the events function's mapping retried.
pub fn record_events_retry() {
    metrics::counter!(EVENTS_BATCHES_RETRIED).increment(1);
}

/// Counts a batch whose failing record the events function's mapping gave up.
pub fn record_events_given_up() {
    metrics::counter!(EVENTS_BATCHES_GIVEN_UP).increment(1);
}

/// A [`MessageLog`] that counts the events actually appended (not the no-op
/// re-appends of an id already logged).
pub struct CountingLog(pub Arc<dyn MessageLog>);

fn count_append(event: &LogEvent) {
    metrics::counter!(MESSAGES_APPENDED, "kind" => event.kind.as_str()).increment(1);
}

#[async_trait]
impl MessageLog for CountingLog {
    async fn append(&self, event: &LogEvent) -> Result<bool, StoreError> {
        let appended = self.0.append(event).await?;
        if appended {
            count_append(event);
        }
        Ok(appended)
    }

    async fn append_once(&self, event: &LogEvent, client_message_id: &str) -> Result<String, StoreError> {
        let stored_as = self.0.append_once(event, client_message_id).await?;
        // Another id means an earlier line with this client message id: nothing new.
        if stored_as == event.message_id {
            count_append(event);
        }
        Ok(stored_as)
    }

    async fn read(&self, query: &LogQuery) -> Result<Vec<LogEvent>, StoreError> {
        self.0.read(query).await
    }

    async fn get(&self, message_id: &str) -> Result<Option<LogEvent>, StoreError> {
        self.0.get(message_id).await
    }

    async fn deleted(&self, room: &str, id: &str) -> Result<bool, StoreError> {
        self.0.deleted(room, id).await
    }

    async fn toggle_reaction(
        &self,
        reaction: &LogEvent,
        client_message_id: Option<&str>,
    ) -> Result<LogEvent, StoreError> {
        let stored = self.0.toggle_reaction(reaction, client_message_id).await?;
        // Another id means a resend answered with the first toggle: nothing new.
        if stored.message_id == reaction.message_id {
            count_append(&stored);
        }
        Ok(stored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peers(rules: &[&str]) -> MetricsPeers {
        MetricsPeers(rules.iter().map(|rule| rule.parse().unwrap()).collect())
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn only_loopback_peers_may_scrape_by_default() {
        let default = MetricsPeers::default();
        for allowed in ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"] {
            assert!(default.allows(ip(allowed)), "{allowed}");
        }
        for refused in ["10.0.0.5", "192.168.1.20", "0.0.0.0", "fd00::1", "::ffff:10.0.0.5", "::"] {
            assert!(!default.allows(ip(refused)), "{refused}");
        }
    }

    #[test]
    fn metrics_host_adds_an_address_a_block_or_anyone() {
        let one = peers(&["10.0.0.5"]);
        assert!(one.allows(ip("10.0.0.5")) && one.allows(ip("::ffff:10.0.0.5")) && one.allows(ip("127.0.0.1")));
        assert!(!one.allows(ip("10.0.0.6")));
        let blocks = peers(&["10.0.0.0/8", "fd00::/8"]);
        assert!(blocks.allows(ip("10.200.3.4")) && blocks.allows(ip("fd12::7")));
        assert!(!blocks.allows(ip("11.0.0.1")) && !blocks.allows(ip("fe80::1")));
        let anyone = peers(&["any"]);
        assert!(anyone.allows(ip("203.0.113.9")) && anyone.allows(ip("2001:db8::1")));
        assert!(peers(&["0.0.0.0/0"]).allows(ip("203.0.113.9")));
    }

    #[test]
    fn a_bad_metrics_host_is_refused_with_what_it_takes() {
        for bad in ["", "localhost", "10.0.0.0/33", "::/129", "10.0.0.0/", "10.0.0.0/x", "10.0.0"] {
            let error = bad.parse::<PeerRule>().unwrap_err();
            assert!(error.to_string().contains("not `any`, an IP address"), "{bad}: {error}");
        }
    }

    #[tokio::test]
    async fn a_refused_peer_gets_403_and_one_line_why() {
        let response = serve(ip("192.0.2.1"), &MetricsPeers::default());
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        let body = axum::body::to_bytes(response.into_body(), 1024).await.unwrap();
        let body = String::from_utf8(body.to_vec()).unwrap();
        assert_eq!(body.lines().count(), 1, "{body:?}");
        assert!(body.contains("--metrics-host"), "{body:?}");
        assert_eq!(serve(ip("127.0.0.1"), &MetricsPeers::default()).status(), StatusCode::OK);
    }
}
