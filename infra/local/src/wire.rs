//! RFC 6455 on the gateway's sockets (the server's side): the upgrade, and a
//! frame reader and writer whose memory follows the frames in flight.
//!
//! Written here rather than taken from tungstenite because its codec keeps what
//! a large frame made it grow: after one 30 KB frame each way a connection held
//! 102.6 KiB for the rest of its life, against 14.1 KiB idle. Here the reader
//! keeps one [`READ_BUFFER_BYTES`] buffer; a frame that does not fit is read
//! into a buffer of its own size, which leaves with the message. The writer
//! copies nothing: it writes each frame's header and its shared payload (one
//! buffer per broadcast, however many sockets) with vectored writes, and keeps
//! no buffer between flushes.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::extract::FromRequestParts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::Sink;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadHalf, WriteHalf};

/// The reader's buffer: a chat frame is a few hundred bytes, so one read takes a
/// whole one (or several). Larger frames are read into their own buffer.
pub const READ_BUFFER_BYTES: usize = 4 * 1024;

/// Frames fed to the writer are gathered up to this many bytes (by reference:
/// headers and shared payloads, so it costs no buffer) before it writes: the
/// gateway's chunk, so a chunk is usually one system call. Fewer, larger writes
/// also let the client read more per wake-up: at 1000 clients under overload,
/// 1.44 M deliveries/s against 1.27 with 8 KiB writes (BENCHMARKS.md).
pub const WRITE_GATHER_BYTES: usize = crate::sockets::WRITE_CHUNK_BYTES;

/// Frames gathered into one vectored write (two slices each: header, payload),
/// within Linux's 1024 slices a call.
const FRAMES_PER_WRITE: usize = 512;

/// Slots for pending frames kept between bursts.
const PENDING_KEPT: usize = 16;

/// Text as a frame carries it: checked to be UTF-8 once when made, then shared
/// (one buffer for a broadcast to every socket of a room) without copying.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Utf8Bytes(Bytes);

impl Utf8Bytes {
    pub const fn from_static(text: &'static str) -> Self {
        Self(Bytes::from_static(text.as_bytes()))
    }

    pub fn as_str(&self) -> &str {
        // SAFETY: every constructor takes a `str` or checks the bytes are UTF-8,
        // and `Bytes` is immutable.
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }
}

impl std::ops::Deref for Utf8Bytes {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl TryFrom<Bytes> for Utf8Bytes {
    type Error = std::str::Utf8Error;

