//! The reference server: the least a chat speaking this protocol can do, as the
//! physical limit of this machine for the load generator to compare against.
//!
//! One process, no storage, no stream, no handlers: every chat message becomes a
//! frame rendered once (by `chat_core::protocol`, so it is byte-compatible with the
//! real thing) and shared through a `tokio::sync::broadcast` channel; each socket's
//! task writes what it receives, batching frames that are already queued into one
//! flush. `ping` is answered with a pong to the sender only. Joins and leaves are
//! announced like the real stack does. There is no history and only one room:
//! `history`, `who`, the channel actions (`subscribe`, `unsubscribe`, `rooms`,
//! `read`) and anything else unroutable get the seed's "Invalid request" answer.

use std::net::SocketAddr;

use chat_core::LogEvent;
use chat_core::protocol::{
    Command, event_frame, invalid_request_frame, parse_command, pong_frame, protocol_error_frame,
};
use futures::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

/// Frames one socket may fall behind before it misses some (and the load
/// generator counts them lost).
pub const CHANNEL_CAPACITY: usize = 16 * 1024;

/// Accepts connections on `listener` forever (until the task is dropped).
pub async fn serve(listener: TcpListener) -> std::io::Result<()> {
    let (room, _) = broadcast::channel::<Utf8Bytes>(CHANNEL_CAPACITY);
    loop {
        let (stream, peer) = listener.accept().await?;
        let room = room.clone();
        tokio::spawn(async move {
            if let Err(error) = client(stream, peer, room).await {
                eprintln!("reference: {peer}: {error}");
            }
        });
    }
}

/// A 16-character id ending in `=`, shaped like API Gateway's.
fn connection_id() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut id: String = (0..15).map(|_| ALPHABET[fastrand::usize(..ALPHABET.len())] as char).collect();
    id.push('=');
    id
}

fn render(event: &LogEvent) -> Utf8Bytes {
    // event_frame renders JSON from strings, which is always UTF-8.
    Utf8Bytes::from(String::from_utf8_lossy(&event_frame(event)).into_owned())
}

fn text(frame: Vec<u8>) -> Message {
    Message::text(String::from_utf8_lossy(&frame).into_owned())
}

async fn client(stream: TcpStream, _peer: SocketAddr, room: broadcast::Sender<Utf8Bytes>) -> anyhow::Result<()> {
    stream.set_nodelay(true)?;
    let socket = tokio_tungstenite::accept_async(stream).await?;
    let id = connection_id();
    let (mut sink, mut source) = socket.split();
    // Like the real broadcaster, a join is announced to everyone but the joiner.
    room.send(render(&LogEvent::join(&id, chrono::Utc::now()))).ok();
    let mut inbox = room.subscribe();

    let result = loop {
        tokio::select! {
            incoming = source.next() => {
                let reply = match incoming {
                    Some(Ok(Message::Text(body))) => match parse_command(body.as_str()) {
                        Ok(Command::SendMessage { text, .. }) => {
                            room.send(render(&LogEvent::chat(&id, &text, chrono::Utc::now()))).ok();
                            None
                        }
                        Ok(Command::Ping) => Some(pong_frame()),
                        // One room, no history, no rooms to subscribe to, no moderation, no line lifecycle, no typing.
                        Ok(
                            Command::History { .. }
                            | Command::Who { .. }
                            | Command::Subscribe { .. }
                            | Command::Unsubscribe { .. }
                            | Command::Rooms
                            | Command::Read { .. }
                            | Command::Delete { .. }
                            | Command::Kick { .. }
                            | Command::Ban { .. }
                            | Command::Unban { .. }
                            | Command::Typing { .. }
                            | Command::Edit { .. }
                            | Command::React { .. }
                            | Command::Reply { .. }
                            | Command::Unknown,
                        ) => Some(invalid_request_frame()),
                        Err(error) => Some(protocol_error_frame(&error)),
                    },
                    Some(Ok(Message::Close(_))) | None => break Ok(()),
                    Some(Ok(_)) => None,
                    Some(Err(error)) => break Err(error.into()),
                };
                if let Some(reply) = reply
                    && let Err(error) = sink.send(text(reply)).await
                {
                    break Err(error.into());
                }
            }
            frame = inbox.recv() => match frame {
                Ok(frame) => {
                    if let Err(error) = write_batch(&mut sink, &mut inbox, frame).await {
                        break Err(error);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    eprintln!("reference: {id} fell {missed} frames behind; they are lost");
                }
                Err(broadcast::error::RecvError::Closed) => break Ok(()),
            },
        }
    };
    room.send(render(&LogEvent::leave(&id, chrono::Utc::now()))).ok();
    result
}

/// Writes `first` and whatever else is already queued, then flushes once.
async fn write_batch<S>(
    sink: &mut S,
    inbox: &mut broadcast::Receiver<Utf8Bytes>,
    first: Utf8Bytes,
) -> anyhow::Result<()>
where
    S: futures::Sink<Message, Error = tokio_tungstenite::tungstenite::Error> + Unpin,
{
    sink.feed(Message::Text(first)).await?;
    for _ in 0..256 {
        match inbox.try_recv() {
            Ok(frame) => sink.feed(Message::Text(frame)).await?,
            Err(broadcast::error::TryRecvError::Lagged(missed)) => {
                eprintln!("reference: a socket fell {missed} frames behind; they are lost");
            }
            Err(_) => break,
        }
    }
    sink.flush().await?;
    Ok(())
}
