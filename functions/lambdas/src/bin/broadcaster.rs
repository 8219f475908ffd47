//! MessageHistory stream → every active connection, with partial batch failures
//! and one EMF metrics line per invocation.

use std::sync::Arc;

use aws_lambda_events::dynamodb::Event;
use chat_core::broadcaster::{Broadcaster, FanoutConfig};
use chat_core::ports::{Archive, SystemClock};
use chat_lambdas::emf::{CountingPoster, PostCounts};
use chat_lambdas::{
    Error, LambdaEvent, broadcast_with_metrics, fanout_config_from_env, init, run, service_fn, split_from_env,
};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let aws = init().await;
    let endpoint = std::env::var("CONNECTIONS_ENDPOINT")
        .map_err(|_| "CONNECTIONS_ENDPOINT must name the API stage's @connections endpoint")?;
    // Every post's outcome, for the invocation's EMF line.
    let counts = Arc::new(PostCounts::default());
    let broadcaster = &Broadcaster {
        connections: Arc::new(aws.connections()),
        sessions: Arc::new(aws.sessions()),
        log: Arc::new(aws.log()),
        poster: Arc::new(CountingPoster { inner: aws.poster(&endpoint), counts: counts.clone() }),
        archive: aws.archive().map(|a| Arc::new(a) as Arc<dyn Archive>),
        clock: Arc::new(SystemClock),
        // Large rooms go to the fan-out workers (bin/fanout.rs) when a queue is configured.
        config: FanoutConfig { split: aws.fanout_queue().and_then(split_from_env), ..fanout_config_from_env()? },
        occupancy: Default::default(),
    };
    let counts = &counts;
    run(service_fn(move |event: LambdaEvent<Event>| async move {
        Ok::<_, Error>(broadcast_with_metrics(&event.payload, broadcaster, counts).await)
    }))
    .await
}
