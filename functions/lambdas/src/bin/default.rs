//! `$default`: serves `history` and `who` for the sender's room, answers anything
//! else with the seed's error.

use chat_aws::ApiGatewayPoster;
use chat_lambdas::{Error, WebsocketEvent, connections_endpoint, init, run_websocket, websocket};
use tokio::sync::OnceCell;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let aws = &init().await;
    let (connections, log) = (&aws.connections(), &aws.log());
    // The endpoint comes from the first event unless configured; one client after that.
    let poster = &OnceCell::<ApiGatewayPoster>::new();
    run_websocket(move |event: WebsocketEvent| async move {
        let poster = poster.get_or_init(|| async { aws.poster(&connections_endpoint(&event.payload)) }).await;
        Ok::<_, Error>(websocket::on_default(&event.payload, connections, log, poster).await?)
    })
    .await
}
