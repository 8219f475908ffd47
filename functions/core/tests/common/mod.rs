//! What the broadcaster's test binaries share.

use std::time::Duration;

use chat_core::broadcaster::{FanoutConfig, RetryPolicy};

/// The default fan-out policy with 16 posts in flight and retries a few
/// milliseconds apart, so retry paths run in test time.
pub fn fast() -> FanoutConfig {
    FanoutConfig {
        max_in_flight: 16,
        retry: RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(4),
        },
        ..FanoutConfig::default()
    }
}