    fn try_from(bytes: Bytes) -> Result<Self, Self::Error> {
        std::str::from_utf8(&bytes)?;
        Ok(Self(bytes))
    }
}

impl From<String> for Utf8Bytes {
    fn from(text: String) -> Self {
        Self(text.into())
    }
}

impl From<&str> for Utf8Bytes {
    fn from(text: &str) -> Self {
        Self(Bytes::copy_from_slice(text.as_bytes()))
    }
}

/// An accepted upgrade: the handshake's headers checked, the socket not yet open.
pub struct Upgrade {
    on_upgrade: OnUpgrade,
    accept: HeaderValue,
}

/// An upgrade request this gateway will not open a socket for.
#[derive(Debug, PartialEq, Eq)]
pub struct BadUpgrade(pub StatusCode, pub &'static str);

impl IntoResponse for BadUpgrade {
    fn into_response(self) -> Response {
        (self.0, self.1).into_response()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Upgrade {
    type Rejection = BadUpgrade;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, BadUpgrade> {
        let key = check_handshake(&parts.method, &parts.headers)?;
        let on_upgrade = parts.extensions.remove::<OnUpgrade>().ok_or(BadUpgrade(
            StatusCode::UPGRADE_REQUIRED,
            "WebSocket request couldn't be upgraded since no upgrade state was present",
        ))?;
        Ok(Self { on_upgrade, accept: accept_key(key) })
    }
}

/// The checks of RFC 6455 §4.2.1; the client's key if they pass.
fn check_handshake<'h>(method: &Method, headers: &'h HeaderMap) -> Result<&'h [u8], BadUpgrade> {
    use base64::Engine;
    let bad = |reason| Err(BadUpgrade(StatusCode::BAD_REQUEST, reason));
    if method != Method::GET {
        return Err(BadUpgrade(StatusCode::METHOD_NOT_ALLOWED, "Request method must be `GET`"));
    }
    let has_token = |name, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .any(|value| value.split(',').any(|item| item.trim().eq_ignore_ascii_case(token)))
    };
    if !has_token(header::CONNECTION, "upgrade") {
        return bad("Connection header did not include 'upgrade'");
    }
    if !has_token(header::UPGRADE, "websocket") {
        return bad("`Upgrade` header did not include 'websocket'");
    }
    if headers.get(header::SEC_WEBSOCKET_VERSION).is_none_or(|version| version != "13") {
        return bad("WebSocket version not supported");
    }
    // A nonce of 16 bytes in base64: an empty or short one is a bad upgrade.
    match headers.get(header::SEC_WEBSOCKET_KEY) {
        Some(key)
            if base64::engine::general_purpose::STANDARD
                .decode(key.as_bytes())
                .is_ok_and(|nonce| nonce.len() == 16) =>
        {
            Ok(key.as_bytes())
        }
        _ => bad("Sec-WebSocket-Key must be 16 bytes, base64-encoded"),
    }
}

/// `Sec-WebSocket-Accept` for a client's key (RFC 6455 §1.3).
fn accept_key(key: &[u8]) -> HeaderValue {
    use base64::Engine;
    use sha1::Digest;
    let mut sha1 = sha1::Sha1::new();
    sha1.update(key);
    sha1.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    let accept = base64::engine::general_purpose::STANDARD.encode(sha1.finalize());
    HeaderValue::try_from(accept).expect("base64 is a valid header value")
}

/// The connection once upgraded: its reader and its writer.
pub type Socket = (
    FrameWriter<WriteHalf<TokioIo<hyper::upgrade::Upgraded>>>,
    FrameReader<ReadHalf<TokioIo<hyper::upgrade::Upgraded>>>,
);

impl Upgrade {
    /// Answers 101 and runs `serve` on the socket once hyper hands it over.
    pub fn open<F, Fut>(self, max_message: usize, serve: F) -> Response
    where
        F: FnOnce(Socket) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        tokio::spawn(async move {
            match self.on_upgrade.await {
                Ok(upgraded) => {
                    let (read, write) = tokio::io::split(TokioIo::new(upgraded));
                    serve((FrameWriter::new(write), FrameReader::new(read, max_message))).await;
                }
                Err(error) => tracing::info!(%error, "upgrade failed"),
            }
        });
        Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(header::CONNECTION, "upgrade")
            .header(header::UPGRADE, "websocket")
            .header(header::SEC_WEBSOCKET_ACCEPT, self.accept)
            .body(axum::body::Body::empty())
            .expect("a valid response")
    }
}

/// A close frame's status code and reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloseFrame {
    pub code: u16,
    pub reason: Cow<'static, str>,
}

/// One whole message from the client.
#[derive(Debug, PartialEq)]
pub enum Inbound {
    Text(Utf8Bytes),
    /// Its payload is not kept: the gateway refuses binary messages.
    Binary,
    Ping(Bytes),
    Pong,
    /// Without a status code if the frame had none. A code no endpoint may send
    /// is reported as 1002, as tungstenite did.
    Close(Option<CloseFrame>),
}

