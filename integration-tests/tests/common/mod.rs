//! Starting the real `chat-local` binary on a free port, and WebSocket clients for it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

pub mod issuer;

/// Generous: CI shares two cores between the stack, moto and the test itself.
pub const WAIT: Duration = Duration::from_secs(20);

/// The `chat-local` binary, built (once per test process) by the same cargo, with
/// the same profile and target directory as this test, so it is never stale.
/// `cargo test` builds only the binaries of the package under test, hence this.
pub fn binary() -> PathBuf {
    package_binary("chat-local")
}

/// One of the `chat-local` package's binaries (`chat-local`, `replay`).
pub fn package_binary(name: &str) -> PathBuf {
    static BUILT: std::sync::Once = std::sync::Once::new();
    BUILT.call_once(|| {
        let status = std::process::Command::new(env!("CARGO"))
            .args(["build", "--quiet", "-p", "chat-local", "--bins"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo build for chat-local");
        assert!(status.success(), "building chat-local failed");
    });
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent().unwrap().parent().unwrap().join(name);
    assert!(path.exists(), "{} is missing after building it", path.display());
    path
}

/// `chat-local --help`, as a newcomer reads it.
pub fn help_text() -> String {
    let help = std::process::Command::new(binary()).arg("--help").output().unwrap();
    String::from_utf8(help.stdout).unwrap()
}

/// Starts `chat-local` (a free port, an in-memory database) with `args` it must
/// refuse at start: what it said on stderr.
pub fn refused_args(args: &[&str]) -> String {
    let output =
        std::process::Command::new(binary()).args(["--port", "0", "--db", ":memory:"]).args(args).output().unwrap();
    assert!(!output.status.success(), "{args:?} is refused");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A tool the tests need, installed by `run-all.sh`: its path, or a loud failure.
pub fn prerequisite(path: PathBuf, what: &str) -> PathBuf {
    assert!(
        path.exists(),
        "{what} not found at {}: run integration-tests/run-all.sh, which installs it",
        path.display()
    );
    path
}

/// A fresh directory for one test's files.
pub fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("output").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Fake credentials for every AWS SDK client a test's child process makes: tests
/// only ever talk to loopback (moto, the local stack).
const FAKE_AWS: [(&str, &str); 4] = [
    ("AWS_ACCESS_KEY_ID", "test"),
    ("AWS_SECRET_ACCESS_KEY", "test"),
    ("AWS_REGION", "us-east-1"),
    ("AWS_EC2_METADATA_DISABLED", "true"),
];

/// A running local stack. Killed (by PID) when dropped, even if the test panics.
pub struct Stack {
    child: Child,
    pub ws_url: String,
    pub http_url: String,
    pub db: PathBuf,
}

impl Stack {
    pub async fn start(db: &Path, extra: &[&str]) -> Stack {
        Self::start_on_port(db, 0, extra).await
    }

    /// [`Stack::start`] on a given port (0: a free one), e.g. to restart where clients reconnect.
    pub async fn start_on_port(db: &Path, port: u16, extra: &[&str]) -> Stack {
        let mut child = Command::new(binary())
            .args(["--port", &port.to_string(), "--db"])
            .arg(db)
            .args(extra)
            .env("RUST_LOG", "warn")
            .envs(FAKE_AWS)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start chat-local");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = tokio::time::timeout(WAIT, lines.next_line()).await.expect("stack prints its address in time");
        let first = first.unwrap().expect("stack printed its address");
        let ws_url = first.strip_prefix("websocket: ").expect("first line names the websocket URL").to_owned();
        let http_url = ws_url.replacen("ws://", "http://", 1);
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Stack { child, ws_url, http_url, db: db.to_owned() }
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("stack still running")
    }

    /// SIGTERM and wait: the graceful path (sockets closed, $disconnect run).
    pub async fn stop(mut self) {
        let status = std::process::Command::new("kill").arg("-TERM").arg(self.pid().to_string()).status().unwrap();
        assert!(status.success());
        let exit = tokio::time::timeout(WAIT, self.child.wait()).await.expect("stack stops in time").unwrap();
        assert!(exit.success(), "stack exited with {exit}");
    }

    /// SIGKILL: the process dies with its sockets and without any $disconnect.
    pub async fn kill(mut self) {
        self.child.kill().await.unwrap();
    }
}

pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub struct Client {
    pub socket: Socket,
}

impl Client {
    pub async fn connect(url: &str) -> Client {
        let (socket, response) =
            tokio::time::timeout(WAIT, connect_async(url)).await.expect("connect in time").unwrap();
        assert_eq!(response.status(), 101);
        Client { socket }
    }

    pub async fn send_json(&mut self, value: Value) {
        self.socket.send(Message::text(value.to_string())).await.unwrap();
    }

    pub async fn say(&mut self, text: &str) {
        self.send_json(serde_json::json!({"action": "sendmessage", "message": text})).await;
    }

    /// The next text frame, as JSON.
    pub async fn next_json(&mut self) -> Value {
        loop {
            let message = tokio::time::timeout(WAIT, self.socket.next())
                .await
                .expect("a frame arrives in time")
                .expect("socket still open")
                .unwrap();
            if let Message::Text(text) = message {
                return serde_json::from_str(&text).expect("frames are JSON");
            }
        }
    }

    /// Reads frames until one satisfies `wanted`, returning it.
    pub async fn until(&mut self, wanted: impl Fn(&Value) -> bool) -> Value {
        loop {
            let frame = self.next_json().await;
            if wanted(&frame) {
                return frame;
            }
        }
    }

    /// Asks `history` (`request` is the whole command) and reads its answer: the
    /// event frames, oldest first, and the closing `{"kind":"history",…}` frame.
    pub async fn history(&mut self, request: Value) -> (Vec<Value>, Value) {
        self.send_json(request).await;
        let mut events = Vec::new();
        loop {
            let frame = self.next_json().await;
            if frame["kind"] == "history" {
                return (events, frame);
            }
            events.push(frame);
        }
    }

    /// The chat texts of a `history` answer (see [`Client::history`]).
    pub async fn history_texts(&mut self, request: Value) -> Vec<String> {
        let (events, _) = self.history(request).await;
        events.iter().filter_map(|f| f["text"].as_str().map(str::to_owned)).collect()
    }

    /// The chat frame carrying `text`.
    pub async fn chat(&mut self, text: &str) -> Value {
        self.until(|f| f["kind"] == "chat" && f["text"] == text).await
    }

    /// Sends a chat line and reads its broadcast back, learning our connection id.
    pub async fn my_id(&mut self) -> String {
        let marker = format!("whoami-{}", std::process::id() as u64 * 1000 + fastrand_u16() as u64);
        self.say(&marker).await;
        self.chat(&marker).await["connectionId"].as_str().unwrap().to_owned()
    }

    /// Waits for the server to close the socket, returning the close code.
    pub async fn close_code(&mut self) -> Option<u16> {
        loop {
            match tokio::time::timeout(WAIT, self.socket.next()).await.expect("closed in time") {
                Some(Ok(Message::Close(frame))) => return frame.map(|f: CloseFrame| f.code.into()),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    }
}

fn fastrand_u16() -> u16 {
    (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos() % 65_000) as u16
}

/// moto's server (every AWS API on one port), installed by `run-all.sh` in a
/// virtualenv, answering one request at a time as `moto_one_at_a_time.py`
/// says why (DynamoDB's per-request atomicity). Killed (by PID) when dropped.
pub struct Moto {
    child: Child,
    pub url: String,
}

impl Moto {
    pub async fn start() -> Moto {
        let here = Path::new(env!("CARGO_MANIFEST_DIR"));
        prerequisite(here.join(".tools/venv/bin/moto_server"), "moto_server");
        let python = prerequisite(here.join(".tools/venv/bin/python"), "the moto virtualenv's python");
        let mut child = Command::new(python)
            .arg(here.join("moto_one_at_a_time.py"))
            .args(["127.0.0.1", "0"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start moto_server");
        // Werkzeug names the port it bound once it listens.
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let url = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(at) = line.find("Running on http://") {
                    return line[at + "Running on ".len()..].trim().to_owned();
                }
            }
            panic!("moto_server exited before listening");
        })
        .await
        .expect("moto_server listens in time");
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Moto { child, url }
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("moto still running")
    }

    /// Sends moto `signal` (`STOP` pauses it: every call to it hangs; `CONT` resumes).
    pub fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill").arg(format!("-{signal}")).arg(self.pid().to_string()).status();
        assert!(status.unwrap().success(), "kill -{signal} moto");
    }

    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(&self.url)
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_dynamodb::config::Credentials::new("test", "test", None, None, "tests"))
            .load()
            .await
    }
}

/// Runs a `chat-local` package binary to completion, returning its stdout.
pub async fn run_binary(name: &str, args: &[&str]) -> String {
    let output = Command::new(package_binary(name))
        .args(args)
        .envs(FAKE_AWS)
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), output).await.expect("finishes in time").unwrap();
    assert!(output.status.success(), "{name} {args:?} failed with {}", output.status);
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

