//! Per-user rate limits: a token bucket per user for chat lines (`sendmessage`)
//! and one for the reads that cost a Query (`history` and `who` share it), so a
//! flooding client is told to wait instead of filling the room and the bill.
//! A third, fixed bucket holds `typing` signals to one per user per 3 s ([`TYPING`]).
//!
//! A user is the verified account behind a connection (all its tabs share one
//! bucket), else the connection itself (anonymous or `?name=` connections).
//! Over the limit the sender gets `{"error":"Rate limited","retryAfterMs":N,…}`
//! ([`crate::protocol::rate_limited_frame`]) and nothing is stored or read.
//!
//! # Where the buckets live: the function's memory (a per-instance approximation)
//!
//! The buckets are process state, built once per cold start with the function's
//! settings. The local stack is one process, so there the limit is exact. Deployed,
//! each warm Lambda instance keeps its own buckets: a user whose frames land on
//! k instances at once gets up to k × the rate (and k × the burst). Lambda runs
//! one request per instance at a time, so k is at most the number of that user's
//! requests in flight together — a single client that waits for each answer
//! mostly stays on one instance, and a flood spread across instances is still
//! cut to k × 10 lines/s instead of unbounded.
//!
//! Why not DynamoDB: an exact, shared bucket is one conditional UpdateItem per
//! send (1 write unit, $0.625 per million on demand — as much again as the
//! MessageHistory write itself, so +$0.625 per million sends, and per million
//! refused ones too), plus a round trip (~5–10 ms) before every line, and a hot
//! item per busy user. The memory bucket costs nothing per call and no latency;
//! API Gateway's stage throttling remains the hard account-wide ceiling.
//!
//! Cost per call: the check is a hash-map lookup under a mutex (no AWS call). A
//! refused send is answered as its route response (one API Gateway message, like
//! any answer); a refused `history`/`who` is one @connections post; nothing is
//! read from or written to DynamoDB for either.
//!
//! # How a bucket is kept
//!
//! As the time it will be full again (the "generic cell rate algorithm", the same
//! token bucket written as one timestamp): taking a token moves that time one
//! interval (1 / rate) later; a request is refused when that would put it more
//! than `burst` intervals ahead of now, and `retryAfterMs` is exactly how far
//! past that it would be. A bucket whose time has passed is full, which is the
//! same as having no entry: such idle users are dropped whenever the table has
//! doubled since the last sweep, and past [`MAX_USERS`] users the ones nearest
//! to full are dropped (an evicted user gets a full bucket back — at most one
//! extra burst — which is the documented price of bounded memory, ~100 bytes a user).

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};

use crate::auth::SettingsError;

/// Sends: 10 lines a second, 20 at once (a paste of a few lines, a resend of the outbox).
pub const DEFAULT_SEND: Limit = Limit { rate: 10.0, burst: 20 };

/// `history` and `who` together: 2 a second, 10 at once (a page load asks for a few rooms).
pub const DEFAULT_READ: Limit = Limit { rate: 2.0, burst: 10 };

/// Typing signals: one per 3 s, none saved up. Not a setting: "at most one
/// per user per 3 s" is part of the protocol (a client shows "is typing…" for
/// 5 s), so `SEND_RATE=off` does not lift it. Extra signals are dropped
/// silently ([`crate::handlers`]' `typing`): they are hints.
pub const TYPING: Limit = Limit { rate: 1.0 / 3.0, burst: 1 };

/// Users one limiter keeps buckets for, per budget. A bucket refills in
/// burst / rate (2 s for sends, 5 s for reads), so this is 20 000 users refused
/// or bursting within the last few seconds on one instance.
pub const MAX_USERS: usize = 20_000;

/// Below this many entries a table is not swept (a sweep is a pass over it).
const SWEEP_FLOOR: usize = 1024;

/// A rate and a burst, as `SEND_RATE` / `SEND_BURST`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limit {
    /// Tokens added per second (> 0).
    pub rate: f64,
    /// Most tokens held: how many requests may come at once (≥ 1).
    pub burst: u32,
}

impl Limit {
    /// Microseconds between two tokens.
    fn interval_micros(&self) -> i64 {
        (1e6 / self.rate).round().max(1.0) as i64
    }
}

/// Which bucket a request takes its token from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Budget {
    /// Chat lines (`sendmessage`; never the `ping` heartbeat).
    Sends,
    /// `history` and `who`.
    Reads,
    /// `typing` signals ([`TYPING`], fixed).
    Typing,
}

