//! The authorizer's HS256 secret from AWS Secrets Manager, read once per cold
//! start: it never sits in the function's configuration, where anyone allowed to
//! read the function could see it.

use chat_core::StoreError;

/// The secret's current string value (`SecretString`) by ARN or name.
pub async fn secret_string(sdk: &aws_config::SdkConfig, secret_id: &str) -> Result<String, StoreError> {
    let client = aws_sdk_secretsmanager::Client::new(sdk);
    let output = client.get_secret_value().secret_id(secret_id).send().await.map_err(crate::unavailable)?;
    output.secret_string.ok_or_else(|| {
        StoreError::Unavailable(format!("secret {secret_id} has no SecretString (binary secrets are not supported)"))
    })
}
