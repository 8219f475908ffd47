//! `sendmessage`: appends to MessageHistory only (reading the sender's room from
//! its ActiveConnections row); pong and refusals go back as the route response.

use chat_lambdas::{Error, WebsocketEvent, init, run_websocket, websocket};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let aws = init().await;
    let (connections, log) = (&aws.connections(), &aws.log());
    run_websocket(move |event: WebsocketEvent| async move {
        Ok::<_, Error>(websocket::on_send_message(&event.payload, connections, log).await?)
    })
    .await
}
