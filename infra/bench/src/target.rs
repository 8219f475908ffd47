//! A server process the load generator starts itself (the local stack or the
//! reference), found by the `websocket: ws://ADDR/STAGE` line it prints first,
//! and stopped by its own PID and nothing else.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long a server may take to print its address.
pub const STARTUP: Duration = Duration::from_secs(30);

/// The stack's per-user send limit off (`--send-rate off`), for the load tests
/// whose few senders each stand for many users (a sender of `compare` at 4000
/// lines/s is 200 lines/s, `channels`' 10 senders 1000 lines each as fast as a
/// window allows): with one user's limit (10/s, burst 20) they would measure
/// refusals, not fan-out; the reference has no such limit either. `loadgen
/// flood` measures the limit itself, with the defaults.
pub const UNLIMITED_SENDERS: [&str; 2] = ["--send-rate", "off"];

/// Which server to start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// `chat-local`: the whole local stack (gateway emulator, SQLite, stream, broadcaster).
    Stack,
    /// `reference`: the in-memory broadcast chat.
    Reference,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Stack => "local stack",
            Kind::Reference => "reference",
        }
    }
}

/// The executables to start, found next to the load generator by default
/// (`target/release/loadgen` → `target/release/chat-local`).
#[derive(Clone, Debug)]
pub struct Binaries {
    pub stack: PathBuf,
    pub reference: PathBuf,
}

impl Binaries {
    pub fn beside_this_executable() -> Self {
        let dir = std::env::current_exe().ok().and_then(|exe| exe.parent().map(Path::to_path_buf)).unwrap_or_default();
        Self { stack: dir.join("chat-local"), reference: dir.join("reference") }
    }
}

/// A running server. Killed on drop (by PID, via the child handle) if not stopped.
pub struct Server {
    child: Child,
    pub kind: Kind,
    pub pid: u32,
    pub url: String,
    scratch: PathBuf,
}

impl Server {
    /// Starts `kind` on a free loopback port. The stack gets a fresh SQLite file in
    /// a scratch directory (removed on [`Server::stop`]) and logs at `log_level`
    /// to a file there; the reference needs neither.
    pub async fn start(kind: Kind, binaries: &Binaries, log_level: &str) -> anyhow::Result<Server> {
        Self::start_with(kind, binaries, log_level, &[]).await
    }

    /// [`Server::start`] with more command-line arguments for the server (e.g. the stack's
    /// `--batching-window-ms`).
    pub async fn start_with(
        kind: Kind,
        binaries: &Binaries,
        log_level: &str,
        extra_args: &[String],
    ) -> anyhow::Result<Server> {
        Self::spawn(kind, binaries, log_level, extra_args, true).await
    }

    /// [`Server::start_default`] with more arguments (e.g. [`UNLIMITED_SENDERS`]).
    pub async fn start_default_with(
        kind: Kind,
        binaries: &Binaries,
        log_level: &str,
        extra_args: &[String],
    ) -> anyhow::Result<Server> {
        Self::spawn(kind, binaries, log_level, extra_args, false).await
    }

    /// The stack (or the reference) exactly as a user starts it: none of the
    /// load tests' settings (the stack's `--send-rate off`), so that what is
    /// measured is the default.
    pub async fn start_default(kind: Kind, binaries: &Binaries, log_level: &str) -> anyhow::Result<Server> {
        Self::spawn(kind, binaries, log_level, &[], false).await
    }

    async fn spawn(
        kind: Kind,
        binaries: &Binaries,
        log_level: &str,
        extra_args: &[String],
        load_settings: bool,
    ) -> anyhow::Result<Server> {
        let scratch = std::env::temp_dir().join(format!("chat-bench-{}-{}", std::process::id(), fastrand::u64(..)));
        std::fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
        let log = std::fs::File::create(scratch.join("server.log"))?;
        let mut command = match kind {
            Kind::Stack => {
                let mut command = Command::new(&binaries.stack);
                command.args(["--port", "0", "--db"]).arg(scratch.join("bench.db"));
                // Who is too slow is the stack's default (its byte budget and send
                // lag): no frame cap to match the reference's channel any more (issue #27).
                if load_settings {
                    command.args(UNLIMITED_SENDERS);
                }
                command
            }
            Kind::Reference => {
                let mut command = Command::new(&binaries.reference);
                command.args(["--port", "0"]);
                command
            }
        };
        command.args(extra_args);
        let program = command.as_std().get_program().to_owned();
        let mut child = command
            .env("RUST_LOG", log_level)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {} (build it with cargo build --release)", program.display()))?;
        let pid = child.id().context("the server exited at once")?;
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(STARTUP, lines.next_line())
            .await
            .with_context(|| format!("{} did not print its address within {STARTUP:?}", program.display()))??;
        let Some(url) = first.as_deref().and_then(|line| line.strip_prefix("websocket: ")) else {
            bail!("{} printed {first:?} where `websocket: URL` was expected", program.display());
        };
        let url = url.trim().to_owned();
        // Keep draining stdout so the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Server { child, kind, pid, url, scratch })
    }

    /// The stack's SQLite database (the reference has none), kept until [`Server::stop`]:
    /// the soak reads it to check that every acknowledged line is stored.
    pub fn database(&self) -> Option<PathBuf> {
        (self.kind == Kind::Stack).then(|| self.scratch.join("bench.db"))
    }

    /// Where the stack serves its Prometheus counters.
    pub fn metrics_url(&self) -> String {
        crate::counters::metrics_url(&self.url)
    }

    /// The server's log file (stderr), kept until [`Server::stop`].
    pub fn log_path(&self) -> PathBuf {
        self.scratch.join("server.log")
    }

    /// SIGTERM to this PID, then SIGKILL if it has not exited after 10 s; removes the scratch directory.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if self.child.try_wait()?.is_none() {
            // SAFETY: kill(2) with a PID this process spawned and has not yet reaped.
            unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGTERM) };
            if tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await.is_err() {
                self.child.kill().await?;
            }
        }
        std::fs::remove_dir_all(&self.scratch).ok();
        Ok(())
    }
}