/// A WebSocket client that writes frames by hand, for what well-behaved
/// libraries refuse to send: protocol violations, unmasked or huge frames.
pub struct RawSocket {
    pub tcp: TcpStream,
    /// Bytes read past the HTTP response head: the first frames.
    pub pending: Vec<u8>,
}

/// The `host:port` of a stack URL.
pub fn host_of(url: &str) -> String {
    url.split("://").nth(1).and_then(|rest| rest.split('/').next()).expect("URL has a host").to_owned()
}

/// The local stack's default @connections key: (access key id, secret).
pub const TEST_KEY: (&str, &str) = ("test", "test");

/// The `/path?query` of a URL.
pub fn target_of(url: &str) -> String {
    url.splitn(4, '/').nth(3).map(|p| format!("/{p}")).unwrap_or_else(|| "/".into())
}

/// The SigV4 headers (`x-amz-date`, `authorization`) that sign a request to the
/// local @connections API with `key`, as the SDKs sign `execute-api` calls
/// (region us-east-1, the `host` header signed).
pub fn sigv4_headers(method: &str, url: &str, body: &[u8], key: (&str, &str)) -> Vec<(String, String)> {
    sigv4_headers_for("us-east-1", method, url, body, key)
}

/// [`sigv4_headers`] signed for `region`.
pub fn sigv4_headers_for(
    region: &str,
    method: &str,
    url: &str,
    body: &[u8],
    key: (&str, &str),
) -> Vec<(String, String)> {
    sigv4_headers_as("execute-api", region, method, url, body, key)
}