/// Why reading ended; the close code to answer with is RFC 6455's (§7.4.1).
#[derive(Debug, PartialEq, Eq)]
pub enum ReadError {
    /// A message over the limit (1009), refused as soon as a header announces it.
    TooBig,
    /// A text message or close reason that is not UTF-8 (1007).
    NotUtf8,
    /// Any other violation of the protocol (1002).
    Protocol(&'static str),
    /// The connection ended or failed without a close frame (1006).
    Lost,
}

/// A frame's header as read.
#[derive(Debug, PartialEq, Eq)]
struct Header {
    fin: bool,
    reserved: bool,
    opcode: u8,
    mask: Option<[u8; 4]>,
    len: u64,
}

impl Header {
    /// The header at the start of `bytes` and its length, or `None` if not all there yet.
    fn parse(bytes: &[u8]) -> Option<(Header, usize)> {
        let [first, second, rest @ ..] = bytes else { return None };
        let (len, mut at) = match second & 0x7f {
            126 => (u16::from_be_bytes(rest.get(..2)?.try_into().ok()?) as u64, 4),
            127 => (u64::from_be_bytes(rest.get(..8)?.try_into().ok()?), 10),
            len => (len as u64, 2),
        };
        let mask = if second & 0x80 != 0 {
            let mask = bytes.get(at..at + 4)?.try_into().ok()?;
            at += 4;
            Some(mask)
        } else {
            None
        };
        Some((Header { fin: first & 0x80 != 0, reserved: first & 0x70 != 0, opcode: first & 0x0f, mask, len }, at))
    }
}

const CONTINUATION: u8 = 0x0;
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xa;

/// A data message whose frames are still arriving.
struct Fragmented {
    text: bool,
    payload: Vec<u8>,
    /// Text: the payload up to here is known to be UTF-8.
    checked: usize,
}

impl Fragmented {
    /// Text that can no longer become UTF-8 is refused with the fragment that
    /// breaks it, not when the message ends; a character cut between two
    /// fragments is fine until the last one.
    fn check_text(&mut self) -> Result<(), ReadError> {
        if !self.text {
            return Ok(());
        }
        match std::str::from_utf8(&self.payload[self.checked..]) {
            Ok(_) => self.checked = self.payload.len(),
            Err(error) if error.error_len().is_none() => self.checked += error.valid_up_to(),
            Err(_) => return Err(ReadError::NotUtf8),
        }
        Ok(())
    }
}

/// Reads whole messages from a client. Not cancel-safe in the middle of a frame:
/// the gateway ends the socket whenever it stops waiting for a message.
pub struct FrameReader<R> {
    io: R,
    buffer: Box<[u8]>,
    start: usize,
    end: usize,
    fragmented: Option<Fragmented>,
    max_message: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(io: R, max_message: usize) -> Self {
        let buffer = vec![0; READ_BUFFER_BYTES].into_boxed_slice();
        Self { io, buffer, start: 0, end: 0, fragmented: None, max_message }
    }

    /// The next whole message (pings and pongs included).
    pub async fn next(&mut self) -> Result<Inbound, ReadError> {
        loop {
            let header = self.header().await?;
            let payload = self.payload(&header).await?;
            match header.opcode {
                CLOSE => return close_frame(&payload).map(Inbound::Close),
                PING => return Ok(Inbound::Ping(payload.into())),
                PONG => return Ok(Inbound::Pong),
                CONTINUATION => {
                    let message = self.fragmented.as_mut().expect("checked by the header");
                    message.payload.extend_from_slice(&payload);
                }
                _ => self.fragmented = Some(Fragmented { text: header.opcode == TEXT, payload, checked: 0 }),
            }
            if !header.fin {
                self.fragmented.as_mut().expect("set above").check_text()?;
            } else {
                let message = self.fragmented.take().expect("set above");
                return match message.text {
                    true => String::from_utf8(message.payload)
                        .map(|text| Inbound::Text(text.into()))
                        .map_err(|_| ReadError::NotUtf8),
                    false => Ok(Inbound::Binary),
                };
            }
        }
    }

    /// The next frame's header, checked against the protocol and the size limit
    /// before any of its payload is read.
    async fn header(&mut self) -> Result<Header, ReadError> {
        let (header, len) = loop {
            match Header::parse(&self.buffer[self.start..self.end]) {
                Some(parsed) => break parsed,
                None => self.fill().await?,
            }
        };
        self.start += len;
        let violation = |what| Err(ReadError::Protocol(what));
        if header.reserved {
            return violation("reserved bits set without an extension");
        }
        if header.mask.is_none() {
            return violation("unmasked frame from a client");
        }
        if header.opcode >= CLOSE {
            if !header.fin {
                return violation("fragmented control frame");
            }
            if header.len > 125 {
                return violation("control frame over 125 bytes");
            }
            if !matches!(header.opcode, CLOSE | PING | PONG) {
                return violation("unknown control frame");
            }
            return Ok(header);
        }
        let so_far = match (header.opcode, &self.fragmented) {
            (CONTINUATION, Some(message)) => message.payload.len() as u64,
            (CONTINUATION, None) => return violation("continuation without a message"),
            (TEXT | BINARY, None) => 0,
            (TEXT | BINARY, Some(_)) => return violation("new message before the last one ended"),
            _ => return violation("unknown data frame"),
        };
        if so_far.saturating_add(header.len) > self.max_message as u64 {
            return Err(ReadError::TooBig);
        }
        Ok(header)
    }

