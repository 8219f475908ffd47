//! `sendmessage`: appends to MessageHistory only (reading the sender's room from
//! its ActiveConnections row; rights of connections without an authorizer
//! `DEFAULT_RIGHTS`; per-user limit `SEND_RATE`/`SEND_BURST`, kept in this
//! instance's memory); pong and refusals go back as the route response.

use chat_core::entrypoints::websocket::RouteSettings;
use chat_lambdas::{Error, WebsocketEvent, init, run_websocket, websocket};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let aws = init().await;
    // Read once: a setting that cannot work stops the cold start, not every request.
    let settings = &RouteSettings::from_settings(|name| std::env::var(name).ok())?;
    let (connections, log) = (&aws.connections(), &aws.log());
    run_websocket(move |event: WebsocketEvent| async move {
        Ok::<_, Error>(websocket::on_send_message(&event.payload, settings, connections, log).await?)
    })
    .await
}
