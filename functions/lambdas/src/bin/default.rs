//! `$default`: serves `history`, `who`, `subscribe`, `unsubscribe`, `rooms`,
//! `read` and moderation — `delete`, `kick`, `ban`, `unban` (Bans, `BANS_TABLE`)
//! — (room limit `MAX_ROOMS_PER_CONNECTION`; rights of connections without an
//! authorizer `DEFAULT_RIGHTS`; `history`/`who` per-user limit
//! `READ_RATE`/`READ_BURST`, kept in this instance's memory), answers anything
//! else with the seed's error.

use chat_aws::ApiGatewayPoster;
use chat_core::entrypoints::websocket::RouteSettings;
use chat_lambdas::{Error, WebsocketEvent, connections_endpoint, init, run_websocket, websocket};
use tokio::sync::OnceCell;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let aws = &init().await;
    // Read once: a setting that cannot work stops the cold start, not every request.
    let settings = &RouteSettings::from_settings(|name| std::env::var(name).ok())?;
    let (connections, cursors, log, bans) = (&aws.connections(), &aws.cursors(), &aws.log(), &aws.bans());
    // The endpoint comes from the first event unless configured; one client after that.
    let poster = &OnceCell::<ApiGatewayPoster>::new();
    run_websocket(move |event: WebsocketEvent| async move {
        let poster = poster.get_or_init(|| async { aws.poster(&connections_endpoint(&event.payload)) }).await;
        Ok::<_, Error>(websocket::on_default(&event.payload, settings, connections, cursors, log, poster, bans).await?)
    })
    .await
}
