//! The live sockets of this gateway, and the poster that writes to them
//! in-process with the same answers the @connections API gives.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use chat_core::ports::Bytes;
use chat_core::ports::{PostError, SocketPoster};
use chat_core::protocol::MAX_FRAME_BYTES;
use tokio::sync::{Notify, oneshot};

use crate::wire::Utf8Bytes;

/// Bytes a socket may have queued or in its writer's hands before its client
/// counts as too slow and is closed with 1008 (the default of `--send-budget`).
///
/// The largest answer a client can ask for with one message is `history` with
/// limit 200 (what the web page asks when it recovers a room) of 32 KiB lines,
/// each frame holding the text twice (`message` and `text`): about 13 MB, pushed
/// within milliseconds, faster than a reader takes it. 16 MiB holds that whole —
/// a reader that keeps up is never cut off by its own request (8 MiB did cut one
/// off in the test) — while a client that stops reading pins at most this much
/// before it is cut off and its queue freed.
pub const SEND_BUDGET: usize = 16 * 1024 * 1024;

/// How long a socket may take nothing while frames wait for it before its client
/// counts as too slow and is closed with 1008 (the default of `--send-lag-secs`).
///
/// The lag rule, next to the byte budget: the writer hands its frames to the
/// kernel in chunks of at most [`WRITE_CHUNK_BYTES`]; a chunk the socket has not
/// taken this long after it first refused more means the client's TCP window has
/// stayed shut — it stopped reading — however few bytes wait. So a client that
/// never reads is cut off seconds after the kernel's buffers for it fill, not
/// only once it has pinned the whole budget (16 MiB). A reader that is merely
/// behind keeps taking chunks, and the time its frames spend queued behind a busy
/// server does not count: at 4 000 frames/s a reader 0.25 s behind holds about
/// 1 000 small frames (a few hundred KB, far under the budget) and is never idle
/// for seconds. 5 s is far above any pause of a live reader (a browser tab in the
/// background still reads its socket) and short enough that a dead one holds
/// little: what arrives for it in 5 s.
pub const SEND_LAG: Duration = Duration::from_secs(5);

/// At most this many bytes of frames are fed to a socket between two flushes:
/// each flushed chunk is progress for the lag rule ([`SEND_LAG`]) and leaves the
/// send budget ([`Outbox::written`]) at once, not only when a long batch is done.
pub const WRITE_CHUNK_BYTES: usize = 64 * 1024;

/// What each queued frame costs beyond its text, as counted against the budget:
/// its slot in the queue and the heap block of its text (allocator header and
/// rounding). Without it a flood of 18-byte pongs would hold several times the
/// budget. Measured: a full budget of queued pongs (115 000) grew the RSS by
/// about 60 bytes each, so the budget stays an upper bound.
pub const FRAME_OVERHEAD: usize = 128;

/// Counter: text frames written to clients' sockets (broadcasts, replies, route responses).
pub const FRAMES_SENT: &str = "chat_ws_frames_sent_total";
/// Counter: what API Gateway would bill for the frames posted through @connections
/// (in-process or HTTP): one message per started 32 KB of each frame.
pub const APIGW_MESSAGES: &str = "chat_apigw_messages_total";

/// API Gateway's metering unit for messages.
const APIGW_MESSAGE_UNIT: usize = 32 * 1024;

/// A counter handle, registered once: `counter!` looks the name up on every call,
/// too slow for a per-frame path. Registered on first use, which is after the
/// stack has installed its recorder (a handle taken before would count nothing).
macro_rules! cached_counter {
    ($name:expr) => {{
        static HANDLE: std::sync::OnceLock<metrics::Counter> = std::sync::OnceLock::new();
        HANDLE.get_or_init(|| metrics::counter!($name))
    }};
}

/// Counts `frames` written to a socket.
pub fn count_frames_sent(frames: u64) {
    cached_counter!(FRAMES_SENT).increment(frames);
}