    /// The frame's payload, unmasked: from the buffer, and for a frame larger
    /// than what is buffered, read straight into a buffer of its own size.
    async fn payload(&mut self, header: &Header) -> Result<Vec<u8>, ReadError> {
        // Under the message limit (checked with the header), so it fits in memory.
        let len = header.len as usize;
        let buffered = len.min(self.end - self.start);
        let mut payload = Vec::with_capacity(len);
        payload.extend_from_slice(&self.buffer[self.start..self.start + buffered]);
        self.start += buffered;
        if buffered < len {
            payload.resize(len, 0);
            self.io.read_exact(&mut payload[buffered..]).await.map_err(|_| ReadError::Lost)?;
        }
        if let Some(mask) = header.mask {
            unmask(&mut payload, mask);
        }
        Ok(payload)
    }

    /// Reads more into the buffer, after what is there; `Lost` at the end of the stream.
    async fn fill(&mut self) -> Result<(), ReadError> {
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        } else if self.end == self.buffer.len() {
            self.buffer.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, self.end - self.start);
        }
        match self.io.read(&mut self.buffer[self.end..]).await {
            Ok(0) | Err(_) => Err(ReadError::Lost),
            Ok(read) => {
                self.end += read;
                Ok(())
            }
        }
    }
}

fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    let word = u32::from_ne_bytes(mask);
    let mut chunks = payload.chunks_exact_mut(4);
    for chunk in &mut chunks {
        let masked = u32::from_ne_bytes(chunk.try_into().expect("four bytes")) ^ word;
        chunk.copy_from_slice(&masked.to_ne_bytes());
    }
    for (byte, key) in chunks.into_remainder().iter_mut().zip(mask) {
        *byte ^= key;
    }
}

/// A close frame's payload: nothing, or a status code and a UTF-8 reason.
fn close_frame(payload: &[u8]) -> Result<Option<CloseFrame>, ReadError> {
    let (code, reason) = match payload {
        [] => return Ok(None),
        [_] => return Err(ReadError::Protocol("close frame of one byte")),
        [high, low, reason @ ..] => (u16::from_be_bytes([*high, *low]), reason),
    };
    let reason = std::str::from_utf8(reason).map_err(|_| ReadError::NotUtf8)?;
    // RFC 6455 §7.4: codes an endpoint may put in a close frame.
    let sendable = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
    Ok(Some(match sendable {
        true => CloseFrame { code, reason: reason.to_owned().into() },
        false => CloseFrame { code: 1002, reason: "Protocol violation".into() },
    }))
}

/// A frame for the client.
#[derive(Debug)]
pub enum Outgoing {
    Text(Utf8Bytes),
    Pong(Bytes),
    Close(Option<CloseFrame>),
}

/// One frame waiting to be written: its header, and its payload shared, not copied.
struct Pending {
    header: [u8; 10],
    header_len: u8,
    payload: Bytes,
    /// Bytes of header and payload already written.
    written: usize,
}

impl Pending {
    fn new(opcode: u8, payload: Bytes) -> Self {
        let mut header = [0; 10];
        header[0] = 0x80 | opcode;
        let len = payload.len();
        let header_len = if len < 126 {
            header[1] = len as u8;
            2
        } else if let Ok(len) = u16::try_from(len) {
            header[1] = 126;
            header[2..4].copy_from_slice(&len.to_be_bytes());
            4
        } else {
            header[1] = 127;
            header[2..10].copy_from_slice(&(len as u64).to_be_bytes());
            10
        };
        Self { header, header_len, payload, written: 0 }
    }

    fn len(&self) -> usize {
        self.header_len as usize + self.payload.len()
    }