/// [`sigv4_headers_for`] signed for `service` (a wrong one must be refused).
pub fn sigv4_headers_as(
    service: &str,
    region: &str,
    method: &str,
    url: &str,
    body: &[u8],
    key: (&str, &str),
) -> Vec<(String, String)> {
    use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
    let identity = aws_sdk_apigatewaymanagement::config::Credentials::new(key.0, key.1, None, None, "tests").into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(std::time::SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .expect("signing parameters")
        .into();
    let host = host_of(url);
    let target = target_of(url);
    let request =
        SignableRequest::new(method, target, [("host", host.as_str())].into_iter(), SignableBody::Bytes(body)).unwrap();
    let (instructions, _) = sign(request, &params).expect("signed").into_parts();
    instructions.headers().map(|(name, value)| (name.to_owned(), value.to_owned())).collect()
}

/// [`sigv4_headers`] as HTTP/1.1 header lines, each ending in CRLF.
pub fn signed_header_lines(method: &str, url: &str, body: &[u8], key: (&str, &str)) -> String {
    sigv4_headers(method, url, body, key).iter().map(|(name, value)| format!("{name}: {value}\r\n")).collect()
}

/// Sends an HTTP/1.1 request and reads the response head: the status code, the
/// head's text, and whatever followed it.
pub async fn raw_request(tcp: &mut TcpStream, request: &[u8]) -> (u16, String, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tcp.write_all(request).await.expect("send the request");
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = tokio::time::timeout(WAIT, tcp.read(&mut chunk)).await.expect("a response in time").unwrap();
        assert!(n > 0, "connection closed before a response head: {:?}", String::from_utf8_lossy(&buffer));
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buffer[..end]).into_owned();
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status line");
    (status, head, buffer[end..].to_vec())
}

impl RawSocket {
    /// Opens the TCP connection and sends an upgrade with this `Sec-WebSocket-Key`;
    /// returns the HTTP status and, on 101, the socket.
    pub async fn upgrade_with_key(ws_url: &str, key: &str) -> (u16, Option<RawSocket>) {
        let host = host_of(ws_url);
        let path = ws_url.splitn(4, '/').nth(3).map(|p| format!("/{p}")).unwrap_or_else(|| "/".into());
        let mut tcp = TcpStream::connect(&host).await.expect("connect to the stack");
        let request = format!(
            "GET {path} HTTP/1.1\r\nhost: {host}\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\
             sec-websocket-version: 13\r\nsec-websocket-key: {key}\r\n\r\n"
        );
        let (status, _, pending) = raw_request(&mut tcp, request.as_bytes()).await;
        (status, (status == 101).then_some(RawSocket { tcp, pending }))
    }