/// The two limits; `None` = that budget is not limited (`SEND_RATE=off`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimits {
    pub send: Option<Limit>,
    pub read: Option<Limit>,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self { send: Some(DEFAULT_SEND), read: Some(DEFAULT_READ) }
    }
}

impl RateLimits {
    /// No limits at all.
    pub const OFF: Self = Self { send: None, read: None };

    /// Reads `SEND_RATE`, `SEND_BURST`, `READ_RATE`, `READ_BURST` through `var`
    /// (unset or blank: the defaults, [`DEFAULT_SEND`] and [`DEFAULT_READ`]). A
    /// rate is a number of requests per second above 0 (fractions allowed, at most
    /// 1 000 000) or `off`; a burst is a whole number from 1 to 100 000.
    ///
    /// ```
    /// use chat_core::rate::RateLimits;
    /// let vars = |name: &str| (name == "SEND_RATE").then(|| "0.5".to_owned());
    /// let limits = RateLimits::from_settings(vars).unwrap();
    /// assert_eq!((limits.send.unwrap().rate, limits.send.unwrap().burst), (0.5, 20));
    /// assert!(RateLimits::from_settings(|name| (name == "READ_BURST").then(|| "0".into())).is_err());
    /// assert_eq!(RateLimits::from_settings(|name| (name == "READ_RATE").then(|| "off".into())).unwrap().read, None);
    /// ```
    pub fn from_settings(var: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let var = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let limit = |rate_name: &str, burst_name: &str, default: Limit| -> Result<Option<Limit>, SettingsError> {
            let burst = match var(burst_name) {
                Some(value) => parse_burst(&value).map_err(|e| SettingsError(format!("{burst_name}: {e}")))?,
                None => default.burst,
            };
            let rate = match var(rate_name) {
                Some(value) => parse_rate(&value).map_err(|e| SettingsError(format!("{rate_name}: {e}")))?,
                None => Some(default.rate),
            };
            Ok(rate.map(|rate| Limit { rate, burst }))
        };
        Ok(Self {
            send: limit("SEND_RATE", "SEND_BURST", DEFAULT_SEND)?,
            read: limit("READ_RATE", "READ_BURST", DEFAULT_READ)?,
        })
    }

    fn of(&self, budget: Budget) -> Option<Limit> {
        match budget {
            Budget::Sends => self.send,
            Budget::Reads => self.read,
            Budget::Typing => Some(TYPING),
        }
    }
}

/// A rate setting: requests per second, or `off` (`None`).
fn parse_rate(value: &str) -> Result<Option<f64>, String> {
    let value = value.trim();
    if value.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    match value.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 && rate <= 1e6 => Ok(Some(rate)),
        _ => Err(format!("a rate is requests per second above 0 and at most 1000000, or \"off\"; not {value:?}")),
    }
}

/// A burst setting: a whole number of requests from 1 to 100 000.
fn parse_burst(value: &str) -> Result<u32, String> {
    match value.trim().parse::<u32>() {
        Ok(burst) if (1..=100_000).contains(&burst) => Ok(burst),
        _ => Err(format!("a burst is a whole number of requests from 1 to 100000, not {value:?}")),
    }
}

/// Whose bucket: the verified account, else the connection.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum UserKey {
    /// An account (`userId`): every connection of it shares the bucket.
    Account(String),
    /// An anonymous or unverified connection, by its id.
    Connection(String),
}

impl UserKey {
    /// The account when there is one, else the connection.
    pub fn of(account: Option<&str>, connection_id: &str) -> Self {
        match account {
            Some(account) => Self::Account(account.to_owned()),
            None => Self::Connection(connection_id.to_owned()),
        }
    }
}

impl std::fmt::Display for UserKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Account(account) => write!(f, "account#{account}"),
            Self::Connection(id) => write!(f, "connection#{id}"),
        }
    }
}

/// A request refused: try again in `retry_after_ms` (when one token is back).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimited {
    pub budget: Budget,
    pub retry_after_ms: u64,
}

/// The buckets of every user, for both budgets; one per process (shared by the
/// routes through [`crate::handlers::RouteSettings`]).
#[derive(Debug)]
pub struct RateLimiter {
    limits: RateLimits,
    max_users: usize,
    tables: Mutex<[Table; 3]>,
}

impl Default for RateLimiter {
    fn default() -> Self {
        Self::new(RateLimits::default())
    }
}