    /// What is left to write: a piece of the header (maybe empty) and of the payload.
    fn unwritten(&self) -> [&[u8]; 2] {
        let header_len = self.header_len as usize;
        let in_payload = self.written.saturating_sub(header_len);
        [&self.header[self.written.min(header_len)..header_len], &self.payload[in_payload..]]
    }
}

/// Writes frames to a client: a [`Sink`] that gathers them by reference and
/// writes them with vectored writes.
pub struct FrameWriter<W> {
    io: W,
    pending: VecDeque<Pending>,
    pending_bytes: usize,
    /// A close frame was fed: nothing may follow it.
    closing: bool,
}

impl<W> FrameWriter<W> {
    pub fn new(io: W) -> Self {
        Self { io, pending: VecDeque::new(), pending_bytes: 0, closing: false }
    }
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    /// Writes what is pending; ready once all of it is written.
    fn poll_write_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.pending.is_empty() {
            let mut slices = [IoSlice::new(&[]); 2 * FRAMES_PER_WRITE];
            let pieces = self.pending.iter().take(FRAMES_PER_WRITE).flat_map(Pending::unwritten);
            let mut count = 0;
            for (slice, piece) in slices.iter_mut().zip(pieces.filter(|piece| !piece.is_empty())) {
                *slice = IoSlice::new(piece);
                count += 1;
            }
            let mut written = ready!(Pin::new(&mut self.io).poll_write_vectored(cx, &slices[..count]))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.pending_bytes -= written;
            while written > 0 {
                let front = self.pending.front_mut().expect("written bytes come from pending frames");
                let left = front.len() - front.written;
                if written < left {
                    front.written += written;
                    break;
                }
                written -= left;
                self.pending.pop_front();
            }
        }
        // A burst's queue is not kept between bursts.
        self.pending.shrink_to(PENDING_KEPT);
        Poll::Ready(Ok(()))
    }
}

