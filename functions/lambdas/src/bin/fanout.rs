//! Fan-out jobs of large rooms (SQS, from the broadcaster) → their members,
//! with partial batch failures per job.

use std::sync::Arc;

use aws_lambda_events::sqs::SqsEvent;
use chat_core::broadcaster::{Broadcaster, FanoutConfig};
use chat_core::ports::SystemClock;
use chat_core::split::{Split, worker_config};
use chat_lambdas::{Error, LambdaEvent, fanout, fanout_config_from_env, init, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let aws = init().await;
    let endpoint = std::env::var("CONNECTIONS_ENDPOINT")
        .map_err(|_| "CONNECTIONS_ENDPOINT must name the API stage's @connections endpoint")?;
    // Members still throttled go back to this queue, delayed.
    let queue = aws.fanout_queue().ok_or("FANOUT_QUEUE_URL must name the fan-out queue")?;
    let broadcaster = &Broadcaster {
        connections: Arc::new(aws.connections()),
        sessions: Arc::new(aws.sessions()),
        log: Arc::new(aws.log()),
        poster: Arc::new(aws.poster(&endpoint)),
        archive: None,
        clock: Arc::new(SystemClock),
        config: worker_config(FanoutConfig { split: Some(Split::new(Arc::new(queue))), ..fanout_config_from_env()? }),
        occupancy: Default::default(),
    };
    run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        Ok::<_, Error>(fanout::on_sqs(&event.payload, broadcaster).await)
    }))
    .await
}
