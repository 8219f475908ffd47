//! `{"action":"typing","room"?:R}` on `$default`: "this user is typing in R",
//! posted straight to R's other members by the `$default` function and
//! **never stored in MessageHistory**.
//!
//! # Why not the log
//!
//! Everything a user does to a line is an event in the log, but typing is not
//! history: nobody replays who was typing yesterday, and a signal is stale
//! after 5 s (the client's expiry). Through the log, each signal would cost a
//! MessageHistory write (1 write unit, $0.625 per million), a stream record, a
//! broadcaster invocation, the same posts as below, a line in the S3 archive,
//! and would fill `history` and unread counts with noise. So the path is
//! client → API Gateway (`typing` route) → `$default` function → @connections
//! POST to each other member: no write anywhere, and the 3 s limit below is
//! the only state, in the function's memory.
//!
//! # The limit: one signal per user per 3 s
//!
//! [`crate::rate::TYPING`], a bucket of one per user (the account, else the
//! connection) in the process's [`crate::rate::RateLimiter`], taken before
//! anything is read. An extra signal is not passed on; its sender is told
//! `{"error":"Rate limited","retryAfterMs","action":"typing"}` (one post), so a
//! client that signals too often learns when it may again (the web chat paces
//! itself at one per 3 s and takes the answer as its next start). Deployed, the bucket is per warm instance (see
//! [`crate::rate`]): a user whose signals land on k instances at once may
//! reach k per 3 s, which the clients' own 3 s pacing and the route's own
//! stage throttle (`TypingRouteThrottlingRateLimit`) bound.
//!
//! # Who gets it
//!
//! Every member of R except the sending connection (its user's other tabs do
//! get it: a client hides its own `userId`), as a plain frame
//! `{"kind":"typing","room":R,"connectionId":C,"user"?:NAME,"userId"?:ID}`
//! (`userId` only for a verified account), also to `batch=1` connections: it
//! is not a log event. The sender needs `w` in R and must hear R, as for a
//! line; otherwise it gets `Forbidden` / `Not subscribed` (once per 3 s: the
//! refused signal took its token). A failed post is not retried and not an
//! error (a departed member is pruned by the broadcaster on the next line).
//!
//! # Cost of one signal, deployed (room of N members)
//!
//! - the inbound frame: 1 API Gateway message ($1 per million) and one
//!   `$default` Lambda invocation (~$0.2 per million plus a few ms of duration);
//! - the sender's row: one consistent GetItem (1 read unit), as every `$default` action;
//! - one consistent Query of R's Memberships: ~100 bytes a membership (~250
//!   with an account's `userId`), so ⌈N × 100–250 B / 4 KB⌉ read units (3–7
//!   for 100 members, 25–62 for 1 000; $0.125 per million), paged per 1 MB;
//! - N − 1 @connections posts (N − 1 API Gateway messages, $1 per million each).
//!
//! So N messages (1 in, N − 1 out) and ~N/16 + 1 read units per signal: for
//! N = 100, ~$0.0001, the posts ~99 % of it. 50 typists in a room of 100
//! signal at most 50 / 3 s ≈ 17/s, i.e. ~1 650 posts/s; a refused signal costs
//! the inbound message, the invocation and the one post that answers it (no read).

use super::default_route::DefaultRoute;
use super::{HandlerError, MessageRequest, heard_room, not_registered_frame, sender};
use crate::ports::{Bytes, PostError, list_all_connections};
use crate::protocol::{rate_limited_frame, typing_frame};
use crate::rate::Budget;
use crate::rights::Right;

/// Typing posts in flight at once: as the broadcaster's fan-out (10 000
/// members in under a second at 20 ms a post).
const TYPING_POSTS_IN_FLIGHT: usize = 256;

