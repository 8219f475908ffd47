//! Every departure is announced exactly once, whoever notices it first: the
//! socket's `$disconnect`, the broadcaster's 410 prune, or a restart's sweep.

use crate::common;

use std::path::Path;
use std::time::Duration;

use common::{Client, Stack, WAIT, scratch};

/// `(joins, leaves)` in the stack's log.
fn joins_and_leaves(db: &Path) -> (i64, i64) {
    let db = rusqlite::Connection::open(db).unwrap();
    let count = |kind: &str| {
        db.query_row("SELECT count(*) FROM message_history WHERE kind = ?1", [kind], |r| r.get(0)).unwrap()
    };
    (count("join"), count("leave"))
}

/// Polls until the log holds as many leaves as joins (and at least `joins`).
async fn until_balanced(db: &Path, joins: i64) -> (i64, i64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let counts = joins_and_leaves(db);
        if (counts.0 >= joins && counts.0 == counts.1) || tokio::time::Instant::now() > deadline {
            return counts;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn churn_gives_one_leave_per_join() {
    const WORKERS: usize = 8;
    const CYCLES: usize = 250; // 2 000 connections, half closed cleanly, half dropped
    let dir = scratch("departures_churn");
    let stack = Stack::start(&dir.join("chat.db"), &[]).await;

    // A chatter keeps the broadcaster posting to sockets as they come and go, so
    // its 410 prunes race the sockets' own $disconnects.
    let url = stack.ws_url.clone();
    let chatter = tokio::spawn(async move {
        let mut client = Client::connect(&url).await;
        for i in 0.. {
            client.say(&format!("line {i}")).await;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    let workers: Vec<_> = (0..WORKERS)
        .map(|worker| {
            let url = stack.ws_url.clone();
            tokio::spawn(async move {
                for cycle in 0..CYCLES {
                    let mut client = Client::connect(&url).await;
                    if (worker + cycle) % 2 == 0 {
                        client.socket.close(None).await.ok();
                    }
                    // Otherwise dropped: the TCP connection just ends, no close frame.
                }
            })
        })
        .collect();
    for worker in workers {
        tokio::time::timeout(Duration::from_secs(120), worker).await.expect("churn finishes in time").unwrap();
    }
    chatter.abort();
    let (joins, leaves) = until_balanced(&stack.db, (WORKERS * CYCLES) as i64).await;
    assert!(joins > (WORKERS * CYCLES) as i64, "every churned connection and the chatter joined: {joins}");
    assert_eq!(leaves, joins, "one leave per join");
    stack.stop().await;
}

#[tokio::test]
async fn a_restart_announces_the_departures_a_crash_left_unannounced() {
    let dir = scratch("departures_restart");
    let db = dir.join("chat.db");
    let stack = Stack::start(&db, &[]).await;
    let mut clients = Vec::new();
    for room in ["lobby", "red", "red"] {
        let mut client = Client::connect(&format!("{}?room={room}", stack.ws_url)).await;
        client.my_id().await;
        clients.push(client);
    }
    stack.kill().await; // no $disconnect runs for anyone
    drop(clients);
    assert_eq!(joins_and_leaves(&db), (3, 0));

    let stack = Stack::start(&db, &[]).await;
    let (joins, leaves) = until_balanced(&db, 3).await;
    assert_eq!((joins, leaves), (3, 3));
    let store = rusqlite::Connection::open(&db).unwrap();
    let rows: i64 = store.query_row("SELECT count(*) FROM active_connections", [], |r| r.get(0)).unwrap();
    assert_eq!(rows, 0, "the stale rows are gone");
    let open: i64 = store
        .query_row("SELECT count(*) FROM session_history WHERE disconnected_at IS NULL", [], |r| r.get(0))
        .unwrap();
    assert_eq!(open, 0, "every session was completed");
    let red_leaves: i64 = store
        .query_row("SELECT count(*) FROM message_history WHERE kind = 'leave' AND room = 'red'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(red_leaves, 2, "each leave is said in the room of its join");

    // A second restart finds nothing left to announce.
    stack.stop().await;
    let stack = Stack::start(&db, &[]).await;
    let mut client = Client::connect(&stack.ws_url).await;
    client.my_id().await;
    drop(client);
    tokio::time::timeout(WAIT, until_balanced(&db, 4)).await.unwrap();
    assert_eq!(joins_and_leaves(&db), (4, 4));
    stack.stop().await;
}