/// Counts API Gateway messages billed for posted frames.
fn count_apigw_messages(messages: u64) {
    if messages > 0 {
        cached_counter!(APIGW_MESSAGES).increment(messages);
    }
}

/// What the gateway's writer task is asked to do.
#[derive(Debug)]
pub enum Outbound {
    Text(Utf8Bytes),
    /// The answer to a client's ping.
    Pong(Bytes),
    Close {
        code: u16,
        reason: &'static str,
    },
}

impl Outbound {
    /// What the frame counts against the send budget; a close frame counts
    /// nothing, so that it always fits.
    pub fn cost(&self) -> usize {
        match self {
            Outbound::Text(text) => text.len() + FRAME_OVERHEAD,
            Outbound::Pong(payload) => payload.len() + FRAME_OVERHEAD,
            Outbound::Close { .. } => 0,
        }
    }
}

/// What a socket may hold for its client, and for how long, before the client
/// counts as too slow: bytes and lag decide, not a count of frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SendLimits {
    /// Bytes of every frame queued or being written (broadcasts, replies,
    /// errors), each with [`FRAME_OVERHEAD`]: the memory the client can pin.
    pub budget: usize,
    /// How long the socket may take nothing while frames wait ([`SEND_LAG`]).
    pub lag: Duration,
    /// Frames queued at most, if capped (`--send-queue`; off by default: the
    /// budget decides, so a healthy reader of small frames is never cut off by a count).
    pub frames: Option<usize>,
}

impl Default for SendLimits {
    fn default() -> Self {
        Self { budget: SEND_BUDGET, lag: SEND_LAG, frames: None }
    }
}

/// Why a client is closed as too slow (logged).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TooSlow {
    /// Its frames would exceed [`SendLimits::budget`] (or the frame cap).
    OverBudget,
    /// Its socket took nothing for [`SendLimits::lag`] while frames waited.
    Lagging,
}

/// One socket's queue of frames to write: filled by posts and replies from any
/// task, drained whole by the socket's writer. A broadcast pushes to every
/// recipient, so a push is kept cheap: one lock that only the writer shares (once
/// per batch it takes), and a wake-up only when the writer may be waiting (the
/// queue was empty). A tokio mpsc channel did four atomic operations on lines
/// the writer's core also touches per frame (the profile's largest item).
///
/// Every frame counts against one byte budget until the writer has handed it to
/// the kernel ([`Outbox::written`]): frames the writer has taken but not yet
/// flushed are memory too. The first frame past the budget drops everything
/// queued at once and refuses every later frame, and whoever pushed it closes the
/// client (1008). Nothing is allocated ahead: the queue grows with what is queued.
pub struct Outbox {
    queue: std::sync::Mutex<Queue>,
    ready: Notify,
    limits: SendLimits,
}

#[derive(Default)]
struct Queue {
    frames: VecDeque<Outbound>,
    /// What the frames queued or in the writer's hands cost ([`Outbound::cost`]).
    bytes: usize,
    /// A frame did not fit: the queue was dropped and takes no more text.
    overflowed: bool,
    /// No more pushes: the writer drains what is queued, then ends.
    ended: bool,
}

/// What became of a push.
#[derive(Debug, PartialEq, Eq)]
pub enum Push {
    Queued,
    /// The client is not keeping up: the frame would exceed the socket's
    /// [`SendLimits`]. What was queued is dropped; close the client as too slow.
    Full,
    /// The socket is closing or closed.
    Closed,
}

