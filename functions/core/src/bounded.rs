//! Bounded concurrency: many posts or deletes, at most a limit of them in flight.

use futures::StreamExt;
use futures::stream::FuturesUnordered;

/// Drives the futures `tasks` yields with at most `limit` of them in flight,
/// handing each result to `done` as it completes.
pub(crate) async fn for_each_bounded<F: Future>(
    tasks: impl Iterator<Item = F>,
    limit: usize,
    mut done: impl FnMut(F::Output),
) {
    let mut tasks = tasks.fuse();
    let mut in_flight = FuturesUnordered::new();
    loop {
        while in_flight.len() < limit.max(1) {
            match tasks.next() {
                Some(task) => in_flight.push(task),
                None => break,
            }
        }
        match in_flight.next().await {
            Some(result) => done(result),
            None => return,
        }
    }
}
