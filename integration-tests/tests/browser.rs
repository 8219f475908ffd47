//! The web chat in a real browser: headless Chromium, driven by playwright-core
//! (`browser/*.test.cjs`), against the real local stack serving `frontend/`.
//! `run-all.sh` installs Chromium (apt) and playwright-core (npm).

use crate::common;

use std::path::{Path, PathBuf};

use common::{Stack, prerequisite, scratch};

/// Starts a stack (with `extra` flags) on a fresh database, runs one browser script against it
/// (`node <script> <ws url> <output dir> <stack pid>`), and hands the stack back to check the store.
async fn run_script(script: &str, output: &str, extra: &[&str]) -> (Stack, PathBuf) {
    run_script_with(script, output, extra, &[]).await
}

/// `run_script` with environment variables for the script (`env`).
async fn run_script_with(script: &str, output: &str, extra: &[&str], env: &[(&str, &str)]) -> (Stack, PathBuf) {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    prerequisite(here.join(".tools/node_modules/playwright-core"), "playwright-core");
    let chromium = std::env::var_os("CHROMIUM").map(PathBuf::from).unwrap_or_else(|| "/usr/bin/chromium".into());
    let chromium = prerequisite(chromium, "Chromium");

    let dir = scratch(output);
    let stack = Stack::start(&dir.join("chat.db"), extra).await;
    let run = tokio::process::Command::new("node")
        .arg(here.join("browser").join(script))
        .arg(&stack.ws_url)
        .arg(&dir)
        .arg(stack.pid().to_string())
        .env("CHROMIUM", chromium)
        // For scripts that restart the stack themselves.
        .env("CHAT_LOCAL_BIN", common::binary())
        .env("CHAT_DB", &stack.db)
        .envs(env.iter().copied())
        .kill_on_drop(true)
        .status();
    // Generous: the machine may be busy compiling; a run takes ~15 s when idle.
    let status = tokio::time::timeout(std::time::Duration::from_secs(240), run)
        .await
        .expect("the browser test finishes in time")
        .expect("node runs");
    assert!(status.success(), "browser checks in {script} failed (see the output above)");
    (stack, dir)
}

/// With `UPDATE_SCREENSHOTS=1`, this run's pictures replace the README's
/// (`frontend/<name>`); otherwise they stay in the test's output directory.
fn publish(dir: &Path, pictures: &[(&str, &str)]) {
    if std::env::var_os("UPDATE_SCREENSHOTS").is_none_or(|v| v != "1") {
        return;
    }
    let frontend = Path::new(env!("CARGO_MANIFEST_DIR")).join("../frontend");
    for (taken, name) in pictures {
        std::fs::copy(dir.join(taken), frontend.join(name)).expect("copy a screenshot into frontend/");
    }
}

fn count(stack: &Stack, sql: &str) -> i64 {
    let db = rusqlite::Connection::open(&stack.db).unwrap();
    db.query_row(sql, [], |row| row.get(0)).unwrap()
}

#[tokio::test]
async fn two_pages_chat_in_headless_chromium() {
    let (stack, dir) = run_script("chat.test.cjs", "browser", &[]).await;
    assert!(dir.join("chat.png").exists(), "the screenshot was saved");

    // What the browser showed was persisted: the log holds the page's lines.
    assert_eq!(count(&stack, "SELECT count(*) FROM message_history WHERE message = 'hello from alice'"), 1);
    stack.stop().await;
}

#[tokio::test]
async fn rooms_members_and_recovery_in_headless_chromium() {
    // Its sender fills rooms with 120 lines at once: past the per-user send burst, so no limit here.
    let (stack, dir) = run_script("rooms.test.cjs", "browser-rooms", &["--send-rate", "off"]).await;
    assert!(dir.join("rooms.png").exists(), "the two-room screenshot was saved");
    publish(&dir, &[("rooms.png", "screenshot-rooms.png")]);

    // The pages' lines went to their own rooms; the missed lines were stored once.
    let in_room = |room: &str, like: &str| {
        count(&stack, &format!("SELECT count(*) FROM message_history WHERE room = '{room}' AND message LIKE '{like}'"))
    };
    assert_eq!(in_room("red", "red: %"), 3);
    assert_eq!(in_room("blue", "blue: %"), 1);
    assert_eq!(in_room("red", "r-%"), 120);
    assert_eq!(in_room("blue", "r-%"), 0);
    stack.stop().await;
}

#[tokio::test]
async fn several_rooms_on_one_socket_with_unread_badges_in_headless_chromium() {
    // Two pages of one signed-in user (tokens minted with this secret), three rooms
    // each; a connection may hold 3 rooms, so a fourth is refused.
    let (stack, dir) = run_script(
        "channels.test.cjs",
        "browser-channels",
        &["--jwt-secret", "browser-test-secret-of-32-bytes-or-more", "--max-rooms", "3"],
    )
    .await;
    assert!(dir.join("channels.png").exists() && dir.join("channels-phone.png").exists(), "the screenshots were saved");
    publish(
        &dir,
        &[("channels.png", "screenshot-channels.png"), ("channels-phone.png", "screenshot-channels-phone.png")],
    );
    // The lines written while the page was away went to their own rooms, once each.
    for room in ["ch-one", "ch-two", "ch-three"] {
        let sql = format!("SELECT count(*) FROM message_history WHERE room = '{room}' AND message LIKE 'gap-%'");
        assert_eq!(count(&stack, &sql), 4, "{room}");
    }
    assert_eq!(
        count(&stack, "SELECT count(*) FROM message_history WHERE room = 'ch-four'"),
        0,
        "the refused room got nothing"
    );
    stack.stop().await;
}

