//! The API Gateway WebSocket emulator: upgrades, route selection, limits, and a
//! `$disconnect` with the status code the socket actually closed with.

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::task::Poll;
use std::time::Duration;

use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use aws_lambda_events::encodings::Body;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use futures::{Sink, SinkExt};
use tokio::sync::oneshot;

use crate::AppState;
use crate::events::{ConnectionContext, Route, aws_id, now_ms, websocket_event};
use crate::functions::select_route;
use crate::sockets::{Outbound, Outbox, Push, ServerClose, SocketInfo, TooSlow, WRITE_CHUNK_BYTES, count_frames_sent};
use crate::wire::{BadUpgrade, CloseFrame, Inbound, Outgoing, ReadError, Socket, Upgrade};

/// API Gateway's message size limit; a larger message (or any frame announcing
/// more) closes the socket with 1009 as soon as its header arrives.
pub const MAX_MESSAGE_BYTES: usize = 128 * 1024;

/// `GET /{stage}` with an upgrade: runs `$connect`, and opens the socket only if it returns 2xx.
pub async fn upgrade(
    State(app): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawQuery(query): RawQuery,
    uri: Uri,
    headers: HeaderMap,
    ws: Result<Upgrade, BadUpgrade>,
) -> Response {
    let ws = match ws {
        Ok(ws) => ws,
        Err(bad) => return refused(bad.into_response()),
    };
    // Another site's page (cross-site WebSocket hijacking): refused before the
    // authorizer or `$connect` runs, and before it spends the connect budget.
    if let Err(refusal) = app.same_origin.check_origin(&headers, &uri) {
        tracing::info!(peer = %peer, origin = ?headers.get(header::ORIGIN), "cross-origin upgrade refused");
        return refused(refusal.into_response());
    }
    if !app.throttles.connect() {
        // API Gateway's new-connections limit: the upgrade is refused before $connect.
        let body = axum::Json(serde_json::json!({ "message": "Too Many Requests" }));
        return refused((StatusCode::TOO_MANY_REQUESTS, body).into_response());
    }
    let header = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let mut context = ConnectionContext {
        connection_id: aws_id(),
        connected_at_ms: now_ms(),
        source_ip: peer.ip().to_string(),
        user_agent: header(header::USER_AGENT).to_owned(),
        api_id: app.config.api_id.clone(),
        stage: app.config.stage.clone(),
        domain_name: header(header::HOST).to_owned(),
        authorizer: Default::default(),
    };
    let query = query.map(|q| parse_query(&q)).unwrap_or_default();
    if let Some(authorizer) = &app.authorizer {
        match authorizer.authorize(&context, &query, &headers).await {
            Ok(fields) => context.authorizer = fields,
            Err(refusal) => {
                tracing::info!(connection_id = %context.connection_id, peer = %peer, ?refusal, "upgrade refused by the authorizer");
                return refused(refusal.into_response());
            }
        }
    }
    let info = Arc::new(SocketInfo {
        connected_at_ms: context.connected_at_ms,
        last_active_ms: AtomicI64::new(context.connected_at_ms),
        source_ip: context.source_ip.clone(),
        user_agent: context.user_agent.clone(),
    });
    let event = websocket_event(&context, Route::Connect { headers: headers.clone(), query });
    let refusal = match app.functions.invoke(&event).await {
        Ok(response) if (200..300).contains(&response.status_code) => None,
        Ok(response) => Some(StatusCode::from_u16(response.status_code as u16).unwrap_or(StatusCode::FORBIDDEN)),
        Err(error) => {
            tracing::error!(connection_id = %context.connection_id, %error, "$connect failed");
            Some(StatusCode::BAD_GATEWAY)
        }
    };
    if let Some(status) = refusal {
        return status.into_response();
    }
    // Known to @connections only once $connect has said yes, as API Gateway
    // does: a broadcast racing the upgrade is a 410 (which the broadcaster
    // does not prune a connection this young for), and the frame is not sent.
    let outbox = Outbox::new(app.config.send_limits);
    let closed = app.sockets.register(&context.connection_id, outbox.clone(), info.clone());
    tracing::info!(connection_id = %context.connection_id, peer = %peer, "socket open");
    ws.open(MAX_MESSAGE_BYTES, move |socket| run_socket(app, context, info, socket, outbox, closed))
}

