//! The live sockets of this gateway, and the poster that writes to them
//! in-process with the same answers the @connections API gives.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use axum::extract::ws::Utf8Bytes;
use chat_core::ports::Bytes;
use chat_core::ports::{PostError, SocketPoster};
use chat_core::protocol::MAX_FRAME_BYTES;
use tokio::sync::{Notify, oneshot};

/// Frames queued per socket before the client counts as too slow and is closed
/// (the default of `--send-queue`).
pub const SEND_QUEUE: usize = 1024;

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
    Close { code: u16, reason: &'static str },
}

/// One socket's queue of frames to write: filled by posts and replies from any
/// task, drained whole by the socket's writer. A broadcast pushes to every
/// recipient, so a push is kept cheap: one lock that only the writer shares (once
/// per batch it takes), and a wake-up only when the writer may be waiting (the
/// queue was empty). A tokio mpsc channel did four atomic operations on lines
/// the writer's core also touches per frame (the profile's largest item).
pub struct Outbox {
    queue: std::sync::Mutex<Queue>,
    ready: Notify,
    capacity: usize,
}

#[derive(Default)]
struct Queue {
    frames: VecDeque<Outbound>,
    /// No more pushes: the writer drains what is queued, then ends.
    ended: bool,
}

/// What became of a push.
#[derive(Debug, PartialEq, Eq)]
pub enum Push {
    Queued,
    /// The client is not keeping up: `capacity` frames wait already.
    Full,
    /// The socket is closing or closed.
    Closed,
}

impl Outbox {
    /// An outbox for a socket whose client is cut off once `capacity` frames wait.
    pub fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Self { queue: Default::default(), ready: Notify::new(), capacity: capacity.max(1) })
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues a broadcast frame (or an orderly close frame), unless `capacity`
    /// frames wait already.
    pub fn push(&self, out: Outbound) -> Push {
        self.push_within(out, self.capacity)
    }

    /// Queues a reply to the client's own message: replies are bounded by what
    /// the client sends, not by the room, so they always fit.
    pub fn push_reply(&self, out: Outbound) -> Push {
        self.push_within(out, usize::MAX)
    }

    fn push_within(&self, out: Outbound, limit: usize) -> Push {
        let mut queue = self.queue();
        if queue.ended {
            return Push::Closed;
        }
        if queue.frames.len() >= limit {
            return Push::Full;
        }
        let was_empty = queue.frames.is_empty();
        queue.frames.push_back(out);
        drop(queue);
        if was_empty {
            // A permit is kept if the writer is not waiting yet: no wake-up is lost.
            self.ready.notify_one();
        }
        Push::Queued
    }

    /// Frames waiting now.
    pub fn waiting(&self) -> usize {
        self.queue().frames.len()
    }

    /// Waits for frames and moves all of them into `batch` (which must be empty);
    /// `false` once the outbox has ended and nothing is left.
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
    /// The client stopped reading and its queue filled up.
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
        let open = self.open.read().unwrap();
        let Some(socket) = open.get(connection_id) else { return false };
        if let Some(close) = socket.close.lock().unwrap().take() {
            close.send(why).ok();
        }
        true
    }

    /// Queues a frame, answering as @connections would: 410 for an unknown id,
    /// 413 over 128 KiB. A client whose queue is full is closed and reported gone.
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
            tracing::warn!(connection_id, "client too slow: send queue full, closing it");
            self.close(connection_id, ServerClose::TooSlow);
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
                Outbound::Close { .. } => "close",
            })
            .collect()
    }

    #[tokio::test]
    async fn the_writer_takes_everything_queued_in_order_and_a_full_outbox_refuses_broadcasts_only() {
        let outbox = Outbox::new(2);
        assert_eq!(outbox.push(text("a")), Push::Queued);
        assert_eq!(outbox.push(text("b")), Push::Queued);
        assert_eq!(outbox.push(text("c")), Push::Full, "the client is not keeping up");
        assert_eq!(outbox.push_reply(text("pong")), Push::Queued, "replies still fit");
        let mut batch = VecDeque::new();
        assert!(outbox.take(&mut batch).await);
        assert_eq!(texts(&batch), ["a", "b", "pong"]);
        assert_eq!(outbox.waiting(), 0);
    }

    #[tokio::test]
    async fn a_waiting_writer_is_woken_by_a_push_and_an_ended_outbox_drains_then_stops() {
        let outbox = Outbox::new(8);
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
        let outbox = Outbox::new(8);
        outbox.push(text("never read"));
        outbox.abandon();
        assert_eq!(outbox.waiting(), 0);
        assert!(!outbox.take(&mut VecDeque::new()).await);
    }
}
