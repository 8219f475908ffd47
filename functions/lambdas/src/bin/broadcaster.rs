//! MessageHistory stream → every active connection, with partial batch failures.

use std::sync::Arc;

use aws_lambda_events::dynamodb::Event;
use chat_core::broadcaster::Broadcaster;
use chat_core::ports::{Archive, SystemClock};
use chat_lambdas::{Error, LambdaEvent, fanout_config_from_env, init, run, service_fn, stream};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let aws = init().await;
    let endpoint = std::env::var("CONNECTIONS_ENDPOINT")
        .map_err(|_| "CONNECTIONS_ENDPOINT must name the API stage's @connections endpoint")?;
    let broadcaster = &Broadcaster {
        connections: Arc::new(aws.connections()),
        sessions: Arc::new(aws.sessions()),
        log: Arc::new(aws.log()),
        poster: Arc::new(aws.poster(&endpoint)),
        archive: aws.archive().map(|a| Arc::new(a) as Arc<dyn Archive>),
        clock: Arc::new(SystemClock),
        config: fanout_config_from_env(),
    };
    run(service_fn(move |event: LambdaEvent<Event>| async move {
        Ok::<_, Error>(stream::on_stream(&event.payload, broadcaster).await)
    }))
    .await
}