impl RateLimiter {
    pub fn new(limits: RateLimits) -> Self {
        Self::with_max_users(limits, MAX_USERS)
    }

    /// A limiter that keeps at most `max_users` buckets per budget.
    pub fn with_max_users(limits: RateLimits, max_users: usize) -> Self {
        Self { limits, max_users: max_users.max(1), tables: Mutex::new(Default::default()) }
    }

    pub fn limits(&self) -> RateLimits {
        self.limits
    }

    /// Takes a token from `user`'s `budget` bucket at `now` (the request's time:
    /// the clock is passed in, so tests and replays are exact), or says how long
    /// until one is back. A refused request takes nothing.
    ///
    /// ```
    /// use chat_core::rate::{Budget, RateLimiter, RateLimits, UserKey};
    /// let limiter = RateLimiter::new(RateLimits::default()); // sends: 10/s, burst 20
    /// let (ada, now) = (UserKey::of(Some("ada"), "c1"), chrono::Utc::now());
    /// for _ in 0..20 { limiter.check(Budget::Sends, &ada, now).unwrap(); }
    /// assert_eq!(limiter.check(Budget::Sends, &ada, now).unwrap_err().retry_after_ms, 100);
    /// ```
    pub fn check(&self, budget: Budget, user: &UserKey, now: DateTime<Utc>) -> Result<(), RateLimited> {
        let Some(limit) = self.limits.of(budget) else { return Ok(()) };
        let now = now.timestamp_micros();
        let interval = limit.interval_micros();
        let window = interval.saturating_mul(i64::from(limit.burst));
        let mut tables = self.tables.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let table = &mut tables[budget as usize];
        let full_at = table.full_at.get(user).copied().unwrap_or(now).max(now);
        let next = full_at.saturating_add(interval);
        let ahead = next - now;
        if ahead > window {
            let wait_micros = (ahead - window) as u64;
            return Err(RateLimited { budget, retry_after_ms: wait_micros.div_ceil(1000) });
        }
        match table.full_at.get_mut(user) {
            Some(slot) => *slot = next,
            None => {
                table.make_room(now, self.max_users);
                table.full_at.insert(user.clone(), next);
            }
        }
        Ok(())
    }

    /// Users with a bucket kept for `budget` (not full, or not yet swept).
    pub fn tracked(&self, budget: Budget) -> usize {
        self.tables.lock().unwrap_or_else(|poisoned| poisoned.into_inner())[budget as usize].full_at.len()
    }
}

/// One budget's buckets: when each user's is full again (µs since the epoch).
#[derive(Debug, Default)]
struct Table {
    full_at: HashMap<UserKey, i64>,
    /// The size at which the next sweep of full buckets runs.
    sweep_at: usize,
}

