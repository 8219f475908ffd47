//! The web chat in a real browser: headless Chromium, driven by playwright-core
//! (`browser/chat.test.cjs`), against the real local stack serving `frontend/`.
//! `run-all.sh` installs Chromium (apt) and playwright-core (npm).

mod common;

use std::path::{Path, PathBuf};

use common::{Stack, prerequisite, scratch};

#[tokio::test]
async fn two_pages_chat_in_headless_chromium() {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    prerequisite(here.join(".tools/node_modules/playwright-core"), "playwright-core");
    let chromium = std::env::var_os("CHROMIUM").map(PathBuf::from).unwrap_or_else(|| "/usr/bin/chromium".into());
    let chromium = prerequisite(chromium, "Chromium");

    let dir = scratch("browser");
    let stack = Stack::start(&dir.join("chat.db"), &[]).await;
    let run = tokio::process::Command::new("node")
        .arg(here.join("browser/chat.test.cjs"))
        .arg(&stack.ws_url)
        .arg(&dir)
        .env("CHROMIUM", chromium)
        .kill_on_drop(true)
        .status();
    let status = tokio::time::timeout(std::time::Duration::from_secs(120), run)
        .await
        .expect("the browser test finishes in time")
        .expect("node runs");
    assert!(status.success(), "browser checks failed (see the output above)");
    assert!(dir.join("chat.png").exists(), "the screenshot was saved");

    // What the browser showed was persisted: the log holds the page's lines.
    let db = rusqlite::Connection::open(&stack.db).unwrap();
    let stored: i64 = db
        .query_row("SELECT count(*) FROM message_history WHERE message = 'hello from alice'", [], |row| row.get(0))
        .unwrap();
    assert_eq!(stored, 1);
    stack.stop().await;
}
