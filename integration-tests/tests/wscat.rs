//! The tutorial's terminal client, npm's `wscat`, chats with the local stack.
//! `run-all.sh` installs it under `integration-tests/.tools`.

use crate::common;

use std::path::PathBuf;
use std::process::Stdio;

use common::{Stack, WAIT, prerequisite, scratch};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

fn wscat() -> PathBuf {
    let path = std::env::var_os("WSCAT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools/node_modules/.bin/wscat"));
    prerequisite(path, "wscat")
}

#[tokio::test]
async fn wscat_sends_pings_and_chats() {
    let dir = scratch("wscat");
    let stack = Stack::start(&dir.join("chat.db"), &[]).await;
    let mut child = tokio::process::Command::new(wscat())
        .args(["-c", &stack.ws_url])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start wscat");
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();

    let mut output = String::new();
    // Lines typed before wscat has connected are lost, so ping until the pong
    // proves the socket is open, then chat.
    let mut heartbeat = tokio::time::interval(std::time::Duration::from_millis(200));
    let mut chatted = false;
    let outcome = tokio::time::timeout(WAIT, async {
        loop {
            tokio::select! {
                _ = heartbeat.tick(), if !chatted => {
                    stdin.write_all(b"{\"action\":\"sendmessage\",\"message\":\"ping\"}\n").await.unwrap();
                }
                line = lines.next_line() => {
                    let Some(line) = line.unwrap() else { break };
                    output.push_str(&line);
                    output.push('\n');
                    if !chatted && output.contains(r#"{"message":"pong"}"#) {
                        stdin.write_all(b"{\"action\":\"sendmessage\",\"message\":\"hello from wscat\"}\n").await.unwrap();
                        chatted = true;
                    }
                    if output.contains("hello from wscat\\n") {
                        break;
                    }
                }
            }
        }
    })
    .await;
    child.kill().await.ok();
    assert!(outcome.is_ok(), "wscat output so far:\n{output}");
    assert!(output.contains(" - UTC]\\n "), "the seed's chat line format:\n{output}");
    stack.stop().await;
}
