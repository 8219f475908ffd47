//! The publish API, `POST /rooms/{room}/messages` on an IAM-authorized HTTP API
//! (payload 2.0): appends a line (or a batch of up to 25) to MessageHistory
//! only, as the signing principal; the broadcaster delivers it.

use aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use chat_core::entrypoints::publish;
use chat_lambdas::{Error, LambdaEvent, init, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let aws = init().await;
    let log = &aws.log();
    run(service_fn(move |event: LambdaEvent<ApiGatewayV2httpRequest>| async move {
        Ok::<_, Error>(publish::on_publish(&event.payload, log).await)
    }))
    .await
}