#[tokio::test]
async fn a_busy_history_reads_as_a_conversation_and_the_page_is_accessible() {
    let (stack, dir) = run_script("conversation.test.cjs", "browser-conversation", &[]).await;
    for shot in ["desktop-light", "desktop-dark", "phone-light", "phone-dark"] {
        assert!(dir.join(format!("conversation-{shot}.png")).exists(), "the {shot} screenshot was saved");
        publish(&dir, &[(&format!("conversation-{shot}.png"), &format!("screenshot-{shot}.png"))]);
    }
    // The keyboard-only line kept its new line.
    assert_eq!(count(&stack, "SELECT count(*) FROM message_history WHERE message = 'typed with keys\nsecond line'"), 1);
    stack.stop().await;
}

#[tokio::test]
async fn sign_in_with_the_dev_page_and_with_oidc_pkce_in_headless_chromium() {
    // The script also starts a second stack itself, with --oidc-issuer pointing at
    // its own loopback issuer.
    let (stack, dir) =
        run_script("signin.test.cjs", "browser-signin", &["--jwt-secret", "browser-test-secret-of-32-bytes-or-more"])
            .await;
    assert!(
        dir.join("signed-in.png").exists() && dir.join("oidc-signed-in.png").exists(),
        "the screenshots were saved"
    );
    publish(&dir, &[("signed-in.png", "screenshot-signed-in.png")]);
    // The signed-in pages' lines carry the verified names in the log.
    let line = |user: &str, text: &str| {
        count(
            &stack,
            &format!(
                "SELECT count(*) FROM message_history WHERE kind = 'chat' AND user = '{user}' AND verified = 1 AND message LIKE '%{text}%'"
            ),
        )
    };
    assert_eq!(line("alice", "hello, I am alice"), 1);
    assert_eq!(line("bob", "and I am bob"), 1);
    stack.stop().await;
}

#[tokio::test]
async fn the_page_sends_its_token_only_to_its_endpoint_and_runs_under_a_csp() {
    // The script also runs a plain loopback WebSocket server of its own (the
    // "other endpoint"), which records the URLs it is asked for.
    run_script("security.test.cjs", "browser-security", &["--jwt-secret", "browser-test-secret-of-32-bytes-or-more"])
        .await
        .0
        .stop()
        .await;
}

#[tokio::test]
async fn a_room_past_the_presence_limit_shows_the_count_and_the_newest_joiners() {
    // A low limit, so a handful of peers crosses it; the small room stays under it.
    run_script("occupancy.test.cjs", "browser-occupancy", &["--presence-limit", "3"]).await.0.stop().await;
}

#[tokio::test]
async fn people_who_share_a_name_are_told_apart_by_user_id_on_the_page() {
    // The page talks to a scripted loopback server of the script's own, with exact frames.
    run_script("people.test.cjs", "browser-people", &[]).await.0.stop().await;
}

#[tokio::test]
async fn two_accounts_named_alice_each_see_only_their_own_lines_as_theirs() {
    // The script starts its own stack with a --jwt-secret it knows, to mint both tokens.
    run_script("same-name.test.cjs", "browser-same-name", &[]).await.0.stop().await;
}

#[tokio::test]
async fn coalesced_frames_reach_the_page_in_headless_chromium() {
    // A batching window gathers the burst into few broadcaster invocations.
    // A burst of 30 lines from one sender: past the per-user send burst (20), so no limit here.
    let flags = ["--batching-window-ms", "100", "--send-rate", "off"];
    let (stack, dir) = run_script("batch.test.cjs", "browser-batch", &flags).await;
    assert!(dir.join("batch.png").exists(), "the screenshot was saved");
    assert_eq!(
        count(&stack, "SELECT count(*) FROM message_history WHERE kind = 'chat' AND message LIKE '%burst %'"),
        30
    );
    stack.stop().await;
}

#[tokio::test]
async fn the_outbox_survives_a_server_kill_and_a_reload() {
    // The script SIGKILLs this stack (by the PID it is given) and starts the same
    // binary again on the same port and database, stopping that one itself.
    let (stack, dir) = run_script("outbox.test.cjs", "browser-outbox", &[]).await;
    assert!(dir.join("restarted").exists(), "the script restarted the stack");
    assert_eq!(
        count(&stack, "SELECT count(*) FROM message_history WHERE message = 'typed while the server was down'"),
        1
    );
    // Both of the page's lines went with a clientMessageId.
    assert_eq!(count(&stack, "SELECT count(*) FROM client_messages"), 2);
    drop(stack); // already killed by the script
}

