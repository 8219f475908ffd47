//! `$connect` authorizer (deployed unless AuthMode=none): a JWT in
//! `?Authorization=Bearer <token>` that the configured issuer (JWKS) or shared
//! secret (from Secrets Manager) vouches for allows the connection, with the
//! token's `chat.rights`, else `DEFAULT_RIGHTS` plus the `GROUP_RIGHTS` of its
//! `cognito:groups`; see `verifier_config_from_env`.

use std::sync::Arc;

use aws_lambda_events::apigw::ApiGatewayCustomAuthorizerRequestTypeRequest;
use chat_aws::HttpJwks;
use chat_core::auth::Verifier;
use chat_core::entrypoints::authorizer;
use chat_lambdas::{Error, LambdaEvent, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    chat_lambdas::init_logging();
    // Built once: the JWKS cache lives as long as the warm instance.
    let verifier = &Verifier::new(chat_lambdas::verifier_config_from_env().await?, Arc::new(HttpJwks::new()?));
    run(service_fn(move |event: LambdaEvent<ApiGatewayCustomAuthorizerRequestTypeRequest>| async move {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() as i64;
        Ok::<_, Error>(authorizer::on_authorize(&event.payload, verifier, now).await)
    }))
    .await
}
