//! ActiveConnections stream (TTL deletions only) → the departure of a connection
//! nobody else noticed leaving is announced, in each of its rooms, and its
//! memberships are deleted.

use aws_lambda_events::dynamodb::Event;
use chat_lambdas::{Error, LambdaEvent, expiry, init, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let aws = init().await;
    let (connections, sessions, log) = (&aws.connections(), &aws.sessions(), &aws.log());
    run(service_fn(move |event: LambdaEvent<Event>| async move {
        Ok::<_, Error>(
            expiry::on_expired_connections(&event.payload, connections, sessions, log, chrono::Utc::now()).await,
        )
    }))
    .await
}