#[tokio::test]
async fn a_throttled_catch_up_is_retried_until_nothing_is_missing() {
    // Stage throttling as API Gateway's: 2 messages a second, 3 at once. The page's
    // catch-up asks for ~10 pages in a row, so some are answered "Too Many Requests".
    let (stack, dir) =
        run_script("throttle.test.cjs", "browser-throttle", &["--throttle-rate", "2", "--throttle-burst", "3"]).await;
    assert!(dir.join("throttled.png").exists(), "the screenshot was saved");
    // The throttled writer's lines were stored once each (its tries reuse a clientMessageId).
    assert_eq!(count(&stack, "SELECT count(*) FROM message_history WHERE kind = 'chat' AND message LIKE 't-%'"), 40);
    // So were the page's own lines, re-sent by its outbox after "Too Many Requests".
    assert_eq!(count(&stack, "SELECT count(*) FROM message_history WHERE kind = 'chat' AND message LIKE 'o-%'"), 6);
    stack.stop().await;
}

#[tokio::test]
async fn rights_and_moderation_on_the_page_in_headless_chromium() {
    // Tokens minted with this secret; by default mod-* is writable, news read-only
    // and anything else (the "secret" room) private: only mia's claim opens it.
    // Sends: 2 a second per user, 3 at once.
    let (stack, dir) = run_script(
        "moderation.test.cjs",
        "browser-moderation",
        &[
            "--jwt-secret",
            "browser-test-secret-of-32-bytes-or-more",
            "--default-rights",
            "mod-*=rw;news=r",
            // Lines typed at once run past the burst: the outbox waits and resends.
            "--send-rate",
            "2",
            "--send-burst",
            "3",
        ],
    )
    .await;
    assert!(
        dir.join("moderation.png").exists() && dir.join("moderation-ban.png").exists(),
        "the screenshots were saved"
    );
    publish(&dir, &[("moderation.png", "screenshot-moderation.png")]);
    // The deleted line stays in the log (the audit trail), its tombstone beside it;
    // the read-only and private rooms got nothing.
    assert_eq!(count(&stack, "SELECT count(*) FROM message_history WHERE message = 'a line to delete'"), 1);
    assert_eq!(count(&stack, "SELECT count(*) FROM message_history WHERE kind = 'delete'"), 1);
    assert_eq!(
        count(&stack, "SELECT count(*) FROM message_history WHERE kind = 'chat' AND room IN ('news', 'secret')"),
        0
    );
    // The rate-limited lines were resent until stored, each once.
    assert_eq!(count(&stack, "SELECT count(*) FROM message_history WHERE kind = 'chat' AND message LIKE 'fast-%'"), 6);
    assert_eq!(count(&stack, "SELECT count(DISTINCT message) FROM message_history WHERE message LIKE 'fast-%'"), 6);
    stack.stop().await;
}

/// The lifecycle UI (issue 25) against a server played by the test (PLAYED=1:
/// routeWebSocket, the stack only serves the page): edit, react, reply, typing,
/// delete on two pages, and the reload's fold, with the played server's exact
/// counts (one `typing` signal per burst).
#[tokio::test]
async fn message_lifecycle_on_the_page_against_a_played_server() {
    let (stack, dir) = run_script_with(
        "lifecycle.test.cjs",
        "browser-lifecycle-played",
        &["--jwt-secret", "browser-test-secret-of-32-bytes-or-more"],
        &[("PLAYED", "1")],
    )
    .await;
    assert!(dir.join("lifecycle.png").exists(), "the screenshot was saved");
    stack.stop().await;
}

/// The lifecycle UI against the local stack's own handlers (edit, delete, react,
/// reply/replyTo, typing; history folded on the page after a reload): two
/// signed-in pages see each other's changes within 1 s. The store keeps the raw
/// events (an edit and a delete beside their lines) and no typing signal.
#[tokio::test]
async fn message_lifecycle_on_the_page_against_the_local_stack() {
    let (stack, dir) = run_script(
        "lifecycle.test.cjs",
        "browser-lifecycle",
        &["--jwt-secret", "browser-test-secret-of-32-bytes-or-more"],
    )
    .await;
    assert!(dir.join("lifecycle.png").exists(), "the screenshot was saved");
    publish(&dir, &[("lifecycle.png", "screenshot-lifecycle.png")]);
    assert_eq!(
        count(&stack, "SELECT count(*) FROM message_history WHERE message = 'helo wrold'"),
        1,
        "the original stays"
    );
    assert_eq!(count(&stack, "SELECT count(*) FROM message_history WHERE kind = 'edit'"), 1);
    assert_eq!(count(&stack, "SELECT count(*) FROM message_history WHERE kind = 'delete'"), 1);
    assert_eq!(count(&stack, "SELECT count(*) FROM message_history WHERE kind = 'reaction'"), 3);
    assert_eq!(
        count(
            &stack,
            "SELECT count(*) FROM message_history WHERE kind NOT IN ('chat', 'join', 'leave', 'edit', 'delete', 'reaction')"
        ),
        0,
        "typing is never stored"
    );
    stack.stop().await;
}