    pub async fn connect(ws_url: &str) -> RawSocket {
        let (status, socket) = Self::upgrade_with_key(ws_url, "dGhlIHNhbXBsZSBub25jZQ==").await;
        assert_eq!(status, 101, "the upgrade is accepted");
        socket.expect("an upgraded socket")
    }

    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        use tokio::io::AsyncWriteExt;
        self.tcp.write_all(bytes).await
    }

    /// Reads frames until a text frame arrives, returning its payload.
    pub async fn next_text(&mut self) -> Vec<u8> {
        use tokio::io::AsyncReadExt;
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            while let Some((opcode, payload, used)) = parse_server_frame(&self.pending) {
                self.pending.drain(..used);
                if opcode == 0x1 {
                    return payload;
                }
            }
            let n = tokio::time::timeout(WAIT, self.tcp.read(&mut chunk)).await.expect("a frame in time").unwrap();
            assert!(n > 0, "EOF before a text frame");
            self.pending.extend_from_slice(&chunk[..n]);
        }
    }

    /// Reads frames until a close frame: its status code (`None` if it had
    /// none), or `Err` with what came instead (EOF, a reset) before any close.
    pub async fn close_code(&mut self) -> Result<Option<u16>, String> {
        read_close_code(&mut self.tcp, &mut self.pending).await
    }

    /// Sends `bytes` while reading, since a server may answer (and hang up)
    /// before a large write is done; returns the close code as [`Self::close_code`].
    pub async fn send_and_close_code(&mut self, bytes: &[u8]) -> Result<Option<u16>, String> {
        use tokio::io::AsyncWriteExt;
        let (mut read, mut write) = self.tcp.split();
        // A write refused mid-way (the server hung up) is expected here.
        let sending = async { write.write_all(bytes).await.ok() };
        let exchange = async { tokio::join!(sending, read_close_code(&mut read, &mut self.pending)).1 };
        tokio::time::timeout(WAIT, exchange).await.unwrap_or_else(|_| Err("the write never ended".into()))
    }

    /// Waits until the server has shut the TCP connection down: EOF or a reset,
    /// discarding whatever else arrives first. Returns the bytes discarded.
    pub async fn until_closed(&mut self, deadline: Duration) -> usize {
        use tokio::io::AsyncReadExt;
        let mut chunk = vec![0u8; 256 * 1024];
        let mut discarded = std::mem::take(&mut self.pending).len();
        let outcome = tokio::time::timeout(deadline, async {
            loop {
                match self.tcp.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => discarded += n,
                }
            }
        })
        .await;
        assert!(outcome.is_ok(), "the server did not close the TCP connection within {deadline:?}");
        discarded
    }
}

async fn read_close_code(
    reader: &mut (impl tokio::io::AsyncRead + Unpin),
    pending: &mut Vec<u8>,
) -> Result<Option<u16>, String> {
    use tokio::io::AsyncReadExt;
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        while let Some((opcode, payload, used)) = parse_server_frame(pending) {
            pending.drain(..used);
            if opcode == 0x8 {
                return Ok((payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]])));
            }
        }
        match tokio::time::timeout(WAIT, reader.read(&mut chunk)).await {
            Err(_) => return Err("no close frame in time".into()),
            Ok(Ok(0)) => return Err("EOF before a close frame".into()),
            Ok(Ok(n)) => pending.extend_from_slice(&chunk[..n]),
            Ok(Err(error)) => return Err(format!("{error} before a close frame")),
        }
    }
}

/// One client frame: masked unless `mask` is `None`; `first` is FIN, RSV and opcode.
pub fn client_frame(first: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut frame = vec![first];
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => frame.push(mask_bit | n as u8),
        n if n <= u16::MAX as usize => {
            frame.push(mask_bit | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(mask_bit | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(key) => {
            frame.extend_from_slice(&key);
            frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => frame.extend_from_slice(payload),
    }
    frame
}

/// A masked client frame, as every valid client sends.
pub fn masked(first: u8, payload: &[u8]) -> Vec<u8> {
    client_frame(first, payload, Some([0x37, 0xfa, 0x21, 0x3d]))
}

/// The next complete (unmasked) server frame in `bytes`: opcode, payload, bytes used.
fn parse_server_frame(bytes: &[u8]) -> Option<(u8, Vec<u8>, usize)> {
    let opcode = bytes.first()? & 0x0f;
    let (len, start) = match bytes.get(1)? & 0x7f {
        126 => (u16::from_be_bytes([*bytes.get(2)?, *bytes.get(3)?]) as usize, 4),
        127 => (u64::from_be_bytes(bytes.get(2..10)?.try_into().ok()?) as usize, 10),
        n => (n as usize, 2),
    };
    let payload = bytes.get(start..start + len)?;
    Some((opcode, payload.to_vec(), start + len))
}

/// A process's resident memory, from `/proc/<pid>/status`, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the process is running");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

/// The kernel's view of one TCP connection (`/proc/net/tcp`), from its local end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpEntry {
    /// 1 ESTABLISHED, 4 FIN_WAIT1, 7 CLOSE, … (`include/net/tcp_states.h`).
    pub state: u8,
    /// Bytes written but not yet acknowledged by the peer.
    pub send_queue: u64,
    /// 0 once no process holds the socket any more.
    pub inode: u64,
}

/// The IPv4 loopback connection from `local_port` to `remote_port`, if the kernel still has it.
pub fn tcp_entry(local_port: u16, remote_port: u16) -> Option<TcpEntry> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let port = |address: &str| address.split(':').nth(1).and_then(|p| u16::from_str_radix(p, 16).ok());
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 10 || port(fields[1])? != local_port || port(fields[2])? != remote_port {
            return None;
        }
        Some(TcpEntry {
            state: u8::from_str_radix(fields[3], 16).ok()?,
            send_queue: u64::from_str_radix(fields[4].split(':').next()?, 16).ok()?,
            inode: fields[9].parse().ok()?,
        })
    })
}

