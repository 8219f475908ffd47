//! The live sockets of this gateway, and the poster that writes to them
//! in-process with the same answers the @connections API gives.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use axum::extract::ws::Utf8Bytes;
use chat_core::ports::Bytes;
use chat_core::ports::{PostError, SocketPoster};
use chat_core::protocol::MAX_FRAME_BYTES;
use tokio::sync::{mpsc, oneshot};

/// Frames queued per socket before the client counts as too slow and is closed.
pub const SEND_QUEUE: usize = 1024;

/// What the gateway's writer task is asked to do.
#[derive(Debug)]
pub enum Outbound {
    Text(Utf8Bytes),
    Close { code: u16, reason: &'static str },
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
    outbound: mpsc::Sender<Outbound>,
    close: std::sync::Mutex<Option<oneshot::Sender<ServerClose>>>,
    info: Arc<SocketInfo>,
}

/// All open sockets by connection id.
#[derive(Clone, Default)]
pub struct Sockets {
    open: Arc<RwLock<HashMap<String, Socket>>>,
}

impl Sockets {
    pub fn register(
        &self,
        connection_id: &str,
        outbound: mpsc::Sender<Outbound>,
        info: Arc<SocketInfo>,
    ) -> oneshot::Receiver<ServerClose> {
        let (close, closed) = oneshot::channel();
        let socket = Socket { outbound, close: std::sync::Mutex::new(Some(close)), info };
        self.open.write().unwrap().insert(connection_id.to_owned(), socket);
        closed
    }

    pub fn unregister(&self, connection_id: &str) {
        self.open.write().unwrap().remove(connection_id);
    }

    pub fn info(&self, connection_id: &str) -> Option<Arc<SocketInfo>> {
        self.open.read().unwrap().get(connection_id).map(|s| s.info.clone())
    }

    pub fn ids(&self) -> Vec<String> {
        self.open.read().unwrap().keys().cloned().collect()
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
        if frame.len() > MAX_FRAME_BYTES {
            return Err(PostError::PayloadTooLarge);
        }
        // Shares the broadcast's one copy of the frame; only checks it is text.
        let text = Utf8Bytes::try_from(frame.clone()).map_err(|_| PostError::Other("frame is not UTF-8".into()))?;
        let outcome = {
            let open = self.open.read().unwrap();
            let Some(socket) = open.get(connection_id) else { return Err(PostError::Gone) };
            socket.outbound.try_send(Outbound::Text(text))
        };
        match outcome {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(PostError::Gone),
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(connection_id, "client too slow: send queue full, closing it");
                self.close(connection_id, ServerClose::TooSlow);
                Err(PostError::Gone)
            }
        }
    }
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
}

impl SocketInfo {
    pub fn touch(&self, now_ms: i64) {
        self.last_active_ms.store(now_ms, Ordering::Relaxed);
    }
}