impl DefaultRoute<'_> {
    /// Tells `room` (or the sender's home room) that the sender is typing:
    /// one frame to each other member, nothing stored; `Rate limited` to the
    /// sender when its 3 s bucket is empty. Cost per call: see the [module](self) doc.
    pub(super) async fn typing(&self, request: &MessageRequest, room: Option<&str>) -> Result<(), HandlerError> {
        let connection_id = request.connection_id.as_str();
        if let Err(refused) = self.settings.rate.check(Budget::Typing, &request.user_key(), request.received_at) {
            // Debug: a typist sends a signal every few hundred ms, a log line each would be billed.
            tracing::debug!(connection_id, retry_after_ms = refused.retry_after_ms, "typing refused: too often");
            return self.reply(connection_id, rate_limited_frame("typing", refused.retry_after_ms, None)).await;
        }
        let Some(typist) = sender(connection_id, self.connections).await? else {
            return self.reply(connection_id, not_registered_frame()).await;
        };
        let room = match heard_room(&typist, room, &request.rights, Right::Write) {
            Ok(room) => room.to_owned(),
            Err(refusal) => {
                tracing::info!(connection_id, "typing refused");
                return self.reply(connection_id, refusal).await;
            }
        };
        let members = list_all_connections(self.connections, &room).await?;
        let frame = Bytes::from(typing_frame(&room, &typist));
        let posts: Vec<(&str, &Bytes)> = members
            .iter()
            .filter(|member| member.connection_id != typist.connection_id)
            .map(|member| (member.connection_id.as_str(), &frame))
            .collect();
        let answers = self.poster.post_each(&posts, TYPING_POSTS_IN_FLIGHT).await;
        let gone = answers.iter().filter(|a| matches!(a, Err(PostError::Gone))).count();
        let failed = answers.iter().filter(|a| matches!(a, Err(e) if !matches!(e, PostError::Gone))).count();
        tracing::debug!(connection_id, room, posts = posts.len(), gone, failed, "typing posted");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::handlers::testing::{Ports, at};
    use crate::model::{Connection, Identity};
    use crate::ports::ConnectionStore;
    use crate::rights::Rights;

    const T0: &str = "2026-11-24T10:00:00Z";

    /// `lobby`: `ann` (verified Ann, also in `ops`), `x1` (anonymous, named "x"),
    /// `x2` (anonymous, no name); `ops`: `o1` alone besides ann.
    async fn ports() -> Ports {
        let ports = Ports::default();
        let t = at("2026-11-24T09:00:00Z");
        let ann = Identity::verified("Ann", "https://id.example|ann");
        let rows = [
            Connection::new("ann", "ip", t).also_in(["ops"]).of(Some(&ann)),
            Connection::new("x1", "ip", t).of(Some(&Identity::chosen("x"))),
            Connection::new("x2", "ip", t),
            Connection::new("o1", "ip", t).in_room("ops"),
        ];
        for row in rows {
            ports.connections.put(&row).await.unwrap();
        }
        ports
    }

    async fn typing(ports: &Ports, from: &str, body: serde_json::Value, when: &str, rights: &str) {
        let answer = ports.handle(from, body, when, Rights::parse(rights).unwrap()).await;
        assert!(answer.is_empty(), "a signal that goes through is not answered: {answer:?}");
    }

    fn typing_frames(ports: &Ports, to: &str) -> Vec<serde_json::Value> {
        ports.poster.frames_to(to).into_iter().filter(|f| f["kind"] == "typing").collect()
    }

    #[tokio::test]
    async fn a_signal_reaches_the_rooms_other_members_and_is_never_stored() {
        let ports = ports().await;
        typing(&ports, "ann", json!({"action":"typing"}), T0, "*=rw").await;
        let expected =
            json!({"kind":"typing","room":"lobby","connectionId":"ann","user":"Ann","userId":"https://id.example|ann"});
        for member in ["x1", "x2"] {
            assert_eq!(typing_frames(&ports, member), std::slice::from_ref(&expected), "{member}");
        }
        assert!(typing_frames(&ports, "o1").is_empty(), "ops is another room");
        typing(&ports, "x1", json!({"action":"typing","room":"lobby"}), T0, "*=rw").await;
        assert_eq!(
            typing_frames(&ports, "ann")[0],
            json!({"kind":"typing","room":"lobby","connectionId":"x1","user":"x"})
        );
        assert!(typing_frames(&ports, "x1").iter().all(|f| f["connectionId"] != "x1"), "not to the sender");
        assert!(ports.log.events().is_empty(), "nothing in MessageHistory");
    }

    #[tokio::test]
    async fn a_named_room_is_that_rooms_and_the_home_room_is_the_default() {
        let ports = ports().await;
        typing(&ports, "ann", json!({"action":"typing","room":"ops"}), T0, "*=rw").await;
        assert_eq!(typing_frames(&ports, "o1")[0]["room"], "ops");
        assert!(typing_frames(&ports, "x1").is_empty());
    }

    #[tokio::test]
    async fn one_signal_per_user_per_three_seconds_and_the_extras_are_answered_rate_limited() {
        let ports = ports().await;
        let mut refusals = Vec::new();
        for when in ["10:00:00", "10:00:00.5", "10:00:02.9", "10:00:03", "10:00:05", "10:00:06.1"] {
            let at = format!("2026-11-24T{when}Z");
            let answers = ports.handle("x1", json!({"action":"typing"}), &at, Rights::default()).await;
            let summary = |f: serde_json::Value| (f["error"].clone(), f["action"].clone(), f["retryAfterMs"].clone());
            refusals.extend(answers.into_iter().map(summary));
        }
        assert_eq!(typing_frames(&ports, "x2").len(), 3, "at 0, 3 and 6.1 s");
        let limited = |ms: u64| (json!("Rate limited"), json!("typing"), json!(ms));
        assert_eq!(refusals, [limited(2500), limited(100), limited(1000)], "each extra is told when it may go");
        typing(&ports, "ann", json!({"action":"typing"}), "2026-11-24T10:00:05Z", "*=rw").await;
        assert_eq!(typing_frames(&ports, "x2").len(), 4, "another user has a bucket of its own");
    }

    #[tokio::test]
    async fn without_write_or_hearing_the_room_the_typist_is_told_and_nobody_hears_it() {
        let ports = ports().await;
        let refusal = ports.handle("x1", json!({"action":"typing"}), T0, Rights::parse("*=r").unwrap()).await;
        assert_eq!((refusal[0]["error"].as_str(), refusal[0]["right"].as_str()), (Some("Forbidden"), Some("write")));
        assert_eq!(refusal[0]["room"], "lobby");
        let later = "2026-11-24T10:00:10Z";
        let refusal = ports.handle("x2", json!({"action":"typing","room":"ops"}), later, Rights::default()).await;
        assert_eq!((refusal[0]["error"].as_str(), refusal[0]["room"].as_str()), (Some("Not subscribed"), Some("ops")));
        let gone = ports.handle("ghost", json!({"action":"typing"}), later, Rights::default()).await;
        assert_eq!(gone[0]["error"], "Not connected");
        for member in ["ann", "x1", "x2", "o1"] {
            assert!(typing_frames(&ports, member).is_empty(), "{member} heard a refused signal");
        }
    }

    #[tokio::test]
    async fn bad_typing_frames_get_a_clear_error() {
        let ports = ports().await;
        for body in [json!({"action":"typing","room":5}), json!({"action":"typing","room":"no spaces"})] {
            let refusal = ports.handle("x1", body.clone(), T0, Rights::default()).await;
            assert_eq!(refusal[0]["error"], "Invalid message", "{body}");
            assert!(refusal[0]["message"].as_str().unwrap().to_lowercase().contains("room"), "{refusal:?}");
        }
        assert!(typing_frames(&ports, "x2").is_empty());
    }

    #[tokio::test]
    async fn a_departed_member_is_skipped_and_the_others_still_hear_it() {
        let ports = ports().await;
        ports.poster.mark_gone("x1");
        typing(&ports, "ann", json!({"action":"typing"}), T0, "*=rw").await;
        assert_eq!(typing_frames(&ports, "x2").len(), 1);
    }
}