/// An upgrade refused before `$connect` ran (which counts its own answers), counted
/// by status.
fn refused(response: Response) -> Response {
    crate::metrics::record_refused_upgrade(response.status());
    response
}

fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let decode =
                |s: &str| percent_encoding::percent_decode_str(&s.replace('+', " ")).decode_utf8_lossy().into_owned();
            (decode(key), decode(value))
        })
        .collect()
}

/// How the socket ended, as `$disconnect` reports it.
struct Ending {
    status_code: u16,
    reason: &'static str,
    close: Closing,
}

/// What the server still sends before the TCP connection goes.
#[derive(Debug, PartialEq)]
enum Closing {
    /// The client vanished: nothing to send.
    Nothing,
    /// The client closed: its close frame is answered at once (RFC 6455 §5.5.1),
    /// and what was queued is dropped.
    Answer(Option<CloseFrame>),
    /// An orderly close: what was queued first, then the close frame.
    AfterQueued(u16, &'static str),
    /// A failure (slow reader, protocol error, limit): queued frames are dropped
    /// at once and only the close frame is tried.
    Now(u16, &'static str),
}

impl Ending {
    fn orderly(code: u16, reason: &'static str) -> Self {
        Self { status_code: code, reason, close: Closing::AfterQueued(code, reason) }
    }

    fn failed(code: u16, reason: &'static str) -> Self {
        Self { status_code: code, reason, close: Closing::Now(code, reason) }
    }

    fn lost() -> Self {
        Self { status_code: 1006, reason: "Connection closed abnormally", close: Closing::Nothing }
    }

    /// Maps a read error to the close code RFC 6455 asks for (§7.4.1): 1009 over
    /// the size limit, 1007 for invalid UTF-8, 1002 for any other protocol
    /// violation; a vanished peer gets no frame (1006).
    fn from_read_error(error: ReadError) -> Self {
        match error {
            ReadError::TooBig => Self::failed(1009, "Message too big"),
            ReadError::NotUtf8 => Self::failed(1007, "Invalid frame payload data"),
            ReadError::Protocol(_) => Self::failed(1002, "Protocol error"),
            ReadError::Lost => Self::lost(),
        }
    }

    /// The client's close frame, answered with its own code (§5.5.1).
    fn answer(frame: Option<CloseFrame>) -> Self {
        match frame {
            Some(frame) => {
                Self { status_code: frame.code, reason: "Client closed", close: Closing::Answer(Some(frame)) }
            }
            None => Self {
                status_code: 1005,
                reason: "Client-side close frame status not set",
                close: Closing::Answer(None),
            },
        }
    }
}

/// How long an orderly close may take to deliver its queued frames and close frame.
const ORDERLY_CLOSE: Duration = Duration::from_secs(2);
/// How long a failed socket's close frame may take; a reader that stopped
/// reading never takes it, and its connection is cut after this.
const FAILED_CLOSE: Duration = Duration::from_secs(1);

async fn run_socket(
    app: Arc<AppState>,
    context: ConnectionContext,
    info: Arc<SocketInfo>,
    (sink, mut stream): Socket,
    outbox: Arc<Outbox>,
    mut closed: oneshot::Receiver<ServerClose>,
) {
    let (close_now, abandon) = oneshot::channel();
    let lagging = {
        let (sockets, connection_id) = (app.sockets.clone(), context.connection_id.clone());
        move || sockets.too_slow(&connection_id, TooSlow::Lagging)
    };
    let mut writer = tokio::spawn(write_frames(sink, outbox.clone(), abandon, lagging));

    let idle = app.config.idle_timeout;
    let lifetime = tokio::time::sleep(app.config.max_lifetime);
    tokio::pin!(lifetime);
    let ending = loop {
        tokio::select! {
            why = &mut closed => break match why {
                Ok(ServerClose::Deleted) => Ending::orderly(1000, "Connection closed by DeleteConnection"),
                Ok(ServerClose::TooSlow) => Ending::failed(1008, "Client too slow"),
                Ok(ServerClose::Shutdown) | Err(_) => Ending::orderly(1001, "Going away"),
            },
            () = &mut lifetime => break Ending::orderly(1001, "Going away"),
            next = tokio::time::timeout(idle, stream.next()) => match next {
                Err(_) => break Ending::orderly(1001, "Going away"),
                Ok(Err(error)) => {
                    tracing::info!(connection_id = %context.connection_id, ?error, "bad frame or lost connection");
                    break Ending::from_read_error(error);
                }
                Ok(Ok(message)) => {
                    info.touch(now_ms());
                    match message {
                        // The reader enforces MAX_MESSAGE_BYTES (a read error, 1009).
                        Inbound::Text(text) => dispatch(&app, &context, text.as_str(), &outbox).await,
                        Inbound::Binary => break Ending::failed(1003, "Binary frames are not supported"),
                        Inbound::Close(frame) => break Ending::answer(frame),
                        // Answered behind what is queued, and counted against the
                        // send budget: a client that pings without reading is slow too.
                        Inbound::Ping(payload) => {
                            if outbox.push(Outbound::Pong(payload)) == Push::Full {
                                app.sockets.too_slow(&context.connection_id, TooSlow::OverBudget);
                            }
                        }
                        Inbound::Pong => {}
                    }
                }
            },
        }
    };

    app.sockets.unregister(&context.connection_id);
    let grace = match ending.close {
        Closing::Nothing => {
            // No close frame: a writer waiting for one stops waiting.
            drop(close_now);
            ORDERLY_CLOSE
        }
        Closing::AfterQueued(code, reason) => {
            // Queued behind what is waiting; refused only if the client already
            // overflowed its send budget, and then closed as failed instead.
            if outbox.push(Outbound::Close { code, reason }) != Push::Queued {
                close_now.send(Some(CloseFrame { code, reason: reason.into() })).ok();
            }
            ORDERLY_CLOSE
        }
        Closing::Answer(frame) => {
            close_now.send(frame).ok();
            ORDERLY_CLOSE
        }
        Closing::Now(code, reason) => {
            close_now.send(Some(CloseFrame { code, reason: reason.into() })).ok();
            FAILED_CLOSE
        }
    };
    outbox.end();
    tracing::info!(connection_id = %context.connection_id, status = ending.status_code, "socket closed");

    let too_slow = ending.status_code == 1008;
    let hang_up = async {
        if tokio::time::timeout(grace, &mut writer).await.is_err() {
            tracing::warn!(connection_id = %context.connection_id, "close frame not delivered in time: cutting the connection");
            writer.abort();
            writer.await.ok();
        }
        // Both halves gone: the TCP connection closes now, not when the client leaves.
        drop(stream);
    };
    let event = websocket_event(
        &context,
        Route::Disconnect { status_code: ending.status_code, reason: ending.reason.to_owned() },
    );
    let disconnect = async {
        if let Err(error) = app.functions.invoke(&event).await {
            tracing::error!(connection_id = %context.connection_id, %error, "$disconnect failed");
        }
    };
    tokio::join!(hang_up, disconnect);
    if too_slow {
        // Last, once the writer, the queue and the $disconnect work are all freed.
        drop(outbox);
        tokio::task::spawn_blocking(release_freed_memory);
    }
}

/// Hands freed heap pages back to the OS. A slow client's queue held up to its
/// send budget (MiB); glibc would otherwise keep them in its arenas, and the
/// process's RSS would stay as high as if the client were still connected.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim has no preconditions; it only releases free memory.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The socket's writer: sends queued frames until the queue ends or a close frame
/// is sent; `abandon` makes it drop the queue and send just that close frame.
/// If the socket takes nothing for the send lag while frames wait, it calls
/// `lagging` (which closes the client as too slow) and waits for that close frame.
async fn write_frames<S>(
    mut sink: S,
    outbox: Arc<Outbox>,
    mut abandon: oneshot::Receiver<Option<CloseFrame>>,
    lagging: impl FnOnce(),
) where
    S: Sink<Outgoing> + Unpin,
{
    let close = tokio::select! {
        biased;
        Ok(frame) = &mut abandon => Some(frame),
        forwarded = forward(&mut sink, &outbox) => match forwarded {
            Forwarded::Close(frame) => Some(frame),
            Forwarded::Ended => None,
            Forwarded::Lagging => {
                // Nothing queued will be read: freed now, not after the close frame.
                outbox.abandon();
                lagging();
                (&mut abandon).await.ok()
            }
        },
    };
    // The socket's task sends `abandon` just before it ends the queue;
    // this select may have looked at `abandon` a moment before, and at the closed
    // queue a moment after. The close frame must not be lost to that.
    let close = close.or_else(|| abandon.try_recv().ok());
    // Frames nobody will read are freed now, however long the close frame takes.
    outbox.abandon();
    if let Some(frame) = close {
        sink.send(Outgoing::Close(frame)).await.ok();
    }
    sink.close().await.ok();
}

/// How the writer's forwarding ended.
#[derive(Debug, PartialEq)]
enum Forwarded {
    /// The queue ended, or the socket failed.
    Ended,
    /// A close frame was queued: the last thing to send.
    Close(Option<CloseFrame>),
    /// The socket took nothing for the send lag while frames waited.
    Lagging,
}

/// Writes queued frames: everything already queued, in chunks of at most
/// [`WRITE_CHUNK_BYTES`] with one flush each (one write per chunk, not one per
/// frame). A feed or flush the socket leaves waiting for the send lag ends it:
/// each completes as soon as the kernel takes some of what the writer has
/// gathered, so a client that reads at all, however far behind, keeps it going.
async fn forward<S>(sink: &mut S, outbox: &Outbox) -> Forwarded
where
    S: Sink<Outgoing> + Unpin,
{
    let mut batch = VecDeque::new();
    while outbox.take(&mut batch).await {
        while !batch.is_empty() {
            if let Err(end) = write_chunk(sink, &mut batch, outbox).await {
                return end;
            }
        }
    }
    Forwarded::Ended
}

/// Feeds frames from the front of `batch`, up to [`WRITE_CHUNK_BYTES`] of text,
/// and flushes them; `Err` if forwarding ends here.
async fn write_chunk<S>(sink: &mut S, batch: &mut VecDeque<Outbound>, outbox: &Outbox) -> Result<(), Forwarded>
where
    S: Sink<Outgoing> + Unpin,
{
    let lag = outbox.lag();
    let (mut written, mut bytes, mut cost) = (0, 0, 0);
    while bytes < WRITE_CHUNK_BYTES
        && let Some(out) = batch.pop_front()
    {
        cost += out.cost();
        match out {
            Outbound::Text(text) => {
                bytes += text.len();
                taken(lag, sink.feed(Outgoing::Text(text))).await?;
                written += 1;
            }
            Outbound::Pong(payload) => taken(lag, sink.feed(Outgoing::Pong(payload))).await?,
            Outbound::Close { code, reason } => {
                count_frames_sent(written);
                return Err(Forwarded::Close(Some(CloseFrame { code, reason: reason.into() })));
            }
        }
    }
    // Counted as handed to the socket, before the flush: a client may read a
    // frame before the flush returns, and a reader of the counter must not lag it.
    count_frames_sent(written);
    taken(lag, sink.flush()).await?;
    // In the kernel's buffers now: no longer this process's memory.
    outbox.written(cost);
    Ok(())
}

/// A feed or flush, unless the socket fails or leaves it waiting for `lag`.
async fn taken<E>(lag: Duration, step: impl Future<Output = Result<(), E>>) -> Result<(), Forwarded> {
    match within(lag, step).await {
        Some(Ok(())) => Ok(()),
        Some(Err(_)) => Err(Forwarded::Ended),
        None => Err(Forwarded::Lagging),
    }
}

/// `future`'s output, or `None` once it has waited `limit` without being woken.
/// A socket wakes its writer when it takes bytes, so the limit runs from the
/// last progress, not from the first wait: a chunk taken a little at a time by
/// a slow reader is not cut off, however long it takes in all. A timer is made
/// only once the future waits: a chunk the socket takes at once (the usual case)
/// costs no clock reading and no timer.
async fn within<F: Future>(limit: Duration, future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    let mut timer: Option<Pin<Box<tokio::time::Sleep>>> = None;
    std::future::poll_fn(|cx| {
        if let Poll::Ready(output) = future.as_mut().poll(cx) {
            return Poll::Ready(Some(output));
        }
        let timer = match &mut timer {
            None => timer.insert(Box::pin(tokio::time::sleep(limit))),
            Some(timer) => {
                if !timer.is_elapsed() {
                    // Polled again before the limit: the future was woken.
                    timer.as_mut().reset(tokio::time::Instant::now() + limit);
                }
                timer
            }
        };
        timer.as_mut().poll(cx).map(|()| None)
    })
    .await
}

/// Routes one inbound frame and invokes its function; a handler failure is
/// reported to the sender the way API Gateway does.
async fn dispatch(app: &AppState, context: &ConnectionContext, body: &str, outbox: &Outbox) {
    let (route_key, route_response) = select_route(body);
    let event = websocket_event(context, Route::Message { route_key, body: body.to_owned() });
    let reply = if !app.throttles.message() {
        // Throttled by the stage: no function runs; the sender is told, as API Gateway
        // tells it of its other refusals (same shape as `Internal server error`).
        Some(gateway_error("Too Many Requests", context, &event))
    } else {
        invoke(app, context, &event, route_response).await
    };
    // Replies count against the same send budget as broadcasts: a client that
    // sends without reading is cut off like any other slow reader.
    if let Some(reply) = reply
        && outbox.push(Outbound::Text(reply.into())) == Push::Full
    {
        app.sockets.too_slow(&context.connection_id, TooSlow::OverBudget);
    }
}

/// `{"message": …, "connectionId": …, "requestId": …}`: how API Gateway answers a
/// message it did not pass to the integration, or whose integration failed.
fn gateway_error(message: &str, context: &ConnectionContext, event: &ApiGatewayWebsocketProxyRequest) -> String {
    serde_json::json!({
        "message": message,
        "connectionId": context.connection_id,
        "requestId": event.request_context.request_id,
    })
    .to_string()
}

/// Invokes the route's function; the reply to the sender, if any.
async fn invoke(
    app: &AppState,
    context: &ConnectionContext,
    event: &ApiGatewayWebsocketProxyRequest,
    route_response: bool,
) -> Option<String> {
    match app.functions.invoke(event).await {
        Ok(response) if route_response => match response.body {
            Some(Body::Text(text)) => Some(text),
            Some(Body::Binary(bytes)) => Some(String::from_utf8_lossy(&bytes).into_owned()),
            _ => None,
        },
        Ok(_) => None,
        Err(error) => {
            tracing::error!(connection_id = %context.connection_id, %error, "integration failed");
            Some(gateway_error("Internal server error", context, event))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::task::{Context, Waker};

    use super::*;
    use crate::sockets::{SEND_BUDGET, SendLimits};

    /// A socket as the writer sees it: the kernel takes frames while it holds
    /// less than `capacity` bytes, and the client reads some of them now and then.
    #[derive(Clone)]
    struct Kernel(Arc<Mutex<KernelState>>);

    struct KernelState {
        held: usize,
        capacity: usize,
        waker: Option<Waker>,
    }

    impl Kernel {
        fn new(capacity: usize) -> Self {
            Self(Arc::new(Mutex::new(KernelState { held: 0, capacity, waker: None })))
        }

        /// Ready once the kernel has room; a writer waiting for it is woken by a read.
        fn room(&self, cx: &mut Context<'_>) -> Poll<Result<(), std::io::Error>> {
            let mut state = self.0.lock().unwrap();
            if state.held < state.capacity {
                return Poll::Ready(Ok(()));
            }
            state.waker = Some(cx.waker().clone());
            Poll::Pending
        }

        /// The client reads up to `bytes`.
        fn read(&self, bytes: usize) {
            let mut state = self.0.lock().unwrap();
            state.held -= state.held.min(bytes);
            if let Some(waker) = state.waker.take() {
                waker.wake();
            }
        }

        /// A client that starts reading after `delay`, then looks every `every`
        /// and reads what it can at `rate` bytes a second on average, until aborted.
        fn reader(&self, delay: Duration, every: Duration, rate: usize) -> tokio::task::JoinHandle<()> {
            let kernel = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let (started, mut read) = (tokio::time::Instant::now(), 0);
                loop {
                    tokio::time::sleep(every).await;
                    let due = (started.elapsed().as_secs_f64() * rate as f64) as usize;
                    kernel.read(due - read);
                    read = due;
                }
            })
        }
    }

    impl Sink<Outgoing> for Kernel {
        type Error = std::io::Error;

        fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            self.room(cx)
        }

        fn start_send(self: Pin<&mut Self>, frame: Outgoing) -> Result<(), Self::Error> {
            self.0.lock().unwrap().held += match frame {
                Outgoing::Text(text) => text.len(),
                Outgoing::Pong(payload) => payload.len(),
                Outgoing::Close(_) => 2,
            };
            Ok(())
        }

        fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            self.room(cx)
        }

        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
    }

