//! Presence that scales. Announcing every join and leave to everyone in the room
//! costs O(N²) posts as a room fills (10 000 members: ~50 M posts for the joins
//! alone). Above a room size (the presence limit) the broadcaster therefore holds
//! a room's joins and leaves back and posts one aggregated occupancy frame
//! instead — `{"kind":"occupancy","room","count","joined","left","recent"}`, at
//! most one per room per [`PresenceConfig::interval`] — so a filling room costs
//! one post per member per second, whatever its join rate. The events stay in the
//! log: history, replay and integrations still see each one.
//!
//! This module holds the policy (the limit, the interval) and the broadcaster's
//! memory of what each room has not been told yet; [`crate::broadcaster`] decides
//! when to post.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::model::{EventKind, LogEvent};

/// Rooms with more members than this get occupancy frames (`--presence-limit`,
/// template parameter `PresenceLimit`). Pusher caps presence at 100 members too.
pub const DEFAULT_PRESENCE_LIMIT: usize = 100;

/// At most one occupancy frame per room per this long.
pub const OCCUPANCY_INTERVAL: Duration = Duration::from_secs(1);

/// How many of the latest joiners a frame names (`recent`), so a page can show
/// "alice, bob and 38 others joined" without asking `who`.
pub const RECENT_JOINERS: usize = 5;

/// When join and leave notices give way to occupancy frames.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PresenceConfig {
    /// Rooms with more members than this are aggregated; `None` (`off`) keeps
    /// the notices at any size.
    pub limit: Option<usize>,
    /// The least time between two occupancy frames of a room.
    pub interval: Duration,
    /// The stream's batch size. A batch this full says more records are already
    /// waiting, so the next invocation follows at once and announces what this
    /// one held back; any smaller batch waits out the interval itself rather than
    /// leave a quiet room's last joins unannounced. `None`: always wait.
    pub full_batch: Option<usize>,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        Self { limit: Some(DEFAULT_PRESENCE_LIMIT), interval: OCCUPANCY_INTERVAL, full_batch: None }
    }
}

impl PresenceConfig {
    /// Whether a room of `members` gets occupancy frames instead of notices.
    pub fn aggregates(&self, members: usize) -> bool {
        self.limit.is_some_and(|limit| members > limit)
    }
}

/// Why a presence limit was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "presence limit {0:?} is not a number of members from 1 up, or off (off keeps join and leave notices at any room size)"
)]
pub struct BadPresenceLimit(pub String);

/// Reads a presence limit: a number of members ≥ 1, or `off`. 0 is refused
/// rather than guessed at: it reads as "off" to some and as "always aggregate"
/// to others.
///
/// ```
/// use chat_core::occupancy::parse_presence_limit;
/// assert_eq!(parse_presence_limit("100"), Ok(Some(100)));
/// assert_eq!(parse_presence_limit("off"), Ok(None));
/// assert!(parse_presence_limit("0").is_err());
/// ```
pub fn parse_presence_limit(text: &str) -> Result<Option<usize>, BadPresenceLimit> {
    match text.trim() {
        "off" => Ok(None),
        number => match number.parse::<usize>() {
            Ok(limit) if limit >= 1 => Ok(Some(limit)),
            _ => Err(BadPresenceLimit(text.to_owned())),
        },
    }
}

/// A joiner a frame names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Joiner {
    pub connection_id: String,
    pub user: Option<String>,
}

/// What one occupancy frame announces besides the count.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub joined: u64,
    pub left: u64,
    /// The latest joiners among `joined`, oldest first, at most [`RECENT_JOINERS`].
    pub recent: Vec<Joiner>,
}

/// One room's joins and leaves not yet announced, and when its last frame went.
#[derive(Debug, Default)]
struct RoomTally {
    joined: u64,
    left: u64,
    recent: VecDeque<Joiner>,
    last_frame: Option<Instant>,
}

impl RoomTally {
    fn pending(&self) -> bool {
        self.joined + self.left > 0
    }
}

/// The broadcaster's memory of aggregated rooms, kept across the batches one
/// instance handles (a warm Lambda, the local stream emulator). A cold start
/// forgets it; the worst that does is one frame sooner than the interval.
#[derive(Debug, Default)]
pub struct Occupancy {
    rooms: Mutex<HashMap<String, RoomTally>>,
}

