//! MessageHistory and Memberships streams → the events out (#26) on the
//! EventBridge bus `EVENT_BUS_NAME`: lines, joins and leaves, and rooms becoming
//! occupied or vacated, with partial batch failures for what was not put.

use aws_lambda_events::dynamodb::Event;
use chat_lambdas::{Error, LambdaEvent, events, init, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let aws = init().await;
    let sink = &aws.event_bus().ok_or("EVENT_BUS_NAME must name the EventBridge bus")?;
    run(service_fn(move |event: LambdaEvent<Event>| async move {
        Ok::<_, Error>(events::on_stream(&event.payload, sink).await)
    }))
    .await
}