    /// An outbox whose socket may take nothing for 300 ms: the lag, and the outbox.
    fn with_short_lag() -> (Duration, Arc<Outbox>) {
        let lag = Duration::from_millis(300);
        (lag, Outbox::new(SendLimits { lag, ..SendLimits::default() }))
    }

    /// The socket's writer, forwarding `outbox` to `kernel`.
    fn spawn_forward(kernel: &Kernel, outbox: &Arc<Outbox>) -> tokio::task::JoinHandle<Forwarded> {
        let (mut sink, outbox) = (kernel.clone(), outbox.clone());
        tokio::spawn(async move { forward(&mut sink, &outbox).await })
    }

    /// Ends the outbox and checks that the writer writes what is left and stops.
    async fn drains_and_ends(outbox: &Outbox, writer: tokio::task::JoinHandle<Forwarded>) {
        outbox.end();
        let ended = tokio::time::timeout(Duration::from_secs(5), writer).await.expect("the writer drains").unwrap();
        assert!(matches!(ended, Forwarded::Ended), "{ended:?}");
    }

    fn text(len: usize) -> Outbound {
        Outbound::Text("x".repeat(len).into())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reader_a_quarter_second_behind_at_4000_frames_a_second_is_not_cut_off_on_default_settings() {
        let outbox = Outbox::new(SendLimits::default());
        let kernel = Kernel::new(16 * 1024);
        // Starts a quarter second late and then reads as fast as frames come (800 KB/s).
        let reader = kernel.reader(Duration::from_millis(250), Duration::from_millis(10), 4000 * 200);
        let writer = spawn_forward(&kernel, &outbox);
        // 4 000 frames of 200 bytes a second for 2 s, 40 every 10 ms.
        let (mut pushed, mut most) = (0, 0);
        let started = tokio::time::Instant::now();
        while started.elapsed() < Duration::from_secs(2) {
            for _ in 0..40 {
                assert_eq!(outbox.push(text(200)), Push::Queued, "frame {pushed} refused");
                pushed += 1;
            }
            most = most.max(outbox.pending_bytes());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(!writer.is_finished(), "the writer gave up: {:?}", writer.await);
        // About 1 000 frames waited at most: a few hundred KB, far under the budget.
        assert!(most < SEND_BUDGET / 16, "{most} bytes queued at most");
        drains_and_ends(&outbox, writer).await;
        reader.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reader_far_behind_that_keeps_reading_is_not_cut_off_however_old_its_frames() {
        let (lag, outbox) = with_short_lag();
        let kernel = Kernel::new(4 * 1024);
        // 40 KB queued at once, read at 27 KB/s with pauses under the lag: the
        // last frames wait about 1.5 s, five times the lag.
        for _ in 0..200 {
            outbox.push(text(200));
        }
        let reader = kernel.reader(Duration::ZERO, lag / 2, 27_000);
        let started = tokio::time::Instant::now();
        let writer = spawn_forward(&kernel, &outbox);
        while outbox.pending_bytes() > 0 {
            assert!(!writer.is_finished(), "the writer gave up: {:?}", writer.await);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(started.elapsed() > 2 * lag, "the frames waited longer than the lag: {:?}", started.elapsed());
        drains_and_ends(&outbox, writer).await;
        reader.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_that_never_reads_is_cut_off_one_lag_after_its_socket_fills_and_its_queue_freed() {
        let (lag, outbox) = with_short_lag();
        let kernel = Kernel::new(256 * 1024);
        let (cut, cut_off) = oneshot::channel();
        let (close, abandon) = oneshot::channel();
        let writer = tokio::spawn(write_frames(kernel.clone(), outbox.clone(), abandon, move || {
            cut.send(tokio::time::Instant::now()).unwrap();
        }));
        // 60 KB lines, 20 a second: the kernel is full after the fifth.
        let started = tokio::time::Instant::now();
        let pushing = tokio::spawn({
            let outbox = outbox.clone();
            async move {
                while outbox.push(text(60_000)) == Push::Queued {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        });
        let at = tokio::time::timeout(Duration::from_secs(10), cut_off).await.expect("cut off").unwrap();
        let after = at - started;
        assert!(after >= lag && after < 10 * lag, "cut off {after:?} after the first line");
        // Its queue is dropped at once, before any close frame, and takes nothing more.
        assert_eq!((outbox.waiting(), outbox.pending_bytes()), (0, 0));
        assert_eq!(outbox.push(text(1)), Push::Closed);
        tokio::time::timeout(Duration::from_secs(5), pushing).await.expect("pushes refused").unwrap();
        // The socket's task answers with the close frame (a full socket never takes it).
        close.send(Some(CloseFrame { code: 1008, reason: "Client too slow".into() })).unwrap();
        writer.abort();
    }

    /// A step that ends after `steps` wake-ups `every` apart.
    fn woken(steps: u32, every: Duration) -> impl Future<Output = ()> {
        let (tx, mut rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            for _ in 0..steps {
                tokio::time::sleep(every).await;
                tx.send(()).await.ok();
            }
        });
        async move { while rx.recv().await.is_some() {} }
    }

    #[tokio::test]
    async fn the_lag_runs_from_the_last_wake_up_not_from_the_first_wait() {
        let limit = Duration::from_millis(300);
        // Ten steps 100 ms apart: a second in all, never 300 ms without progress.
        assert_eq!(within(limit, woken(10, Duration::from_millis(100))).await, Some(()));
        // A step that never comes.
        let started = tokio::time::Instant::now();
        assert_eq!(within(limit, std::future::pending::<()>()).await, None);
        assert!(started.elapsed() >= limit);
    }

    fn code_for(error: ReadError) -> (u16, Option<u16>) {
        let ending = Ending::from_read_error(error);
        let sent = match ending.close {
            Closing::Now(code, _) | Closing::AfterQueued(code, _) => Some(code),
            Closing::Answer(frame) => frame.map(|frame| frame.code),
            Closing::Nothing => None,
        };
        (ending.status_code, sent)
    }

    #[test]
    fn read_errors_close_with_the_rfc_6455_code() {
        assert_eq!(code_for(ReadError::TooBig), (1009, Some(1009)));
        assert_eq!(code_for(ReadError::NotUtf8), (1007, Some(1007)));
        assert_eq!(code_for(ReadError::Protocol("unmasked frame from a client")), (1002, Some(1002)));
        assert_eq!(code_for(ReadError::Lost), (1006, None));
    }

    #[test]
    fn a_client_close_is_answered_with_its_own_code() {
        let frame = CloseFrame { code: 4000, reason: "bye".into() };
        let ending = Ending::answer(Some(frame.clone()));
        assert_eq!((ending.status_code, ending.close), (4000, Closing::Answer(Some(frame))));
        let ending = Ending::answer(None);
        assert_eq!((ending.status_code, ending.close), (1005, Closing::Answer(None)));
    }
}
