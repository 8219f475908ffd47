//! `$connect`: refuses pages of other origins, registers the connection and a
//! membership in each of its rooms (the home room and the token's, up to
//! `MAX_ROOMS_PER_CONNECTION`), opens its session (kept `SESSION_RETENTION_DAYS`),
//! logs a join in each room. An account banned from its home room is refused
//! (403), a token room it is banned from left out (Bans, `BANS_TABLE`).

use chat_lambdas::{Error, WebsocketEvent, init, run_websocket, websocket};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let aws = init().await;
    // Read once: a setting that cannot work stops the cold start, not every connect.
    let settings = &websocket::ConnectSettings::from_settings(|name| std::env::var(name).ok())?;
    let (connections, sessions, log, bans) = (&aws.connections(), &aws.sessions(), &aws.log(), &aws.bans());
    run_websocket(move |event: WebsocketEvent| async move {
        Ok::<_, Error>(websocket::on_connect(&event.payload, settings, connections, sessions, log, bans).await?)
    })
    .await
}
