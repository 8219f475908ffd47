//! `$connect` authorizer (deployed only with EnableAuthorizer=true): an HS256 JWT
//! in `?Authorization=Bearer <token>` allows the connection.

use std::sync::Arc;

use aws_lambda_events::apigw::ApiGatewayCustomAuthorizerRequestTypeRequest;
use chat_core::auth::{SharedSecret, Verifier, VerifierConfig};
use chat_core::entrypoints::authorizer;
use chat_core::memory::MemoryJwks;
use chat_lambdas::{Error, LambdaEvent, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let config = VerifierConfig::with_shared_secret(SharedSecret::new(&chat_lambdas::jwt_secret()?));
    // No JWKS issuer is configured yet, so nothing is ever fetched.
    let verifier = &Verifier::new(config, Arc::new(MemoryJwks::default()));
    run(service_fn(move |event: LambdaEvent<ApiGatewayCustomAuthorizerRequestTypeRequest>| async move {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() as i64;
        Ok::<_, Error>(authorizer::on_authorize(&event.payload, verifier, now).await)
    }))
    .await
}