impl<W: AsyncWrite + Unpin> Sink<Outgoing> for FrameWriter<W> {
    type Error = io::Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pending_bytes >= WRITE_GATHER_BYTES || this.pending.len() >= FRAMES_PER_WRITE {
            ready!(this.poll_write_pending(cx))?;
        }
        Poll::Ready(Ok(()))
    }

    fn start_send(self: Pin<&mut Self>, frame: Outgoing) -> io::Result<()> {
        let this = self.get_mut();
        if this.closing {
            return Err(io::Error::new(io::ErrorKind::BrokenPipe, "a close frame was sent"));
        }
        let pending = match frame {
            Outgoing::Text(text) => Pending::new(TEXT, text.0),
            Outgoing::Pong(payload) => Pending::new(PONG, payload),
            Outgoing::Close(frame) => {
                this.closing = true;
                let payload = frame.map(|frame| [&frame.code.to_be_bytes()[..], frame.reason.as_bytes()].concat());
                Pending::new(CLOSE, payload.unwrap_or_default().into())
            }
        };
        this.pending_bytes += pending.len();
        this.pending.push_back(pending);
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_write_pending(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.as_mut().poll_flush(cx))?;
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use futures::SinkExt;
    use tokio::io::{AsyncWriteExt, DuplexStream, duplex};

    use super::*;

    const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    /// A frame as a client sends it: masked.
    fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut frame = vec![(fin as u8) << 7 | opcode];
        match payload.len() {
            len if len < 126 => frame.push(0x80 | len as u8),
            len if len <= 0xffff => {
                frame.push(0x80 | 126);
                frame.extend((len as u16).to_be_bytes());
            }
            len => {
                frame.push(0x80 | 127);
                frame.extend((len as u64).to_be_bytes());
            }
        }
        frame.extend(MASK);
        frame.extend(payload.iter().zip(MASK.iter().cycle()).map(|(byte, key)| byte ^ key));
        frame
    }

    fn text(payload: &str) -> Vec<u8> {
        client_frame(true, TEXT, payload.as_bytes())
    }

    /// A reader of `bytes` (its client then hangs up), with a 128 KiB limit.
    async fn reading(bytes: Vec<u8>) -> FrameReader<DuplexStream> {
        let (mut client, server) = duplex(bytes.len().max(1));
        client.write_all(&bytes).await.unwrap();
        FrameReader::new(server, 128 * 1024)
    }

    async fn first_message(bytes: Vec<u8>) -> Result<Inbound, ReadError> {
        reading(bytes).await.next().await
    }

    #[tokio::test]
    async fn messages_of_every_length_encoding_are_read_whole_and_unmasked() {
        for len in [0, 5, 125, 126, 4000, 4096, 65535, 65536, 128 * 1024] {
            let line = "é".repeat(len / 2) + &"x".repeat(len % 2);
            let got = first_message(text(&line)).await.unwrap();
            assert_eq!(got, Inbound::Text(line.into()), "{len} bytes");
        }
    }

    #[tokio::test]
    async fn frames_arriving_a_byte_at_a_time_or_many_in_one_read_are_all_read() {
        let frames = [text("one"), client_frame(true, PING, b"p"), text(&"two".repeat(3000)), text("three")].concat();
        let (mut client, server) = duplex(1);
        let writer = tokio::spawn(async move {
            for byte in frames {
                client.write_all(&[byte]).await.unwrap();
            }
        });
        let mut reader = FrameReader::new(server, 128 * 1024);
        assert_eq!(reader.next().await, Ok(Inbound::Text("one".into())));
        assert_eq!(reader.next().await, Ok(Inbound::Ping(Bytes::from_static(b"p"))));
        assert_eq!(reader.next().await, Ok(Inbound::Text("two".repeat(3000).into())));
        assert_eq!(reader.next().await, Ok(Inbound::Text("three".into())));
        writer.await.unwrap();
        assert_eq!(reader.next().await, Err(ReadError::Lost), "the client hung up without a close frame");

        let mut reader = reading([text("a"), text("b"), text("c")].concat()).await;
        for line in ["a", "b", "c"] {
            assert_eq!(reader.next().await, Ok(Inbound::Text(line.into())));
        }
    }

    #[tokio::test]
    async fn a_fragmented_message_is_joined_and_control_frames_may_come_between() {
        let frames = [
            client_frame(false, TEXT, "héllo, ".as_bytes()),
            client_frame(true, PING, b""),
            client_frame(false, CONTINUATION, &[0xc3]),
            // The two bytes of one character split across frames.
            client_frame(true, CONTINUATION, &[0xa9, b'!']),
        ];
        let mut reader = reading(frames.concat()).await;
        assert_eq!(reader.next().await, Ok(Inbound::Ping(Bytes::new())));
        assert_eq!(reader.next().await, Ok(Inbound::Text("héllo, é!".into())));
    }

    #[tokio::test]
    async fn a_frame_over_the_limit_is_refused_by_its_header_before_its_payload_arrives() {
        let (mut client, server) = duplex(64);
        let header = &client_frame(true, TEXT, &vec![b'x'; 128 * 1024 + 1])[..14];
        client.write_all(header).await.unwrap();
        let mut reader = FrameReader::new(server, 128 * 1024);
        assert_eq!(reader.next().await, Err(ReadError::TooBig));
        // Fragments count together.
        let half = vec![b'x'; 64 * 1024 + 1];
        let frames = [client_frame(false, TEXT, &half), client_frame(true, CONTINUATION, &half)];
        assert_eq!(first_message(frames.concat()).await, Err(ReadError::TooBig));
        // A length with the top bit set is no lie the reader believes.
        let huge = [vec![0x81, 0x80 | 127], u64::MAX.to_be_bytes().to_vec(), MASK.to_vec()].concat();
        assert_eq!(first_message(huge).await, Err(ReadError::TooBig));
    }

    #[tokio::test]
    async fn protocol_violations_are_refused() {
        let unmasked = vec![0x81, 0x01, b'x'];
        let mut reserved = text("x");
        reserved[0] |= 0x40;
        let cases = [
            (unmasked, "unmasked frame from a client"),
            (reserved, "reserved bits set without an extension"),
            (client_frame(false, PING, b""), "fragmented control frame"),
            (client_frame(true, PING, &[0; 126]), "control frame over 125 bytes"),
            (client_frame(true, 0xb, b""), "unknown control frame"),
            (client_frame(true, 0x3, b""), "unknown data frame"),
            (client_frame(true, CONTINUATION, b"x"), "continuation without a message"),
            ([client_frame(false, TEXT, b"a"), text("b")].concat(), "new message before the last one ended"),
            (client_frame(true, CLOSE, &[3]), "close frame of one byte"),
        ];
        for (bytes, why) in cases {
            assert_eq!(first_message(bytes).await, Err(ReadError::Protocol(why)), "{why}");
        }
    }

    #[tokio::test]
    async fn text_that_is_not_utf8_is_refused_by_the_first_fragment_that_breaks_it() {
        let (mut client, server) = duplex(1024);
        let mut reader = FrameReader::new(server, 128 * 1024);
        // The message never ends: its first fragment is refused on its own.
        client.write_all(&client_frame(false, TEXT, b"ok \xc3\x28 and more to come")).await.unwrap();
        assert_eq!(reader.next().await, Err(ReadError::NotUtf8));
        let cut = [
            client_frame(false, TEXT, b"\xc3"),
            client_frame(false, CONTINUATION, b"\xa9 \xe2\x82"),
            client_frame(true, CONTINUATION, b""),
        ];
        assert_eq!(first_message(cut.concat()).await, Err(ReadError::NotUtf8), "a character cut short at the end");

        assert_eq!(first_message(client_frame(true, TEXT, &[0xff, b'a'])).await, Err(ReadError::NotUtf8));
        let bad_reason = client_frame(true, CLOSE, &[0x03, 0xe8, 0xc3]);
        assert_eq!(first_message(bad_reason).await, Err(ReadError::NotUtf8));
        // Binary payloads are not checked (the gateway refuses them whole).
        assert_eq!(first_message(client_frame(true, BINARY, &[0xff])).await, Ok(Inbound::Binary));
    }

    #[tokio::test]
    async fn close_frames_carry_their_code_and_reason_and_a_code_no_one_may_send_is_1002() {
        let close =
            |code: u16, reason: &str| client_frame(true, CLOSE, &[&code.to_be_bytes()[..], reason.as_bytes()].concat());
        let frame = |code, reason: &'static str| Ok(Inbound::Close(Some(CloseFrame { code, reason: reason.into() })));
        assert_eq!(first_message(close(1000, "done")).await, frame(1000, "done"));
        assert_eq!(first_message(close(4001, "")).await, frame(4001, ""));
        assert_eq!(first_message(client_frame(true, CLOSE, b"")).await, Ok(Inbound::Close(None)));
        for reserved in [999, 1004, 1005, 1006, 1015, 2999, 5000] {
            assert_eq!(first_message(close(reserved, "x")).await, frame(1002, "Protocol violation"), "{reserved}");
        }
    }

    /// A socket that takes at most `step` bytes per (vectored) write, and only
    /// every other time it is asked.
    struct Trickle {
        written: Vec<u8>,
        writes: usize,
        step: usize,
        refuse: bool,
    }

    impl Trickle {
        fn new(step: usize) -> Self {
            Self { written: Vec::new(), writes: 0, step, refuse: false }
        }
    }

    impl AsyncWrite for Trickle {
        fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            self.poll_write_vectored(cx, &[IoSlice::new(buf)])
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            slices: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            self.refuse = !self.refuse;
            if self.refuse {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let mut took = 0;
            for slice in slices {
                let piece = &slice[..slice.len().min(self.step - took)];
                self.written.extend_from_slice(piece);
                took += piece.len();
            }
            self.writes += 1;
            Poll::Ready(Ok(took))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// What a client reads, frame by frame: (fin, opcode, payload).
    fn server_frames(mut bytes: &[u8]) -> Vec<(bool, u8, Vec<u8>)> {
        let mut frames = Vec::new();
        while !bytes.is_empty() {
            let (header, len) = Header::parse(bytes).expect("a whole header");
            assert_eq!(header.mask, None, "a server's frames are not masked");
            let end = len + header.len as usize;
            frames.push((header.fin, header.opcode, bytes[len..end].to_vec()));
            bytes = &bytes[end..];
        }
        frames
    }

    #[tokio::test]
    async fn frames_of_every_length_encoding_are_written_whole_whatever_the_socket_takes_per_write() {
        let lines: Vec<String> = [0, 125, 126, 65535, 65536, 100_000].iter().map(|&len| "y".repeat(len)).collect();
        for step in [1, 7, 1000, usize::MAX] {
            let mut writer = FrameWriter::new(Trickle::new(step));
            for line in &lines {
                writer.feed(Outgoing::Text(line.as_str().into())).await.unwrap();
            }
            writer.feed(Outgoing::Pong(Bytes::from_static(b"p"))).await.unwrap();
            writer.send(Outgoing::Close(Some(CloseFrame { code: 1001, reason: "Going away".into() }))).await.unwrap();
            let mut expected: Vec<_> = lines.iter().map(|line| (true, TEXT, line.as_bytes().to_vec())).collect();
            expected.push((true, PONG, b"p".to_vec()));
            expected.push((true, CLOSE, [&1001u16.to_be_bytes()[..], b"Going away"].concat()));
            assert_eq!(server_frames(&writer.io.written), expected, "{step} bytes per write");
            assert_eq!((writer.pending.len(), writer.pending_bytes), (0, 0));
            // Nothing follows a close frame.
            assert!(writer.send(Outgoing::Text("late".into())).await.is_err());
        }
    }

    #[tokio::test]
    async fn a_burst_of_small_frames_is_written_in_few_writes_and_its_queue_not_kept() {
        let mut writer = FrameWriter::new(Trickle::new(usize::MAX));
        for n in 0..1000 {
            writer.feed(Outgoing::Text(format!("line {n}").into())).await.unwrap();
        }
        writer.flush().await.unwrap();
        let frames = server_frames(&writer.io.written);
        assert_eq!(frames.len(), 1000);
        assert_eq!(frames[999].2, b"line 999");
        // Header and payload of up to FRAMES_PER_WRITE frames in each write.
        assert_eq!(writer.io.writes, 1000_usize.div_ceil(FRAMES_PER_WRITE));
        assert!(writer.pending.capacity() <= PENDING_KEPT, "{} slots kept", writer.pending.capacity());
    }

    #[test]
    fn the_accept_key_is_rfc_6455s() {
        assert_eq!(accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn only_a_websocket_handshake_with_a_16_byte_base64_key_upgrades() {
        let handshake = |key: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONNECTION, "keep-alive, Upgrade".parse().unwrap());
            headers.insert(header::UPGRADE, "websocket".parse().unwrap());
            headers.insert(header::SEC_WEBSOCKET_VERSION, "13".parse().unwrap());
            headers.insert(header::SEC_WEBSOCKET_KEY, key.parse().unwrap());
            headers
        };
        let good = handshake("dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(check_handshake(&Method::GET, &good), Ok(&b"dGhlIHNhbXBsZSBub25jZQ=="[..]));
        for bad in ["", "abc", "dGhlIHNhbXBsZSBub25jZQ", "dGhlIHNhbXBsZSBub25jZSEh", "!!!!!!!!!!!!!!!!!!!!!!=="] {
            let refused = check_handshake(&Method::GET, &handshake(bad)).unwrap_err();
            assert_eq!(refused.0, StatusCode::BAD_REQUEST, "{bad:?}");
        }
        assert_eq!(check_handshake(&Method::POST, &good).unwrap_err().0, StatusCode::METHOD_NOT_ALLOWED);
        for (name, value) in
            [(header::CONNECTION, "keep-alive"), (header::UPGRADE, "h2c"), (header::SEC_WEBSOCKET_VERSION, "8")]
        {
            let mut headers = good.clone();
            headers.insert(name.clone(), value.parse().unwrap());
            assert_eq!(
                check_handshake(&Method::GET, &headers).unwrap_err().0,
                StatusCode::BAD_REQUEST,
                "{name}: {value}"
            );
            headers.remove(name);
            assert_eq!(check_handshake(&Method::GET, &headers).unwrap_err().0, StatusCode::BAD_REQUEST, "no {value}");
        }
    }
}
