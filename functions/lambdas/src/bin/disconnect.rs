//! `$disconnect`: forgets the connection and its memberships, completes its
//! session, logs a leave in each of its rooms.

use chat_lambdas::{Error, WebsocketEvent, init, run_websocket, websocket};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let aws = init().await;
    let (connections, sessions, log) = (&aws.connections(), &aws.sessions(), &aws.log());
    run_websocket(move |event: WebsocketEvent| async move {
        Ok::<_, Error>(websocket::on_disconnect(&event.payload, connections, sessions, log).await?)
    })
    .await
}
