//! The local stack's own counters, read from its `GET /metrics` (Prometheus text):
//! frames written to sockets and API Gateway messages billed for posted frames.
//! The load generator reads them at the start and the end of its measured phase.

use anyhow::{Context, bail};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Counter: text frames the stack wrote to clients' sockets.
pub const FRAMES_SENT: &str = "chat_ws_frames_sent_total";
/// Counter: API Gateway messages billed for frames posted via @connections (one per started 32 KB).
pub const APIGW_MESSAGES: &str = "chat_apigw_messages_total";

/// The two counters at one moment, or their difference over a phase.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Counters {
    pub frames_sent: f64,
    pub apigw_messages: f64,
}

impl Counters {
    /// What happened between `earlier` and `self`.
    pub fn since(self, earlier: Counters) -> Counters {
        Counters {
            frames_sent: self.frames_sent - earlier.frames_sent,
            apigw_messages: self.apigw_messages - earlier.apigw_messages,
        }
    }
}

/// `http://ADDR/metrics` for a stack whose WebSocket URL is `ws://ADDR/STAGE`.
pub fn metrics_url(ws_url: &str) -> String {
    let address = ws_url.trim_start_matches("ws://").split('/').next().unwrap_or_default();
    format!("http://{address}/metrics")
}

/// Reads the counters from `url` (`http://ADDR/PATH`, loopback, HTTP/1.0).
pub async fn scrape(url: &str) -> anyhow::Result<Counters> {
    let rest = url.strip_prefix("http://").with_context(|| format!("{url} is not an http:// URL"))?;
    let (address, path) = rest.split_once('/').map_or((rest, "/".to_owned()), |(a, p)| (a, format!("/{p}")));
    let mut stream = TcpStream::connect(address).await.with_context(|| format!("connecting to {address}"))?;
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        bail!("GET {url}: {}", head.lines().next().unwrap_or("no answer"));
    }
    Ok(parse(body))
}

/// Sums each counter over all its label sets; a counter not yet touched is 0.
pub fn parse(text: &str) -> Counters {
    let total = |name: &str| -> f64 {
        text.lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                let metric = series.split('{').next()?;
                (metric == name).then(|| value.parse::<f64>().ok()).flatten()
            })
            .sum()
    };
    Counters { frames_sent: total(FRAMES_SENT), apigw_messages: total(APIGW_MESSAGES) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_label_sets_and_skips_comments() {
        let text = "# HELP chat_ws_frames_sent_total Frames.\n# TYPE chat_ws_frames_sent_total counter\n\
                    chat_ws_frames_sent_total 1200\nchat_apigw_messages_total{kind=\"a\"} 3\n\
                    chat_apigw_messages_total{kind=\"b\"} 4\nchat_ws_frames_sent_total_other 9\n";
        assert_eq!(parse(text), Counters { frames_sent: 1200.0, apigw_messages: 7.0 });
        assert_eq!(parse(""), Counters::default());
        assert_eq!(metrics_url("ws://127.0.0.1:8080/dev"), "http://127.0.0.1:8080/metrics");
    }
}
