//! What a filling room's presence costs deployed: the seed's join notices (each
//! join posted to every member already there, O(N²)) against occupancy frames
//! above the presence limit ([`chat_core::occupancy`]: joins up to the limit as
//! notices, then one frame per interval to every member, however many joined in
//! it). Priced at API Gateway's $1.00 per million messages, and in seconds of the
//! account's 10 000 calls/s budget that @connections posts share. The model is
//! checked against the real broadcaster (this module's test).

use serde::Serialize;

use crate::cost::price;

/// The account's @connections and inbound-message budget (default, per second).
pub const ACCOUNT_CALLS_PER_SECOND: f64 = 10_000.0;

/// Room sizes of the table.
pub const ROOM_SIZES: [u64; 3] = [1_000, 10_000, 50_000];

/// Join rates of the table: 500/s is the account's new-connection limit (the
/// fastest a room can fill deployed); below one a second every join is a frame.
pub const JOIN_RATES: [f64; 4] = [500.0, 100.0, 10.0, 1.0];

/// Join notices alone as a room fills to `members`: join j goes to the j − 1 there.
pub fn notice_deliveries(members: u64) -> u64 {
    members * members.saturating_sub(1) / 2
}

/// With occupancy frames: the first `limit` joins as notices (as
/// [`notice_deliveries`]); past it, one frame per interval carrying the
/// `joins_per_frame` (at least 1) joins of that interval, posted to every
/// member then, the joiners included.
pub fn occupancy_deliveries(members: u64, limit: u64, joins_per_frame: u64) -> u64 {
    let below = notice_deliveries(members.min(limit));
    let per_frame = joins_per_frame.max(1);
    let mut above = 0;
    let mut size = limit;
    while size < members {
        size = (size + per_frame).min(members);
        above += size;
    }
    below + above
}

/// One row of the table.
#[derive(Clone, Debug, Serialize)]
pub struct FillingRoom {
    pub members: u64,
    pub joins_per_second: f64,
    pub fill_seconds: f64,
    pub before: Bill,
    pub after: Bill,
}

/// Deliveries (@connections posts, one API Gateway message each), their price
/// and the seconds of the account budget they take.
#[derive(Clone, Debug, Serialize)]
pub struct Bill {
    pub deliveries: u64,
    pub usd: f64,
    pub budget_seconds: f64,
}

impl Bill {
    fn of(deliveries: u64) -> Self {
        let d = deliveries as f64;
        Self { deliveries, usd: d * price::APIGW_MESSAGE, budget_seconds: d / ACCOUNT_CALLS_PER_SECOND }
    }
}

/// The table: each room size filling at each rate, the presence limit `limit`
/// and one frame per second at most.
pub fn filling_rooms(limit: u64) -> Vec<FillingRoom> {
    let mut rows = Vec::new();
    for members in ROOM_SIZES {
        for joins_per_second in JOIN_RATES {
            let joins_per_frame = joins_per_second.floor() as u64;
            rows.push(FillingRoom {
                members,
                joins_per_second,
                fill_seconds: members as f64 / joins_per_second,
                before: Bill::of(notice_deliveries(members)),
                after: Bill::of(occupancy_deliveries(members, limit, joins_per_frame)),
            });
        }
    }
    rows
}

/// The table as Markdown.
pub fn table(limit: u64, rows: &[FillingRoom]) -> String {
    let mut out = format!(
        "Join presence of a room filling up, deployed: notices to everyone (before) and occupancy \
         frames above {limit} members, at most 1/s (after). $1.00 per million messages; budget = \
         seconds of the account's 10 000 calls/s.\n\n\
         | members | joins/s | fills in | deliveries before | $ before | budget-s before | deliveries after | $ after | budget-s after | after/before |\n\
         | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n"
    );
    for row in rows {
        out += &format!(
            "| {} | {} | {:.0} s | {} | ${:.2} | {:.1} | {} | ${:.2} | {:.1} | {:.4} |\n",
            row.members,
            row.joins_per_second,
            row.fill_seconds,
            row.before.deliveries,
            row.before.usd,
            row.before.budget_seconds,
            row.after.deliveries,
            row.after.usd,
            row.after.budget_seconds,
            row.after.deliveries as f64 / row.before.deliveries as f64,
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use chat_core::broadcaster::{Broadcaster, FanoutConfig, SequencedEvent};
    use chat_core::memory::{FixedClock, MemoryConnections, MemoryLog, MemorySessions, RecordingPoster};
    use chat_core::occupancy::PresenceConfig;
    use chat_core::ports::ConnectionStore;
    use chat_core::time::parse_iso;
    use chat_core::{Connection, LogEvent};

    use super::*;

    #[test]
    fn the_seed_s_notices_are_quadratic() {
        assert_eq!(notice_deliveries(1), 0);
        assert_eq!(notice_deliveries(10_000), 49_995_000, "the issue's ~50 M");
        // A room that never passes the limit costs what it did.
        assert_eq!(occupancy_deliveries(80, 100, 25), notice_deliveries(80));
        // Below one join a second, each join is its own frame to everyone, itself included.
        assert_eq!(occupancy_deliveries(103, 100, 0), notice_deliveries(100) + 101 + 102 + 103);
    }

    /// The model against the real broadcaster: joins one by one up to the limit,
    /// then batches of `per_frame` joins back to back (each waits out the
    /// interval, as a room filling faster than one frame a second does).
    #[tokio::test]
    async fn the_model_is_what_the_broadcaster_posts() {
        let (members, limit, per_frame) = (300u64, 100u64, 25u64);
        let at = parse_iso("2026-11-24T10:15:30Z").unwrap();
        let connections = Arc::new(MemoryConnections::with_page_size(1000));
        let poster = Arc::new(RecordingPoster::default());
        let presence =
            PresenceConfig { limit: Some(limit as usize), interval: Duration::from_millis(5), full_batch: None };
        let broadcaster = Broadcaster {
            connections: connections.clone(),
            sessions: Arc::new(MemorySessions::default()),
            log: Arc::new(MemoryLog::default()),
            poster: poster.clone(),
            archive: None,
            clock: Arc::new(FixedClock::at(at)),
            config: FanoutConfig { presence, ..FanoutConfig::default() },
            occupancy: Default::default(),
        };
        let mut joined = 0u64;
        while joined < members {
            let size = if joined < limit { 1 } else { per_frame.min(members - joined) };
            let mut batch = Vec::new();
            for j in joined..joined + size {
                let id = format!("c{j:05}=");
                connections.put(&Connection::new(&id, "198.51.100.1", at)).await.unwrap();
                batch.push(SequencedEvent { sequence_number: format!("{j:028}"), event: LogEvent::join(&id, at) });
            }
            joined += size;
            broadcaster.broadcast(&batch).await;
        }
        assert_eq!(poster.attempts() as u64, occupancy_deliveries(members, limit, per_frame));
        assert_eq!(
            occupancy_deliveries(members, limit, per_frame),
            4_950 + 125 + 150 + 175 + 200 + 225 + 250 + 275 + 300
        );
    }
}
