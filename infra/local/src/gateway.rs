//! The API Gateway WebSocket emulator: upgrades, route selection, limits, and a
//! `$disconnect` with the status code the socket actually closed with.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::time::Duration;

use aws_lambda_events::encodings::Body;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use tokio::sync::{mpsc, oneshot};

use crate::AppState;
use crate::events::{ConnectionContext, Route, aws_id, now_ms, websocket_event};
use crate::functions::select_route;
use crate::sockets::{Outbound, SEND_QUEUE, ServerClose, SocketInfo};

/// API Gateway's message size limit; larger messages close the socket with 1009.
pub const MAX_MESSAGE_BYTES: usize = 128 * 1024;

/// `GET /{stage}` with an upgrade: runs `$connect`, and opens the socket only if it returns 2xx.
pub async fn upgrade(
    State(app): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let header = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let context = ConnectionContext {
        connection_id: aws_id(),
        connected_at_ms: now_ms(),
        source_ip: peer.ip().to_string(),
        user_agent: header(header::USER_AGENT).to_owned(),
        api_id: app.config.api_id.clone(),
        stage: app.config.stage.clone(),
        domain_name: header(header::HOST).to_owned(),
    };
    let info = Arc::new(SocketInfo {
        connected_at_ms: context.connected_at_ms,
        last_active_ms: AtomicI64::new(context.connected_at_ms),
        source_ip: context.source_ip.clone(),
        user_agent: context.user_agent.clone(),
    });
    // Registered before $connect runs, so a broadcast racing the upgrade is queued, not a 410.
    let (outbound, queued) = mpsc::channel(SEND_QUEUE);
    let closed = app.sockets.register(&context.connection_id, outbound.clone(), info.clone());

    let query = query.map(|q| parse_query(&q)).unwrap_or_default();
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
        app.sockets.unregister(&context.connection_id);
        return status.into_response();
    }
    tracing::info!(connection_id = %context.connection_id, peer = %peer, "socket open");
    ws.max_message_size(4 * MAX_MESSAGE_BYTES)
        .max_frame_size(4 * MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| run_socket(app, context, info, socket, outbound, queued, closed))
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
    /// The close frame we send, if the server is the one closing.
    close: Option<(u16, &'static str)>,
}

impl Ending {
    fn server(code: u16, reason: &'static str) -> Self {
        Self { status_code: code, reason, close: Some((code, reason)) }
    }
}

async fn run_socket(
    app: Arc<AppState>,
    context: ConnectionContext,
    info: Arc<SocketInfo>,
    socket: WebSocket,
    outbound: mpsc::Sender<Outbound>,
    mut queued: mpsc::Receiver<Outbound>,
    mut closed: oneshot::Receiver<ServerClose>,
) {
    let (mut sink, mut stream) = socket.split();
    let writer = tokio::spawn(async move {
        'writing: while let Some(first) = queued.recv().await {
            // Everything already queued goes out with one flush: one write, not one per frame.
            let mut next = Some(first);
            while let Some(out) = next {
                let message = match out {
                    Outbound::Text(text) => Message::Text(text),
                    Outbound::Close { code, reason } => {
                        Message::Close(Some(CloseFrame { code, reason: reason.into() }))
                    }
                };
                let is_close = matches!(message, Message::Close(_));
                if sink.feed(message).await.is_err() || is_close {
                    break 'writing;
                }
                next = queued.try_recv().ok();
            }
            if sink.flush().await.is_err() {
                break;
            }
        }
        sink.close().await.ok();
    });

    let idle = app.config.idle_timeout;
    let lifetime = tokio::time::sleep(app.config.max_lifetime);
    tokio::pin!(lifetime);
    let ending = loop {
        tokio::select! {
            why = &mut closed => break match why {
                Ok(ServerClose::Deleted) => Ending::server(1000, "Connection closed by DeleteConnection"),
                Ok(ServerClose::TooSlow) => Ending::server(1008, "Client too slow"),
                Ok(ServerClose::Shutdown) | Err(_) => Ending::server(1001, "Going away"),
            },
            () = &mut lifetime => break Ending::server(1001, "Going away"),
            next = tokio::time::timeout(idle, stream.next()) => match next {
                Err(_) => break Ending::server(1001, "Going away"),
                Ok(None) | Ok(Some(Err(_))) => break Ending { status_code: 1006, reason: "Connection closed abnormally", close: None },
                Ok(Some(Ok(message))) => {
                    info.touch(now_ms());
                    match message {
                        Message::Text(text) if text.len() > MAX_MESSAGE_BYTES => break Ending::server(1009, "Message too big"),
                        Message::Text(text) => dispatch(&app, &context, text.as_str(), &outbound).await,
                        Message::Binary(_) => break Ending::server(1003, "Binary frames are not supported"),
                        Message::Close(frame) => break match frame {
                            Some(frame) => Ending { status_code: frame.code, reason: "Client closed", close: None },
                            None => Ending { status_code: 1005, reason: "Client-side close frame status not set", close: None },
                        },
                        Message::Ping(_) | Message::Pong(_) => {}
                    }
                }
            },
        }
    };

    app.sockets.unregister(&context.connection_id);
    if let Some((code, reason)) = ending.close {
        outbound.try_send(Outbound::Close { code, reason }).ok();
    }
    drop(outbound);
    tracing::info!(connection_id = %context.connection_id, status = ending.status_code, "socket closed");
    let event = websocket_event(
        &context,
        Route::Disconnect { status_code: ending.status_code, reason: ending.reason.to_owned() },
    );
    if let Err(error) = app.functions.invoke(&event).await {
        tracing::error!(connection_id = %context.connection_id, %error, "$disconnect failed");
    }
    tokio::time::timeout(Duration::from_secs(5), writer).await.ok();
}

/// Routes one inbound frame and invokes its function; a handler failure is
/// reported to the sender the way API Gateway does.
async fn dispatch(app: &AppState, context: &ConnectionContext, body: &str, outbound: &mpsc::Sender<Outbound>) {
    let (route_key, route_response) = select_route(body);
    let event = websocket_event(context, Route::Message { route_key, body: body.to_owned() });
    let reply = match app.functions.invoke(&event).await {
        Ok(response) if route_response => match response.body {
            Some(Body::Text(text)) => Some(text),
            Some(Body::Binary(bytes)) => Some(String::from_utf8_lossy(&bytes).into_owned()),
            _ => None,
        },
        Ok(_) => None,
        Err(error) => {
            tracing::error!(connection_id = %context.connection_id, %error, "integration failed");
            Some(
                serde_json::json!({
                    "message": "Internal server error",
                    "connectionId": context.connection_id,
                    "requestId": event.request_context.request_id,
                })
                .to_string(),
            )
        }
    };
    if let Some(reply) = reply {
        outbound.send(Outbound::Text(reply.into())).await.ok();
    }
}
