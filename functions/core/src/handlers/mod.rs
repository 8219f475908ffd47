//! One module per route. Each handler is a plain async function over the ports it
//! needs and nothing else, so each Lambda gets exactly the permissions it uses.

mod connect;
mod default_route;
mod disconnect;
mod lifecycle;
mod moderation;
pub mod publish;
mod send_message;
mod typing;

pub use connect::{ConnectRequest, connect};
pub use default_route::{DefaultRoute, REPLY_POSTS_IN_FLIGHT, history};
pub use disconnect::{DisconnectRequest, Ending, depart, disconnect, leave_room};
pub use lifecycle::folded_history;
pub use moderation::{ban_key, is_member};
pub use send_message::{MessageRequest, send_message};

use std::sync::Arc;

use crate::auth::SettingsError;
use crate::model::Connection;
use crate::ports::{ConnectionStore, PostError, StoreError};
use crate::protocol::{forbidden_frame, not_registered_frame, not_subscribed_frame, rate_limited_frame};
use crate::rate::{Budget, RateLimiter, RateLimits};
use crate::rights::{Right, Rights};
use crate::room::RoomLimits;

/// What every route of a connection is configured with; read once per cold start.
/// Cloning shares the rate limiter: every clone counts against the same buckets.
#[derive(Clone, Debug, Default)]
pub struct RouteSettings {
    /// How many rooms a connection may hold (the token's rooms past it are left out).
    pub limits: RoomLimits,
    /// The rights of a connection the authorizer gave none (no authorizer runs).
    pub default_rights: Rights,
    /// The per-user buckets for sends and reads: process state, built once with
    /// the settings (so once per cold start; see [`crate::rate`] for what that
    /// means across instances).
    pub rate: Arc<RateLimiter>,
}

impl RouteSettings {
    /// Reads `MAX_ROOMS_PER_CONNECTION` ([`RoomLimits`]), `DEFAULT_RIGHTS`
    /// ([`Rights::default_from_settings`]) and `SEND_RATE`, `SEND_BURST`,
    /// `READ_RATE`, `READ_BURST` ([`RateLimits::from_settings`]) through `var`.
    ///
    /// ```
    /// use chat_core::entrypoints::websocket::RouteSettings;
    /// use chat_core::rights::Right;
    /// let vars = |name: &str| (name == "DEFAULT_RIGHTS").then(|| "*=r".to_owned());
    /// assert!(!RouteSettings::from_settings(vars).unwrap().default_rights.allows("lobby", Right::Write));
    /// ```
    pub fn from_settings(var: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let default_rights = Rights::default_from_settings(&var).map_err(|e| SettingsError(e.0))?;
        let rate = Arc::new(RateLimiter::new(RateLimits::from_settings(&var)?));
        Ok(Self { limits: RoomLimits::from_settings(&var)?, default_rights, rate })
    }

    /// The same settings with a fresh limiter of `limits`.
    pub fn with_rate_limits(self, limits: RateLimits) -> Self {
        Self { rate: Arc::new(RateLimiter::new(limits)), ..self }
    }
}

/// Takes a token from the sender's `budget`, or answers with the refusal frame
/// for `action` (nothing else is done for the request).
fn within_rate(
    request: &MessageRequest,
    limiter: &RateLimiter,
    budget: Budget,
    action: &str,
    client_message_id: Option<&str>,
) -> Result<(), Vec<u8>> {
    let user = request.user_key();
    limiter.check(budget, &user, request.received_at).map_err(|refused| {
        // Debug, not info: a flood would write a log line per refused frame, and log ingestion is billed per GB.
        tracing::debug!(connection_id = %request.connection_id, %user, action, retry_after_ms = refused.retry_after_ms, "rate limited");
        rate_limited_frame(action, refused.retry_after_ms, client_message_id)
    })
}

/// The row of the connection a request came on: its room and identity. `None`
/// when the row is gone (pruned or expired): the sender is told to reconnect
/// rather than have its line land in a room it may not be in.
async fn sender(connection_id: &str, connections: &dyn ConnectionStore) -> Result<Option<Connection>, StoreError> {
    connections.get(connection_id).await
}

/// The room a frame means — the one it names, or the sender's home room — when
/// the sender holds `right` there and is subscribed to it; else the refusal to
/// send back, naming the room (and the right). Rights are checked first, so a
/// room the sender may not read tells it nothing about who is in it.
fn heard_room<'a>(
    sender: &'a Connection,
    requested: Option<&'a str>,
    rights: &Rights,
    right: Right,
) -> Result<&'a str, Vec<u8>> {
    let room = requested.unwrap_or(&sender.room);
    rights.check(room, right).map_err(|refusal| forbidden_frame(&refusal))?;
    if sender.is_subscribed_to(room) { Ok(room) } else { Err(not_subscribed_frame(room)) }
}

/// A handler could not do its work; the edge turns this into a Lambda error
/// (a refused upgrade on `$connect`, an `Internal server error` frame otherwise).
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("replying to the sender failed: {0}")]
    Reply(#[from] PostError),
    #[error("malformed event: {0}")]
    MalformedEvent(String),
}

#[cfg(test)]
pub(crate) mod testing {
    use chrono::{DateTime, Utc};

    use super::{DefaultRoute, MessageRequest, RouteSettings};
    use crate::memory::{MemoryBans, MemoryConnections, MemoryCursors, MemoryLog, RecordingPoster};
    use crate::rights::Rights;
    use crate::time::parse_iso;

    pub fn at(iso: &str) -> DateTime<Utc> {
        parse_iso(iso).expect("test times are valid")
    }

    /// Every port `$default` uses, in memory.
    #[derive(Default)]
    pub struct Ports {
        pub connections: MemoryConnections,
        pub cursors: MemoryCursors,
        pub log: MemoryLog,
        pub poster: RecordingPoster,
        pub bans: MemoryBans,
        pub settings: RouteSettings,
    }

    impl Ports {
        /// `from` sends `body` on `$default` at `when`, with `rights` in its
        /// request context; the frames it got back.
        pub async fn handle(
            &self,
            from: &str,
            body: serde_json::Value,
            when: &str,
            rights: Rights,
        ) -> Vec<serde_json::Value> {
            let route = DefaultRoute {
                settings: &self.settings,
                connections: &self.connections,
                cursors: &self.cursors,
                log: &self.log,
                poster: &self.poster,
                bans: &self.bans,
            };
            let request = MessageRequest {
                connection_id: from.into(),
                body: body.to_string(),
                received_at: at(when),
                rights,
                account: None,
            };
            let before = self.poster.frames_to(from).len();
            route.handle(&request).await.unwrap();
            self.poster.frames_to(from).split_off(before)
        }
    }
}
