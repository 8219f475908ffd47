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
/// virtualenv. Killed (by PID) when dropped.
pub struct Moto {
    child: Child,
    pub url: String,
}

impl Moto {
    pub async fn start() -> Moto {
        let here = Path::new(env!("CARGO_MANIFEST_DIR"));
        let exe = prerequisite(here.join(".tools/venv/bin/moto_server"), "moto_server");
        let mut child = Command::new(exe)
            .args(["-H", "127.0.0.1", "-p", "0"])
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
