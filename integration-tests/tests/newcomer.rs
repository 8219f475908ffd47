//! The errors a newcomer meets first: a port in use, a bad flag, a locked
//! database, a missing Chromium. Each is one line that names the thing and the fix.

use crate::common;

use std::path::Path;
use std::process::Output;

use common::{WAIT, binary, prerequisite, scratch};

/// Runs `chat-local` with `args` and returns what it printed; it must exit by itself.
async fn run_to_exit(args: &[&str]) -> Output {
    let run = tokio::process::Command::new(binary())
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(WAIT, run).await.expect("exits by itself").expect("chat-local runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The line that says what went wrong and what to do: the problem and its fix together.
fn error_line(output: &Output) -> String {
    let said = stderr(output);
    let line = said.lines().find(|line| line.starts_with("Error: ")).map(str::to_owned);
    line.unwrap_or_else(|| panic!("no error line in: {said}"))
}

#[tokio::test]
async fn a_busy_port_says_which_and_how_to_choose_another() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let output = run_to_exit(&["--port", &port, "--db", ":memory:"]).await;
    assert_eq!(output.status.code(), Some(1));
    let said = error_line(&output);
    assert!(said.contains(&format!("port {port} on 127.0.0.1 is in use")), "{said}");
    assert!(said.contains("--port N") && said.contains("--port 0 picks a free one"), "{said}");
    assert!(output.stdout.is_empty(), "no endpoint was announced");
}

#[tokio::test]
async fn a_bad_flag_or_value_names_it_and_the_fix() {
    let output = run_to_exit(&["--prot", "9000"]).await;
    assert_eq!(output.status.code(), Some(2));
    let said = stderr(&output);
    assert!(said.lines().next().unwrap_or("").contains("unexpected argument '--prot'"), "{said}");
    assert!(said.contains("a similar argument exists: '--port'"), "{said}");

    let output = run_to_exit(&["--port", "eighty"]).await;
    assert_eq!(output.status.code(), Some(2));
    let said = stderr(&output);
    assert!(said.lines().next().unwrap_or("").contains("invalid value 'eighty' for '--port <PORT>'"), "{said}");
}

#[tokio::test]
async fn a_locked_database_names_the_file_and_what_to_do() {
    let dir = scratch("newcomer-locked");
    let db = dir.join("chat.db");
    // Another process's write transaction on a fresh file: not even the schema can be read.
    let holder = rusqlite::Connection::open(&db).unwrap();
    holder.execute_batch("CREATE TABLE other (x); BEGIN EXCLUSIVE; INSERT INTO other VALUES (1);").unwrap();
    let output = run_to_exit(&["--port", "0", "--db", db.to_str().unwrap()]).await;
    assert_eq!(output.status.code(), Some(1));
    let said = error_line(&output);
    assert!(said.contains(&format!("the database {} is locked by another process", db.display())), "{said}");
    assert!(said.contains("--db PATH"), "{said}");
    assert!(output.stdout.is_empty(), "no endpoint was announced");
    holder.execute_batch("COMMIT").unwrap();
}

#[tokio::test]
async fn a_missing_chromium_says_how_to_install_it() {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    prerequisite(here.join(".tools/node_modules/playwright-core"), "playwright-core");
    let helpers = here.join("browser").join("helpers.cjs");
    let script = format!(
        "require({:?}).launch().then(() => process.exit(0), (e) => {{ console.error(String(e)); process.exit(1); }})",
        helpers
    );
    let run = tokio::process::Command::new("node")
        .args(["-e", &script])
        .env("CHROMIUM", "/nonexistent/chromium")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(WAIT, run).await.expect("exits by itself").expect("node runs");
    assert_eq!(output.status.code(), Some(1));
    let said = stderr(&output);
    assert!(said.contains("Chromium not found at /nonexistent/chromium"), "{said}");
    assert!(said.contains("run integration-tests/run-all.sh"), "{said}");
}

#[tokio::test]
async fn a_bad_webhook_url_or_a_missing_secret_says_what_to_give() {
    let output =
        run_to_exit(&["--port", "0", "--db", ":memory:", "--webhook", "localhost:9000", "--webhook-secret", "s"]).await;
    assert_eq!(output.status.code(), Some(2));
    let said = stderr(&output);
    let first = said.lines().next().unwrap_or("");
    assert!(first.contains("invalid value 'localhost:9000' for '--webhook <URL>'"), "{said}");
    assert!(first.contains("e.g. http://127.0.0.1:9000/events"), "{said}");

    let output = run_to_exit(&["--port", "0", "--db", ":memory:", "--webhook", "http://127.0.0.1:9000/events"]).await;
    assert_eq!(output.status.code(), Some(1));
    let said = error_line(&output);
    assert!(said.contains("--webhook needs --webhook-secret SECRET (or CHAT_WEBHOOK_SECRET)"), "{said}");
    assert!(output.stdout.is_empty(), "no endpoint was announced");

    let output = run_to_exit(&["--port", "0", "--db", ":memory:", "--webhook-secret", "s"]).await;
    assert_eq!(output.status.code(), Some(2), "a secret alone is a mistake too");
    assert!(stderr(&output).contains("--webhook <URL>"), "{}", stderr(&output));
}