impl Occupancy {
    fn rooms(&self) -> std::sync::MutexGuard<'_, HashMap<String, RoomTally>> {
        // A panic elsewhere cannot leave a tally half-written: each update is one statement.
        self.rooms.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts a held-back join or leave (other kinds are ignored).
    pub fn note(&self, event: &LogEvent) {
        let mut rooms = self.rooms();
        let tally = rooms.entry(event.room.clone()).or_default();
        match event.kind {
            EventKind::Join => {
                tally.joined += 1;
                if tally.recent.len() == RECENT_JOINERS {
                    tally.recent.pop_front();
                }
                tally.recent.push_back(Joiner { connection_id: event.connection_id.clone(), user: event.user.clone() });
            }
            EventKind::Leave => tally.left += 1,
            _ => {}
        }
    }

    /// Every room with something to announce and the earliest time it may be
    /// announced (`now` if it may be now), soonest first.
    pub fn due(&self, now: Instant, interval: Duration) -> Vec<(String, Instant)> {
        let mut rooms = self.rooms();
        // Rooms told everything more than an interval ago need no memory.
        rooms.retain(|_, tally| tally.pending() || tally.last_frame.is_some_and(|at| now < at + interval));
        let mut due: Vec<(String, Instant)> = rooms
            .iter()
            .filter(|(_, tally)| tally.pending())
            .map(|(room, tally)| (room.clone(), tally.last_frame.map_or(now, |at| (at + interval).max(now))))
            .collect();
        due.sort_by_key(|(_, at)| *at);
        due
    }

    /// Takes what `room` has not been told, for a frame posted at `now`; `None`
    /// when there is nothing, or its interval has not passed.
    pub fn take(&self, room: &str, now: Instant, interval: Duration) -> Option<Changes> {
        let mut rooms = self.rooms();
        let tally = rooms.get_mut(room)?;
        if !tally.pending() || tally.last_frame.is_some_and(|at| now < at + interval) {
            return None;
        }
        tally.last_frame = Some(now);
        Some(Changes {
            joined: std::mem::take(&mut tally.joined),
            left: std::mem::take(&mut tally.left),
            recent: std::mem::take(&mut tally.recent).into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::parse_iso;

    #[test]
    fn limits_are_members_from_1_or_off() {
        assert_eq!(parse_presence_limit(" 1 "), Ok(Some(1)));
        for bad in ["0", "-1", "", "many", "1.5"] {
            assert_eq!(parse_presence_limit(bad), Err(BadPresenceLimit(bad.to_owned())), "{bad:?}");
        }
        let config = PresenceConfig::default();
        assert!(!config.aggregates(100) && config.aggregates(101));
        assert!(!PresenceConfig { limit: None, ..config }.aggregates(usize::MAX));
    }

    #[test]
    fn a_room_is_told_at_most_once_per_interval_and_nothing_is_lost() {
        let occupancy = Occupancy::default();
        let at = parse_iso("2026-11-24T10:15:30Z").unwrap();
        let second = Duration::from_secs(1);
        for i in 0..7 {
            occupancy.note(&LogEvent::join(&format!("c{i}"), at));
        }
        occupancy.note(&LogEvent::leave("c0", at));
        occupancy.note(&LogEvent::chat("c1", "not presence", at));
        let t0 = Instant::now();
        assert_eq!(occupancy.due(t0, second), [("lobby".to_owned(), t0)]);
        let changes = occupancy.take("lobby", t0, second).unwrap();
        assert_eq!((changes.joined, changes.left), (7, 1));
        let recent: Vec<_> = changes.recent.iter().map(|j| j.connection_id.as_str()).collect();
        assert_eq!(recent, ["c2", "c3", "c4", "c5", "c6"], "the latest five");

        occupancy.note(&LogEvent::leave("c1", at));
        assert_eq!(occupancy.take("lobby", t0 + second / 2, second), None, "held back");
        assert_eq!(occupancy.due(t0 + second / 2, second), [("lobby".to_owned(), t0 + second)]);
        let changes = occupancy.take("lobby", t0 + second, second).unwrap();
        assert_eq!((changes.joined, changes.left), (0, 1));
        assert_eq!(occupancy.take("lobby", t0 + 5 * second, second), None, "nothing left");
        assert!(occupancy.due(t0 + 5 * second, second).is_empty());
        assert!(occupancy.rooms().is_empty(), "quiet rooms are forgotten");
    }
}
