//! Cold start of the Lambda binaries, against a small emulator of the Lambda
//! Runtime API: the time from starting the process to its first
//! `GET /2018-06-01/runtime/invocation/next` — everything a binary does before it
//! can take its first event (runtime, tracing, SDK configuration, clients).
//! The emulator never answers that request; the process is then killed (by its
//! handle) and started again.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::process::Command;

/// The request the runtime makes when it is ready for an event.
pub const NEXT_INVOCATION: &str = "GET /2018-06-01/runtime/invocation/next ";

/// How long one start may take before the run fails.
const START_LIMIT: Duration = Duration::from_secs(20);

/// One binary's starts.
#[derive(Clone, Debug, Serialize)]
pub struct ColdStart {
    pub name: String,
    pub path: PathBuf,
    pub size_bytes: u64,
    pub runs: usize,
    pub median_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    pub samples_ms: Vec<f64>,
}

/// What every function is started with: the variables Lambda sets, fake
/// credentials (nothing is called during init), and the functions' own
/// configuration (the broadcaster requires its endpoint; the authorizer a secret).
pub fn lambda_environment(runtime_api: &str) -> Vec<(&'static str, String)> {
    [
        ("AWS_LAMBDA_RUNTIME_API", runtime_api),
        ("AWS_LAMBDA_FUNCTION_NAME", "coldstart"),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
        ("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/coldstart"),
        ("AWS_LAMBDA_LOG_STREAM_NAME", "coldstart"),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_SESSION_TOKEN", "test"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("CONNECTIONS_ENDPOINT", "http://127.0.0.1:9/dev"),
        ("JWT_SECRET", "a shared secret of at least thirty-two bytes"),
        ("RUST_LOG", "warn"),
    ]
    .into_iter()
    .map(|(name, value)| (name, value.to_owned()))
    .collect()
}

/// Starts `binary` `runs` times against a fresh emulator and times each start.
pub async fn measure(name: &str, binary: &Path, runs: usize) -> anyhow::Result<ColdStart> {
    let size_bytes = std::fs::metadata(binary).with_context(|| format!("{} is missing", binary.display()))?.len();
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let runtime_api = listener.local_addr()?.to_string();
    let mut samples_ms = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        samples_ms.push(start_once(binary, &listener, &runtime_api).await.with_context(|| format!("starting {name}"))?);
    }
    let mut sorted = samples_ms.clone();
    sorted.sort_by(f64::total_cmp);
    Ok(ColdStart {
        name: name.to_owned(),
        path: binary.to_owned(),
        size_bytes,
        runs: sorted.len(),
        median_ms: median(&sorted),
        min_ms: sorted[0],
        max_ms: sorted[sorted.len() - 1],
        samples_ms,
    })
}

fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 { sorted[n / 2] } else { (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0 }
}

/// One start: spawn → the first `/next` request on the emulator, in ms.
async fn start_once(binary: &Path, listener: &TcpListener, runtime_api: &str) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut child = Command::new(binary)
        .env_clear()
        .envs(lambda_environment(runtime_api))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("spawning {}", binary.display()))?;
    let waited = tokio::time::timeout(START_LIMIT, async {
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (mut stream, _) = accepted?;
                    if let Some(ms) = first_request_is_next(&mut stream, started).await? {
                        return anyhow::Ok(ms);
                    }
                }
                exit = child.wait() => bail!("exited before asking for an event: {}", exit?),
            }
        }
    })
    .await;
    child.start_kill().ok();
    let status = child.wait().await;
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        pipe.read_to_string(&mut stderr).await.ok();
    }
    match waited {
        Ok(Ok(ms)) => Ok(ms),
        Ok(Err(error)) => bail!("{error} (status {status:?}; stderr: {})", stderr.trim()),
        Err(_) => bail!("no {NEXT_INVOCATION:?} within {START_LIMIT:?} (stderr: {})", stderr.trim()),
    }
}

/// Reads one request head; the time it arrived if it asks for the next invocation.
async fn first_request_is_next(stream: &mut tokio::net::TcpStream, started: Instant) -> anyhow::Result<Option<f64>> {
    let mut head = Vec::new();
    let mut buffer = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
        let read = stream.read(&mut buffer).await?;
        if read == 0 {
            break;
        }
        head.extend_from_slice(&buffer[..read]);
    }
    let at = started.elapsed().as_secs_f64() * 1e3;
    Ok(head.starts_with(NEXT_INVOCATION.as_bytes()).then_some(at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[1.0, 2.0, 9.0]), 2.0);
        assert_eq!(median(&[1.0, 2.0, 4.0, 9.0]), 3.0);
    }

    #[tokio::test]
    async fn a_process_that_never_asks_fails_loudly() {
        let error = measure("true", Path::new("/bin/true"), 1).await.unwrap_err();
        assert!(format!("{error:#}").contains("exited before asking for an event"), "{error:#}");
    }
}
