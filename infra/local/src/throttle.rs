//! API Gateway's throttling, emulated: token buckets (a token a request, refilled
//! at `rate` per second up to `burst`) for the stage's messages and for new
//! connections. Off unless configured, like a stage without route settings.

use std::sync::Mutex;
use std::time::Instant;

/// A rate and a burst, as a stage's `ThrottlingRateLimit` / `ThrottlingBurstLimit`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limit {
    /// Tokens added per second.
    pub rate: f64,
    /// Most tokens held: how many requests may come at once.
    pub burst: u32,
}

/// One token bucket, shared by every connection it limits.
#[derive(Debug)]
pub struct TokenBucket {
    limit: Limit,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(limit: Limit) -> Self {
        Self { limit, state: Mutex::new((f64::from(limit.burst), Instant::now())) }
    }

    /// Takes a token if one is there; `false` means the request is throttled.
    pub fn try_take(&self) -> bool {
        self.try_take_at(Instant::now())
    }

    fn try_take_at(&self, now: Instant) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (tokens, last) = &mut *state;
        let elapsed = now.saturating_duration_since(*last).as_secs_f64();
        *tokens = (*tokens + elapsed * self.limit.rate).min(f64::from(self.limit.burst));
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The stack's buckets: `None` where no limit is set.
#[derive(Debug, Default)]
pub struct Throttles {
    pub messages: Option<TokenBucket>,
    pub connects: Option<TokenBucket>,
    /// The publish API's stage (`PublishThrottlingRateLimit` / `BurstLimit`).
    pub publishes: Option<TokenBucket>,
}

impl Throttles {
    pub fn new(messages: Option<Limit>, connects: Option<Limit>) -> Self {
        Self { messages: messages.map(TokenBucket::new), connects: connects.map(TokenBucket::new), publishes: None }
    }

    /// The same throttles, with the publish API limited to `limit` (`None`: off).
    pub fn with_publishes(mut self, limit: Option<Limit>) -> Self {
        self.publishes = limit.map(TokenBucket::new);
        self
    }

    /// Whether one more publish API call may pass.
    pub fn publish(&self) -> bool {
        self.publishes.as_ref().is_none_or(TokenBucket::try_take)
    }

    /// Whether one more inbound message may pass.
    pub fn message(&self) -> bool {
        self.messages.as_ref().is_none_or(TokenBucket::try_take)
    }

    /// Whether one more connection may be opened.
    pub fn connect(&self) -> bool {
        self.connects.as_ref().is_none_or(TokenBucket::try_take)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_burst_passes_then_the_rate_refills() {
        let bucket = TokenBucket::new(Limit { rate: 10.0, burst: 3 });
        let start = Instant::now();
        let taken = (0..5).filter(|_| bucket.try_take_at(start)).count();
        assert_eq!(taken, 3, "the burst");
        assert!(!bucket.try_take_at(start + Duration::from_millis(50)), "half a token is not a token");
        assert!(bucket.try_take_at(start + Duration::from_millis(100)), "one token after 1/rate");
        // A long pause refills only up to the burst.
        let later = start + Duration::from_secs(60);
        assert_eq!((0..10).filter(|_| bucket.try_take_at(later)).count(), 3);
    }

    #[test]
    fn no_limit_never_throttles() {
        let throttles = Throttles::default();
        assert!((0..10_000).all(|_| throttles.message() && throttles.connect() && throttles.publish()));
    }
}