/// `GET path` on `host:port` with `Connection: close`: the whole response as text.
pub async fn http_get(address: &str, path: &str) -> String {
    http_exchange(address, format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n")).await
}

/// `POST path` with a JSON body on `host:port`, `Connection: close`: the status and the body.
pub async fn http_post_json(address: &str, path: &str, body: &Value) -> (u16, Value) {
    let body = body.to_string();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let response = http_exchange(address, request).await;
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status line");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// Sends a whole `Connection: close` request to `host:port`: the whole response as text.
pub async fn http_exchange(address: &str, request: String) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = TcpStream::connect(address).await.expect("connect");
    tcp.write_all(request.as_bytes()).await.expect("send the request");
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, tcp.read_to_end(&mut response)).await.expect("a response in time").unwrap();
    String::from_utf8_lossy(&response).into_owned()
}

/// A shared secret for `--jwt-secret` (32 bytes or more, as the stack requires).
pub const JWT_SECRET: &str = "a-local-secret-of-at-least-32-bytes";

/// A shared-secret (HS256) token for the account `sub`, shown as `name`, valid
/// for ten minutes: what a stack started with `--jwt-secret secret` accepts.
pub fn hs256_token(secret: &str, sub: &str, name: &str) -> String {
    let now = chrono::Utc::now().timestamp();
    hs256(secret, &serde_json::json!({"sub": sub, "preferred_username": name, "iat": now, "exp": now + 600}))
}

/// An [`hs256_token`] signed with [`JWT_SECRET`] for `sub` (also its name) with
/// `chat.rights` (room pattern → "r" / "rw" / "rwm").
pub fn rights_token(sub: &str, rights: Value) -> String {
    let now = chrono::Utc::now().timestamp();
    let claims = serde_json::json!({"sub": sub, "preferred_username": sub, "iat": now, "exp": now + 600, "chat": {"rights": rights}});
    hs256(JWT_SECRET, &claims)
}

fn hs256(secret: &str, claims: &Value) -> String {
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()).unwrap();
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), claims, &key).unwrap()
}

/// `ws_url` (which may already have a query) with `token` as the identity source.
pub fn with_token(ws_url: &str, token: &str) -> String {
    let separator = if ws_url.contains('?') { '&' } else { '?' };
    format!("{ws_url}{separator}Authorization=Bearer%20{token}")
}

/// The status an upgrade of `url` is refused with (panics if it is accepted).
pub async fn refused_status(url: &str) -> u16 {
    use tokio_tungstenite::tungstenite::Error;
    match tokio::time::timeout(WAIT, connect_async(url)).await.expect("answered in time") {
        Err(Error::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("{url}: failed without an HTTP status: {other}"),
        Ok(_) => panic!("{url}: the upgrade was accepted"),
    }
}

/// How many rows a query counts in a stack's SQLite database.
pub fn count_rows(db: &Path, sql: &str) -> i64 {
    rusqlite::Connection::open(db).unwrap().query_row(sql, [], |r| r.get(0)).unwrap()
}

/// Polls until `done` holds, for up to a minute.
pub async fn eventually(mut done: impl FnMut() -> bool, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "{what}: not within a minute");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The log as (kind, room, connection id), in append order.
pub fn log_of(db: &Path) -> Vec<(String, String, String)> {
    let db = rusqlite::Connection::open(db).unwrap();
    let mut statement = db.prepare("SELECT kind, room, connection_id FROM message_history ORDER BY seq").unwrap();
    statement.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap().map(Result::unwrap).collect()
}
