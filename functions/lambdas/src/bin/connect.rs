//! `$connect`: refuses pages of other origins, registers the connection and a
//! membership in each of its rooms (the home room and the token's, up to
//! `MAX_ROOMS_PER_CONNECTION`), opens its session (kept `SESSION_RETENTION_DAYS`),
//! logs a join in each room.

use chat_lambdas::{Error, WebsocketEvent, init, run_websocket, websocket};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let aws = init().await;
    // Read once: a setting that cannot work stops the cold start, not every connect.
    let settings = &websocket::ConnectSettings::from_settings(|name| std::env::var(name).ok())?;
    let (connections, sessions, log) = (&aws.connections(), &aws.sessions(), &aws.log());
    run_websocket(move |event: WebsocketEvent| async move {
        Ok::<_, Error>(websocket::on_connect(&event.payload, settings, connections, sessions, log).await?)
    })
    .await
}
