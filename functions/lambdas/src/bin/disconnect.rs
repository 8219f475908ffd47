//! `$disconnect`: forgets the connection, completes its session, logs a leave.

use chat_lambdas::{Error, WebsocketEvent, init, run, service_fn, websocket};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let aws = init().await;
    let (connections, sessions, log) = (&aws.connections(), &aws.sessions(), &aws.log());
    run(service_fn(move |event: WebsocketEvent| async move {
        Ok::<_, Error>(websocket::on_disconnect(&event.payload, connections, sessions, log).await?)
    }))
    .await
}