impl Outbox {
    /// An outbox for a socket whose client is cut off past `limits`.
    pub fn new(limits: SendLimits) -> Arc<Self> {
        let limits = SendLimits { frames: limits.frames.map(|cap| cap.max(1)), ..limits };
        Arc::new(Self { queue: Default::default(), ready: Notify::new(), limits })
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues a frame — a broadcast, a reply, an error or the orderly close frame —
    /// unless it would exceed the limits (a close frame always fits).
    pub fn push(&self, out: Outbound) -> Push {
        let mut queue = self.queue();
        if queue.ended {
            return Push::Closed;
        }
        let counted = !matches!(out, Outbound::Close { .. });
        if (counted && !self.fits(&queue, out.cost())) || queue.overflowed {
            queue.overflowed = true;
            let dropped = std::mem::take(&mut queue.frames);
            queue.bytes -= dropped.iter().map(Outbound::cost).sum::<usize>();
            drop(queue);
            // Freed outside the lock: it may be megabytes.
            drop(dropped);
            return Push::Full;
        }
        queue.bytes += out.cost();
        let was_empty = queue.frames.is_empty();
        queue.frames.push_back(out);
        drop(queue);
        if was_empty {
            // A permit is kept if the writer is not waiting yet: no wake-up is lost.
            self.ready.notify_one();
        }
        Push::Queued
    }

    fn fits(&self, queue: &Queue, cost: usize) -> bool {
        let frames_fit = self.limits.frames.is_none_or(|cap| queue.frames.len() < cap);
        frames_fit && queue.bytes + cost <= self.limits.budget
    }

    /// How long the socket may take nothing while frames wait ([`SendLimits::lag`]).
    pub fn lag(&self) -> Duration {
        self.limits.lag
    }

    /// Frames waiting now.
    pub fn waiting(&self) -> usize {
        self.queue().frames.len()
    }

    /// What the frames queued or still in the writer's hands cost now.
    pub fn pending_bytes(&self) -> usize {
        self.queue().bytes
    }

    /// Waits for frames and moves all of them into `batch` (which must be empty);
    /// `false` once the outbox has ended and nothing is left. The frames still
    /// count against the budget until the writer reports them [`Outbox::written`].
    pub async fn take(&self, batch: &mut VecDeque<Outbound>) -> bool {
        loop {
            {
                let mut queue = self.queue();
                if !queue.frames.is_empty() {
                    std::mem::swap(&mut queue.frames, batch);
                    return true;
                }
                if queue.ended {
                    return false;
                }
            }
            self.ready.notified().await;
        }
    }

    /// The writer has handed frames of this total [`cost`](Outbound::cost) to
    /// the kernel: they no longer count against the budget.
    pub fn written(&self, cost: usize) {
        let mut queue = self.queue();
        queue.bytes = queue.bytes.saturating_sub(cost);
    }

    /// No more pushes; the writer still drains what is queued (an orderly close).
    pub fn end(&self) {
        self.queue().ended = true;
        self.ready.notify_one();
    }

    /// No more pushes, and what is queued is dropped now (freeing its memory).
    pub fn abandon(&self) {
        let dropped = {
            let mut queue = self.queue();
            queue.ended = true;
            queue.bytes = 0;
            std::mem::take(&mut queue.frames)
        };
        drop(dropped);
        self.ready.notify_one();
    }
}

/// Why a socket is being closed from the server side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerClose {
    /// DeleteConnection on the @connections API.
    Deleted,
    /// The client stopped reading and its frames exceeded its [`SendLimits`].
    TooSlow,
    /// The local stack is stopping.
    Shutdown,
}

/// Identity and timing the @connections GET reports.
#[derive(Debug)]
pub struct SocketInfo {
    pub connected_at_ms: i64,
    pub last_active_ms: AtomicI64,
    pub source_ip: String,
    pub user_agent: String,
}

struct Socket {
    outbox: Arc<Outbox>,
    close: std::sync::Mutex<Option<oneshot::Sender<ServerClose>>>,
    info: Arc<SocketInfo>,
}

/// All open sockets by connection id.
#[derive(Clone, Default)]
pub struct Sockets {
    open: Arc<RwLock<HashMap<SocketKey, Socket, foldhash::fast::RandomState>>>,
}

/// A connection id held inline in the socket table. A broadcast looks up every
/// recipient: with `String` keys each lookup also read the key's separate heap
/// block — a cache miss per recipient that the profile showed as ~7 % of the
/// stack's CPU (in `memcmp`) at 1000 clients. The gateway's ids are 16 characters.
#[derive(Clone, Copy)]
struct SocketKey {
    len: u8,
    bytes: [u8; SocketKey::CAPACITY],
}