impl Table {
    /// Before a new user is added: drops full buckets once the table has doubled
    /// since the last sweep (amortized O(1) a request), and past `max_users`
    /// drops the eighth of users nearest to full.
    fn make_room(&mut self, now: i64, max_users: usize) {
        let len = self.full_at.len();
        if len >= self.sweep_at.max(SWEEP_FLOOR).min(max_users) {
            self.full_at.retain(|_, full_at| *full_at > now);
            self.sweep_at = (self.full_at.len() * 2).max(SWEEP_FLOOR);
        }
        if self.full_at.len() >= max_users {
            // Exactly len / 8 + 1 of them, however many share a time (one request's millisecond).
            let mut times: Vec<i64> = self.full_at.values().copied().collect();
            let nth = (times.len() / 8).min(times.len() - 1);
            let (_, threshold, _) = times.select_nth_unstable(nth);
            let threshold = *threshold;
            self.full_at.retain(|_, full_at| *full_at >= threshold);
            let mut ties_to_drop = self.full_at.len().saturating_sub(times.len() - nth - 1);
            self.full_at.retain(|_, full_at| {
                let drop = *full_at == threshold && ties_to_drop > 0;
                ties_to_drop -= usize::from(drop);
                !drop
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;
    use crate::handlers::testing::at;

    fn limiter(rate: f64, burst: u32) -> RateLimiter {
        RateLimiter::new(RateLimits { send: Some(Limit { rate, burst }), read: None })
    }

    fn user(name: &str) -> UserKey {
        UserKey::of(Some(name), "c")
    }

    #[test]
    fn typing_is_one_signal_per_user_per_three_seconds_whatever_the_settings() {
        let (limiter, t) = (RateLimiter::new(RateLimits::OFF), at("2026-11-24T10:15:32Z"));
        let typing =
            |user: &UserKey, after_ms: i64| limiter.check(Budget::Typing, user, t + Duration::milliseconds(after_ms));
        assert_eq!(typing(&user("ada"), 0), Ok(()));
        for after_ms in [0, 500, 2999] {
            let refused = typing(&user("ada"), after_ms).unwrap_err();
            assert_eq!(refused, RateLimited { budget: Budget::Typing, retry_after_ms: (3000 - after_ms) as u64 });
        }
        assert_eq!(typing(&user("bob"), 500), Ok(()), "a bucket per user");
        assert_eq!(typing(&user("ada"), 3000), Ok(()), "the next one 3 s later");
        assert!(typing(&user("ada"), 5999).is_err(), "and none saved up");
        assert_eq!(limiter.check(Budget::Sends, &user("ada"), t), Ok(()), "sends are not typing's bucket");
    }

    #[test]
    fn a_full_bucket_lets_the_burst_through_then_refuses_with_the_exact_wait() {
        let (limiter, t) = (limiter(10.0, 20), at("2026-11-24T10:15:32Z"));
        for n in 0..20 {
            assert_eq!(limiter.check(Budget::Sends, &user("ada"), t), Ok(()), "token {n}");
        }
        let refused = limiter.check(Budget::Sends, &user("ada"), t).unwrap_err();
        assert_eq!(refused, RateLimited { budget: Budget::Sends, retry_after_ms: 100 });
        // 30 ms later, 70 ms to go; refusals took nothing.
        let later = t + Duration::milliseconds(30);
        assert_eq!(limiter.check(Budget::Sends, &user("ada"), later).unwrap_err().retry_after_ms, 70);
        assert_eq!(limiter.check(Budget::Sends, &user("ada"), later).unwrap_err().retry_after_ms, 70);
    }

    #[test]
    fn tokens_refill_at_the_rate_and_never_past_the_burst() {
        let (limiter, t) = (limiter(2.0, 10), at("2026-11-24T10:15:32Z"));
        for _ in 0..10 {
            limiter.check(Budget::Sends, &user("ada"), t).unwrap();
        }
        // After 1.5 s: 3 tokens back (one each 500 ms), the 4th in 500 ms.
        let t = t + Duration::milliseconds(1500);
        for _ in 0..3 {
            limiter.check(Budget::Sends, &user("ada"), t).unwrap();
        }
        assert_eq!(limiter.check(Budget::Sends, &user("ada"), t).unwrap_err().retry_after_ms, 500);
        // An hour idle refills to the burst, not to 7200 tokens.
        let t = t + Duration::hours(1);
        for _ in 0..10 {
            limiter.check(Budget::Sends, &user("ada"), t).unwrap();
        }
        assert!(limiter.check(Budget::Sends, &user("ada"), t).is_err());
    }

    #[test]
    fn a_wait_that_is_not_whole_milliseconds_rounds_up() {
        let (limiter, t) = (limiter(3.0, 1), at("2026-11-24T10:15:32Z"));
        limiter.check(Budget::Sends, &user("ada"), t).unwrap();
        // One token each 333 333 µs: wait 333.333 ms → 334 (never retry too early).
        assert_eq!(limiter.check(Budget::Sends, &user("ada"), t).unwrap_err().retry_after_ms, 334);
    }

    #[test]
    fn users_and_budgets_have_their_own_buckets() {
        let limiter = RateLimiter::new(RateLimits::default());
        let t = at("2026-11-24T10:15:32Z");
        for _ in 0..20 {
            limiter.check(Budget::Sends, &user("ada"), t).unwrap();
        }
        assert!(limiter.check(Budget::Sends, &user("ada"), t).is_err());
        assert_eq!(limiter.check(Budget::Sends, &user("bob"), t), Ok(()), "another account");
        assert_eq!(limiter.check(Budget::Sends, &UserKey::of(None, "c1"), t), Ok(()), "an anonymous connection");
        assert_eq!(limiter.check(Budget::Reads, &user("ada"), t), Ok(()), "ada's reads are another budget");
        for _ in 1..10 {
            limiter.check(Budget::Reads, &user("ada"), t).unwrap();
        }
        let refused = limiter.check(Budget::Reads, &user("ada"), t).unwrap_err();
        assert_eq!((refused.budget, refused.retry_after_ms), (Budget::Reads, 500));
        // An account named like a connection key is still another user.
        assert_ne!(UserKey::of(Some("connection#c1"), "x"), UserKey::of(None, "c1"));
    }

    /// The deployed approximation, stated as a number: a user whose frames are
    /// spread over k instances (k limiters) gets k bursts at once, and k × the rate.
    #[test]
    fn a_user_spread_over_k_instances_gets_k_times_the_burst_and_the_rate() {
        let t = at("2026-11-24T10:15:32Z");
        for k in 1..=4 {
            let instances: Vec<RateLimiter> = (0..k).map(|_| RateLimiter::new(RateLimits::default())).collect();
            let accepted_within = |from: chrono::DateTime<Utc>, tries: usize| {
                (0..tries).filter(|n| instances[n % k].check(Budget::Sends, &user("ada"), from).is_ok()).count()
            };
            assert_eq!(accepted_within(t, 1000), 20 * k, "burst with {k} instances");
            assert_eq!(accepted_within(t + Duration::seconds(1), 1000), 10 * k, "one second's refill with {k}");
        }
    }

    #[test]
    fn an_unlimited_budget_never_refuses_and_keeps_nothing() {
        let limiter = RateLimiter::new(RateLimits::OFF);
        let t = at("2026-11-24T10:15:32Z");
        for _ in 0..1000 {
            limiter.check(Budget::Sends, &user("ada"), t).unwrap();
        }
        assert_eq!(limiter.tracked(Budget::Sends), 0);
    }

    #[test]
    fn idle_full_buckets_are_dropped_and_the_table_never_passes_its_cap() {
        let limits = RateLimits { send: Some(Limit { rate: 1.0, burst: 5 }), read: None };
        let limiter = RateLimiter::with_max_users(limits, 2000);
        let t = at("2026-11-24T10:15:32Z");
        // 1500 users send once: each bucket is full again 1 s later.
        for n in 0..1500 {
            limiter.check(Budget::Sends, &user(&format!("u{n}")), t).unwrap();
        }
        assert_eq!(limiter.tracked(Budget::Sends), 1500);
        // 10 s later they are all full: the next new users sweep them away.
        let later = t + Duration::seconds(10);
        for n in 0..600 {
            limiter.check(Budget::Sends, &user(&format!("v{n}")), later).unwrap();
        }
        assert_eq!(limiter.tracked(Budget::Sends), 600, "only the users still refilling");
        // 5000 users at the same instant, all refilling: never more than the cap.
        for n in 0..5000 {
            limiter.check(Budget::Sends, &user(&format!("w{n}")), later).unwrap();
            assert!(limiter.tracked(Budget::Sends) <= 2000);
        }
        // The user just seen is kept; evicted users only get a full bucket back.
        for _ in 1..5 {
            limiter.check(Budget::Sends, &user("w4999"), later).unwrap();
        }
        assert!(limiter.check(Budget::Sends, &user("w4999"), later).is_err(), "the newest bucket was kept");
    }

    #[test]
    fn settings_default_parse_and_refuse_clearly() {
        assert_eq!(RateLimits::from_settings(|_| None).unwrap(), RateLimits::default());
        assert_eq!(RateLimits::default().send, Some(Limit { rate: 10.0, burst: 20 }));
        assert_eq!(RateLimits::default().read, Some(Limit { rate: 2.0, burst: 10 }));
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| pairs.iter().find(|(n, _)| *n == name).map(|(_, v)| (*v).to_owned())
        };
        let limits = RateLimits::from_settings(vars(&[
            ("SEND_RATE", "5"),
            ("SEND_BURST", "7"),
            ("READ_RATE", " OFF "),
            ("READ_BURST", ""),
        ]))
        .unwrap();
        assert_eq!(limits, RateLimits { send: Some(Limit { rate: 5.0, burst: 7 }), read: None });
        for (name, value) in [
            ("SEND_RATE", "0"),
            ("SEND_RATE", "-1"),
            ("SEND_RATE", "fast"),
            ("SEND_RATE", "inf"),
            ("READ_RATE", "NaN"),
            ("SEND_BURST", "0"),
            ("SEND_BURST", "2.5"),
            ("READ_BURST", "1000000"),
        ] {
            let error = RateLimits::from_settings(|n| (n == name).then(|| value.to_owned())).unwrap_err();
            assert!(error.0.starts_with(&format!("{name}: ")) && error.0.contains(value), "{error}");
        }
    }
}