impl SocketKey {
    const CAPACITY: usize = 32;

    /// `None` for an id too long to be one of this gateway's.
    fn new(id: &str) -> Option<Self> {
        let mut bytes = [0; Self::CAPACITY];
        bytes.get_mut(..id.len())?.copy_from_slice(id.as_bytes());
        Some(Self { len: id.len() as u8, bytes })
    }

    fn as_str(&self) -> &str {
        // SAFETY: the bytes were copied from a `str` whole (`new`).
        unsafe { std::str::from_utf8_unchecked(&self.bytes[..self.len as usize]) }
    }
}

impl std::borrow::Borrow<str> for SocketKey {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl std::hash::Hash for SocketKey {
    // As the `str` it holds, so that lookups by `&str` find it (`Borrow`).
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl PartialEq for SocketKey {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for SocketKey {}

impl Sockets {
    pub fn register(
        &self,
        connection_id: &str,
        outbox: Arc<Outbox>,
        info: Arc<SocketInfo>,
    ) -> oneshot::Receiver<ServerClose> {
        let (close, closed) = oneshot::channel();
        let socket = Socket { outbox, close: std::sync::Mutex::new(Some(close)), info };
        match SocketKey::new(connection_id) {
            Some(key) => {
                self.open.write().unwrap().insert(key, socket);
            }
            // Not reachable with the gateway's ids; such a socket is simply never posted to (410).
            None => tracing::error!(connection_id, "connection id too long for the socket table"),
        }
        closed
    }

    pub fn unregister(&self, connection_id: &str) {
        self.open.write().unwrap().remove(connection_id);
    }

    pub fn info(&self, connection_id: &str) -> Option<Arc<SocketInfo>> {
        self.open.read().unwrap().get(connection_id).map(|s| s.info.clone())
    }

    pub fn ids(&self) -> Vec<String> {
        self.open.read().unwrap().keys().map(|key| key.as_str().to_owned()).collect()
    }

    /// Asks the socket's task to close it; `false` if there is no such socket.
    pub fn close(&self, connection_id: &str, why: ServerClose) -> bool {
        self.ask_to_close(connection_id, why).is_some()
    }

    /// Closes a client past its [`SendLimits`] (1008), once.
    pub fn too_slow(&self, connection_id: &str, why: TooSlow) {
        if self.ask_to_close(connection_id, ServerClose::TooSlow) == Some(true) {
            let why = match why {
                TooSlow::OverBudget => "send budget exceeded",
                TooSlow::Lagging => "its socket took nothing for the send lag",
            };
            tracing::warn!(connection_id, why, "client too slow: closing it");
        }
    }

    /// `None` if there is no such socket; `Some(false)` if it was asked before.
    fn ask_to_close(&self, connection_id: &str, why: ServerClose) -> Option<bool> {
        let open = self.open.read().unwrap();
        let socket = open.get(connection_id)?;
        let Some(close) = socket.close.lock().unwrap().take() else { return Some(false) };
        close.send(why).ok();
        Some(true)
    }

    /// Queues a frame, answering as @connections would: 410 for an unknown id,
    /// 413 over 128 KiB. A client past its send budget is closed and reported gone.
    pub fn send(&self, connection_id: &str, frame: &Bytes) -> Result<(), PostError> {
        self.send_each(&[(connection_id, frame)]).pop().expect("one answer per post")
    }

    /// [`Sockets::send`] for many posts under one look at the socket table: a
    /// broadcast's frame is checked (size, UTF-8) once, not once per recipient.
    pub fn send_each(&self, posts: &[(&str, &Bytes)]) -> Vec<Result<(), PostError>> {
        let mut answers = Vec::with_capacity(posts.len());
        let mut too_slow = Vec::new();
        let mut billed = 0;
        let mut checked: Option<(&Bytes, Result<Utf8Bytes, PostError>)> = None;
        {
            let open = self.open.read().unwrap();
            for &(connection_id, frame) in posts {
                // Consecutive posts of one broadcast share one buffer: check it once.
                let same = checked.as_ref().is_some_and(|(last, _)| same_buffer(last, frame));
                if !same {
                    checked = Some((frame, as_text(frame)));
                }
                let text = match &checked {
                    Some((_, Ok(text))) => text.clone(),
                    Some((_, Err(error))) => {
                        answers.push(Err(error.clone()));
                        continue;
                    }
                    None => unreachable!("checked above"),
                };
                let Some(socket) = open.get(connection_id) else {
                    answers.push(Err(PostError::Gone));
                    continue;
                };
                answers.push(match socket.outbox.push(Outbound::Text(text)) {
                    Push::Queued => {
                        billed += frame.len().div_ceil(APIGW_MESSAGE_UNIT).max(1) as u64;
                        Ok(())
                    }
                    Push::Closed => Err(PostError::Gone),
                    Push::Full => {
                        too_slow.push(connection_id);
                        Err(PostError::Gone)
                    }
                });
            }
        }
        count_apigw_messages(billed);
        for connection_id in too_slow {
            self.too_slow(connection_id, TooSlow::OverBudget);
        }
        answers
    }
}

/// Whether two frames are the same buffer (so the same bytes: a live `Bytes` is immutable).
fn same_buffer(a: &Bytes, b: &Bytes) -> bool {
    a.as_ptr() == b.as_ptr() && a.len() == b.len()
}

/// The frame as a text message, or the @connections answer refusing it.
fn as_text(frame: &Bytes) -> Result<Utf8Bytes, PostError> {
    if frame.len() > MAX_FRAME_BYTES {
        return Err(PostError::PayloadTooLarge);
    }
    // Shares the broadcast's one copy of the frame; only checks it is text.
    Utf8Bytes::try_from(frame.clone()).map_err(|_| PostError::Other("frame is not UTF-8".into()))
}

/// The in-process [`SocketPoster`] the local broadcaster and handlers use.
#[derive(Clone)]
pub struct LocalPoster(pub Sockets);

#[async_trait]
impl SocketPoster for LocalPoster {
    async fn post(&self, connection_id: &str, frame: &Bytes) -> Result<(), PostError> {
        let result = self.0.send(connection_id, frame);
        crate::metrics::record_post(&result);
        result
    }

    /// All at once: the sockets are in this process, so there is nothing to wait for.
    async fn post_each(&self, posts: &[(&str, &Bytes)], _max_in_flight: usize) -> Vec<Result<(), PostError>> {
        let results = self.0.send_each(posts);
        crate::metrics::record_posts(&results);
        results
    }

    /// DeleteConnection, as the management API's DELETE does: the socket's
    /// task closes it and runs `$disconnect`.
    async fn close(&self, connection_id: &str) -> Result<(), PostError> {
        if self.0.close(connection_id, ServerClose::Deleted) { Ok(()) } else { Err(PostError::Gone) }
    }
}

impl SocketInfo {
    pub fn touch(&self, now_ms: i64) {
        self.last_active_ms.store(now_ms, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &'static str) -> Outbound {
        Outbound::Text(Utf8Bytes::from_static(s))
    }

    fn texts(batch: &VecDeque<Outbound>) -> Vec<&str> {
        batch
            .iter()
            .map(|out| match out {
                Outbound::Text(text) => text.as_str(),
                Outbound::Pong(_) => "pong",
                Outbound::Close { .. } => "close",
            })
            .collect()
    }

    /// Room for `frames` texts of `len` bytes each.
    fn budget_for(frames: usize, len: usize) -> SendLimits {
        SendLimits { budget: frames * (len + FRAME_OVERHEAD), ..SendLimits::default() }
    }

    #[tokio::test]
    async fn the_writer_takes_everything_queued_in_order() {
        let outbox = Outbox::new(budget_for(3, 4));
        for frame in ["a", "b", "pong"] {
            assert_eq!(outbox.push(text(frame)), Push::Queued);
        }
        let mut batch = VecDeque::new();
        assert!(outbox.take(&mut batch).await);
        assert_eq!(texts(&batch), ["a", "b", "pong"]);
        assert_eq!(outbox.waiting(), 0);
    }

    #[tokio::test]
    async fn every_frame_counts_against_the_budget_until_written_and_the_first_past_it_drops_the_queue() {
        let outbox = Outbox::new(budget_for(2, 4));
        assert_eq!(outbox.push(text("1234")), Push::Queued);
        assert_eq!(outbox.push(text("1234")), Push::Queued);
        assert_eq!(outbox.pending_bytes(), 2 * (4 + FRAME_OVERHEAD));
        // The writer took both but has not written them: they still count.
        let mut batch = VecDeque::new();
        assert!(outbox.take(&mut batch).await);
        assert_eq!(outbox.push(text("x")), Push::Full, "past the budget");
        assert_eq!(outbox.waiting(), 0, "what was queued is dropped at once");
        assert_eq!(outbox.push(text("x")), Push::Full, "and nothing more is taken");
        assert_eq!(outbox.push(Outbound::Close { code: 1000, reason: "" }), Push::Full, "closed as failed instead");

        let outbox = Outbox::new(budget_for(2, 4));
        outbox.push(text("1234"));
        outbox.push(text("1234"));
        let mut batch = VecDeque::new();
        assert!(outbox.take(&mut batch).await);
        outbox.written(batch.iter().map(Outbound::cost).sum());
        assert_eq!(outbox.pending_bytes(), 0);
        assert_eq!(outbox.push(text("1234")), Push::Queued, "written frames free their share");
        // One large frame counts its bytes, not one frame.
        assert_eq!(outbox.push(text("123456789")), Push::Full);
    }

    #[test]
    fn a_close_frame_always_fits_and_the_frame_cap_applies_only_when_set() {
        let outbox = Outbox::new(budget_for(1, 4));
        assert_eq!(outbox.push(text("1234")), Push::Queued);
        assert_eq!(outbox.push(Outbound::Close { code: 1001, reason: "Going away" }), Push::Queued);
        assert_eq!(outbox.waiting(), 2);

        let outbox = Outbox::new(SendLimits { frames: Some(2), ..SendLimits::default() });
        assert_eq!(outbox.push(text("a")), Push::Queued);
        assert_eq!(outbox.push(text("b")), Push::Queued);
        assert_eq!(outbox.push(text("c")), Push::Full, "two frames at most");
        let outbox = Outbox::new(SendLimits::default());
        for _ in 0..10_000 {
            assert_eq!(outbox.push(text("pong")), Push::Queued, "no frame cap by default");
        }
    }

    #[tokio::test]
    async fn a_waiting_writer_is_woken_by_a_push_and_an_ended_outbox_drains_then_stops() {
        let outbox = Outbox::new(SendLimits::default());
        let writer = tokio::spawn({
            let outbox = outbox.clone();
            async move {
                let mut seen = Vec::new();
                let mut batch = VecDeque::new();
                while outbox.take(&mut batch).await {
                    seen.extend(texts(&batch).into_iter().map(str::to_owned));
                    batch.clear();
                }
                seen
            }
        });
        tokio::task::yield_now().await;
        outbox.push(text("first"));
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        outbox.push(text("second"));
        outbox.end();
        assert_eq!(outbox.push(text("late")), Push::Closed);
        let seen = tokio::time::timeout(std::time::Duration::from_secs(5), writer).await.unwrap().unwrap();
        assert_eq!(seen, ["first", "second"]);
    }

    #[tokio::test]
    async fn abandoning_drops_what_is_queued() {
        let outbox = Outbox::new(SendLimits::default());
        outbox.push(text("never read"));
        outbox.abandon();
        assert_eq!(outbox.waiting(), 0);
        assert!(!outbox.take(&mut VecDeque::new()).await);
    }
}
